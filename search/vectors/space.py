"""One modality of one collection: durable embeddings plus the FAISS index over them."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from search.errors import NoIndexError, StoreHistoryCompactedError
from search.vectors.index import (
    SearchParams,
    VectorIndex,
    apply_ops,
    choose_spec,
    min_training_points,
    search_reranked,
)
from search.vectors.store import CompactionPolicy, EmbeddingStore
from search.vectors.versions import (
    IndexManifest,
    can_mmap,
    load_current,
    prune_versions,
    read_version_index,
    write_version,
)


def replay(index: VectorIndex, store: EmbeddingStore, since_seq: int) -> None:
    """Bring an index that reflects the store at `since_seq` up to its latest state.

    The one way an index catches up (load, sync, rebuild). When the operations were
    compacted away, the index is diffed against the live ids instead: vector ids are
    never reused, so ids in both hold the same vector and no retraining is needed."""
    try:
        ops = list(store.ops_since(since_seq))
    except StoreHistoryCompactedError:
        _match_live(index, store)
    else:
        apply_ops(index, ops)


def _match_live(index: VectorIndex, store: EmbeddingStore) -> None:
    held, live = index.ids(), store.live_ids()
    index.remove(np.setdiff1d(held, live))
    missing = np.setdiff1d(live, held)
    if len(missing):
        vectors, _ = store.get(missing)
        index.add(missing, vectors)


# Retrain when the collection has grown this much past what the IVF was sized for.
GROWTH_BEFORE_RETRAIN = 4
TRAIN_SAMPLE = 200_000


def _nlist(spec: str) -> int:
    match = re.search(r"IVF(\d+)", spec)
    return int(match.group(1)) if match else 0


class VectorSpace:
    """Owns `root/embeddings` (float16 shards) and `root/index/<version>` (FAISS).

    Mutations and searches take one lock: FAISS indexes are not safe to search while
    another thread adds to them.
    """

    def __init__(self, root: Path, *, dim: int, model: str, weights: str,
                 spec: str | None = None, keep_versions: int = 2,
                 mmap: bool = False) -> None:
        self.root, self.dim, self.model, self.weights = Path(root), dim, model, weights
        self.fixed_spec = spec  # an explicit FAISS factory string overrides the auto choice
        self.keep_versions = max(1, keep_versions)  # index versions kept on disk
        self.mmap = mmap  # serve saved versions memory-mapped (read-only) where possible
        self.mapped = False  # the loaded index is a read-only mapping of its version file
        self.lock = threading.RLock()
        self.store = EmbeddingStore.open(self.root / "embeddings", dim)
        self.index, self.manifest = self._load_or_build()
        self.seen_seq = self.store.latest_seq  # store operations the index reflects

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def _load_or_build(self) -> tuple[VectorIndex, IndexManifest | None]:
        try:
            index, manifest = load_current(self.index_dir, model=self.model,
                                           pretrained=self.weights, dim=self.dim,
                                           mmap=self.mmap)
        except NoIndexError:
            return self._train_from_store(self._target_spec()), None
        self.mapped = self.mmap and can_mmap(manifest.spec)
        if self.mapped and self.store.latest_seq != manifest.store_seq:
            # writes since the version must be replayed, and a mapping cannot take them
            index, self.mapped = read_version_index(self.index_dir, manifest, mmap=False), False
        replay(index, self.store, manifest.store_seq)  # what came after the saved version
        return index, manifest

    def _target_spec(self) -> str:
        return self.fixed_spec or choose_spec(self.store.count, self.dim)

    def _train_from_store(self, spec: str) -> VectorIndex:
        index = VectorIndex.create(spec, self.dim)
        if index.needs_training and spec == self.fixed_spec and self._too_few_to_train(spec):
            # a collection created with an IVF/PQ spec starts empty: exact search until it
            # holds enough vectors to train on (save() then trains: needs_retrain)
            index = VectorIndex.create("Flat", self.dim)
        elif index.needs_training:
            index.train(self._training_sample())
        for ids, vectors in self.store.live():
            index.add(ids, vectors)
        return index

    def _training_sample(self) -> np.ndarray:
        keep = min(1.0, TRAIN_SAMPLE / max(self.store.count, 1))
        rng = np.random.default_rng(0)
        parts = [v[rng.random(len(v)) < keep] for _, v in self.store.live()]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def _materialize(self) -> None:
        """Swap a mapped index for an in-memory copy before it takes writes: FAISS aborts
        the process on a write into read-only mapped lists. Caller holds the lock."""
        if not self.mapped or self.manifest is None:
            return
        try:
            fresh = read_version_index(self.index_dir, self.manifest, mmap=False)
            replay(fresh, self.store, self.manifest.store_seq)
        except (NoIndexError, StoreHistoryCompactedError):
            # the version was pruned or the store compacted since: rebuild from the store
            fresh = self._train_from_store(self.index.spec)
        self.index, self.mapped = fresh, False

    # -- writes ------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        with self.lock:  # store and index change together, so rebuild() sees both
            self._materialize()
            self.seen_seq = self.store.append(ids, vectors)
            self.index.add(ids, vectors)

    def replace(self, old_ids: list[int] | np.ndarray, ids: np.ndarray,
                vectors: np.ndarray) -> None:
        """Drop `old_ids` and add `vectors` under `ids`: one store operation."""
        old = np.asarray(old_ids, dtype=np.int64)
        if len(ids) == 0 and len(old) == 0:
            return
        with self.lock:
            self._materialize()
            self.seen_seq = self.store.replace(old, ids, vectors)
            self.index.remove(old)
            if len(ids):
                self.index.add(ids, vectors)

    def remove(self, ids: list[int] | np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        with self.lock:
            self._materialize()
            self.seen_seq = self.store.delete(ids)
            self.index.remove(ids)

    def sync(self) -> None:
        """Apply store operations written by another process since we last looked."""
        with self.lock:
            self.store.refresh()
            if self.store.latest_seq == self.seen_seq:
                return
            if self.mapped:
                self._materialize()  # replays every operation since the version
                self.seen_seq = self.store.latest_seq
                return
            replay(self.index, self.store, self.seen_seq)
            self.seen_seq = self.store.latest_seq

    def compact_if_due(self, policy: CompactionPolicy) -> bool:
        """Rewrite the embedding log when `policy` says so (the caller is the writer:
        it holds the collection's write lock). Searches go on meanwhile."""
        if not policy.due(self.store):
            return False
        self.compact()
        return True

    def compact(self) -> int:
        seq = self.store.compact()
        with self.lock:  # the index already holds every live row: only the seq moves
            self.seen_seq = seq
        return seq

    def store_ids(self) -> np.ndarray:
        return self.store.live_ids()

    def _too_few_to_train(self, spec: str) -> bool:
        return self.store.count < min_training_points(spec)

    def needs_retrain(self) -> bool:
        if self.fixed_spec is not None:  # the configured spec, once it can be trained
            return (self.index.spec != self.fixed_spec
                    and not self._too_few_to_train(self.fixed_spec))
        wanted = choose_spec(self.store.count, self.dim)
        current = self.index.spec
        if (wanted == "Flat") != (current == "Flat"):
            return True
        return _nlist(wanted) >= _nlist(current) * GROWTH_BEFORE_RETRAIN ** 0.5 > 0

    def save(self, retrain: bool | None = None) -> IndexManifest:
        """Persist a new index version (retraining first when outgrown) and switch to it."""
        if retrain or (retrain is None and self.needs_retrain()):
            return self.rebuild()
        with self.lock:
            self._materialize()  # a mapping would be written as a reference to its file
            seq = self.store.latest_seq
            self.manifest = write_version(self.index_dir, self.index, model=self.model,
                                          pretrained=self.weights, store_seq=seq)
        prune_versions(self.index_dir, keep=self.keep_versions)
        return self.manifest

    def rebuild(self, spec: str | None = None) -> IndexManifest:
        """Train a new index from stored embeddings (no model run) and switch atomically;
        searches keep using the old index until the switch."""
        seq = self.store.latest_seq
        fresh = self._train_from_store(spec or self._target_spec())
        with self.lock:
            replay(fresh, self.store, seq)  # writes that raced with training
            self.manifest = write_version(self.index_dir, fresh, model=self.model,
                                          pretrained=self.weights,
                                          store_seq=self.store.latest_seq)
            self.index, self.seen_seq = fresh, self.store.latest_seq
            self.mapped = False
        prune_versions(self.index_dir, keep=self.keep_versions)
        return self.manifest

    # -- reads -------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, params: SearchParams
               ) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return search_reranked(self.index, self.store, queries, k, params)

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.store.get(np.asarray(ids, dtype=np.int64))

    @property
    def count(self) -> int:
        return self.index.ntotal
