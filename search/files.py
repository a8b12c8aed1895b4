"""Reading files named by users: regular files only, never more than a byte limit.

Image files and sidecar captions come from folders and catalogs we do not control; a
name there may be a FIFO, a socket, a device (`/dev/zero`) or a link loop. Each is refused
with a typed error before a byte is read, and no read goes past the limit + 1."""

from __future__ import annotations

import errno
import os
import stat as stat_module
from pathlib import Path

from search.errors import CorruptImageError, ImageNotFoundError, ImageTooLargeError, XmodalError

_MiB = 1024 * 1024
_CHUNK = 1 * _MiB


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file (links resolved), never more than max_bytes.

    Anything else is refused before a byte is read: FIFOs (opened non-blocking, so a
    writer-less pipe never hangs us), sockets, directories, devices (`/dev/zero` would
    otherwise be read forever) and link loops. Raises ImageNotFoundError when nothing is
    there, ImageTooLargeError over the limit and CorruptImageError for the rest."""
    path = Path(path)
    _check_regular(path, _stat(path))  # stat first: opening a device can have effects
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(path, exc) from None
    try:
        stat = os.fstat(fd)
        _check_regular(path, stat)  # the path may have been swapped since the stat
        if stat.st_size > max_bytes:
            raise ImageTooLargeError(f"file is {_mib(stat.st_size)}, limit "
                                     f"{_mib(max_bytes)}: {path}")
        return _read_at_most(fd, max_bytes + 1)  # +1: the file may have grown since fstat
    finally:
        os.close(fd)


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise _open_error(path, exc) from None


def _open_error(path: Path, exc: OSError) -> XmodalError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return ImageNotFoundError(f"no image file at {path}")
    if exc.errno == errno.ELOOP:
        return CorruptImageError(f"not a regular file (symlink loop): {path}")
    if exc.errno == errno.ENXIO:
        return CorruptImageError(f"not a regular file (socket): {path}")
    return CorruptImageError(f"cannot read {path}: {exc.strerror or exc}")


_FILE_KINDS = ((stat_module.S_ISDIR, "directory"), (stat_module.S_ISFIFO, "FIFO"),
               (stat_module.S_ISSOCK, "socket"), (stat_module.S_ISCHR, "character device"),
               (stat_module.S_ISBLK, "block device"))


def _check_regular(path: Path, stat: os.stat_result) -> None:
    if stat_module.S_ISREG(stat.st_mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(stat.st_mode)), "special file")
    raise CorruptImageError(f"not a regular file ({kind}): {path}")


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _mib(count: int) -> str:
    return f"{count / _MiB:,.1f}".removesuffix(".0") + " MiB"
