"""The 10M benchmark's chunked data path gives what the in-memory path gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.benchmarks.vector_base import exact_search, synthetic_base
from tests.utils.synthetic import clustered_unit_vectors, exact_top_k


def test_mapped_base_holds_the_in_memory_rows_and_is_reused(tmp_path: Path) -> None:
    base = synthetic_base(tmp_path, 3001, 32, seed=4)
    assert np.array_equal(np.asarray(base), clustered_unit_vectors(3001, 32, seed=4))
    path = tmp_path / "base-3001x32-seed4.npy"
    written = path.stat().st_mtime_ns
    again = synthetic_base(tmp_path, 3001, 32, seed=4)
    assert path.stat().st_mtime_ns == written and np.array_equal(again, base)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left


def test_chunked_exact_search_equals_flat_across_chunk_boundaries(tmp_path: Path) -> None:
    base = synthetic_base(tmp_path, 5000, 32, seed=1)
    queries = clustered_unit_vectors(40, 32, seed=2)
    scores, rows = exact_top_k(np.asarray(base), queries, 10)
    for chunk in (701, 5000, 7):  # uneven chunks, one chunk, chunks shorter than k
        found_scores, found = exact_search(base, queries, 10, rows=chunk)
        assert np.array_equal(found, rows)
        np.testing.assert_allclose(found_scores, scores, rtol=1e-6)


def test_chunked_exact_search_pads_when_the_base_is_shorter_than_k(tmp_path: Path) -> None:
    base = synthetic_base(tmp_path, 4, 32, seed=1)
    _, found = exact_search(base, clustered_unit_vectors(3, 32, seed=2), 10, rows=3)
    assert sorted(found[0][:4]) == [0, 1, 2, 3] and (found[:, 4:] == -1).all()
