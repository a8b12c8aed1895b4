"""Safe image decoding.

Every image entering the engine (uploads, corpus files, query images, thumbnails) goes
through `decode_image`: byte, pixel and side limits are checked before any pixel is
decoded, only a short list of decoders is reachable, and the result is always an RGB
image the right way up. Failures are typed (`CorruptImageError`, `ImageTooLargeError`).
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from search.errors import (
    CorruptImageError,
    ImageTooLargeError,
    XmodalError,
)
from search.files import read_regular_file

MiB = 1024 * 1024

# Only these decoders are reachable. Pillow would otherwise try every plugin it has,
# some of which hand the bytes to external programs (EPS runs Ghostscript). The JPEG
# opener also yields MPO, the multi-picture JPEGs many phones write (frame 0 is the photo).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class DecodeLimits:
    """What one image may cost before we refuse it.

    max_bytes: encoded size (32 MiB holds any real photo, even 50 MP JPEGs).
    max_pixels: width × height; 50 MP decodes to 150 MB of RGB, which caps the memory a
        single request can make us allocate (a 40000×40000 PNG is a few KB on the wire).
    max_side: longest side in pixels; guards the resize and model paths against
        degenerate 1×50M strips that pass the pixel limit.
    """

    max_bytes: int = 32 * MiB
    max_pixels: int = 50_000_000
    max_side: int = 20_000


DEFAULT_LIMITS = DecodeLimits()

# Where transparency is composited: white, because product shots and logos assume a page
# behind them; black would turn dark line art invisible.
_BACKGROUND = (255, 255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
)
# Exceptions Pillow's decoders raise on malformed input (as listed by its own fuzzers).
_DECODER_ERRORS = (OSError, SyntaxError, EOFError, ValueError, IndexError, struct.error, zlib.error)


def decode_image(
    source: ImageSource,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode bytes, a path or a binary stream into an upright RGB image.

    min_side: the caller only needs the short side this large (e.g. 224 for a model), so
    JPEGs are decoded directly at 1/2..1/8 scale while keeping the short side ≥ min_side.
    The result may be larger than min_side; resizing exactly is the caller's job.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be positive, got {min_side}")
    data = _read_limited(source, limits.max_bytes)
    if not data:
        raise CorruptImageError("empty file")
    with _pillow_errors(_sniff_format(data)):
        opened = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    with opened as img, _pillow_errors(img.format or "image"):
        _check_dimensions(img.size, limits)
        if min_side is not None:
            _draft_for_min_side(img, min_side)
        img.load()  # full decode inside the guard, so truncation surfaces here
        return _to_rgb(_upright(img))


def _read_limited(source: ImageSource, max_bytes: int) -> bytes:
    """Read at most max_bytes (+1 to detect overflow) from any kind of source."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        data = _read_path(Path(source), max_bytes)
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image is over {_format_bytes(max_bytes)}, the byte limit")
    return data


def _read_path(path: Path, max_bytes: int) -> bytes:
    return read_regular_file(path, max_bytes)


@contextmanager
def _pillow_errors(image_format: str) -> Iterator[None]:
    """Translate what Pillow raises on hostile or broken input into our typed errors."""
    try:
        yield
    except XmodalError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is only an exception when a caller's warnings filter says so; we do
        # not touch the filters ourselves (process-global, and not thread-safe).
        raise ImageTooLargeError(f"decompression-bomb guard: {exc}") from exc
    except UnidentifiedImageError as exc:
        if image_format == "image":
            raise CorruptImageError("not an image (unrecognised format)") from exc
        # The magic bytes say what it wants to be; Pillow could not parse the rest.
        raise CorruptImageError(f"corrupt {image_format}: unreadable header") from exc
    except _DECODER_ERRORS as exc:
        raise CorruptImageError(_corruption_reason(exc, image_format)) from exc


def _sniff_format(data: bytes) -> str:
    """Name the format from magic bytes, only to word errors raised before Pillow names it."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return "WEBP" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else "image"


def _corruption_reason(exc: BaseException, image_format: str) -> str:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return f"truncated {image_format} ({message})"
    return f"corrupt {image_format}: {message}"


def _check_dimensions(size: tuple[int, int], limits: DecodeLimits) -> None:
    """Refuse from the header alone: Image.open has read no pixel data yet."""
    width, height = size
    if width < 1 or height < 1:
        raise CorruptImageError(f"image has no pixels ({width}×{height})")
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}×{height} = {_pixel_count(pixels)}, "
            f"limit {_pixel_count(limits.max_pixels)}"
        )
    if max(width, height) > limits.max_side:
        raise ImageTooLargeError(
            f"image is {width}×{height}, longest side limit {limits.max_side} px"
        )


def _draft_for_min_side(img: Image.Image, min_side: int) -> None:
    """Let libjpeg decode at 1/2..1/8 scale: far cheaper than decoding then resizing."""
    if not isinstance(img, JpegImagePlugin.JpegImageFile):
        return  # only JPEG decoders can scale while decoding
    width, height = img.size
    short = min(width, height)
    if short < 2 * min_side:
        return  # no power-of-two reduction fits
    # Pillow picks the largest 1/s with size // s >= requested on both axes, so asking for
    # the image scaled to short side == min_side keeps the short side >= min_side.
    scale = min_side / short
    img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block must not lose a good image."""
    # EXIF parsing raises many exception types, and orientation is optional metadata.
    with suppress(Exception):
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy for upright images
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency composited on white."""
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_grey(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # also copies, so the result never shares a file handle
    except ValueError as exc:
        raise CorruptImageError(f"unsupported colour mode {img.mode}") from exc


def _sixteen_bit_to_grey(img: Image.Image) -> Image.Image:
    """Scale 16-bit grey to 8 bits; Pillow's convert("L") clips, so mid-grey became white."""
    values = np.asarray(img, dtype=np.float32)  # [height, width], 0..65535 for 16-bit files
    grey = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
    return Image.fromarray(grey)


def _pixel_count(pixels: int) -> str:
    if pixels < 100_000:
        return f"{pixels:,} pixels"
    return f"{pixels / 1e6:,.1f}".removesuffix(".0") + " MP"


def _format_bytes(count: int) -> str:
    return f"{count / MiB:,.1f}".removesuffix(".0") + " MiB"
