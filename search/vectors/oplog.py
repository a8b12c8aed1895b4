"""The embedding log's files: names, formats, loading and removal.

A store directory holds append-only, sequence-numbered operation files:

    {seq:08d}.put.npz                                ids + vectors written, and ids
                                                     removed first: one file, one fsync
    {seq:08d}.add.vec.npy + {seq:08d}.add.ids.npy   an append (older format, still read)
    {seq:08d}.del.npy                                a deletion
    {seq:08d}.snap.vec.npy + {seq:08d}.snap.ids.npy a compaction: all live rows at seq-1
    store.json                                       {"dim": ..., "dtype": "float16"}

Each committed file is one `Shard`. Files older than the newest snapshot are dead: a
scan ignores them, and `remove_dead_files` deletes them after a compaction.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.errors import CorruptIndexError, ManifestMismatchError
from search.vectors.durable import TEMP_PREFIX, atomic_write_bytes, fsync_dir

COMMIT_RE = re.compile(r"^(\d{8})\.(?:(add|snap)\.ids\.npy|(del)\.npy|(put)\.npz)$")
_SEQ_RE = re.compile(r"^(\d{8})\.")
_SCAN_RETRIES = 5  # a concurrent compaction may unlink files between listdir and load



@dataclass(frozen=True)
class Shard:
    """One committed operation file, loaded."""

    seq: int
    kind: str  # "put" | "add" | "del" | "snap"
    ids: np.ndarray  # int64 [n], in memory
    vectors: np.ndarray | None  # float16 [n, dim], memory-mapped (in memory for "put")
    removed: np.ndarray | None = None  # int64 [r]: ids a "put" deletes before adding



def map_vectors(path: Path) -> np.ndarray:
    """A float16 [n, dim] shard file, memory-mapped read-only."""
    return np.load(path, mmap_mode="r")


def check_or_write_meta(root: Path, dim: int) -> None:
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


def scan(root: Path, dim: int) -> tuple[Shard, ...]:
    """The live part of the log: the newest snapshot and every operation after it."""
    for attempt in range(_SCAN_RETRIES):
        try:
            return _scan_once(root, dim)
        except FileNotFoundError:
            if attempt == _SCAN_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _scan_once(root: Path, dim: int) -> tuple[Shard, ...]:
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


def scan_newer(root: Path, dim: int, held: tuple[Shard, ...]) -> tuple[Shard, ...] | None:
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


def _commit_name(shard: Shard) -> str:
    if shard.kind in ("del", "put"):
        return f"{shard.seq:08d}.{shard.kind}.{'npy' if shard.kind == 'del' else 'npz'}"
    return f"{shard.seq:08d}.{shard.kind}.ids.npy"


def _load_shard(root: Path, seq: int, kind: str, dim: int) -> Shard:
    if kind == "put":
        with np.load(root / f"{seq:08d}.put.npz") as npz:
            ids, vectors, removed = npz["ids"], npz["vectors"], npz["removed"]
        if vectors.shape != (len(ids), dim) or vectors.dtype != np.float16:
            raise CorruptIndexError(f"operation {seq} of {root}: vectors {vectors.dtype} "
                                    f"{vectors.shape} do not match {len(ids)} ids of dim {dim}")
        return Shard(seq, kind, ids, vectors, removed)
    if kind == "del":
        return Shard(seq, kind, np.load(root / f"{seq:08d}.del.npy"), None)
    ids = np.load(root / f"{seq:08d}.{kind}.ids.npy")
    vectors = map_vectors(root / f"{seq:08d}.{kind}.vec.npy")
    if vectors.shape != (len(ids), dim) or vectors.dtype != np.float16:
        raise CorruptIndexError(
            f"shard {seq} of {root}: vectors {vectors.dtype} {vectors.shape} "
            f"do not match {len(ids)} ids of dim {dim}"
        )
    return Shard(seq, kind, ids, vectors)


def remove_dead_files(root: Path, snapshot_seq: int) -> None:
    """Remove all but the snapshot: replaced files, orphans of crashed writes, temp files.

    Safe only because the caller is the one writer: nothing newer can be in flight.
    """
    keep = {f"{snapshot_seq:08d}.snap.ids.npy", f"{snapshot_seq:08d}.snap.vec.npy"}
    for name in os.listdir(root):
        if name not in keep and (name.startswith(TEMP_PREFIX) or _SEQ_RE.match(name)):
            (root / name).unlink(missing_ok=True)
    fsync_dir(root)
