"""Inter-process write lock of a collection: one writer (indexer job, API process) at a time."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# flock is per open file description; threads of one process share this re-entrant lock
# so nested writes (save() inside a job) do not deadlock.
_local_locks: dict[Path, threading.RLock] = {}
_guard = threading.Lock()
_held: dict[Path, int] = {}


@contextmanager
def collection_write_lock(root: Path) -> Iterator[None]:
    path = Path(root).resolve() / ".write.lock"
    with _guard:
        local = _local_locks.setdefault(path, threading.RLock())
    with local:
        depth = _held.get(path, 0)
        if depth:
            _held[path] = depth + 1
            try:
                yield
            finally:
                _held[path] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _held[path] = 1
            try:
                yield
            finally:
                _held[path] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def collection_read_lock(root: Path) -> Iterator[None]:
    """Wait out a writer's batch without writing anything, for read-only replicas (their
    volume may be mounted read-only): a shared flock on the writer's lock file opened for
    reading. No lock file means no writer has ever written here. Never take it in a
    process that also writes: its own exclusive lock would block it."""
    path = Path(root).resolve() / ".write.lock"
    try:
        handle = path.open("r")
    except FileNotFoundError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
