"""A query's candidate items: ANN per modality, one hit per item with its image and text
scores fused exactly (search.fusion), deepened only while an item not met yet could
still enter the top.

A round costs one ANN search per space, binary searches in the in-memory owner map
(search.catalog.owners: no SQL beyond its one stamp query per search) and one float16
store lookup per modality for siblings never scored before. Item metadata is not read
here: the engine joins it once for the page. When a round falls short, the next depth
is estimated from the scores seen (how fast each space's scores fall with rank), so the
worst case (image and text scores that disagree) takes about two rounds, not many.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from search.catalog.catalog import Catalog
from search.catalog.models import Modality, Source
from search.catalog.owners import OwnerMap, OwnerSnapshot
from search.collection.collection import Collection
from search.fusion import (
    Fused,
    ScorePool,
    Shapes,
    eligible_kinds,
    fuse,
    item_shapes,
    score_members,
    unseen_bound,
)
from search.query import SearchQuery, Target
from search.vectors.index import SearchParams
from search.vectors.space import VectorSpace

# A filter matching at most this share of a space is applied inside FAISS (id selector);
# a broader one is cheaper as a post-filter over an over-fetched candidate list.
SELECTOR_MAX_SHARE = 0.1
SELECTOR_MIN_IDS = 20_000
MAX_OVERFETCH = 32
# Fused (`target: any`) first depth per space: deep enough that items whose image and
# text scores agree (a good model) complete in one round.
FUSION_MIN_FETCH = 128
# A deeper round asks for this much more than the scores seen predict (the prediction
# extrapolates how scores fall with log rank), and at least FUSION_GROWTH times the depth.
DEPTH_MARGIN = 1.25
FUSION_GROWTH = 2


@dataclass(frozen=True, eq=False)
class SpaceHits:
    ids: np.ndarray  # int64 [n], best first
    scores: np.ndarray  # float32 [n], exact
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
    rounds: int = 0
    encode_ms: float = 0.0

    def timings_ms(self) -> dict[str, float]:
        return {"encode_ms": self.encode_ms, "ann_ms": round(self.ann_ms, 3),
                "sql_ms": round(self.sql_ms, 3)}


@dataclass
class _Round:
    """What one query learned so far; a deeper round adds to it."""

    owners: OwnerSnapshot
    pool: ScorePool = field(default_factory=ScorePool)
    forced: bool = False  # the owner map was re-read for an id it did not hold


def rank_items(collection: Collection, query: SearchQuery, vector: np.ndarray,
               want: int) -> Ranking:
    """Items ranked by fused score, exact for the top `want` (ties aside)."""
    modalities = _modalities(query)
    started = time.perf_counter()
    owners = owner_map(collection)
    state, ranking = _Round(owners.current()), Ranking([], 0)
    ranking.sql_ms += _ms_since(started)
    kinds = eligible_kinds(modalities, query.include_generated)
    weights = np.array([query.fusion.image_weight, query.fusion.text_weight])
    shapes = _shapes(collection, state.owners, kinds, modalities)
    first = want if len(modalities) == 1 else max(want * 4, FUSION_MIN_FETCH)
    started = time.perf_counter()
    allowed = {m: allowed_ids(collection, m, query) for m in modalities
               if collection.spaces[m].count}
    ranking.sql_ms += _ms_since(started)
    limits = {m: collection.spaces[m].count if a is None else len(a)
              for m, a in allowed.items()}
    depths = {m: min(first, limit) for m, limit in limits.items() if limit}
    while True:
        started = time.perf_counter()
        found = {m: search_space(collection.spaces[m], query, vector, d, allowed[m])
                 for m, d in depths.items()}
        ranking.ann_ms += _ms_since(started)
        ranking.rounds += 1
        ranking.considered = sum(len(f.ids) for f in found.values())
        fused = _fuse_found(collection, owners, state, found, kinds, weights, vector, ranking)
        floors = np.array([found[m].floor if m in found else -math.inf for m in Modality])
        target = float(fused.scores[want - 1]) if len(fused) >= want else -math.inf
        if unseen_bound(floors, weights, shapes) <= target:
            break
        deeper = _deeper(found, depths, limits, target)
        if deeper == depths:
            break
        depths = deeper
    ranking.items = _ranked(fused, want)
    return ranking


def _modalities(query: SearchQuery) -> list[Modality]:
    return list(Modality) if query.target == Target.ANY else [Modality(query.target)]


def _fuse_found(collection: Collection, owners: OwnerMap, state: _Round,
                found: dict[Modality, SpaceHits], kinds: np.ndarray, weights: np.ndarray,
                vector: np.ndarray, ranking: Ranking) -> Fused:
    """Every item met so far, fused exactly from all its eligible vectors."""
    ids = np.concatenate([f.ids for f in found.values()] or [np.zeros(0, np.int64)])
    scores = np.concatenate([f.scores for f in found.values()] or [np.zeros(0, np.float32)])
    state.pool.add(ids, scores.astype(np.float64))
    items, known = state.owners.owners(ids)
    if not known.all() and not state.forced:  # written after the stamp was read
        started = time.perf_counter()
        state.owners, state.forced = owners.current(force=True), True
        ranking.sql_ms += _ms_since(started)
        items, known = state.owners.owners(ids)
    items = np.unique(items[known])  # an id still unknown was deleted meanwhile
    members = state.owners.members_of(items)
    members[:, ~kinds] = -1
    member_scores = score_members(members, state.pool, collection.spaces, vector)
    return fuse(items, members, member_scores, weights)


def _ranked(fused: Fused, want: int) -> list[RankedItem]:
    names = [m.value for m in Modality]
    out = []
    for row in range(min(want, len(fused))):
        per = fused.per_modality[row]
        matched = int(fused.matched[row])
        out.append(RankedItem(int(fused.item_ids[row]), float(fused.scores[row]),
                              names[matched], int(fused.best_vectors[row, matched]),
                              {names[i]: float(s) for i, s in enumerate(per)
                               if not np.isnan(s)}))
    return out


def _deeper(found: dict[Modality, SpaceHits], depths: dict[Modality, int],
            limits: dict[Modality, int], target: float) -> dict[Modality, int]:
    """Depths for the next round: a space whose floor is above the current k-th fused
    score goes down to about where its scores reach it (predicted from the scores seen);
    a space already below it, or exhausted, stays (an unmet item must beat the target in
    some space, so every bound then falls to the target)."""
    deeper = dict(depths)
    for modality, depth in depths.items():
        hits, count = found[modality], limits[modality]
        if hits.floor == -math.inf or hits.floor <= target or depth >= count:
            continue
        predicted = min(float(count), DEPTH_MARGIN * _predicted_depth(hits.scores, target))
        deeper[modality] = min(count, max(FUSION_GROWTH * depth, math.ceil(predicted)))
    return deeper


def _predicted_depth(scores: np.ndarray, target: float) -> float:
    """The rank where these descending scores would reach `target`, extrapolating the
    slope of score over log rank between a quarter of the depth and the depth (a tail
    that falls ever faster, as a normal one does, makes this an over-estimate)."""
    depth = len(scores)
    if target == -math.inf or depth < 8:
        return math.inf
    quarter = max(1, depth // 4)
    slope = (float(scores[-1]) - float(scores[quarter - 1])) / math.log(depth / quarter)
    if slope >= 0:
        return math.inf
    return depth * math.exp(min(50.0, (target - float(scores[-1])) / slope))


# -- the owner map and item shapes, per collection ----------------------------------------
# Per catalog and collection id, not per Collection object: a collection reopened on a
# new index version (every save by a writer) keeps its map; the map's stamp tells a
# collection dropped and created again under the same id.
_MAPS: weakref.WeakKeyDictionary[Catalog, dict[int, OwnerMap]] = weakref.WeakKeyDictionary()
_SHAPES: dict[tuple, Shapes] = {}
_MAPS_LOCK = threading.Lock()


def owner_map(collection: Collection) -> OwnerMap:
    """The collection's owner map (built on its first `current()`: `Searcher.warm`)."""
    with _MAPS_LOCK:
        maps = _MAPS.setdefault(collection.catalog, {})
        found = maps.get(collection.info.id)
        if found is None:
            found = maps[collection.info.id] = OwnerMap(collection.catalog, collection.info.id)
        return found


def _shapes(collection: Collection, owners: OwnerSnapshot, kinds: np.ndarray,
            modalities: list[Modality]) -> Shapes:
    """Item shapes for the bound; a single-modality query needs none of the map."""
    if len(modalities) == 1:
        return Shapes(modalities[0] is Modality.IMAGE, modalities[0] is Modality.TEXT, False)
    stores = tuple((str(collection.spaces[m].store.path), collection.spaces[m].store.latest_seq)
                   for m in Modality)  # the store's state: the path names the model
    key = (id(collection.catalog), collection.info.id, owners.stamp, owners.max_vector_id,
           stores, kinds.tobytes())
    with _MAPS_LOCK:
        if key in _SHAPES:
            return _SHAPES[key]
    live = {m: collection.spaces[m].store_ids() for m in Modality}
    shapes = item_shapes(owners, live, kinds)
    with _MAPS_LOCK:
        if len(_SHAPES) >= 64:
            _SHAPES.clear()
        _SHAPES[key] = shapes
    return shapes


# -- one space, with filters ---------------------------------------------------------------
def search_params(query: SearchQuery, allowed: np.ndarray | None = None) -> SearchParams:
    defaults = SearchParams()
    return SearchParams(nprobe=query.nprobe,  # None: the index's default for its nlist
                        rerank_factor=query.rerank_factor or defaults.rerank_factor,
                        allowed_ids=allowed)


def allowed_ids(collection: Collection, modality: Modality, query: SearchQuery
                ) -> np.ndarray | None:
    """The vector ids of one space a query may match (filters, sources); None: all."""
    filters, sources = list(query.filters), _sources(query, modality.value)
    if not filters and sources is None:
        return None
    return collection.catalog.allowed_vector_ids(
        collection.info.id, modalities=[modality.value], filters=filters, sources=sources)


def search_space(space: VectorSpace, query: SearchQuery, vector: np.ndarray, want: int,
                 allowed: np.ndarray | None) -> SpaceHits:
    """The `want` best vectors of one space among `allowed` (None: all)."""
    if allowed is None:
        return _ann(space, vector, want, search_params(query), space.count)
    if len(allowed) == 0:
        return SpaceHits(np.zeros(0, np.int64), np.zeros(0, np.float32), -math.inf)
    if len(allowed) <= max(SELECTOR_MIN_IDS, SELECTOR_MAX_SHARE * space.count):
        return _ann(space, vector, want, search_params(query, allowed), len(allowed))
    # Broad filter: over-fetch in proportion to how much it rejects, then keep the allowed.
    factor = min(MAX_OVERFETCH, math.ceil(2 * space.count / len(allowed)))
    found = _ann(space, vector, want * factor, search_params(query), space.count)
    keep = np.isin(found.ids, allowed)
    return SpaceHits(found.ids[keep], found.scores[keep], found.floor)


def _ann(space: VectorSpace, vector: np.ndarray, want: int, params: SearchParams,
         limit: int) -> SpaceHits:
    """ANN top `want`; `limit`: how many vectors it may return at most (all of them
    fetched: nothing is left below the floor)."""
    scores, ids = space.search(vector[None, :], want, params)
    valid = ids[0] >= 0
    found_ids, found_scores = ids[0][valid], scores[0][valid]
    exhausted = len(found_ids) < want or want >= limit
    floor = -math.inf if exhausted or not len(found_ids) else float(found_scores[-1])
    return SpaceHits(found_ids, found_scores, floor)


def _sources(query: SearchQuery, modality: str) -> list[str] | None:
    """The vector sources a query may match in one modality; None: any."""
    if query.include_generated or modality != Modality.IMAGE.value:
        return None
    return [Source.ORIGINAL.value]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
