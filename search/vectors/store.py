"""The durable float16 record of every embedding of one collection under one model.

Indexes are rebuilt and re-ranked from here, never by re-running the model. The
store is a log of append-only, sequence-numbered operation files (their format is in
search/vectors/oplog.py; each is written whole or not at all, search/vectors/durable.py).
State is the replay of the committed files from the newest snapshot on
(search/vectors/lookup.py); older files are dead and only wait for removal, which is
why a compaction killed midway loses nothing.

One writer and any number of reader threads may share an instance; other processes
see the writer's changes after `refresh()`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from search.errors import InvalidInputError, StoreHistoryCompactedError
from search.sorted_ids import locate
from search.vectors.durable import (
    atomic_save_npz,
    fsync_dir,
    fsync_file,
    guarded_save_npy,
    remove_temp_files,
    storage_error,
    temp_path_for,
)
from search.vectors.lookup import Lookup, apply_shard, build_lookup
from search.vectors.oplog import (
    COMMIT_RE,
    Shard,
    check_or_write_meta,
    map_vectors,
    remove_dead_files,
    scan,
    scan_newer,
)

__all__ = ["COMMIT_RE", "CompactionPolicy", "EmbeddingStore", "Op", "as_ids"]


@dataclass(frozen=True)
class Op:
    """One committed change, as replayed onto an index saved at an older seq."""

    seq: int
    kind: Literal["add", "del"]
    ids: np.ndarray  # int64 [n]
    vectors: np.ndarray | None  # float32 [n, dim] for "add"; None for "del"


@dataclass(frozen=True)
class _View:
    shards: tuple[Shard, ...]
    lookup: Lookup


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


class EmbeddingStore:
    """Append-only float16 embeddings with get-by-id, live iteration and replay."""

    def __init__(self, path: Path, dim: int, shards: tuple[Shard, ...]) -> None:
        self.path = path
        self.dim = dim
        self._shards = shards
        self._lookup: Lookup | None = None
        self._lock = threading.Lock()  # guards _shards/_lookup swaps and lookup rebuilds
        self._write_lock = threading.Lock()  # one writer at a time within the process

    @classmethod
    def open(cls, path: str | os.PathLike[str], dim: int) -> EmbeddingStore:
        """Open or create the store at `path`; refuse one written for another dim."""
        if not isinstance(dim, int | np.integer) or dim <= 0:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        check_or_write_meta(root, int(dim))
        return cls(root, int(dim), scan(root, int(dim)))

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
        pos, found = locate(live, wanted)
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
            fresh = scan_newer(self.path, self.dim, shards)
        except FileNotFoundError:  # compacted underneath us between listing and loading
            fresh = None
        if fresh is None:
            self._publish(scan(self.path, self.dim))
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
            atomic_save_npz(self.path / f"{seq:08d}.put.npz",
                             ids=ids_arr, vectors=half, removed=gone)
            fsync_dir(self.path)
            self._publish(self._shards + (Shard(seq, "put", ids_arr, half, gone),))
            return seq

    def delete(self, ids: np.ndarray | list[int]) -> int:
        """Forget ids (unknown ids are ignored); returns the operation's seq."""
        ids_arr = as_ids(ids)
        if len(ids_arr) == 0:
            return self.latest_seq
        with self._write_lock:
            seq = self.latest_seq + 1
            guarded_save_npy(self.path / f"{seq:08d}.del.npy", ids_arr)
            fsync_dir(self.path)
            self._publish(self._shards + (Shard(seq, "del", ids_arr, None),))
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
                remove_temp_files(self.path)
                vec_path.unlink(missing_ok=True)
                raise storage_error(vec_path, exc) from exc
            guarded_save_npy(self.path / f"{seq:08d}.snap.ids.npy", ids)  # the commit
            fsync_dir(self.path)
            self._publish((Shard(seq, "snap", ids, map_vectors(vec_path)),))
            remove_dead_files(self.path, seq)
            return seq

    # -- internals ---------------------------------------------------------------

    def _view(self) -> _View:
        with self._lock:
            if self._lookup is None:
                self._lookup = build_lookup(self._shards)
            return _View(self._shards, self._lookup)

    def _publish(self, shards: tuple[Shard, ...]) -> None:
        """Swap in a new shard list; a lookup built for a prefix of it is updated in
        place of a full rebuild (a write would otherwise cost O(live rows · log))."""
        with self._lock:
            old, lookup = self._shards, self._lookup
            extends = len(shards) >= len(old) > 0 and all(
                a is b for a, b in zip(old, shards, strict=False))
            if lookup is not None and extends:
                for position in range(len(old), len(shards)):
                    lookup = apply_shard(lookup, shards[position], position)
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
    def _live_rows(view: _View, batch_size: int) -> Iterator[tuple[Shard, np.ndarray]]:
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
        fsync_file(tmp)
        os.replace(tmp, path)
        return np.concatenate(ids) if ids else np.empty(0, np.int64)


