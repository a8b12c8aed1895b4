"""The durable float16 record of every embedding of one collection under one model.

Indexes are rebuilt and re-ranked from here, never by re-running the model. The
store is a directory of append-only, sequence-numbered operation files:

    {seq:08d}.put.npz                                ids + vectors written, and ids
                                                     removed first: one file, one fsync
    {seq:08d}.add.vec.npy + {seq:08d}.add.ids.npy   an append (older format, still read)
    {seq:08d}.del.npy                                a deletion
    {seq:08d}.snap.vec.npy + {seq:08d}.snap.ids.npy a compaction: all live rows at seq-1
    store.json                                       {"dim": ..., "dtype": "float16"}

Every file is written under a hidden temp name, fsynced, then renamed into place,
so a crash never leaves a half file under a real name. State is the replay of the
committed files from the newest snapshot on; older files are dead and only wait
for removal, which is why a compaction killed midway loses nothing.

One writer and any number of reader threads may share an instance; other processes
see the writer's changes after `refresh()`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from search.errors import (
    CorruptIndexError,
    InvalidInputError,
    ManifestMismatchError,
    StorageError,
    StoreHistoryCompactedError,
)

COMMIT_RE = re.compile(r"^(\d{8})\.(?:(add|snap)\.ids\.npy|(del)\.npy|(put)\.npz)$")
_SEQ_RE = re.compile(r"^(\d{8})\.")
_TEMP_PREFIX = ".tmp-"
_SCAN_RETRIES = 5  # a concurrent compaction may unlink files between listdir and load


@dataclass(frozen=True)
class Op:
    """One committed change, as replayed onto an index saved at an older seq."""

    seq: int
    kind: Literal["add", "del"]
    ids: np.ndarray  # int64 [n]
    vectors: np.ndarray | None  # float32 [n, dim] for "add"; None for "del"


@dataclass(frozen=True)
class _Shard:
    seq: int
    kind: str  # "put" | "add" | "del" | "snap"
    ids: np.ndarray  # int64 [n], in memory
    vectors: np.ndarray | None  # float16 [n, dim], memory-mapped (in memory for "put")
    removed: np.ndarray | None = None  # int64 [r]: ids a "put" deletes before adding


@dataclass(frozen=True)
class _Lookup:
    """Where each live id's newest row is; arrays aligned, sorted by id."""

    ids: np.ndarray  # int64 [m]
    shard: np.ndarray  # int32 [m], position in the view's shards
    row: np.ndarray  # int64 [m], row within that shard


@dataclass(frozen=True)
class _View:
    shards: tuple[_Shard, ...]
    lookup: _Lookup


@dataclass(frozen=True)
class CompactionPolicy:
    """When the log is worth rewriting: many operation files, or mostly dead rows.

    Bounds the store to at most 2 * max_ops + 3 files; a compaction rewrites the live
    rows, so the ratio keeps its cost proportional to the rows changed since the last."""

    max_ops: int = 256  # operation files after the snapshot (a file listing per refresh)
    min_ops: int = 16  # below this, dead rows alone never trigger one
    dead_ratio: float = 0.5  # dead rows (superseded or deleted) / rows stored

    def due(self, store: EmbeddingStore) -> bool:
        ops = store.ops_since_snapshot
        if ops >= self.max_ops:
            return True
        if ops < self.min_ops:
            return False
        stored = store.stored_rows
        return stored > 0 and (stored - store.count) / stored >= self.dead_ratio


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (POSIX needs the directory itself synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A hidden sibling name: scanners skip it, and it is on the same filesystem."""
    return path.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync, rename: readers see the old file or the whole new one."""
    tmp = temp_path_for(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = temp_path_for(path)
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
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


def _guarded_save_npy(path: Path, array: np.ndarray) -> None:
    try:
        _atomic_save_npy(path, array)
    except OSError as exc:
        _remove_temp_files(path.parent, path.name)
        raise storage_error(path, exc) from exc


def _remove_temp_files(root: Path, suffix: str = "") -> None:
    for name in os.listdir(root):
        if name.startswith(_TEMP_PREFIX) and name.endswith(suffix):
            (root / name).unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def as_ids(ids: np.ndarray | list[int]) -> np.ndarray:
    """Validate ids into a contiguous int64 [n] array."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"ids must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def float32_rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`vectors[rows]` (float16) as float32, bit for bit what numpy gives.

    torch converts about 20x faster (numpy has no SIMD path for float16 here: 3 ms
    against 0.1 ms for 3,000 512-d rows, which a deep fused query reads per round), and
    on the calling thread only: a second intra-op thread costs more than it saves on
    a copy this short, and far more on a busy machine."""
    import torch  # the engine has it loaded already; the store module stays light

    half = np.ascontiguousarray(vectors[rows])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.from_numpy(half).float().numpy()
    finally:
        torch.set_num_threads(before)


def _events(shards: tuple[_Shard, ...]) -> Iterator[tuple[np.ndarray, int, np.ndarray, bool]]:
    """(ids, shard position, rows, is a deletion) in replay order."""
    for i, s in enumerate(shards):
        if s.removed is not None and len(s.removed):
            yield s.removed, i, np.full(len(s.removed), -1, np.int64), True
        yield s.ids, i, np.arange(len(s.ids), dtype=np.int64), s.kind == "del"


def _build_lookup(shards: tuple[_Shard, ...]) -> _Lookup:
    """Replay all shards at once: per id, the last event wins; drop ids whose is a del."""
    events = list(_events(shards))
    if not events:
        empty = np.empty(0, np.int64)
        return _Lookup(empty, np.empty(0, np.int32), empty)
    ids = np.concatenate([e[0] for e in events])
    shard = np.concatenate([np.full(len(e[0]), e[1], np.int32) for e in events])
    row = np.concatenate([e[2] for e in events])
    is_del = np.concatenate([np.full(len(e[0]), e[3]) for e in events])
    # stable sort keeps seq order among equal ids, so the last of each run is the newest
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_ids[1:] != sorted_ids[:-1]
    keep = order[last]
    keep = keep[~is_del[keep]]
    return _Lookup(ids[keep], shard[keep], row[keep])


def _apply_shard(lookup: _Lookup, shard: _Shard, position: int) -> _Lookup:
    """The lookup after one more shard: its ids drop their old rows; an add re-adds them."""
    gone = shard.ids if shard.removed is None else np.concatenate([shard.removed, shard.ids])
    keep = np.ones(len(lookup.ids), dtype=bool)
    if len(lookup.ids) and len(gone):  # lookup.ids is sorted: a binary search per id
        pos = np.minimum(np.searchsorted(lookup.ids, gone), len(lookup.ids) - 1)
        keep[pos[lookup.ids[pos] == gone]] = False
    ids, where, row = lookup.ids[keep], lookup.shard[keep], lookup.row[keep]
    if shard.kind == "del":
        return _Lookup(ids, where, row)
    order = np.argsort(shard.ids, kind="stable")
    new_ids = shard.ids[order]
    at = np.searchsorted(ids, new_ids)
    return _Lookup(np.insert(ids, at, new_ids),
                   np.insert(where, at, np.full(len(new_ids), position, np.int32)),
                   np.insert(row, at, order.astype(np.int64)))


class EmbeddingStore:
    """Append-only float16 embeddings with get-by-id, live iteration and replay."""

    def __init__(self, path: Path, dim: int, shards: tuple[_Shard, ...]) -> None:
        self.path = path
        self.dim = dim
        self._shards = shards
        self._lookup: _Lookup | None = None
        self._lock = threading.Lock()  # guards _shards/_lookup swaps and lookup rebuilds
        self._write_lock = threading.Lock()  # one writer at a time within the process

    @classmethod
    def open(cls, path: str | os.PathLike[str], dim: int) -> EmbeddingStore:
        """Open or create the store at `path`; refuse one written for another dim."""
        if not isinstance(dim, int | np.integer) or dim <= 0:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        _check_or_write_meta(root, int(dim))
        return cls(root, int(dim), _scan(root, int(dim)))

    # -- reading -----------------------------------------------------------------

    @property
    def latest_seq(self) -> int:
        """Seq of the newest committed operation (0 for an empty store)."""
        shards = self._shards
        return shards[-1].seq if shards else 0

    @property
    def count(self) -> int:
        return len(self._view().lookup.ids)

    def get(self, ids: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of `ids` as float32 [n, dim] (zeros where missing) and a found mask [n]."""
        wanted = as_ids(ids)
        view = self._view()
        out = np.zeros((len(wanted), self.dim), dtype=np.float32)
        live = view.lookup.ids
        if len(live) == 0 or len(wanted) == 0:
            return out, np.zeros(len(wanted), dtype=bool)
        pos = np.minimum(np.searchsorted(live, wanted), len(live) - 1)
        found = live[pos] == wanted
        shard, row = view.lookup.shard[pos], view.lookup.row[pos]
        # one fancy read per shard touched, never one per id
        for s in np.unique(shard[found]):
            sel = np.flatnonzero(found & (shard == s))
            vectors = view.shards[s].vectors
            assert vectors is not None  # lookup only points into add/snap shards
            out[sel] = float32_rows(vectors, row[sel])
        return out, found

    def live_ids(self) -> np.ndarray:
        """Ids of every live embedding, int64 [count], sorted."""
        return self._view().lookup.ids.copy()

    def live(self, batch_size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All live embeddings as (int64 ids [b], float32 vectors [b, dim]) batches."""
        for shard, rows in self._live_rows(self._view(), batch_size):
            assert shard.vectors is not None
            yield shard.ids[rows], np.asarray(shard.vectors[rows], dtype=np.float32)

    def ops_since(self, seq: int) -> Iterator[Op]:
        """Committed operations after `seq`, oldest first, to replay onto an older index."""
        shards = self._shards
        if shards and shards[0].kind == "snap" and seq < shards[0].seq - 1:
            raise StoreHistoryCompactedError(
                f"operations after seq {seq} were compacted into seq {shards[0].seq}; "
                "rebuild the index from live()"
            )
        for shard in shards:
            if shard.seq <= seq or shard.kind == "snap":
                continue  # a snapshot restates seq-1's state: nothing to replay
            if shard.removed is not None and len(shard.removed):
                yield Op(shard.seq, "del", shard.removed.copy(), None)
            if shard.kind == "del":
                yield Op(shard.seq, "del", shard.ids.copy(), None)
            elif len(shard.ids):
                assert shard.vectors is not None
                yield Op(shard.seq, "add", shard.ids.copy(),
                         np.asarray(shard.vectors, np.float32))

    def refresh(self) -> None:
        """Catch up with the directory (for a reader process; a writer's view is current).

        Loads only operations newer than the ones already held: re-reading every file
        on each refresh made each write cost O(files in the log). A newer snapshot (a
        compaction by another process) means a full re-read from that snapshot."""
        shards = self._shards
        try:
            fresh = _scan_newer(self.path, self.dim, shards)
        except FileNotFoundError:  # compacted underneath us between listing and loading
            fresh = None
        if fresh is None:
            self._publish(_scan(self.path, self.dim))
        elif fresh:
            self._publish(shards + fresh)

    @property
    def ops_since_snapshot(self) -> int:
        """Operations (add/del files) after the newest snapshot: what compaction removes."""
        return sum(1 for s in self._shards if s.kind != "snap")

    @property
    def stored_rows(self) -> int:
        """Rows held on disk, live or dead (superseded or deleted, until compaction)."""
        return sum(len(s.ids) for s in self._shards if s.kind != "del")

    # -- writing -----------------------------------------------------------------

    def append(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> int:
        """Store vectors (cast to float16) under ids; a re-used id supersedes its old row."""
        return self.replace([], ids, vectors)

    def replace(self, removed: np.ndarray | list[int], ids: np.ndarray | list[int],
                vectors: np.ndarray) -> int:
        """Forget `removed`, then store `vectors` under `ids`, as one operation: one file
        and one fsync (plus the directory's), where a delete and an append took five."""
        gone, ids_arr = as_ids(removed), as_ids(ids)
        vec = self._as_vectors(vectors, len(ids_arr))
        if len(np.unique(ids_arr)) != len(ids_arr):
            raise InvalidInputError("ids of one append must be unique")
        if len(ids_arr) == 0 and len(gone) == 0:
            return self.latest_seq
        with np.errstate(over="ignore"):  # overflow is checked (and refused) right below
            half = vec.astype(np.float16)
        if not np.isfinite(half).all():  # |x| > 65504: not an embedding (they are unit norm)
            raise InvalidInputError("vectors overflow float16")
        with self._write_lock:
            seq = self.latest_seq + 1
            _atomic_save_npz(self.path / f"{seq:08d}.put.npz",
                             ids=ids_arr, vectors=half, removed=gone)
            fsync_dir(self.path)
            self._publish(self._shards + (_Shard(seq, "put", ids_arr, half, gone),))
            return seq

    def delete(self, ids: np.ndarray | list[int]) -> int:
        """Forget ids (unknown ids are ignored); returns the operation's seq."""
        ids_arr = as_ids(ids)
        if len(ids_arr) == 0:
            return self.latest_seq
        with self._write_lock:
            seq = self.latest_seq + 1
            _guarded_save_npy(self.path / f"{seq:08d}.del.npy", ids_arr)
            fsync_dir(self.path)
            self._publish(self._shards + (_Shard(seq, "del", ids_arr, None),))
            return seq

    def compact(self) -> int:
        """Rewrite live rows into one snapshot shard, then remove the files it replaces."""
        with self._write_lock:
            view = self._view()
            seq = self.latest_seq + 1
            vec_path = self.path / f"{seq:08d}.snap.vec.npy"
            try:
                ids = self._write_snapshot_vectors(view, vec_path)
            except OSError as exc:  # e.g. a full disk: the log stays as it was
                _remove_temp_files(self.path)
                vec_path.unlink(missing_ok=True)
                raise storage_error(vec_path, exc) from exc
            _guarded_save_npy(self.path / f"{seq:08d}.snap.ids.npy", ids)  # the commit
            fsync_dir(self.path)
            self._publish((_Shard(seq, "snap", ids, _map(vec_path)),))
            _remove_dead_files(self.path, seq)
            return seq

    # -- internals ---------------------------------------------------------------

    def _view(self) -> _View:
        with self._lock:
            if self._lookup is None:
                self._lookup = _build_lookup(self._shards)
            return _View(self._shards, self._lookup)

    def _publish(self, shards: tuple[_Shard, ...]) -> None:
        """Swap in a new shard list; a lookup built for a prefix of it is updated in
        place of a full rebuild (a write would otherwise cost O(live rows · log))."""
        with self._lock:
            old, lookup = self._shards, self._lookup
            extends = len(shards) >= len(old) > 0 and all(
                a is b for a, b in zip(old, shards, strict=False))
            if lookup is not None and extends:
                for position in range(len(old), len(shards)):
                    lookup = _apply_shard(lookup, shards[position], position)
            else:
                lookup = None
            self._shards, self._lookup = shards, lookup

    def _as_vectors(self, vectors: np.ndarray, n: int) -> np.ndarray:
        vec = np.asarray(vectors)
        if vec.ndim != 2 or vec.shape != (n, self.dim):
            raise InvalidInputError(f"vectors must be [{n}, {self.dim}], got {list(vec.shape)}")
        if not np.issubdtype(vec.dtype, np.floating) or not np.isfinite(vec).all():
            raise InvalidInputError("vectors must be finite floats")
        return vec

    @staticmethod
    def _live_rows(view: _View, batch_size: int) -> Iterator[tuple[_Shard, np.ndarray]]:
        """(shard, sorted rows) batches: sequential reads of each memory-mapped shard."""
        lk = view.lookup
        order = np.lexsort((lk.row, lk.shard))
        shard_sorted = lk.shard[order]
        for s, shard in enumerate(view.shards):
            lo, hi = np.searchsorted(shard_sorted, [s, s + 1])
            rows = lk.row[order[lo:hi]]
            for start in range(0, len(rows), batch_size):
                yield shard, rows[start : start + batch_size]

    def _write_snapshot_vectors(self, view: _View, path: Path) -> np.ndarray:
        """Stream live float16 rows into `path` (never all in RAM); return their ids."""
        tmp = temp_path_for(path)
        shape = (len(view.lookup.ids), self.dim)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        ids, at = [], 0
        for shard, rows in self._live_rows(view, 65536):
            assert shard.vectors is not None
            out[at : at + len(rows)] = shard.vectors[rows]
            ids.append(shard.ids[rows])
            at += len(rows)
        out.flush()
        del out
        _fsync_file(tmp)
        os.replace(tmp, path)
        return np.concatenate(ids) if ids else np.empty(0, np.int64)


def _map(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def _check_or_write_meta(root: Path, dim: int) -> None:
    meta_path = root / "store.json"
    if meta_path.exists():
        found = json.loads(meta_path.read_text())
        if found.get("dim") != dim:
            raise ManifestMismatchError(
                f"embedding store {root} holds dim={found.get('dim')} vectors, expected dim={dim}"
            )
        return
    meta = {"dim": dim, "dtype": "float16", "format": 1}
    atomic_write_bytes(meta_path, json.dumps(meta).encode())
    fsync_dir(root)


def _scan(root: Path, dim: int) -> tuple[_Shard, ...]:
    for attempt in range(_SCAN_RETRIES):
        try:
            return _scan_once(root, dim)
        except FileNotFoundError:
            if attempt == _SCAN_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _scan_once(root: Path, dim: int) -> tuple[_Shard, ...]:
    commits: dict[int, str] = {}
    for name in os.listdir(root):
        match = COMMIT_RE.match(name)
        if match:
            commits[int(match[1])] = match[2] or match[3] or match[4]
    # files older than the newest snapshot are dead (a compaction may not have removed them)
    base = max((seq for seq, kind in commits.items() if kind == "snap"), default=0)
    return tuple(
        _load_shard(root, seq, commits[seq], dim) for seq in sorted(commits) if seq >= base
    )


def _scan_newer(root: Path, dim: int, held: tuple[_Shard, ...]) -> tuple[_Shard, ...] | None:
    """Shards committed after `held`, or None when a full re-read is needed (a newer
    snapshot, or a log that went backwards: the store was deleted and created again)."""
    latest = held[-1].seq if held else 0
    commits: dict[int, str] = {}
    for name in os.listdir(root):
        match = COMMIT_RE.match(name)
        if match and int(match[1]) > latest:
            commits[int(match[1])] = match[2] or match[3] or match[4]
    if any(kind == "snap" for kind in commits.values()):
        return None
    if held and not (root / _commit_name(held[-1])).exists():
        return None
    return tuple(_load_shard(root, seq, commits[seq], dim) for seq in sorted(commits))


def _commit_name(shard: _Shard) -> str:
    if shard.kind in ("del", "put"):
        return f"{shard.seq:08d}.{shard.kind}.{'npy' if shard.kind == 'del' else 'npz'}"
    return f"{shard.seq:08d}.{shard.kind}.ids.npy"


def _load_shard(root: Path, seq: int, kind: str, dim: int) -> _Shard:
    if kind == "put":
        with np.load(root / f"{seq:08d}.put.npz") as npz:
            ids, vectors, removed = npz["ids"], npz["vectors"], npz["removed"]
        if vectors.shape != (len(ids), dim) or vectors.dtype != np.float16:
            raise CorruptIndexError(f"operation {seq} of {root}: vectors {vectors.dtype} "
                                    f"{vectors.shape} do not match {len(ids)} ids of dim {dim}")
        return _Shard(seq, kind, ids, vectors, removed)
    if kind == "del":
        return _Shard(seq, kind, np.load(root / f"{seq:08d}.del.npy"), None)
    ids = np.load(root / f"{seq:08d}.{kind}.ids.npy")
    vectors = _map(root / f"{seq:08d}.{kind}.vec.npy")
    if vectors.shape != (len(ids), dim) or vectors.dtype != np.float16:
        raise CorruptIndexError(
            f"shard {seq} of {root}: vectors {vectors.dtype} {vectors.shape} "
            f"do not match {len(ids)} ids of dim {dim}"
        )
    return _Shard(seq, kind, ids, vectors)


def _remove_dead_files(root: Path, snapshot_seq: int) -> None:
    """Remove all but the snapshot: replaced files, orphans of crashed writes, temp files.

    Safe only because the caller is the one writer: nothing newer can be in flight.
    """
    keep = {f"{snapshot_seq:08d}.snap.ids.npy", f"{snapshot_seq:08d}.snap.vec.npy"}
    for name in os.listdir(root):
        if name not in keep and (name.startswith(_TEMP_PREFIX) or _SEQ_RE.match(name)):
            (root / name).unlink(missing_ok=True)
    fsync_dir(root)
