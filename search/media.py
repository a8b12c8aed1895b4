"""Safe image decoding and the content-addressed media store.

Every image entering the engine (uploads, corpus files, query images, thumbnails) goes
through `decode_image`: byte, pixel and side limits are checked before any pixel is
decoded, only a short list of decoders is reachable, and the result is always an RGB
image the right way up. Failures are typed (`CorruptImageError`, `ImageTooLargeError`).

`MediaStore` keeps media files under one root, named by the SHA-256 of their bytes, and
resolves references so that nothing outside the root can ever be read or deleted. Media
added by reference stay where they are: the reference is the source's absolute path or
URL, and a referenced file is served only from inside the configured reference roots.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from search.errors import (
    CorruptImageError,
    ImageTooLargeError,
    InvalidInputError,
    InvalidMediaRefError,
    MediaNotFoundError,
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


# ---------------------------------------------------------------------------------------
# Media store

ThumbnailFormat = Literal["JPEG", "WEBP"]
THUMBNAIL_SIZES = range(16, 2049)  # also caps how many cache entries one file can spawn
_SUFFIX = re.compile(r"[a-z0-9]{1,10}")
_MAX_REF_LENGTH = 1024
_MAX_LOCATION_LENGTH = 2048  # a referenced path or URL: the catalog's image_ref column
_COPY_CHUNK = 1 * MiB


class MediaStore:
    """Files named by content (`ab/cd/<sha256>.<ext>`) under one root directory.

    References are relative POSIX paths. `resolve` is the only way from a reference to a
    path, and refuses anything that could leave the root.
    """

    def __init__(self, root: Path, reference_roots: Sequence[Path] = ()) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # Directories referenced files may be served from (resolved: containment is
        # checked on real paths). Empty: no referenced file is ever served.
        self.reference_roots = tuple(Path(r).resolve() for r in reference_roots)

    @staticmethod
    def ref_for(data: bytes, suffix: str) -> str:
        """The reference `put` gives these bytes, without writing anything."""
        return _content_ref(hashlib.sha256(data).hexdigest(), _extension(suffix))

    def put(self, data: bytes, *, suffix: str) -> str:
        """Store bytes; the same bytes always give the same reference (idempotent)."""
        ref = self.ref_for(data, suffix)
        target = self.root / ref
        if not touch(target):
            _atomic_write(target, data)
        return ref

    def put_file(self, path: Path, *, suffix: str | None = None) -> str:
        """Store a file's bytes, streamed (never wholly in memory); suffix from its name."""
        path = Path(path)
        extension = _extension(suffix or path.suffix)  # refuse before copying anything
        staging = self.root / ".staging"
        staging.mkdir(exist_ok=True)
        digest = hashlib.sha256()
        with path.open("rb") as source, _temp_file(staging) as (temp_path, out):
            while chunk := source.read(_COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            ref = _content_ref(digest.hexdigest(), extension)
            target = self.root / ref
            if not touch(target):
                out.flush()
                os.fsync(out.fileno())
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp_path, target)
        return ref

    def resolve(self, ref: str) -> Path:
        """The file a reference names; MediaNotFoundError if absent or outside the root."""
        path = self._contained_path(ref)
        if not path.is_file():
            raise MediaNotFoundError(f"no media {ref!r}")
        return path

    def read(self, ref: str) -> bytes:
        return self.resolve(ref).read_bytes()

    def thumbnail(self, ref: str, size: int = 256, *, fmt: ThumbnailFormat = "JPEG") -> bytes:
        """Encoded image fitting in size×size, generated once then served from thumbs/."""
        if not isinstance(size, int) or size not in THUMBNAIL_SIZES:
            raise InvalidInputError(
                f"thumbnail size must be {THUMBNAIL_SIZES.start}..{THUMBNAIL_SIZES.stop - 1}"
            )
        source = self.locate(ref)
        cached = self._thumbnail_path(ref, source, size, fmt)
        if touch(cached):  # mtime is the cache's recency (see search/lifecycle.py)
            with suppress(FileNotFoundError):  # evicted between touch and read
                return cached.read_bytes()
        data = _render_thumbnail(source, size, fmt)
        _atomic_write(cached, data)
        return data

    def delete(self, ref: str, *, missing_ok: bool = False) -> None:
        """Remove a file and its cached thumbnails."""
        try:
            path = self.resolve(ref)
        except InvalidMediaRefError:
            raise
        except MediaNotFoundError:
            if missing_ok:
                return
            raise
        sizes = [int(d.name) for d in (self.root / "thumbs").glob("*") if d.name.isdigit()]
        for size in sizes:
            for fmt in ("JPEG", "WEBP"):
                self._thumbnail_path(ref, path, size, fmt).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def _contained_path(self, ref: str) -> Path:
        _check_ref_syntax(ref)
        # resolve() follows symlinks, so a link inside the store pointing out is caught too
        path = (self.root / ref).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidMediaRefError(f"media reference leaves the store: {ref!r}")
        return path

    def _thumbnail_path(self, ref: str, source: Path, size: int, fmt: ThumbnailFormat) -> Path:
        # Keyed by the file's identity and mtime as well as its ref, so a replaced file
        # (possible for refs that are not content hashes) never serves a stale thumbnail.
        stat = source.stat()
        key = hashlib.sha256(f"{ref}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        return self.root / "thumbs" / str(size) / key[:2] / f"{key}.{fmt.lower()}"

    # -- media by reference ---------------------------------------------------------------
    @staticmethod
    def reference(location: str | os.PathLike[str]) -> str:
        """The reference stored for media left where they are: a URL as given, or a
        file's absolute, normalised path (symlinks are kept; `locate` resolves them)."""
        if isinstance(location, str) and is_remote_reference(location):
            if len(location) > _MAX_LOCATION_LENGTH or "\0" in location:
                raise InvalidInputError(f"invalid media location: {location[:80]!r}")
            return location
        path = os.path.abspath(os.fspath(location))
        if "\0" in path or len(path) > _MAX_LOCATION_LENGTH:
            raise InvalidInputError(f"invalid media location: {path[:80]!r}")
        return path

    def locate(self, ref: str) -> Path:
        """The local file behind any reference: a stored copy (`resolve`) or a referenced
        file inside the reference roots. MediaNotFoundError otherwise, including for
        URLs (never fetched here) and for paths that lead outside every root."""
        if not is_reference(ref):
            return self.resolve(ref)
        if is_remote_reference(ref):
            raise MediaNotFoundError(f"remote media are not served here: {ref[:200]!r}")
        return self._referenced_file(ref)

    def _referenced_file(self, ref: str) -> Path:
        if "\0" in ref or len(ref) > _MAX_LOCATION_LENGTH:
            raise InvalidMediaRefError("invalid media reference")
        # resolve() follows every symlink and removes "..", so containment is decided on
        # the real path: a link inside a root that points out of it is refused.
        try:
            real = Path(ref).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise MediaNotFoundError("no media at that reference") from None
        if not any(real.is_relative_to(root) for root in self.reference_roots):
            # a subclass of MediaNotFoundError: the API answers 404, as for an absent file
            raise InvalidMediaRefError("media reference is outside the media roots")
        if not real.is_file():
            raise MediaNotFoundError("no media at that reference")
        return real


def is_reference(ref: str) -> bool:
    """True for media added by reference (an absolute path or a URL), False for the
    store's own content references. Whatever cleans up the store must skip these."""
    return ref.startswith("/") or is_remote_reference(ref)


def is_remote_reference(ref: str) -> bool:
    """A URL (http, https, s3, gs, ...): stored and handed to clients. Only ingest fetches
    one (search/remote.py, to embed it); the store never serves or fetches it."""
    scheme = urlsplit(ref).scheme if "://" in ref else ""
    return len(scheme) > 1 and scheme.isascii() and scheme.replace("+", "").isalnum()


def touch(path: Path) -> bool:
    """Mark an existing file as just used; False if there is none.

    Media garbage collection spares files touched within its grace period, so a writer
    that re-uses stored bytes must touch them (see search/lifecycle.py)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:  # read-only media (a serving replica): recency cannot be recorded
        pass
    return path.is_file()


def _check_ref_syntax(ref: str) -> None:
    """Refuse references that are not plain relative POSIX paths, before touching disk."""
    if not isinstance(ref, str) or not ref or len(ref) > _MAX_REF_LENGTH:
        raise InvalidMediaRefError(f"invalid media reference: {ref!r}")
    if "\0" in ref or "\\" in ref or ref.startswith("/"):
        raise InvalidMediaRefError(f"invalid media reference: {ref!r}")
    # Components starting with "." cover "..", ".", hidden files and our own temp files.
    if any(not part or part.startswith(".") for part in ref.split("/")):
        raise InvalidMediaRefError(f"invalid media reference: {ref!r}")


def _extension(suffix: str) -> str:
    extension = suffix.lower().removeprefix(".")
    if not _SUFFIX.fullmatch(extension):
        raise InvalidInputError(f"invalid media suffix {suffix!r}")
    return extension


def _content_ref(digest: str, extension: str) -> str:
    return f"{digest[:2]}/{digest[2:4]}/{digest}.{extension}"


def _render_thumbnail(source: Path, size: int, fmt: ThumbnailFormat) -> bytes:
    image = decode_image(source, min_side=size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format=fmt, quality=85)
    return out.getvalue()


@contextmanager
def _temp_file(directory: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A temp file in `directory` (same filesystem as its target, so rename is atomic),
    removed on exit unless it was renamed away."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    temp_path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            os.chmod(temp_path, 0o644)  # mkstemp's 0600 would hide media from a web server
            yield temp_path, out
    finally:
        temp_path.unlink(missing_ok=True)


def _atomic_write(target: Path, data: bytes) -> None:
    """Readers see either no file or the whole file, never a partial one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temp_file(target.parent) as (temp_path, out):
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
        os.replace(temp_path, target)
