"""VectorIndex, exact re-ranking and versioned persistence, each checked against exact search."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pytest

from search.errors import (
    CorruptIndexError,
    IndexNotTrainedError,
    InvalidInputError,
    InvalidQueryError,
    ManifestMismatchError,
    NoIndexError,
)
from search.vectors.index import (
    MIN_TRAIN_POINTS_PER_LIST,
    SearchParams,
    VectorIndex,
    apply_ops,
    choose_spec,
    default_nprobe,
    search_reranked,
    training_sample_size,
)
from search.vectors.store import EmbeddingStore
from search.vectors.versions import (
    current_version,
    list_versions,
    load_current,
    prune_versions,
    write_version,
)
from tests.utils.synthetic import clustered_unit_vectors, exact_top_k, recall_at

MODEL = dict(model="ViT-B-32", pretrained="laion2b_s34b_b79k")


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread() -> Iterator[None]:
    # 2 shared cores: OpenMP threads spinning at barriers slow faiss 5-10x under load
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@dataclass(frozen=True)
class Data:
    base: np.ndarray  # [n, dim] unit vectors
    queries: np.ndarray  # [q, dim], drawn from the same clusters
    ids: np.ndarray  # int64 [n]; not 0..n-1, so id mapping bugs show


def _data(n: int, dim: int, n_queries: int, seed: int) -> Data:
    x = clustered_unit_vectors(n + n_queries, dim, seed=seed)
    return Data(x[:n], x[n:], np.arange(n, dtype=np.int64) * 7 + 3)


def _exact(data: Data, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k ids (in data.ids space), optionally among `rows` of the base only."""
    rows = np.arange(len(data.base)) if rows is None else rows
    scores, found = exact_top_k(data.base[rows], data.queries, k)
    return scores, np.where(found >= 0, data.ids[rows][found], -1)


def _built(spec: str, data: Data) -> VectorIndex:
    index = VectorIndex.create(spec, data.base.shape[1])
    index.train(data.base)
    index.add(data.ids, data.base)
    return index


def _store(tmp_path: Path, data: Data) -> EmbeddingStore:
    store = EmbeddingStore.open(tmp_path, data.base.shape[1])
    store.append(data.ids, data.base)
    return store


@pytest.fixture(scope="module")
def big() -> Data:
    return _data(100_000, 96, 200, seed=11)


@pytest.fixture(scope="module")
def big_ivf(big: Data) -> VectorIndex:
    return _built(choose_spec(len(big.base), 96), big)


@pytest.fixture(scope="module")
def big_store(big: Data, tmp_path_factory: pytest.TempPathFactory) -> EmbeddingStore:
    return _store(tmp_path_factory.mktemp("big_store"), big)


@pytest.fixture(scope="module")
def small() -> Data:
    return _data(20_000, 32, 100, seed=5)


@pytest.fixture(scope="module")
def small_ivf_built(small: Data) -> VectorIndex:
    return _built("IVF128,PQ8", small)


@pytest.fixture
def small_ivf(small_ivf_built: VectorIndex) -> VectorIndex:
    return small_ivf_built.clone()  # tests may mutate theirs


# -- choose_spec ----------------------------------------------------------------------


def test_choose_spec_flat_below_20k() -> None:
    assert choose_spec(0, 512) == "Flat"
    assert choose_spec(19_999, 512) == "Flat"
    assert choose_spec(20_000, 512).startswith("IVF")


@pytest.mark.parametrize(
    ("n", "dim", "spec"),
    [
        (1_000_000, 256, "IVF4096,PQ64"),
        (1_000_000, 512, "IVF4096,PQ128"),
        (100_000, 96, "IVF1024,PQ24"),
        (100_000_000, 768, "IVF32768,PQ192"),
        (20_000, 100, "IVF512,PQ25"),  # m divides dim: 25, not 24
        (33_000, 64, "IVF512,PQ16"),  # 4*sqrt(N) rounds to 1024, too few points per list
    ],
)
def test_choose_spec_ivf_pq_rules(n: int, dim: int, spec: str) -> None:
    assert choose_spec(n, dim) == spec


def test_choose_spec_keeps_39_training_points_per_list() -> None:
    for n in np.geomspace(20_000, 10**9, 60).astype(int):
        nlist = int(choose_spec(int(n), 128).split(",")[0][3:])
        assert training_sample_size(int(n), nlist) >= MIN_TRAIN_POINTS_PER_LIST * nlist


def test_choose_spec_memory_budget_shrinks_codes() -> None:
    n = 1_000_000
    assert choose_spec(n, 256, memory_budget_bytes=40 * n) == "IVF4096,PQ32"
    assert choose_spec(n, 256, memory_budget_bytes=17 * n) == "IVF4096,PQ8"
    with pytest.raises(InvalidInputError, match="budget"):
        choose_spec(n, 256, memory_budget_bytes=8 * n)


@pytest.mark.parametrize("dim", [32, 100, 256, 512, 768])
def test_chosen_specs_build_in_faiss(dim: int) -> None:
    index = VectorIndex.create(choose_spec(50_000, dim), dim)
    assert index.needs_training and index.dim == dim and index.ntotal == 0


# -- exactness and recall -------------------------------------------------------------


def test_flat_equals_brute_force(small: Data, tmp_path: Path) -> None:
    index = VectorIndex.create("Flat", 32)
    assert not index.needs_training and index.exact_scores
    index.add(small.ids, small.base)
    scores, ids = index.search(small.queries, 10)
    exact_scores, exact_ids = _exact(small, 10)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-6)
    # search_reranked skips the re-rank for an exact index: same answer, store unused
    empty_store = EmbeddingStore.open(tmp_path, 32)
    _, reranked = search_reranked(index, empty_store, small.queries, 10, SearchParams())
    np.testing.assert_array_equal(reranked, exact_ids)


@pytest.mark.slow
def test_ivf_pq_with_rerank_reaches_095_recall(
    big: Data, big_ivf: VectorIndex, big_store: EmbeddingStore
) -> None:
    assert big_ivf.spec == "IVF1024,PQ24" and big_ivf.ntotal == len(big.base)
    _, truth = _exact(big, 10)
    _, raw = big_ivf.search(big.queries, 10, SearchParams())
    scores, reranked = search_reranked(big_ivf, big_store, big.queries, 10, SearchParams())
    # PQ codes alone cannot order these tight clusters; exact re-ranking must fix it
    assert recall_at(raw, truth, 10) < 0.9
    assert recall_at(reranked, truth, 10) >= 0.95
    assert (np.diff(scores, axis=1) <= 0).all()  # sorted best first
    # re-ranked scores are exact float16-vector inner products, not PQ estimates
    vectors, found = big_store.get(reranked[:5].ravel())
    assert found.all()
    expected = np.einsum("qkd,qd->qk", vectors.reshape(5, 10, -1), big.queries[:5])
    np.testing.assert_allclose(scores[:5], expected, rtol=1e-5, atol=1e-6)


def test_rerank_pads_when_fewer_than_k_candidates(
    small: Data, small_ivf: VectorIndex, tmp_path: Path
) -> None:
    store = _store(tmp_path, small)
    allowed = small.ids[:3]
    params = SearchParams(allowed_ids=allowed, nprobe=128)
    scores, ids = search_reranked(small_ivf, store, small.queries[:2], 5, params)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert set(ids[:, :3].ravel()) == set(allowed.tolist())


# -- removal and filters --------------------------------------------------------------


def test_removed_ids_are_never_returned(
    small: Data, small_ivf: VectorIndex, tmp_path: Path
) -> None:
    store = _store(tmp_path, small)
    _, truth = _exact(small, 10)
    doomed = np.unique(np.concatenate([truth[:, 0], small.ids[::10]]))
    assert small_ivf.remove(doomed) == len(doomed)
    assert small_ivf.ntotal == len(small.base) - len(doomed)
    assert small_ivf.remove(doomed) == 0
    _, raw = small_ivf.search(small.queries, 50, SearchParams(nprobe=128))
    _, reranked = search_reranked(small_ivf, store, small.queries, 10, SearchParams(nprobe=128))
    assert not np.isin(raw, doomed).any()
    assert not np.isin(reranked, doomed).any()


def test_selector_on_flat_equals_exact_search_of_the_subset(small: Data) -> None:
    index = VectorIndex.create("Flat", 32)
    index.add(small.ids, small.base)
    rows = np.random.default_rng(3).choice(len(small.base), 1000, replace=False)
    scores, ids = index.search(small.queries, 10, SearchParams(allowed_ids=small.ids[rows]))
    exact_scores, exact_ids = _exact(small, 10, rows)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-6)


def test_selector_restricts_ivf_results(
    small: Data, small_ivf: VectorIndex, tmp_path: Path
) -> None:
    store = _store(tmp_path, small)
    rows = np.random.default_rng(4).choice(len(small.base), 2000, replace=False)
    allowed = small.ids[rows]
    params = SearchParams(allowed_ids=allowed, nprobe=128)  # every list: only PQ error left
    _, raw = small_ivf.search(small.queries, 40, params)
    _, reranked = search_reranked(small_ivf, store, small.queries, 10, params)
    assert np.isin(raw[raw >= 0], allowed).all() and (raw >= 0).all()
    _, exact_ids = _exact(small, 10, rows)
    assert recall_at(reranked, exact_ids, 10) >= 0.95


def test_empty_allowed_set_returns_nothing(small: Data, small_ivf: VectorIndex) -> None:
    scores, ids = small_ivf.search(small.queries[:3], 5, SearchParams(allowed_ids=np.array([])))
    assert (ids == -1).all() and np.isneginf(scores).all()


# -- per-call parameters --------------------------------------------------------------


def test_concurrent_searches_with_different_nprobe_match_sequential(
    small: Data, small_ivf: VectorIndex
) -> None:
    probes = [1, 2, 4, 32]
    expected = {p: small_ivf.search(small.queries, 10, SearchParams(nprobe=p)) for p in probes}
    assert len({expected[p][1].tobytes() for p in probes}) == len(probes)  # nprobe matters
    mismatches: list[int] = []

    def hammer(nprobe: int) -> None:
        for _ in range(15):
            _, ids = small_ivf.search(small.queries, 10, SearchParams(nprobe=nprobe))
            if not np.array_equal(ids, expected[nprobe][1]):
                mismatches.append(nprobe)

    threads = [threading.Thread(target=hammer, args=(p,)) for p in probes * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []
    assert faiss.extract_index_ivf(small_ivf._index).nprobe == 1  # never touched


def test_default_nprobe_grows_with_the_lists() -> None:
    # 32 up to nlist 8192 (the 1M default, recall@10 0.995), then 1/256 of the lists
    assert [default_nprobe(n) for n in (1, 64, 4096, 8192, 16384, 65536)] == [
        32, 32, 32, 32, 64, 256]


def test_a_query_naming_no_nprobe_gets_the_default_for_the_index(
    small: Data, small_ivf: VectorIndex
) -> None:
    nlist = int(faiss.extract_index_ivf(small_ivf._index).nlist)
    named = small_ivf.search(small.queries, 10, SearchParams(nprobe=default_nprobe(nlist)))
    unnamed = small_ivf.search(small.queries, 10, SearchParams())
    fewer = small_ivf.search(small.queries, 10, SearchParams(nprobe=1))
    assert np.array_equal(named[1], unnamed[1]) and not np.array_equal(fewer[1], unnamed[1])


def test_bad_queries_are_refused(small: Data, small_ivf: VectorIndex) -> None:
    bad = [
        small.queries[0],  # 1-D
        small.queries[:, :16],  # wrong dim
        small.queries.astype(np.int32),
        np.full((1, 32), np.nan, np.float32),
    ]
    for queries in bad:
        with pytest.raises(InvalidQueryError):
            small_ivf.search(queries, 5)
    with pytest.raises(InvalidQueryError):
        small_ivf.search(small.queries, 0)
    with pytest.raises(InvalidQueryError):
        SearchParams(nprobe=0)
    # float64 and float16 queries are fine: cast, not refused
    _, ids = small_ivf.search(small.queries[:2].astype(np.float64), 3)
    assert ids.shape == (2, 3)


def test_untrained_add_and_bad_spec_are_refused(small: Data) -> None:
    with pytest.raises(IndexNotTrainedError):
        VectorIndex.create("IVF64,PQ8", 32).add(small.ids[:5], small.base[:5])
    with pytest.raises(InvalidInputError):
        VectorIndex.create("NotASpec42", 32)
    with pytest.raises(TypeError):
        VectorIndex(None, "Flat", object())


def test_apply_ops_replays_store_changes(small: Data, tmp_path: Path) -> None:
    store = EmbeddingStore.open(tmp_path, 32)
    index = VectorIndex.create("Flat", 32)
    half = len(small.ids) // 2
    seq = store.append(small.ids[:half], small.base[:half])
    for ids, vectors in store.live():  # float16-rounded, like everything built from the store
        index.add(ids, vectors)
    store.delete(small.ids[:100])
    store.append(small.ids[half:], small.base[half:])
    store.append(small.ids[200:210], small.base[:10])  # supersede 10 vectors
    assert apply_ops(index, store.ops_since(seq)) == store.latest_seq
    fresh = VectorIndex.create("Flat", 32)
    for ids, vectors in store.live():
        fresh.add(ids, vectors)
    assert index.ntotal == fresh.ntotal == store.count
    np.testing.assert_array_equal(
        index.search(small.queries, 10)[1], fresh.search(small.queries, 10)[1]
    )


# -- versioned persistence ------------------------------------------------------------


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("spec", ["Flat", "IVF128,PQ8"])
def test_save_load_round_trip(
    small: Data, small_ivf: VectorIndex, tmp_path: Path, spec: str, mmap: bool
) -> None:
    index = small_ivf if spec.startswith("IVF") else _built(spec, small)
    manifest = write_version(tmp_path, index, **MODEL, store_seq=7)
    assert current_version(tmp_path) == manifest.version == list_versions(tmp_path)[0]
    loaded, found = load_current(tmp_path, **MODEL, dim=32, mmap=mmap)
    assert found == manifest
    assert (found.spec, found.count, found.store_seq, found.dim) == (spec, 20_000, 7, 32)
    assert loaded.spec == spec and loaded.ntotal == index.ntotal
    for params in (SearchParams(nprobe=4), SearchParams(allowed_ids=small.ids[::3])):
        before = index.search(small.queries, 10, params)
        after = loaded.search(small.queries, 10, params)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_array_equal(after[0], before[0])


def test_no_current_version(tmp_path: Path) -> None:
    with pytest.raises(NoIndexError):
        load_current(tmp_path / "nothing", **MODEL, dim=32)
    assert current_version(tmp_path) is None and list_versions(tmp_path) == []


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"model": "RN50"}, "model: expected 'RN50', found 'ViT-B-32'"),
        ({"pretrained": None}, "pretrained: expected None"),
        ({"dim": 64}, "dim: expected 64, found 32"),
    ],
)
def test_manifest_mismatch_is_refused(
    small: Data, tmp_path: Path, override: dict[str, object], named: str
) -> None:
    index = VectorIndex.create("Flat", 32)
    index.add(small.ids[:10], small.base[:10])
    write_version(tmp_path, index, **MODEL, store_seq=1)
    wanted = {**MODEL, "dim": 32, **override}
    with pytest.raises(ManifestMismatchError, match=named):
        load_current(tmp_path, **wanted)


def test_checksum_mismatch_is_refused(small: Data, tmp_path: Path) -> None:
    index = VectorIndex.create("Flat", 32)
    index.add(small.ids[:10], small.base[:10])
    manifest = write_version(tmp_path, index, **MODEL, store_seq=1)
    path = tmp_path / manifest.version / "index.faiss"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match="checksum"):
        load_current(tmp_path, **MODEL, dim=32)


def test_half_written_versions_are_ignored(small: Data, tmp_path: Path) -> None:
    index = VectorIndex.create("Flat", 32)
    index.add(small.ids[:10], small.base[:10])
    good = write_version(tmp_path, index, **MODEL, store_seq=1)
    # a writer killed mid-copy: its temp dir holds a truncated index and no manifest
    crashed = tmp_path / ".tmp-v99999999T000000.000000Z-0000-dead"
    crashed.mkdir()
    (crashed / "index.faiss").write_bytes(b"IxM2 truncated")
    # a writer killed after the rename but before switching CURRENT
    (tmp_path / "v99999999T000000.000000Z-0000").mkdir()
    assert list_versions(tmp_path) == [good.version]
    loaded, manifest = load_current(tmp_path, **MODEL, dim=32)
    assert manifest.version == good.version and loaded.ntotal == 10


def test_versions_sort_in_write_order_and_prune_keeps_current(small: Data, tmp_path: Path) -> None:
    index = VectorIndex.create("Flat", 32)
    index.add(small.ids[:10], small.base[:10])
    written = [write_version(tmp_path, index, **MODEL, store_seq=s).version for s in range(5)]
    assert list_versions(tmp_path) == written == sorted(written)
    assert current_version(tmp_path) == written[-1]
    (tmp_path / "CURRENT").write_text(written[0])  # e.g. rolled back to the oldest
    removed = prune_versions(tmp_path, keep=2)
    assert removed == written[1:3]
    assert list_versions(tmp_path) == [written[0], *written[3:]]
    _, manifest = load_current(tmp_path, **MODEL, dim=32)
    assert manifest.version == written[0]
