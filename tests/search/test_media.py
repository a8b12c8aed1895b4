"""search/media/: safe decoding (limits, modes, EXIF, draft) and the media store."""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from search import files, media
from search.errors import (
    CorruptImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidInputError,
    InvalidMediaRefError,
    MediaNotFoundError,
)
from search.media import DecodeLimits, MediaStore, decode_image
from search.media import store as media_store
from tests.utils import images

# --- modes and formats --------------------------------------------------------------


@pytest.mark.parametrize("case", images.IMAGE_CASES, ids=lambda case: case.name)
def test_every_mode_and_format_decodes_to_rgb(case: images.ImageCase) -> None:
    decoded = decode_image(case.make())

    assert decoded.mode == "RGB"
    assert decoded.size == case.size
    pixels = np.asarray(decoded).astype(int)  # [height, width, 3]
    assert np.abs(pixels - np.array(case.expected)).max() <= case.tolerance


def test_every_source_kind_gives_the_same_image(tmp_path: Path) -> None:
    data = images.solid_bytes("PNG")
    path = tmp_path / "red.png"
    path.write_bytes(data)
    sources: list[media.ImageSource] = [
        data,
        bytearray(data),
        memoryview(data),
        path,
        str(path),
        io.BytesIO(data),
    ]

    decoded = [np.asarray(decode_image(source)) for source in sources]

    for other in decoded[1:]:
        np.testing.assert_array_equal(decoded[0], other)


def test_decoded_image_outlives_its_open_file(tmp_path: Path) -> None:
    path = tmp_path / "red.jpg"
    path.write_bytes(images.solid_bytes("JPEG"))
    decoded = decode_image(path)
    path.unlink()

    assert decoded.resize((4, 4)).getpixel((0, 0)) is not None


def test_formats_outside_the_allow_list_are_refused() -> None:
    ppm = images.solid_bytes("PPM")  # Pillow reads PPM; we do not let it try

    with pytest.raises(CorruptImageError, match="not an image"):
        decode_image(ppm)


# --- EXIF orientation ---------------------------------------------------------------


def _corner_colours(image: Image.Image) -> dict[str, tuple[int, int, int]]:
    right, bottom = image.width - 2, image.height - 2
    corners = {"top-left": (1, 1), "top-right": (right, 1), "bottom-left": (1, bottom)}
    corners["bottom-right"] = (right, bottom)
    return {name: image.getpixel(xy) for name, xy in corners.items()}  # type: ignore[misc]


def _is_red(colour: tuple[int, int, int]) -> bool:
    return colour[0] > 180 and colour[2] < 80


@pytest.mark.parametrize(
    ("orientation", "size", "red_corner"),
    [
        (1, (40, 20), "top-left"),
        (3, (40, 20), "bottom-right"),  # rotated 180°
        (6, (20, 40), "top-right"),  # rotate 90° clockwise to display
        (8, (20, 40), "bottom-left"),  # rotate 90° counter-clockwise to display
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, size: tuple[int, int], red_corner: str
) -> None:
    decoded = decode_image(images.exif_oriented_jpeg(orientation, size=(40, 20)))

    assert decoded.size == size
    corners = _corner_colours(decoded)
    assert [name for name, colour in corners.items() if _is_red(colour)] == [red_corner]


def test_malformed_exif_does_not_lose_the_image() -> None:
    broken = images.encode(images.solid("RGB", images.RED), "JPEG", exif=b"Exif\0\0garbage")

    assert decode_image(broken).size == images.SIZE


# --- draft (reduced-scale JPEG decoding) ----------------------------------------------


@pytest.mark.parametrize("min_side", [64, 224, 500])
def test_draft_keeps_short_side_at_least_min_side(min_side: int) -> None:
    decoded = decode_image(images.big_jpeg((2048, 1536)), min_side=min_side)

    short = min(decoded.size)
    assert min_side <= short < 1536
    assert decoded.width / decoded.height == pytest.approx(2048 / 1536, rel=0.01)


def test_draft_reduces_by_at_most_one_eighth() -> None:
    assert decode_image(images.big_jpeg((2048, 1536)), min_side=8).size == (256, 192)


def test_draft_leaves_small_or_non_jpeg_images_alone() -> None:
    assert decode_image(images.big_jpeg((600, 400)), min_side=224).size == (600, 400)
    png = images.encode(images.noisy_rgb((600, 400)), "PNG")
    assert decode_image(png, min_side=64).size == (600, 400)


def test_draft_with_exif_rotation_keeps_short_side() -> None:
    data = images.exif_oriented_jpeg(6, size=(1600, 800))

    decoded = decode_image(data, min_side=100)

    assert decoded.width < decoded.height  # rotated
    assert 100 <= decoded.width < 800


def test_min_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_side"):
        decode_image(images.solid_bytes("PNG"), min_side=0)


# --- size limits ----------------------------------------------------------------------


def _refuse_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decode of a PNG fail the test: limits must act on the header."""

    def load(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)


def test_pixel_limit_checked_from_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_decoding(monkeypatch)

    with pytest.raises(ImageTooLargeError, match=re.escape("9000×9000 = 81 MP, limit 50 MP")):
        decode_image(images.png_header_only(9000, 9000))


def test_side_limit_checked_from_header(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_decoding(monkeypatch)

    with pytest.raises(ImageTooLargeError, match="longest side limit 20000 px"):
        decode_image(images.png_header_only(25_000, 10))


def test_header_only_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_decoding(monkeypatch)
    limit_before = Image.MAX_IMAGE_PIXELS
    bomb = images.png_header_only(40_000, 40_000)  # claims 1.6 G pixels in < 100 bytes

    with pytest.raises(ImageTooLargeError):
        decode_image(bomb)
    # raising our own limits does not get past Pillow's hard bomb guard either
    with pytest.raises(ImageTooLargeError, match="decompression-bomb"):
        decode_image(bomb, limits=DecodeLimits(max_pixels=10**10, max_side=10**6))
    assert limit_before == Image.MAX_IMAGE_PIXELS  # global left alone


def test_bomb_warning_raised_as_error_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_decoding(monkeypatch)
    limits = DecodeLimits(max_pixels=10**9)  # only Pillow's warning stands in the way

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLargeError, match="decompression-bomb"):
            decode_image(images.png_header_only(10_000, 10_000), limits=limits)


def test_custom_limits_apply_to_small_images() -> None:
    with pytest.raises(ImageTooLargeError, match="32×24 = 768 pixels, limit 10 pixels"):
        decode_image(images.solid_bytes("PNG"), limits=DecodeLimits(max_pixels=10))
    with pytest.raises(ImageTooLargeError, match="longest side limit 16 px"):
        decode_image(images.solid_bytes("PNG"), limits=DecodeLimits(max_side=16))


def test_byte_limit_for_bytes_streams_and_paths(tmp_path: Path) -> None:
    data = images.solid_bytes("BMP")  # BMP: no compression, so bytes ≈ pixels × 3
    path = tmp_path / "big.bmp"
    path.write_bytes(data)
    limits = DecodeLimits(max_bytes=len(data) - 1)

    for source in (data, io.BytesIO(data), path):
        with pytest.raises(ImageTooLargeError, match="MiB"):
            decode_image(source, limits=limits)
    assert decode_image(path, limits=DecodeLimits(max_bytes=len(data))).size == images.SIZE


# --- corrupt input --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF"])
def test_truncated_files_are_refused_with_reason(fmt: str) -> None:
    with pytest.raises(CorruptImageError, match=f"truncated {fmt}"):
        decode_image(images.truncated(fmt))


def test_truncated_webp_is_refused() -> None:
    with pytest.raises(CorruptImageError, match="WEBP"):
        decode_image(images.truncated("WEBP"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (images.NOT_AN_IMAGE, r"not an image \(unrecognised format\)"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt PNG: unreadable header"),
        (images.png_header_only(0, 10), "corrupt PNG|no pixels"),
        (images.truncated("JPEG", keep=0.01), "truncated JPEG|corrupt JPEG"),
    ],
    ids=["empty", "pdf", "png-garbage", "zero-width", "jpeg-header-cut"],
)
def test_corrupt_input_is_refused_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptImageError, match=reason):
        decode_image(data)


def test_missing_and_non_file_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageNotFoundError, match="nope.jpg") as caught:
        decode_image(missing)
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, CorruptImageError)

    with pytest.raises(CorruptImageError, match="not a regular file"):
        decode_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CorruptImageError, match="empty file"):
        decode_image(tmp_path / "empty.png")


# --- media store ----------------------------------------------------------------------

CONTENT_REF = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z0-9]+")


@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "media")


def _leftover_temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def test_put_is_content_addressed_and_idempotent(store: MediaStore) -> None:
    data = images.solid_bytes("JPEG")

    ref = store.put(data, suffix=".JPG")
    again = store.put(data, suffix="jpg")

    assert ref == again
    assert CONTENT_REF.fullmatch(ref) and ref.endswith(".jpg")
    assert store.read(ref) == data
    assert store.resolve(ref).is_relative_to(store.root)
    assert store.put(b"other bytes", suffix="jpg") != ref
    assert not _leftover_temp_files(store.root)


def test_put_file_streams_to_the_same_ref(store: MediaStore, tmp_path: Path) -> None:
    data = images.big_jpeg((300, 200))
    path = tmp_path / "photo.JPEG"
    path.write_bytes(data)

    ref = store.put_file(path)

    assert ref == store.put(data, suffix="jpeg")
    assert store.put_file(path) == ref
    assert store.read(ref) == data
    assert not _leftover_temp_files(store.root)


@pytest.mark.parametrize("suffix", ["", ".", "../x", "a/b", "j pg", "x" * 11])
def test_bad_suffixes_are_refused(store: MediaStore, suffix: str) -> None:
    with pytest.raises(InvalidInputError, match="suffix"):
        store.put(b"data", suffix=suffix)


def test_missing_ref_is_not_found(store: MediaStore) -> None:
    with pytest.raises(MediaNotFoundError) as caught:
        store.resolve("ab/cd/" + "ab" * 32 + ".jpg")
    assert not isinstance(caught.value, InvalidMediaRefError)


ESCAPES = [
    "../x",
    "/etc/passwd",
    "a/../../x",
    "a\\..\\b",
    "x\x00y",
    "",
    ".",
    "a//b",
    "a/./b",
    ".staging/x",
    "x" * 2000,
]


@pytest.mark.parametrize("ref", ESCAPES, ids=repr)
def test_references_escaping_the_root_are_refused(store: MediaStore, ref: str) -> None:
    with pytest.raises(InvalidMediaRefError):
        store.resolve(ref)
    with pytest.raises(InvalidMediaRefError):
        store.read(ref)
    with pytest.raises(InvalidMediaRefError):
        store.delete(ref, missing_ok=True)
    with pytest.raises(InvalidMediaRefError):
        store.thumbnail(ref)


def test_symlinks_pointing_out_of_the_root_are_refused(store: MediaStore, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("secret")
    (store.root / "ab").mkdir()
    (store.root / "ab" / "link.txt").symlink_to(secret)
    (store.root / "out").symlink_to(secret.parent, target_is_directory=True)

    for ref in ("ab/link.txt", "out/secret.txt"):
        with pytest.raises(InvalidMediaRefError):
            store.read(ref)


def test_symlinks_inside_the_root_are_followed(store: MediaStore) -> None:
    ref = store.put(b"payload", suffix="bin")
    (store.root / "alias.bin").symlink_to(store.root / ref)

    assert store.read("alias.bin") == b"payload"


def test_thumbnail_fits_the_box_and_is_cached(
    store: MediaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = store.put(images.big_jpeg((2048, 1536)), suffix="jpg")

    first = store.thumbnail(ref, 256)
    thumb = Image.open(io.BytesIO(first))
    assert (thumb.format, thumb.size) == ("JPEG", (256, 192))
    assert list((store.root / "thumbs" / "256").rglob("*.jpeg"))

    def render_again(*args: object) -> bytes:
        raise AssertionError("thumbnail regenerated instead of served from cache")

    monkeypatch.setattr(media_store, "_render_thumbnail", render_again)
    assert store.thumbnail(ref, 256) == first


def test_thumbnail_webp_and_bad_sizes(store: MediaStore) -> None:
    ref = store.put(images.solid_bytes("PNG", "RGBA", (*images.RED, 0)), suffix="png")

    thumb = Image.open(io.BytesIO(store.thumbnail(ref, 16, fmt="WEBP")))
    assert thumb.format == "WEBP" and max(thumb.size) == 16
    for size in (0, 8, 5000):
        with pytest.raises(InvalidInputError, match="thumbnail size"):
            store.thumbnail(ref, size)


def test_thumbnail_of_corrupt_media_is_typed(store: MediaStore) -> None:
    ref = store.put(images.truncated("JPEG"), suffix="jpg")

    with pytest.raises(CorruptImageError):
        store.thumbnail(ref)
    assert not list((store.root / "thumbs").rglob("*.jpeg"))


def test_delete_removes_file_and_thumbnails(store: MediaStore) -> None:
    ref = store.put(images.solid_bytes("JPEG"), suffix="jpg")
    store.thumbnail(ref, 64)

    store.delete(ref)

    with pytest.raises(MediaNotFoundError):
        store.resolve(ref)
    assert not [p for p in (store.root / "thumbs").rglob("*") if p.is_file()]
    with pytest.raises(MediaNotFoundError):
        store.delete(ref)
    store.delete(ref, missing_ok=True)


def test_stored_files_are_readable_by_others(store: MediaStore) -> None:
    ref = store.put(b"data", suffix="bin")

    assert os.stat(store.resolve(ref)).st_mode & 0o044 == 0o044


# --- reading files: regular files only, bounded ------------------------------------


@pytest.fixture
def special_files(tmp_path: Path):
    """name -> path of each kind of file that is not a regular file."""
    import socket

    os.mkfifo(tmp_path / "fifo.jpg")  # no writer: a blocking open would wait forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.jpg"))
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    yield {"FIFO": tmp_path / "fifo.jpg", "socket": tmp_path / "sock.jpg",
           "directory": tmp_path / "dir.jpg", "character device": tmp_path / "zero.jpg",
           "symlink loop": tmp_path / "a.jpg"}
    sock.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["FIFO", "socket", "directory", "character device",
                                  "symlink loop"])
def test_special_files_are_refused_without_blocking(special_files, kind: str) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CorruptImageError, match=re.escape(f"not a regular file ({kind})")):
        files.read_regular_file(special_files[kind], 32 * media.MiB)
    with pytest.raises(CorruptImageError, match=re.escape(f"({kind})")):
        decode_image(special_files[kind])
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 16 * 1024  # nothing was read: /dev/zero would fill any budget


def test_regular_file_reads_stop_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    assert files.read_regular_file(path, 1000) == b"x" * 1000
    with pytest.raises(ImageTooLargeError, match="limit"):
        files.read_regular_file(path, 999)
    with pytest.raises(ImageNotFoundError):
        files.read_regular_file(tmp_path / "nope", 10)
    (tmp_path / "dangling").symlink_to(tmp_path / "nope")
    with pytest.raises(ImageNotFoundError):
        files.read_regular_file(tmp_path / "dangling", 10)


def test_reads_never_exceed_limit_plus_one(tmp_path: Path, monkeypatch) -> None:
    """A file growing after fstat: we still read at most max_bytes + 1."""
    path = tmp_path / "grows.bin"
    path.write_bytes(b"")
    asked: list[int] = []
    real_read = os.read

    def growing_read(fd: int, n: int) -> bytes:
        asked.append(n)
        return real_read(fd, n) or b"y" * n  # endless, like a file appended to

    monkeypatch.setattr(files.os, "read", growing_read)
    data = files.read_regular_file(path, 5 * media.MiB)
    assert len(data) == 5 * media.MiB + 1 and sum(asked) == 5 * media.MiB + 1
