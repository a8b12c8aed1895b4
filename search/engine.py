"""The query engine: encode -> candidates (SQL pre-filter -> id selector -> ANN -> exact
re-rank -> fuse per item, in search.candidates) -> join metadata for the page."""

from __future__ import annotations

import time

import numpy as np

from search import hybrid
from search.candidates import RankedItem, Ranking, owner_map, rank_items
from search.catalog.models import Modality
from search.catalog.vectors import VectorInfo
from search.collection.collection import Collection
from search.errors import InvalidQueryError, UnknownItemError
from search.media import decode_image
from search.models.encoder import normalize
from search.models.query_cache import QueryEmbeddingCache
from search.query import Hit, QueryPart, SearchQuery, SearchResult
from search.workspace import Workspace


class Searcher:
    """Answers `SearchQuery`s over a workspace. Stateless between calls; thread-safe."""

    def __init__(self, workspace: Workspace, query_cache: QueryEmbeddingCache | None = None
                 ) -> None:
        self.workspace = workspace
        # Text-query embeddings, shared by every collection with the same encoder.
        self.query_cache = query_cache if query_cache is not None else QueryEmbeddingCache()

    def search(self, query: SearchQuery) -> SearchResult:
        """Run the query in its mode (vector, keyword or hybrid; see search.hybrid)."""
        collection = self.workspace.collection(query.collection)
        settings = self.workspace.settings
        return hybrid.run(query, collection, self, overlap=settings.hybrid_overlap,
                          score_cap=settings.keyword_score_cap)

    def warm(self, name: str) -> None:
        """Read what a collection's first query would otherwise read (its vector owner
        map: about a second per million vectors; its query towers, exported to ONNX the
        first time), e.g. while a server preloads."""
        collection = self.workspace.collection(name)
        collection.encoder.warm_queries()
        owner_map(collection).current()

    def vector_search(self, query: SearchQuery) -> SearchResult:
        collection = self.workspace.collection(query.collection)
        ranking = self.vector_ranking(query, collection)
        started = time.perf_counter()
        page = self._page(collection, ranking.items[query.offset : query.offset + query.k])
        timings = ranking.timings_ms()
        timings["sql_ms"] = round(timings["sql_ms"] + _ms_since(started), 3)
        return SearchResult(page, ranking.considered, timings)

    def vector_ranking(self, query: SearchQuery, collection: Collection) -> Ranking:
        """The query's items ranked by vector, down to its page's end, without their
        catalog rows (hybrid reads those once for the fused page)."""
        started = time.perf_counter()
        vector = self.query_vector(collection, query.parts)
        encode_ms = _ms_since(started)
        want = (query.k + query.offset) * (3 if query.dedupe else 1)
        ranking = rank_items(collection, query, vector, want)
        ranking.encode_ms = encode_ms
        ranking.items = [r for r in ranking.items if query.min_score is None or
                         r.score >= query.min_score]
        if query.dedupe:
            ranking.items = _dedupe(collection, ranking.items, query.dedupe)
        return ranking

    @staticmethod
    def _page(collection: Collection, ranked: list[RankedItem]) -> list[Hit]:
        """Item metadata joined once, for the page only (an item deleted meanwhile drops)."""
        infos = collection.catalog.vector_infos([r.vector_id for r in ranked])
        return [_hit(r, infos[r.vector_id]) for r in ranked if r.vector_id in infos]

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
            return self.query_cache.text_vector(encoder, part.text)
        if part.image is not None:
            image = part.image
            if not hasattr(image, "convert"):
                image = decode_image(image, min_side=encoder.image_size)
            return encoder.encode_query_image(image)
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


def _hit(ranked: RankedItem, info: VectorInfo) -> Hit:
    return Hit(info.item_id, info.external_id, ranked.score, ranked.modality, info.text,
               info.image_ref, info.attributes, info.image_generated, ranked.scores)


def _dedupe(collection: Collection, ranked: list[RankedItem], threshold: float
            ) -> list[RankedItem]:
    """Drop an item whose best vector is near-identical to a better-ranked item's."""
    kept: list[RankedItem] = []
    kept_vectors: list[np.ndarray] = []
    for item in ranked:
        space = collection.spaces[Modality(item.modality)]
        vectors, ok = space.vectors(np.array([item.vector_id], dtype=np.int64))
        mine = vectors[ok]
        if len(mine) and kept_vectors and (np.stack(kept_vectors) @ mine[0]).max() >= threshold:
            continue
        kept.append(item)
        kept_vectors.extend(mine)
    return kept


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
