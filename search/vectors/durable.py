"""Durable file writes: a file appears whole under its real name, or not at all.

Write under a hidden temp name in the same directory, fsync, rename, then fsync the
directory. Shared by the embedding log (search/vectors/oplog.py) and index versions."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from search.errors import StorageError

TEMP_PREFIX = ".tmp-"  # scanners skip these names; a crash may leave one behind


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (POSIX needs the directory itself synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A hidden sibling name: scanners skip it, and it is on the same filesystem."""
    return path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync, rename: readers see the old file or the whole new one."""
    tmp = temp_path_for(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = temp_path_for(path)
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, exc) from exc


def storage_error(path: Path, exc: OSError) -> StorageError:
    """A typed error naming the file and the reason (ENOSPC, EROFS, EDQUOT, ...)."""
    return StorageError(exc.errno, f"cannot write {path}: {exc.strerror or exc}")


def guarded_save_npy(path: Path, array: np.ndarray) -> None:
    try:
        atomic_save_npy(path, array)
    except OSError as exc:
        remove_temp_files(path.parent, path.name)
        raise storage_error(path, exc) from exc


def remove_temp_files(root: Path, suffix: str = "") -> None:
    """Remove what a failed write left under a temp name."""
    for name in os.listdir(root):
        if name.startswith(TEMP_PREFIX) and name.endswith(suffix):
            (root / name).unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
