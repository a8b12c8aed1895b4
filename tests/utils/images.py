"""Tiny generated test images, in every mode and format the engine must decode.

Everything here is built in memory in milliseconds; nothing is downloaded or checked in.
Colours are chosen so a decoded image can be checked against an expected RGB value.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]
RED: RGB = (220, 20, 30)
BLUE: RGB = (20, 40, 220)
WHITE: RGB = (255, 255, 255)
MID_GREY: RGB = (128, 128, 128)
SIZE = (32, 24)  # width, height: not square, so a swapped axis shows


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def solid(mode: str, colour: object, size: tuple[int, int] = SIZE) -> Image.Image:
    return Image.new(mode, size, colour)  # type: ignore[arg-type]


def solid_bytes(fmt: str, mode: str = "RGB", colour: object = RED, **params: object) -> bytes:
    return encode(solid(mode, colour), fmt, **params)


def palette_with_transparency() -> Image.Image:
    """P image whose only colour (index 0) is declared transparent (PNG tRNS / GIF)."""
    image = solid("P", 0)
    image.putpalette([*RED, *BLUE] + [0] * (256 - 2) * 3)
    image.info["transparency"] = 0
    return image


def grey16(value: int = 32768) -> Image.Image:
    """16-bit grey; 32768 is mid-grey and must decode to ~128, not clip to white."""
    return Image.fromarray(np.full(SIZE[::-1], value, dtype=np.uint16))


def animated(fmt: str, colours: Sequence[RGB] = (RED, BLUE)) -> bytes:
    frames = [solid("RGB", colour) for colour in colours]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 100}
    if fmt == "WEBP":
        params["lossless"] = True
    return encode(frames[0], fmt, **params)


@dataclass(frozen=True)
class ImageCase:
    """Encoded bytes and the RGB value every pixel should decode to (± tolerance)."""

    name: str
    make: Callable[[], bytes]
    expected: RGB
    tolerance: int = 0
    size: tuple[int, int] = SIZE


HALF_RED_ON_WHITE: RGB = (237, 137, 142)  # RED at alpha 128/255 over white
CMYK_RED = (0, 255, 255, 0)

IMAGE_CASES: list[ImageCase] = [
    ImageCase("jpeg-rgb", lambda: solid_bytes("JPEG", quality=95), RED, 6),
    ImageCase("jpeg-grey", lambda: solid_bytes("JPEG", "L", 100), (100, 100, 100), 2),
    ImageCase(
        "jpeg-cmyk", lambda: solid_bytes("JPEG", "CMYK", CMYK_RED, quality=95), (255, 0, 0), 6
    ),
    ImageCase("png-rgb", lambda: solid_bytes("PNG"), RED),
    ImageCase("png-grey", lambda: solid_bytes("PNG", "L", 100), (100, 100, 100)),
    ImageCase("png-bilevel", lambda: solid_bytes("PNG", "1", 1), WHITE),
    ImageCase("png-rgba-transparent", lambda: solid_bytes("PNG", "RGBA", (*RED, 0)), WHITE),
    ImageCase(
        "png-rgba-half", lambda: solid_bytes("PNG", "RGBA", (*RED, 128)), HALF_RED_ON_WHITE, 1
    ),
    ImageCase("png-la-transparent", lambda: solid_bytes("PNG", "LA", (0, 0)), WHITE),
    ImageCase("png-p-transparent", lambda: encode(palette_with_transparency(), "PNG"), WHITE),
    ImageCase("png-grey16", lambda: encode(grey16(), "PNG"), MID_GREY, 1),
    ImageCase("webp-rgb", lambda: solid_bytes("WEBP", lossless=True), RED),
    ImageCase(
        "webp-rgba-transparent",
        lambda: solid_bytes("WEBP", "RGBA", (*RED, 0), lossless=True),
        WHITE,
    ),
    ImageCase("webp-animated", lambda: animated("WEBP"), RED),
    ImageCase("gif", lambda: solid_bytes("GIF"), RED),
    ImageCase("gif-transparent", lambda: encode(palette_with_transparency(), "GIF"), WHITE),
    ImageCase("gif-animated", lambda: animated("GIF"), RED),
    ImageCase("bmp-rgb", lambda: solid_bytes("BMP"), RED),
    ImageCase("bmp-bilevel", lambda: solid_bytes("BMP", "1", 0), (0, 0, 0)),
    ImageCase("tiff-rgb", lambda: solid_bytes("TIFF"), RED),
    ImageCase("tiff-rgba-transparent", lambda: solid_bytes("TIFF", "RGBA", (*RED, 0)), WHITE),
    ImageCase("tiff-cmyk", lambda: solid_bytes("TIFF", "CMYK", CMYK_RED), (255, 0, 0)),
    ImageCase(
        "tiff-ycbcr", lambda: solid_bytes("TIFF", "YCbCr", (128, 128, 128)), (128, 128, 128), 2
    ),
    ImageCase("tiff-grey16", lambda: encode(grey16(), "TIFF"), MID_GREY, 1),
    ImageCase("tiff-grey16-black", lambda: encode(grey16(0), "TIFF"), (0, 0, 0)),
    ImageCase("tiff-grey16-white", lambda: encode(grey16(65535), "TIFF"), WHITE),
]


def noisy_rgb(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random pixels: they compress badly, so a truncated file loses real scan data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def big_jpeg(size: tuple[int, int] = (2048, 1536)) -> bytes:
    """A smooth gradient JPEG large enough for draft() to reduce by 1/8."""
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :]
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None]
    pixels = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=80)


def truncated(fmt: str, keep: float = 0.5) -> bytes:
    """A valid header followed by only part of the pixel data."""
    data = encode(noisy_rgb((128, 96)), fmt)
    return data[: int(len(data) * keep)]


def exif_oriented_jpeg(orientation: int = 6, size: tuple[int, int] = (40, 20)) -> bytes:
    """Stored as `size`, BLUE with a RED top-left quadrant, plus an EXIF Orientation tag.

    Orientation 6 means "rotate 90° clockwise to display": the stored top-left corner
    must end up top-right, and width/height swap.
    """
    image = solid("RGB", BLUE, size)
    image.paste(RED, (0, 0, size[0] // 2, size[1] // 2))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height but carries almost no pixel data.

    A few dozen bytes that would demand width×height×3 bytes if decoded: the shape of a
    decompression bomb, built without allocating any pixels.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


NOT_AN_IMAGE = b"%PDF-1.7 this is not an image at all\n" * 4


SHAPE_COLOURS: dict[str, RGB] = {"red": (220, 30, 30), "green": (30, 180, 40),
                                 "blue": (30, 40, 220), "yellow": (230, 210, 30)}
SHAPES = ("square", "circle", "triangle", "bar")


def shape_image(colour: RGB, shape: str) -> Image.Image:
    """A 40 px transparent image of one filled shape: captionable as "<colour> <shape>"."""
    from PIL import ImageDraw

    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    box = (6, 6, 34, 34)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(20, 4), (36, 36), (4, 36)], fill=colour)
    elif shape == "bar":
        draw.rectangle((16, 2, 24, 38), fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return image
