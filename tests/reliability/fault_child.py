"""Child processes that tests/reliability/test_faults.py kills with SIGKILL.

    python -m tests.reliability.fault_child store DIR N   # N deterministic log operations
    python -m tests.reliability.fault_child gc MEDIA REFS # media collection, refs as JSON

Operation i of `store` depends only on i, so a run resumed after a kill continues the
same sequence; each finished operation is appended to DIR/progress."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DIM = 16


def vector(i: int) -> np.ndarray:
    x = np.random.default_rng(i).normal(size=(1, DIM)).astype(np.float32)
    return x / np.linalg.norm(x)


def operation(i: int) -> tuple[str, list[int], list[int]]:
    """(kind, removed ids, added ids) of operation i."""
    if i % 10 == 9:
        return "compact", [], []
    if i % 3 == 2:
        return "delete", [i - 5, i - 4], []
    return "replace", [i - 7] if i >= 7 else [], [i]


def expected_live(done: int) -> dict[int, np.ndarray]:
    live: dict[int, np.ndarray] = {}
    for i in range(done):
        _, removed, added = operation(i)
        for r in removed:
            live.pop(r, None)
        for a in added:
            live[a] = vector(a)
    return live


def run_store(root: Path, total: int) -> None:
    from search.vectors.store import EmbeddingStore

    progress = root / "progress"
    store = EmbeddingStore.open(root / "emb", DIM)
    start = len(progress.read_text().split()) if progress.exists() else 0
    print("ready", flush=True)
    with progress.open("a") as log:
        for i in range(start, total):
            kind, removed, added = operation(i)
            if kind == "compact":
                store.compact()
            elif kind == "delete":
                store.delete(removed)
            else:
                store.replace(removed, added, np.concatenate([vector(a) for a in added]))
            log.write(f"{i}\n")
            log.flush()


def run_gc(media_root: Path, refs_file: Path) -> None:
    import search.lifecycle as lifecycle
    from search.media import MediaStore

    referenced = set(json.loads(refs_file.read_text()))
    lifecycle.referenced_media = lambda _catalog: referenced
    media = MediaStore(media_root)
    print("ready", flush=True)
    lifecycle.remove_stale_tombstones(media, min_age_s=0)
    lifecycle.collect_media(object(), media, grace_s=0)


if __name__ == "__main__":
    if sys.argv[1] == "store":
        run_store(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        run_gc(Path(sys.argv[2]), Path(sys.argv[3]))
