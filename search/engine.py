"""The query engine: encode -> (SQL pre-filter -> id selector) -> ANN -> exact re-rank ->
fuse per item -> join metadata."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from search import hybrid
from search.catalog.catalog import VectorInfo
from search.catalog.models import Modality, Source
from search.collection.collection import Collection
from search.errors import InvalidQueryError, UnknownItemError
from search.media import decode_image
from search.models.encoder import normalize
from search.query import Hit, QueryPart, SearchQuery, SearchResult, Target
from search.vectors.index import SearchParams
from search.vectors.space import VectorSpace
from search.workspace import Workspace

# A filter matching at most this share of a space is applied inside FAISS (id selector);
# a broader one is cheaper as a post-filter over an over-fetched candidate list.
SELECTOR_MAX_SHARE = 0.1
SELECTOR_MIN_IDS = 20_000
MAX_OVERFETCH = 32


MAX_FUSION_FETCH = 4096


@dataclass
class _Candidates:
    scores: dict[int, float]  # vector id -> exact score
    considered: int
    floor: float  # lowest score fetched from any space that may hold more; -inf if none


def _fusion_complete(candidates: _Candidates, hits: list[Hit], want: int) -> bool:
    """True when no unfetched item can enter the top `want`.

    A fused score is a weighted mean, so it never exceeds the item's best modality score;
    an item missing from every space's candidates scores below `floor` everywhere."""
    if candidates.floor == -math.inf:
        return True
    return len(hits) >= want and hits[want - 1].score >= candidates.floor


class Searcher:
    """Answers `SearchQuery`s over a workspace. Stateless between calls; thread-safe."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def search(self, query: SearchQuery) -> SearchResult:
        """Run the query in its mode (vector, keyword or hybrid; see search.hybrid)."""
        collection = self.workspace.collection(query.collection)
        return hybrid.run(query, collection, self.vector_search)

    def vector_search(self, query: SearchQuery) -> SearchResult:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        collection = self.workspace.collection(query.collection)
        vector = self.query_vector(collection, query.parts)
        timings["encode_ms"] = _ms_since(started)

        want = (query.k + query.offset) * (3 if query.dedupe else 1)
        timings["ann_ms"] = timings["sql_ms"] = 0.0
        fetch = want
        while True:
            started = time.perf_counter()
            candidates = self._candidates(collection, query, vector, fetch)
            timings["ann_ms"] += _ms_since(started)
            started = time.perf_counter()
            hits = self._hits(collection, query, vector, candidates.scores)
            timings["sql_ms"] += _ms_since(started)
            if fetch >= MAX_FUSION_FETCH or _fusion_complete(candidates, hits, want):
                break
            fetch *= 4
        if query.dedupe:
            hits = self._dedupe(collection, hits, query.dedupe)
        page = hits[query.offset : query.offset + query.k]
        return SearchResult(page, candidates.considered, timings)

    # -- the query vector ----------------------------------------------------------
    def query_vector(self, collection: Collection, parts: tuple[QueryPart, ...]) -> np.ndarray:
        """Weighted sum of each part's normalised embedding, normalised again: [dim]."""
        total = np.zeros(collection.info.dim, dtype=np.float32)
        for part in parts:
            total += np.float32(part.weight) * self._part_vector(collection, part)
        combined = normalize(total[None, :])[0]
        if not combined.any():
            raise InvalidQueryError("the query's weighted parts cancel out to a zero vector")
        return combined

    def _part_vector(self, collection: Collection, part: QueryPart) -> np.ndarray:
        encoder = collection.encoder
        if part.text is not None:
            return encoder.encode_texts([part.text])[0]
        if part.image is not None:
            image = part.image
            if not hasattr(image, "convert"):
                image = decode_image(image, min_side=encoder.image_size)
            return encoder.encode_images([image])[0]
        if part.vector is not None:
            return self._raw_vector(part.vector, collection.info.dim)
        return self._item_vector(collection, part.item_id or "")

    @staticmethod
    def _raw_vector(values: tuple[float, ...], dim: int) -> np.ndarray:
        vector = np.asarray(values, dtype=np.float32)
        if vector.shape != (dim,):
            raise InvalidQueryError(f"vector has {vector.size} values; this collection "
                                    f"uses {dim}")
        if not np.isfinite(vector).all() or not vector.any():
            raise InvalidQueryError("vector must be finite and not all zeros")
        return normalize(vector[None, :])[0]

    def _item_vector(self, collection: Collection, external_id: str) -> np.ndarray:
        item_id = collection.catalog.item_id(collection.info.id, external_id)
        if item_id is None:
            raise UnknownItemError(collection.name, external_id)
        found = []
        for vid, modality, _ in collection.catalog.item_vectors([item_id]).get(item_id, []):
            vectors, ok = collection.spaces[Modality(modality)].vectors(np.array([vid]))
            found += list(vectors[ok])
        if not found:
            raise InvalidQueryError(f"item {external_id!r} has no stored vectors yet")
        return normalize(np.mean(found, axis=0)[None, :])[0]

    # -- ANN with filters ------------------------------------------------------------
    def _candidates(self, collection: Collection, query: SearchQuery, vector: np.ndarray,
                    want: int) -> _Candidates:
        modalities = list(Modality) if query.target is Target.ANY else [Modality(query.target)]
        scores: dict[int, float] = {}
        considered, floor = 0, -math.inf
        for modality in modalities:
            space = collection.spaces[modality]
            if space.count == 0:
                continue
            found = self._search_space(collection, space, modality, query, vector, want)
            considered += len(found)
            scores.update(found)
            if len(found) >= want and query.target is Target.ANY:
                floor = max(floor, min(found.values()))
        return _Candidates(scores, considered, floor)

    def _params(self, query: SearchQuery, allowed: np.ndarray | None = None) -> SearchParams:
        defaults = SearchParams()
        return SearchParams(nprobe=query.nprobe or defaults.nprobe,
                            rerank_factor=query.rerank_factor or defaults.rerank_factor,
                            allowed_ids=allowed)

    def _search_space(self, collection: Collection, space: VectorSpace, modality: Modality,
                      query: SearchQuery, vector: np.ndarray, want: int) -> dict[int, float]:
        filters, sources = list(query.filters), _sources(query, modality.value)
        if not filters and sources is None:
            return _as_dict(*space.search(vector[None, :], want, self._params(query)))
        catalog, cid = collection.catalog, collection.info.id
        modalities = [modality.value]
        matching = catalog.count_vectors(cid, modalities=modalities, filters=filters,
                                         sources=sources)
        if matching == 0:
            return {}
        if matching <= max(SELECTOR_MIN_IDS, SELECTOR_MAX_SHARE * space.count):
            allowed = catalog.vector_ids(cid, modalities=modalities, filters=filters,
                                         sources=sources)
            return _as_dict(*space.search(vector[None, :], want, self._params(query, allowed)))
        # Broad filter: over-fetch in proportion to how much it rejects, then check in SQL.
        factor = min(MAX_OVERFETCH, math.ceil(2 * space.count / matching))
        found = _as_dict(*space.search(vector[None, :], want * factor, self._params(query)))
        keep = set(catalog.vector_ids(cid, filters=filters, sources=sources,
                                      within=np.fromiter(found, dtype=np.int64)).tolist())
        return {vid: score for vid, score in found.items() if vid in keep}

    # -- per-item fusion and metadata ----------------------------------------------------
    def _hits(self, collection: Collection, query: SearchQuery, vector: np.ndarray,
              scores: dict[int, float]) -> list[Hit]:
        infos = collection.catalog.vector_infos(list(scores))  # drops ids deleted meanwhile
        by_item: dict[int, list[VectorInfo]] = defaultdict(list)
        for info in infos.values():
            by_item[info.item_id].append(info)
        exact = dict(scores)
        if query.target is Target.ANY:
            siblings = collection.catalog.item_vectors(list(by_item))
            if not query.include_generated:  # generated vectors are images, never texts
                siblings = {item: [e for e in entries if e[2] != Source.GENERATED.value]
                            for item, entries in siblings.items()}
            exact.update(self._sibling_scores(collection, siblings, vector, exact))
            for item_id, entries in siblings.items():
                by_item[item_id] = [_with_vector(by_item[item_id][0], vid, m, src)
                                    for vid, m, src in entries if vid in exact]
        hits = [self._fuse(entries, exact, query) for entries in by_item.values()]
        hits = [h for h in hits if query.min_score is None or h.score >= query.min_score]
        return sorted(hits, key=lambda h: (-h.score, h.item_id))

    @staticmethod
    def _sibling_scores(collection: Collection, siblings: dict[int, list[tuple[int, str, str]]],
                        vector: np.ndarray, known: dict[int, float]) -> dict[int, float]:
        """Exact scores of each candidate item's other vectors, from the stored floats."""
        scores: dict[int, float] = {}
        for modality in Modality:
            ids = np.array([vid for entries in siblings.values() for vid, m, _ in entries
                            if m == modality.value and vid not in known], dtype=np.int64)
            if len(ids):
                vectors, ok = collection.spaces[modality].vectors(ids)
                scores.update(zip(ids[ok].tolist(), (vectors[ok] @ vector).tolist(),
                                  strict=True))
        return scores

    @staticmethod
    def _fuse(entries: list[VectorInfo], exact: dict[int, float], query: SearchQuery) -> Hit:
        weights = {Modality.IMAGE.value: query.fusion.image_weight,
                   Modality.TEXT.value: query.fusion.text_weight}
        best: dict[str, VectorInfo] = {}
        for info in entries:
            if info.modality not in best or exact[info.vector_id] > exact[best[info.modality]
                                                                           .vector_id]:
                best[info.modality] = info
        per_modality = {m: exact[i.vector_id] for m, i in best.items()}
        total_weight = sum(weights[m] for m in per_modality) or 1.0
        score = sum(weights[m] * s for m, s in per_modality.items()) / total_weight
        matched = max(per_modality, key=lambda m: weights[m] * per_modality[m])
        top = best[matched]
        return Hit(top.item_id, top.external_id, float(score), matched, top.text,
                   top.image_ref, top.attributes, top.image_generated, per_modality)

    @staticmethod
    def _dedupe(collection: Collection, hits: list[Hit], threshold: float) -> list[Hit]:
        """Drop a hit whose item's vector is near-identical to a better-ranked hit's."""
        kept: list[Hit] = []
        kept_vectors: list[np.ndarray] = []
        vectors_of = collection.catalog.item_vectors([h.item_id for h in hits])
        for hit in hits:
            own = [vid for vid, m, _ in vectors_of.get(hit.item_id, []) if m == hit.modality]
            space = collection.spaces[Modality(hit.modality)]
            vectors, ok = space.vectors(np.array(own[:1], dtype=np.int64))
            mine = vectors[ok]
            if len(mine) and kept_vectors and (np.stack(kept_vectors) @ mine[0]).max() >= \
                    threshold:
                continue
            kept.append(hit)
            kept_vectors.extend(mine)
        return kept


def _with_vector(info: VectorInfo, vector_id: int, modality: str, source: str) -> VectorInfo:
    return VectorInfo(vector_id, info.item_id, info.external_id, modality, source, info.text,
                      info.image_ref, info.attributes, info.image_generated)


def _sources(query: SearchQuery, modality: str) -> list[str] | None:
    """The vector sources a query may match in one modality; None: any."""
    if query.include_generated or modality != Modality.IMAGE.value:
        return None
    return [Source.ORIGINAL.value]


def _as_dict(scores: np.ndarray, ids: np.ndarray) -> dict[int, float]:
    return {int(i): float(s) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0}


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
