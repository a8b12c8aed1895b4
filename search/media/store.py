"""The content-addressed media store.

`MediaStore` keeps media files under one root, named by the SHA-256 of their bytes, and
resolves references so that nothing outside the root can ever be read or deleted. Media
added by reference stay where they are: the reference is the source's absolute path or
URL, and a referenced file is served only from inside the configured reference roots.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

from PIL import Image

from search.errors import (
    InvalidInputError,
    InvalidMediaRefError,
    MediaNotFoundError,
)
from search.media.decode import MiB, decode_image

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
