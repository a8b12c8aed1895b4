"""A seeded generator of malformed inputs for the indexer and the API.

Every case says what must happen to it: VALID ones must be indexed (or answered 2xx),
INVALID ones must be refused with a reason, EITHER ones (a bit-flipped JPEG may still
decode) must end one way or the other, never crash, hang or vanish. `scale` multiplies
the random variants: scale 1 gives the short suite's ~150 inputs, scale 8 well over 1,000.
"""

from __future__ import annotations

import io
import json
import os
import random
import socket
import struct
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from PIL import Image

from tests.utils import images


class Expect(Enum):
    VALID = "valid"
    INVALID = "invalid"
    EITHER = "either"


@dataclass(frozen=True)
class ImageCase:
    name: str  # also the file name: the suffix is part of the trap
    data: bytes
    expect: Expect


def _png(seed: int, mode: str = "RGB", size: tuple[int, int] = (24, 16), **params) -> bytes:
    rng = random.Random(seed)
    colour = tuple(rng.randrange(256) for _ in range(len(mode) if mode != "P" else 1))
    img = Image.new(mode, size, colour if len(colour) > 1 else colour[0])
    return images.encode(img, params.pop("fmt", "PNG"), **params)


def valid_images(seed: int) -> list[ImageCase]:
    """Real images in every mode and container we accept, some behind the wrong suffix."""
    cases = [
        ImageCase(f"rgb-{seed}.png", _png(seed), Expect.VALID),
        ImageCase(f"rgb-{seed}.jpg", _png(seed + 1, fmt="JPEG", quality=80), Expect.VALID),
        ImageCase(f"cmyk-{seed}.jpg", _png(seed + 2, "CMYK", fmt="JPEG"), Expect.VALID),
        ImageCase(f"grey16-{seed}.png", images.encode(images.grey16(seed * 997 % 65536),
                                                      "PNG"), Expect.VALID),
        ImageCase(f"exif6-{seed}.jpg", images.exif_oriented_jpeg(6), Expect.VALID),
        ImageCase(f"rgba-{seed}.png", _png(seed + 3, "RGBA"), Expect.VALID),
        ImageCase(f"palette-{seed}.gif", images.animated("GIF"), Expect.VALID),
        ImageCase(f"rgb-{seed}.webp", _png(seed + 4, fmt="WEBP"), Expect.VALID),
        ImageCase(f"rgb-{seed}.bmp", _png(seed + 5, fmt="BMP"), Expect.VALID),
        ImageCase(f"rgb-{seed}.tif", _png(seed + 6, fmt="TIFF"), Expect.VALID),
        ImageCase(f"png-named-{seed}.jpg", _png(seed + 7), Expect.VALID),  # wrong extension
    ]
    return cases


def _elf() -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHI", 2, 62, 1) + b"\0" * 200


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello" * 100)
    return buffer.getvalue()


FOREIGN = {
    "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
           b'<script>alert(1)</script></svg>',
    "pdf": b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF",
    "zip": _zip(),
    "elf": _elf(),
    "text": "not an image at all — ünïcödé".encode(),
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
}


def invalid_images() -> list[ImageCase]:
    """Fixed traps: empty files, bombs and absurd sizes from the header, foreign formats."""
    cases = [ImageCase("zero-bytes.jpg", b"", Expect.INVALID)]
    for width, height in ((40_000, 40_000), (1, 60_000_000), (60_000, 1), (0, 10),
                          (2**31 - 1, 2**31 - 1)):
        data = images.png_header_only(width, height)
        cases.append(ImageCase(f"bomb-{width}x{height}.png", data, Expect.INVALID))
    for kind, data in FOREIGN.items():
        cases.append(ImageCase(f"{kind}-as.jpg", data, Expect.INVALID))
        cases.append(ImageCase(f"{kind}-as.png", data, Expect.INVALID))
    return cases


def damaged_images(rng: random.Random, scale: int) -> list[ImageCase]:
    """Truncations and bit flips of valid images; whether a flip still decodes is the
    decoder's business, so those are EITHER. Truncations to a few bytes never decode."""
    cases = []
    bases = valid_images(rng.randrange(10_000))
    for i in range(6 * scale):
        base = bases[i % len(bases)]
        cut = rng.randrange(1, 12) if i % 3 == 0 else rng.randrange(12, len(base.data))
        expect = Expect.INVALID if cut < 12 else Expect.EITHER
        cases.append(ImageCase(f"truncated-{i}-{base.name}", base.data[:cut], expect))
    for i in range(6 * scale):
        base = bases[i % len(bases)]
        data = bytearray(base.data)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        cases.append(ImageCase(f"flipped-{i}-{base.name}", bytes(data), Expect.EITHER))
    return cases


def image_cases(seed: int = 0, scale: int = 1) -> list[ImageCase]:
    rng = random.Random(seed)
    valid = [c for s in range(2 * scale) for c in valid_images(100 + s)]
    return valid + invalid_images() + damaged_images(rng, scale)


# ---------------------------------------------------------------------------------------
# Special files: only a folder can hold them


SPECIAL_KINDS = ("fifo", "socket", "dev-zero", "loop", "outside", "directory", "dangling")


def make_special_files(root: Path, outside: Path) -> tuple[list[str], list[socket.socket]]:
    """Traps behind image names in `root`; returns their names and the sockets to close."""
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.png").write_bytes(_png(1))
    os.mkfifo(root / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.jpg"))
    (root / "dev-zero.jpg").symlink_to("/dev/zero")
    (root / "loop.jpg").symlink_to(root / "loop2.png")
    (root / "loop2.png").symlink_to(root / "loop.jpg")
    (root / "outside.png").symlink_to(outside / "secret.png")
    (root / "directory.jpg").mkdir()
    (root / "dangling.png").symlink_to(root / "nothing-here.png")
    os.mkfifo(root / "caption-fifo.txt")
    (root / "caption-fifo.png").write_bytes(_png(2))
    (root / "caption-zero.json").symlink_to("/dev/zero")
    (root / "caption-zero.png").write_bytes(_png(3))
    names = ["fifo.jpg", "socket.jpg", "dev-zero.jpg", "loop.jpg", "loop2.png", "outside.png",
             "directory.jpg", "dangling.png", "caption-fifo.png", "caption-zero.png"]
    return names, [sock]


# ---------------------------------------------------------------------------------------
# Catalog rows: (row or raw line, expectation)


@dataclass(frozen=True)
class RowCase:
    external_id: str | None
    row: dict | None  # None: `raw` is written as the line itself
    raw: bytes = b""
    expect: Expect = Expect.VALID


def _deep(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


def row_cases(rng: random.Random, scale: int, image_names: dict[str, Expect],
              prefix: str) -> list[RowCase]:
    """Good rows (text, image, both) interleaved with hostile ones, for any catalog format.
    `image_names`: images/ files with their expectation, named by the image column."""
    cases: list[RowCase] = []
    names = sorted(image_names)
    for i in range(12 * scale):
        eid = f"{prefix}good-{i}"
        row = {"id": eid, "title": f"product {i} {rng.choice(['red', 'blue', 'green'])}",
               "price": i % 17, "category": rng.choice(["fruit", "shoe", "hat"])}
        expect = Expect.VALID
        if i % 2:
            name = names[rng.randrange(len(names))]
            row["image"] = f"images/{name}"
            expect = image_names[name]
        cases.append(RowCase(eid, row, expect=expect))
    hostile = [
        RowCase(f"{prefix}long-text", {"id": f"{prefix}long-text", "title": "w" * 200_000},
                expect=Expect.INVALID),
        RowCase(f"{prefix}nul-text", {"id": f"{prefix}nul-text", "title": "a\x00b"},
                expect=Expect.INVALID),
        RowCase(f"{prefix}long-id" + "x" * 600, {"id": f"{prefix}long-id" + "x" * 600,
                                                 "title": "t"}, expect=Expect.INVALID),
        RowCase(None, {"title": "no id"}, expect=Expect.INVALID),
        RowCase(f"{prefix}good-0", {"id": f"{prefix}good-0", "title": "dup"},
                expect=Expect.INVALID),  # duplicate id: the first occurrence stays
        RowCase(f"{prefix}big-attr", {"id": f"{prefix}big-attr", "title": "t",
                                      "blob": "b" * 100_000}, expect=Expect.INVALID),
        RowCase(f"{prefix}many-attrs", {"id": f"{prefix}many-attrs", "title": "t",
                                        **{f"a{k}": k for k in range(300)}},
                expect=Expect.INVALID),
        RowCase(f"{prefix}empty", {"id": f"{prefix}empty", "title": "  "},
                expect=Expect.INVALID),
        RowCase(f"{prefix}unicode", {"id": f"{prefix}unicode", "title": "ﬁ 🍎 ‮ rtl ʻokina"},
                expect=Expect.VALID),
        RowCase(f"{prefix}missing-image", {"id": f"{prefix}missing-image", "title": "t",
                                           "image": "images/does-not-exist.png"},
                expect=Expect.INVALID),
        RowCase(f"{prefix}abs-dev", {"id": f"{prefix}abs-dev", "image": "/dev/zero"},
                expect=Expect.INVALID),
    ]
    for i in range(2 * scale):
        hostile.append(RowCase(f"{prefix}rand-long-{i}", {
            "id": f"{prefix}rand-long-{i}", "title": "x" * rng.randrange(100_001, 300_000)},
            expect=Expect.INVALID))
    return _interleave(cases, hostile, rng)


def jsonl_raw_cases(prefix: str) -> list[RowCase]:
    """Lines only JSONL can carry: malformed, deep, huge, not UTF-8, NaN."""
    def raw(eid: str | None, text: str | bytes) -> RowCase:
        data = text if isinstance(text, bytes) else text.encode()
        return RowCase(eid, None, data, Expect.INVALID)

    return [
        raw(f"{prefix}deep", f'{{"id": "{prefix}deep", "attrs": {_deep(100_000)}}}'),
        raw(f"{prefix}deep-list", f'{{"id": "{prefix}deep-list", "a": ' + "[" * 50_000
            + "]" * 50_000 + "}"),
        raw(None, "{broken json"),
        raw(None, "[1, 2, 3]"),
        raw(None, '"just a string"'),
        raw(f"{prefix}bad-utf8", f'{{"id": "{prefix}bad-utf8", "title": "'.encode()
            + b"\xff\xfe\xc3" + b'"}'),
        raw(f"{prefix}nul-byte", f'{{"id": "{prefix}nul-byte", "title": "a'.encode()
            + b"\x00" + b'"}'),
        raw(f"{prefix}surrogate", f'{{"id": "{prefix}surrogate", "title": "a\\ud800b"}}'),
        raw(f"{prefix}nan", f'{{"id": "{prefix}nan", "title": "t", "price": NaN}}'),
        raw(f"{prefix}inf", f'{{"id": "{prefix}inf", "title": "t", "price": 1e999}}'),
        raw(f"{prefix}huge-line", f'{{"id": "{prefix}huge-line", "title": "t", "x": "'
            + "h" * (9 * 1024 * 1024) + '"}'),
        raw(f"{prefix}huge-int", f'{{"id": "{prefix}huge-int", "title": "t", "n": '
            + "9" * 5000 + "}"),
    ]


def csv_trap_lines(prefix: str) -> list[RowCase]:
    """Quoting traps that csv survives line by line (an unclosed quote goes last: it
    swallows what follows up to the field limit, as CSV says it must)."""
    return [
        RowCase(f"{prefix}q1", None, f'{prefix}q1,"a ""quoted"" title",1\n'.encode(),
                Expect.VALID),
        RowCase(f"{prefix}q2", None, f'{prefix}q2,"multi\nline title",2\n'.encode(),
                Expect.VALID),
        RowCase(None, None, b'"","",""\n', Expect.INVALID),
        RowCase(None, None, f"{prefix}extra,a,1,x,y,z,w\n".encode(), Expect.INVALID),
        RowCase(f"{prefix}bad-utf8", None, f"{prefix}bad-utf8,".encode() + b"\xff\xfe,1\n",
                Expect.INVALID),
        RowCase(f"{prefix}nul", None, f"{prefix}nul,a\0b,1\n".encode(), Expect.INVALID),
        RowCase(f"{prefix}big-field", None, f"{prefix}big-field,".encode() + b"f" * 2_000_000
                + b",1\n", Expect.INVALID),
    ]


def _interleave(good: list[RowCase], bad: list[RowCase], rng: random.Random
                ) -> list[RowCase]:
    """Bad rows between good ones, never first (the duplicate needs its original)."""
    merged = list(good)
    for case in bad:
        merged.insert(rng.randrange(1, len(merged) + 1), case)
    return merged


def json_line(case: RowCase) -> bytes:
    return case.raw if case.row is None else json.dumps(case.row).encode()
