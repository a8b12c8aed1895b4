"""FAISS indexes: choose a spec, train, add, remove, search, re-rank, save by version.

Vectors arrive L2-normalised from the encoder (the only place that normalises), so
inner product is cosine similarity. Search settings travel with each call as FAISS
`SearchParameters`; a shared index is never mutated by a search, so threads may
search one loaded index concurrently. Mutations (train/add/remove) must not run
concurrently with searches: serving loads read-only versions, writers build the next.

Versioned persistence lives in `search.vectors.versions`.
"""

from __future__ import annotations

import errno
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from search.errors import (
    IndexNotTrainedError,
    InvalidInputError,
    InvalidQueryError,
)
from search.vectors.store import EmbeddingStore, Op, as_ids

FLAT_BELOW = 20_000  # below this, exact search is fast enough and needs no training
MIN_TRAIN_POINTS_PER_LIST = 39  # faiss k-means warns (and clusters badly) below this
TRAIN_POINTS_PER_LIST = 40  # sample size per list: k-means cost grows with it, quality barely
PQ_MIN_TRAIN_POINTS = 256 * MIN_TRAIN_POINTS_PER_LIST  # 8-bit PQ has 256 centroids per slice
TWO_LEVEL_FROM = 1024  # from this nlist, k-means in two levels (flat cost grows as nlist^2)
KMEANS_ITERATIONS = 10  # faiss's 25 buys no recall once results are re-ranked exactly
ID_BYTES = 8  # IVF lists store one int64 id per code
DEFAULT_MEMORY_BUDGET_BYTES = 32 * 2**30  # generous: lets PQ use dim/4 bytes up to ~400M

_PRIVATE = object()


def training_sample_size(n_vectors: int, nlist: int) -> int:
    """How many of `n_vectors` `VectorIndex.train` samples for an IVF of `nlist` lists."""
    return min(n_vectors, max(TRAIN_POINTS_PER_LIST * nlist, PQ_MIN_TRAIN_POINTS))


def min_training_points(spec: str) -> int:
    """The fewest vectors FAISS can train `spec` on (k-means needs a point per centroid):
    the IVF's list count, 2^bits for PQ; 0 for specs that learn nothing."""
    ivf = re.search(r"IVF(\d+)", spec)
    pq = re.search(r"PQ(\d+)(?:x(\d+))?", spec)
    lists = int(ivf.group(1)) if ivf else 0
    codes = 2 ** int(pq.group(2) or 8) if pq else 0
    return max(lists, codes)


def choose_spec(n_vectors: int, dim: int, memory_budget_bytes: int | None = None) -> str:
    """An index spec string for `n_vectors` of `dim` dims, autofaiss-style.

    - fewer than FLAT_BELOW vectors: "Flat" (exact; re-ranking unnecessary).
    - else "IVF{nlist},PQ{m}": nlist is 4*sqrt(N) rounded to a power of two, halved
      until the training sample holds >= 39 points per list; m (bytes per code) is
      the largest divisor of dim with m <= dim/4 (>= 4 dims per sub-quantizer, so
      256-d -> PQ64, 512-d -> PQ128) whose (m + 8 id bytes) * N fits the budget.
      Any divisor of dim is a valid 8-bit PQ on CPU (GPU IVF-PQ accepts fewer m).
    """
    if n_vectors < 0 or dim <= 0:
        raise InvalidInputError(f"need n_vectors >= 0 and dim > 0, got {n_vectors}, {dim}")
    if n_vectors < FLAT_BELOW:
        return "Flat"
    budget = DEFAULT_MEMORY_BUDGET_BYTES if memory_budget_bytes is None else memory_budget_bytes
    return f"IVF{_choose_nlist(n_vectors)},PQ{_choose_pq_bytes(n_vectors, dim, budget)}"


def _choose_nlist(n_vectors: int) -> int:
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    while nlist > 1 and training_sample_size(n_vectors, nlist) < MIN_TRAIN_POINTS_PER_LIST * nlist:
        nlist //= 2
    return nlist


def _choose_pq_bytes(n_vectors: int, dim: int, budget: int) -> int:
    fitting = [
        m for m in range(1, dim // 4 + 1) if dim % m == 0 and (m + ID_BYTES) * n_vectors <= budget
    ]
    if not fitting:
        raise InvalidInputError(
            f"a memory budget of {budget} bytes cannot hold {n_vectors} PQ codes of dim {dim}"
        )
    return fitting[-1]


# Lists a query visits when it names no nprobe: 32 up to nlist 8192 (about 4M vectors:
# recall@10 0.995 at 1M), then 1/256 of the lists, so the share of the index scanned
# stops shrinking as N grows (at 10M, nlist 16384: nprobe 32 gave recall@10 0.941 and
# 64 gave 0.972; deploy/SCALING.md).
DEFAULT_NPROBE = 32
NPROBE_SHARE = 256


def default_nprobe(nlist: int) -> int:
    return max(DEFAULT_NPROBE, nlist // NPROBE_SHARE)


@dataclass(frozen=True, eq=False)  # eq=False: an ndarray field has no truth value
class SearchParams:
    """Per-call search settings; allowed_ids restricts results (metadata filters)."""

    nprobe: int | None = None  # IVF lists visited per query; None: default_nprobe(nlist)
    # search_reranked over-fetches k * rerank_factor candidates. 8, not 4: on 1M tight
    # clusters (tests/benchmarks/bench_vectors.py) 4 plateaus at recall@10 0.965, 8 reaches
    # 0.994 for ~10% of single-query QPS.
    rerank_factor: int = 8
    allowed_ids: np.ndarray | None = None  # int64 ids allowed; None = all

    def __post_init__(self) -> None:
        if (self.nprobe is not None and self.nprobe < 1) or self.rerank_factor < 1:
            raise InvalidQueryError("nprobe and rerank_factor must be >= 1")


class VectorIndex:
    """One FAISS index with external int64 ids; get one from `create` or `load_current`."""

    def __init__(self, index: faiss.Index, spec: str, key: object) -> None:
        if key is not _PRIVATE:
            raise TypeError("use VectorIndex.create(spec, dim) or load_current(...)")
        self._index = index
        self._spec = spec
        self._ivf = _extract_ivf(index)
        self._gpu_index: faiss.Index | None = None
        self._gpu_lock = threading.Lock()

    @classmethod
    def create(cls, spec: str, dim: int) -> VectorIndex:
        """An empty inner-product index; specs without IVF get an IDMap2 for their ids."""
        factory = spec if "IVF" in spec else f"IDMap2,{spec}"
        try:
            index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise InvalidInputError(f"bad index spec {spec!r} for dim {dim}: {exc}") from exc
        ivf = _extract_ivf(index)
        if ivf is not None:
            ivf.cp.niter = KMEANS_ITERATIONS
            if isinstance(ivf, faiss.IndexIVFPQ):
                # polysemous training costs minutes and only serves Hamming filtering
                ivf.do_polysemous_training = False  # type: ignore[attr-defined]  # not in stubs
        return cls(index, spec, _PRIVATE)

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def needs_training(self) -> bool:
        """True until `train` has run, for specs that learn centroids (IVF, PQ...)."""
        return not self.is_trained

    @property
    def exact_scores(self) -> bool:
        """Codes are raw float32 vectors, so ANN scores are already exact."""
        return self._spec.split(",")[-1].strip() == "Flat"

    def clone(self) -> VectorIndex:
        """An independent deep copy (e.g. to apply changes off the serving copy)."""
        return VectorIndex(faiss.clone_index(self._index), self._spec, _PRIVATE)

    def train(self, vectors: np.ndarray, *, seed: int = 0) -> None:
        """Learn centroids from a seeded sample of `vectors` (no-op if already trained)."""
        if not self.needs_training:
            return
        x = _as_matrix(vectors, self.dim, InvalidInputError)
        nlist = int(self._ivf.nlist) if self._ivf is not None else 1
        size = training_sample_size(len(x), nlist)
        sample = x[np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))]
        quantizer = self._two_level_quantizer(nlist, size)
        try:
            if quantizer is not None:
                quantizer.add(_two_level_centroids(sample, nlist, seed))
            self._index.train(sample)  # skips the coarse step when centroids are set
        except RuntimeError as exc:
            if quantizer is not None:
                quantizer.reset()
            raise InvalidInputError(f"cannot train {self._spec} on {size} vectors: {exc}") from exc

    def _two_level_quantizer(self, nlist: int, sample_size: int) -> faiss.Index | None:
        """The coarse quantizer to fill with two-level centroids, or None to let faiss train.

        Only a bare IVF (no pre-transform) can take centroids computed on the raw sample.
        """
        index = self._index
        enough = sample_size >= MIN_TRAIN_POINTS_PER_LIST * nlist
        if isinstance(index, faiss.IndexIVF) and nlist >= TWO_LEVEL_FROM and enough:
            return index.quantizer
        return None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under ids that are not in the index (remove old ones first)."""
        ids_arr = as_ids(ids)
        x = _as_matrix(vectors, self.dim, InvalidInputError)
        if len(ids_arr) != len(x):
            raise InvalidInputError(f"{len(ids_arr)} ids for {len(x)} vectors")
        if self.needs_training:
            raise IndexNotTrainedError(f"index {self._spec} must be trained before add")
        self._index.add_with_ids(x, ids_arr)
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (unknown ones are ignored); returns how many vectors went."""
        ids_arr = as_ids(ids)
        if len(ids_arr) == 0:
            return 0
        removed = int(self._index.remove_ids(faiss.IDSelectorBatch(ids_arr)))
        self._gpu_index = None
        return removed

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams = SearchParams()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw ANN candidates: scores float32 [n, k], ids int64 [n, k], -inf/-1 padded."""
        q = _as_matrix(queries, self.dim, InvalidQueryError)
        if not isinstance(k, int | np.integer) or k < 1:
            raise InvalidQueryError(f"k must be a positive integer, got {k!r}")
        if params.allowed_ids is not None and len(params.allowed_ids) == 0:
            return _padded(len(q), int(k))
        selector = _selector(params.allowed_ids)
        faiss_params = self._faiss_params(params.nprobe, selector)
        scores, ids = self._search_index(selector).search(q, int(k), params=faiss_params)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _faiss_params(
        self, nprobe: int | None, selector: faiss.IDSelector | None
    ) -> faiss.SearchParameters:
        # fresh objects per call: the index itself is never told nprobe
        params = faiss.SearchParameters()
        if self._ivf is not None:
            nlist = int(self._ivf.nlist)
            params = faiss.SearchParametersIVF()
            params.nprobe = min(nprobe or default_nprobe(nlist), nlist)
        if selector is not None:
            params.sel = selector
        return params

    def _search_index(self, selector: faiss.IDSelector | None) -> faiss.Index:
        """A GPU clone when a GPU exists, else the CPU index.

        GPU indexes take no IDSelector, so filtered searches stay on CPU, as do specs
        the GPU cannot hold (e.g. IVF-PQ with more than 96 bytes per code).
        """
        if selector is not None or faiss.get_num_gpus() == 0:
            return self._index
        with self._gpu_lock:
            if self._gpu_index is None:
                try:
                    self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
                except (RuntimeError, AttributeError):
                    self._gpu_index = self._index
            return self._gpu_index

    def ids(self) -> np.ndarray:
        """Every id held, int64 [ntotal] (unordered): to diff against the store."""
        if self._ivf is None:
            return faiss.vector_to_array(faiss.downcast_index(self._index).id_map).astype(
                np.int64)
        invlists, parts = self._ivf.invlists, [np.zeros(0, np.int64)]
        for list_no in range(self._ivf.nlist):
            size = invlists.list_size(list_no)
            if size:
                ptr = invlists.get_ids(list_no)
                parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64))
                invlists.release_ids(list_no, ptr)
        return np.concatenate(parts)

    def write(self, path: Path) -> None:
        try:
            faiss.write_index(self._index, str(path))
        except RuntimeError as exc:  # faiss reports a failed write (full disk...) this way
            raise OSError(errno.EIO, f"faiss could not write {path}: {exc}") from exc

    @classmethod
    def read(cls, path: Path, spec: str, *, mmap: bool = False) -> VectorIndex:
        """Load a written index; `mmap` maps it read-only instead of reading it in."""
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        return cls(faiss.read_index(str(path), flags), spec, _PRIVATE)


def _two_level_centroids(sample: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """[nlist, dim] spherical k-means centroids, clustered in two levels.

    Flat k-means costs sample * nlist dot products per iteration (minutes at
    nlist=4096 on 2 cores); ~sqrt(nlist) top clusters, each split in proportion to
    its size, cost ~2 * sample * sqrt(nlist) and lose no recall after re-ranking.
    """
    dim = sample.shape[1]
    n_top = 2 ** round(math.log2(math.sqrt(nlist)))
    top = faiss.Kmeans(dim, n_top, niter=KMEANS_ITERATIONS, seed=seed, spherical=True)
    top.train(sample)
    _, assign = top.index.search(sample, 1)
    assign = assign[:, 0]
    # split nlist by cumulative share so the parts sum to exactly nlist
    shares = np.cumsum(np.bincount(assign, minlength=n_top)) * nlist // len(sample)
    parts = np.diff(shares, prepend=0)
    centroids = []
    for cluster, n_sub in enumerate(parts):
        if n_sub == 0:
            continue
        # min_points_per_centroid=1: the overall sample already has >= 39 per list
        sub = faiss.Kmeans(
            dim,
            int(n_sub),
            niter=KMEANS_ITERATIONS,
            seed=seed,
            spherical=True,
            min_points_per_centroid=1,
        )
        sub.train(np.ascontiguousarray(sample[assign == cluster]))
        centroids.append(np.asarray(sub.centroids))
    return np.concatenate(centroids)


def _extract_ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return None
    return ivf if isinstance(ivf, faiss.IndexIVF) else None


def _selector(allowed_ids: np.ndarray | None) -> faiss.IDSelector | None:
    # IDSelectorBatch copies the ids into a hash set, so the array may go away
    return None if allowed_ids is None else faiss.IDSelectorBatch(as_ids(allowed_ids))


def _padded(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)


def _as_matrix(vectors: np.ndarray, dim: int, error: type[Exception]) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] != dim:
        raise error(f"expected vectors of shape [n, {dim}], got {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise error(f"expected float vectors, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise error("vectors contain NaN or infinity")
    return x


# -- exact re-ranking ------------------------------------------------------------------


def search_reranked(
    index: VectorIndex,
    store: EmbeddingStore,
    queries: np.ndarray,
    k: int,
    params: SearchParams = SearchParams(),
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by exact inner product over k * rerank_factor ANN candidates.

    PQ scores cannot order close neighbours, so candidates are re-scored with the
    store's float16 vectors. Ids missing from the store are dropped. Flat: no re-rank.
    """
    if index.exact_scores:
        return index.search(queries, k, params)
    _, candidates = index.search(queries, k * params.rerank_factor, params)
    q = _as_matrix(queries, index.dim, InvalidQueryError)
    return _rerank(q, candidates, store, k)


def _rerank(
    queries: np.ndarray, candidates: np.ndarray, store: EmbeddingStore, k: int
) -> tuple[np.ndarray, np.ndarray]:
    # Only real candidates are read and scored: a deep search (fused queries ask for
    # thousands) pads most of its k * rerank_factor slots with -1 once the probed lists
    # run out, and gathering a row per slot cost ten times the useful work.
    valid = candidates >= 0  # [n, c]
    rows = np.nonzero(valid)[0]  # query of each valid slot
    unique, inverse = np.unique(candidates[valid], return_inverse=True)
    vectors, found = store.get(unique)  # [u, dim], [u]
    # einsum, not BLAS: OpenBLAS wakes its threads even for one matrix-vector product,
    # which costs 10x the product itself on a busy 2-core machine.
    if len(queries) == 1:
        values = np.einsum("ud,d->u", vectors, queries[0])[inverse]
    else:
        values = np.einsum("id,id->i", vectors[inverse], queries[rows])
    exact = np.full(candidates.shape, -np.inf, dtype=np.float32)  # [n, c]
    exact[valid] = np.where(found[inverse], values, -np.inf)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(exact, order, axis=1)
    ids = np.take_along_axis(candidates, order, axis=1)
    ids[np.isneginf(scores)] = -1
    return scores, ids


def apply_ops(index: VectorIndex, ops: Iterable[Op]) -> int | None:
    """Replay store operations onto an index saved at an older seq; the last seq applied."""
    last = None
    for op in ops:
        index.remove(op.ids)  # an add supersedes older rows of its ids, a del drops them
        if op.kind == "add":
            assert op.vectors is not None
            index.add(op.ids, op.vectors)
        last = op.seq
    return last


# -- versioned persistence ---------------------------------------------------------------
