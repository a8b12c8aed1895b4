"""A query's candidate items: ANN per modality, one hit per item with its image and text
scores fused exactly, deepened only until no unfetched item can enter the top.

A round costs one ANN search per space (cheap), one ids-only SQL lookup of the owners
and siblings of vectors not seen before, and one float16 store lookup per modality for
sibling scores. Item metadata is not read here: the engine joins it once for the page.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from search.catalog.models import Modality, Source
from search.collection.collection import Collection
from search.query import SearchQuery, Target
from search.vectors.index import SearchParams
from search.vectors.space import VectorSpace

# A filter matching at most this share of a space is applied inside FAISS (id selector);
# a broader one is cheaper as a post-filter over an over-fetched candidate list.
SELECTOR_MAX_SHARE = 0.1
SELECTOR_MIN_IDS = 20_000
MAX_OVERFETCH = 32
# Fused (`target: any`) depth per space: deep enough that items whose image and text
# scores disagree (weak models, catalogs whose titles and pictures differ) usually
# complete in one round; each further round fetches FUSION_GROWTH times more.
FUSION_MIN_FETCH = 128
FUSION_GROWTH = 4
MAX_FUSION_FETCH = 4096

Entry = tuple[int, str, str]  # (vector_id, modality, source)


@dataclass(frozen=True)
class SpaceHits:
    scores: dict[int, float]  # vector id -> exact score
    floor: float  # every unfetched allowed vector scores at most this; -inf: none left


@dataclass(frozen=True)
class RankedItem:
    item_id: int
    score: float  # fused over `scores` with the query's weights
    modality: str  # the modality that contributed most
    vector_id: int  # the best vector of `modality`: its item's metadata shows the hit
    scores: dict[str, float]  # modality -> best exact score


@dataclass
class Ranking:
    items: list[RankedItem]
    considered: int
    ann_ms: float = 0.0
    sql_ms: float = 0.0


@dataclass
class _Seen:
    """What earlier rounds learned; later rounds only add to it."""

    exact: dict[int, float] = field(default_factory=dict)  # vector id -> exact score
    owner: dict[int, int] = field(default_factory=dict)  # vector id -> item id (-1: gone)
    members: dict[int, list[Entry]] = field(default_factory=dict)  # item -> its vectors


def rank_items(collection: Collection, query: SearchQuery, vector: np.ndarray,
               want: int) -> Ranking:
    """Items ranked by fused score, exact for the top `want` (ties aside)."""
    modalities = _modalities(query)
    fetch = want if len(modalities) == 1 else max(want * 4, FUSION_MIN_FETCH)
    seen, ranking = _Seen(), Ranking([], 0)
    while True:
        started = time.perf_counter()
        found = [search_space(collection, collection.spaces[m], m, query, vector, fetch)
                 for m in modalities if collection.spaces[m].count]
        ranking.ann_ms += _ms_since(started)
        ranking.considered = sum(len(f.scores) for f in found)
        for hits in found:
            seen.exact.update(hits.scores)
        ranking.sql_ms += _learn_owners(collection, query, seen, found)
        _score_siblings(collection, vector, seen)
        ranking.items = _fuse_all(seen, query)
        floor = max((f.floor for f in found), default=-math.inf)
        if floor == -math.inf or fetch >= MAX_FUSION_FETCH or _complete(ranking.items, want,
                                                                        floor):
            return ranking
        fetch *= FUSION_GROWTH


def _modalities(query: SearchQuery) -> list[Modality]:
    return list(Modality) if query.target == Target.ANY else [Modality(query.target)]


def _complete(items: list[RankedItem], want: int, floor: float) -> bool:
    """A fused score is a weighted mean, never above the item's best modality score; an
    unfetched item scores at most `floor` in every space, so it cannot beat this top."""
    return len(items) >= want and items[want - 1].score >= floor


def _learn_owners(collection: Collection, query: SearchQuery, seen: _Seen,
                  found: list[SpaceHits]) -> float:
    """Items (and all their vectors) of the vectors not seen before; returns SQL ms."""
    new = {vid for hits in found for vid in hits.scores if vid not in seen.owner}
    if not new:
        return 0.0
    started = time.perf_counter()
    groups = collection.catalog.sibling_vectors(sorted(new))
    elapsed = _ms_since(started)
    wanted = {m.value for m in _modalities(query)}
    for item_id, entries in groups.items():
        for vid, _, _ in entries:
            seen.owner[vid] = item_id
        seen.members[item_id] = [e for e in entries if e[1] in wanted and
                                 (query.include_generated or e[2] != Source.GENERATED.value)]
    for vid in new - seen.owner.keys():  # deleted since the ANN search
        seen.owner[vid] = -1
    return elapsed


def _score_siblings(collection: Collection, vector: np.ndarray, seen: _Seen) -> None:
    """Exact scores of members not fetched by ANN: one float16 store lookup per modality.
    A vector missing from the store (deleted meanwhile) leaves its item's entries."""
    for modality in Modality:
        ids = np.array([vid for entries in seen.members.values() for vid, m, _ in entries
                        if m == modality.value and vid not in seen.exact], dtype=np.int64)
        if not len(ids):
            continue
        vectors, ok = collection.spaces[modality].vectors(ids)
        seen.exact.update(zip(ids[ok].tolist(), (vectors[ok] @ vector).tolist(), strict=True))
    for item_id, entries in seen.members.items():
        if any(vid not in seen.exact for vid, _, _ in entries):
            seen.members[item_id] = [e for e in entries if e[0] in seen.exact]


def _fuse_all(seen: _Seen, query: SearchQuery) -> list[RankedItem]:
    weights = {Modality.IMAGE.value: query.fusion.image_weight,
               Modality.TEXT.value: query.fusion.text_weight}
    items = [_fuse(item_id, entries, seen.exact, weights)
             for item_id, entries in seen.members.items() if entries]
    return sorted(items, key=lambda r: (-r.score, r.item_id))


def _fuse(item_id: int, entries: list[Entry], exact: dict[int, float],
          weights: dict[str, float]) -> RankedItem:
    best: dict[str, int] = {}  # modality -> best vector id
    for vid, modality, _ in entries:
        if modality not in best or exact[vid] > exact[best[modality]]:
            best[modality] = vid
    per_modality = {m: exact[vid] for m, vid in best.items()}
    total_weight = sum(weights[m] for m in per_modality) or 1.0
    score = sum(weights[m] * s for m, s in per_modality.items()) / total_weight
    matched = max(per_modality, key=lambda m: weights[m] * per_modality[m])
    return RankedItem(item_id, float(score), matched, best[matched], per_modality)


# -- one space, with filters ---------------------------------------------------------------
def search_params(query: SearchQuery, allowed: np.ndarray | None = None) -> SearchParams:
    defaults = SearchParams()
    return SearchParams(nprobe=query.nprobe or defaults.nprobe,
                        rerank_factor=query.rerank_factor or defaults.rerank_factor,
                        allowed_ids=allowed)


def search_space(collection: Collection, space: VectorSpace, modality: Modality,
                 query: SearchQuery, vector: np.ndarray, want: int) -> SpaceHits:
    """The `want` best allowed vectors of one space (filters and sources applied)."""
    filters, sources = list(query.filters), _sources(query, modality.value)
    if not filters and sources is None:
        return _ann(space, vector, want, search_params(query))
    allowed = collection.catalog.allowed_vector_ids(
        collection.info.id, modalities=[modality.value], filters=filters, sources=sources)
    if len(allowed) == 0:
        return SpaceHits({}, -math.inf)
    if len(allowed) <= max(SELECTOR_MIN_IDS, SELECTOR_MAX_SHARE * space.count):
        return _ann(space, vector, want, search_params(query, allowed))
    # Broad filter: over-fetch in proportion to how much it rejects, then keep the allowed.
    factor = min(MAX_OVERFETCH, math.ceil(2 * space.count / len(allowed)))
    found = _ann(space, vector, want * factor, search_params(query))
    ids = np.fromiter(found.scores, dtype=np.int64, count=len(found.scores))
    keep = ids[np.isin(ids, allowed, assume_unique=True)].tolist()
    return SpaceHits({v: found.scores[v] for v in keep}, found.floor)


def _ann(space: VectorSpace, vector: np.ndarray, want: int, params: SearchParams) -> SpaceHits:
    scores, ids = space.search(vector[None, :], want, params)
    found = {int(i): float(s) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0}
    floor = min(found.values()) if len(found) >= want else -math.inf
    return SpaceHits(found, floor)


def _sources(query: SearchQuery, modality: str) -> list[str] | None:
    """The vector sources a query may match in one modality; None: any."""
    if query.include_generated or modality != Modality.IMAGE.value:
        return None
    return [Source.ORIGINAL.value]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
