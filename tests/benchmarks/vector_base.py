"""The vector benchmark's base on disk: generated in chunks, scanned in chunks.

At 10M x 256-d the float32 base is 10 GB: it is written once to a memory-mapped .npy
file in the work directory (deterministic by seed, reused by a later run with the same
shape), and exact ground truth is a chunked scan of it that merges top-k per chunk,
so neither the base nor a Flat index over it has to fit in RAM.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from tests.utils.synthetic import iter_clustered_unit_vectors

CHUNK_ROWS = 1_000_000  # 1 GB of float32 at 256-d: large products, bounded memory


def synthetic_base(workdir: Path, n: int, dim: int, seed: int) -> np.ndarray:
    """[n, dim] float32 memory-mapped rows of `clustered_unit_vectors(n, dim, seed=seed)`.

    Written to a temporary name and renamed when complete, so an existing file of the
    right name is whole and is reused (regenerating 10 GB costs minutes).
    """
    path = workdir / f"base-{n}x{dim}-seed{seed}.npy"
    if not path.exists():
        tmp = path.with_suffix(".partial.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        start = 0
        for block in iter_clustered_unit_vectors(n, dim, seed=seed):
            out[start : start + len(block)] = block
            start += len(block)
        out.flush()
        del out
        os.replace(tmp, path)
    base = np.load(path, mmap_mode="r")
    if base.shape != (n, dim) or base.dtype != np.float32:
        raise ValueError(f"{path} holds {base.dtype} {base.shape}, expected float32 ({n}, {dim})")
    return base


def row_chunks(n: int, rows: int = CHUNK_ROWS) -> Iterator[slice]:
    """Consecutive slices of at most `rows` rows covering range(n)."""
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def exact_search(base: np.ndarray, queries: np.ndarray, k: int,
                 rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (scores, row numbers) by scanning `base` in chunks.

    The same answer as a Flat index over all of `base` (ties aside) with one chunk in
    memory at a time: each chunk's top-k is merged into a running heap.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    for part in row_chunks(len(base), rows):
        chunk = np.ascontiguousarray(base[part])
        scores, found = faiss.knn(q, chunk, min(k, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
        if found.shape[1] < k:  # a last chunk shorter than k: pad as faiss pads
            pad = k - found.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        heap.add_result(scores, np.where(found >= 0, found + part.start, -1))
    heap.finalize()
    return heap.D, heap.I


def timed_exact_search(base: np.ndarray, queries: np.ndarray, k: int
                       ) -> tuple[np.ndarray, float]:
    """(row numbers of the exact top-k, seconds the chunked scan took)."""
    start = time.perf_counter()
    _, rows = exact_search(base, queries, k)
    return rows, time.perf_counter() - start
