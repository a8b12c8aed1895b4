"""Exact late fusion of items met by ANN, vectorised: one hit per item, its image and text
scores combined with the query's weights, and the bound on any item not met yet.

An item's fused score is the weighted mean of its best score per modality (over the
vectors the query may match: generated pictures only when it includes them); an item
with one modality scores that modality alone. Scores of vectors ANN did not return
(an item's siblings) come from the float16 embedding store in one lookup per modality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from search.catalog.models import Modality, Source
from search.catalog.owners import KINDS, OwnerSnapshot
from search.sorted_ids import locate
from search.vectors.space import VectorSpace

_KIND_MODALITY = np.array([list(Modality).index(m) for m, _ in KINDS])  # [kinds]


@dataclass(frozen=True, eq=False)
class Fused:
    """Items ranked by fused score (descending, then item id), aligned arrays."""

    item_ids: np.ndarray  # int64 [n]
    scores: np.ndarray  # float64 [n]
    per_modality: np.ndarray  # float64 [n, modalities]; nan: the item has none
    best_vectors: np.ndarray  # int64 [n, modalities]; the best vector of each; -1 none
    matched: np.ndarray  # int64 [n]: index into Modality of the biggest weighted part

    def __len__(self) -> int:
        return len(self.item_ids)


class ScorePool:
    """Exact scores of the vectors a query has seen (ANN hits and looked-up siblings),
    across rounds: a deeper round never looks a vector up twice. NaN: not in the store."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)  # sorted
        self.scores = np.zeros(0, np.float64)

    def add(self, ids: np.ndarray, scores: np.ndarray) -> None:
        ids = np.concatenate([self.ids, ids])
        scores = np.concatenate([self.scores, scores])
        self.ids, first = np.unique(ids, return_index=True)
        self.scores = scores[first]

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n], known mask [n]); unknown ids read nan."""
        if not len(self.ids):
            return np.full(ids.shape, np.nan), np.zeros(ids.shape, bool)
        pos, known = locate(self.ids, ids)
        return np.where(known, self.scores[pos], np.nan), known


def eligible_kinds(modalities: list[Modality], include_generated: bool) -> np.ndarray:
    """bool [kinds]: the vector kinds a query may match."""
    return np.array([m in modalities and (include_generated or s is not Source.GENERATED)
                     for m, s in KINDS])


def score_members(members: np.ndarray, pool: ScorePool, spaces: dict[Modality, VectorSpace],
                  vector: np.ndarray) -> np.ndarray:
    """float64 [n, kinds] exact scores of `members` (-1 or missing from the store: nan).
    Members the pool lacks are read from the store, one lookup per modality."""
    valid = members >= 0
    scores, known = pool.get(members)
    for index, modality in enumerate(Modality):
        todo = valid & ~known & (index == _KIND_MODALITY)[None, :]
        ids = np.unique(members[todo])
        if not len(ids):
            continue
        vectors, found = spaces[modality].vectors(ids)
        exact = np.where(found, np.einsum("ud,d->u", vectors, vector), np.nan)  # no BLAS
        pool.add(ids, exact)
        scores[todo] = pool.get(members[todo])[0]
    scores[~valid] = np.nan
    return scores


def fuse(item_ids: np.ndarray, members: np.ndarray, scores: np.ndarray,
         weights: np.ndarray) -> Fused:
    """Rank items from their members' scores ([n, kinds] each); weights: [modalities]."""
    per, best = _best_per_modality(members, scores)
    present = ~np.isnan(per)
    has_any = present.any(axis=1)
    item_ids, per, best, present = item_ids[has_any], per[has_any], best[has_any], present[
        has_any]
    weighted = np.where(present, per * weights[None, :], 0.0)
    total = (present * weights[None, :]).sum(axis=1)
    fused = weighted.sum(axis=1) / np.where(total == 0, 1.0, total)
    matched = np.argmax(np.where(present, per * weights[None, :], -np.inf), axis=1)
    order = np.lexsort((item_ids, -fused))
    return Fused(item_ids[order], fused[order], per[order], best[order], matched[order])


def _best_per_modality(members: np.ndarray, scores: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Best score and its vector per modality: float64 [n, m] (nan: none), int64 [n, m]."""
    n = len(members)
    per = np.full((n, len(Modality)), np.nan)
    best = np.full((n, len(Modality)), -1, np.int64)
    for index in range(len(Modality)):
        columns = np.flatnonzero(index == _KIND_MODALITY)
        part = np.where(np.isnan(scores[:, columns]), -np.inf, scores[:, columns])
        pick = np.argmax(part, axis=1)
        top = part[np.arange(n), pick]
        has = np.isfinite(top)
        per[has, index] = top[has]
        best[has, index] = members[:, columns][np.arange(n), pick][has]
    return per, best


# -- the bound on items not met yet --------------------------------------------------------
@dataclass(frozen=True)
class Shapes:
    """Which modality sets the collection's items have (live vectors only): an item not
    met yet can be of these shapes only, so the bound need not cover the others."""

    image_only: bool
    text_only: bool
    both: bool


def item_shapes(snapshot: OwnerSnapshot, live: dict[Modality, np.ndarray],
                kinds: np.ndarray) -> Shapes:
    """Shapes over eligible kinds, a member counting only while its store holds it (an
    item whose image was removed has become text-only though the map still lists it)."""
    has = np.zeros((len(snapshot.item_ids), len(Modality)), bool)
    for kind, (modality, _) in enumerate(KINDS):
        if not kinds[kind]:
            continue
        ids, column = live[modality], snapshot.members[:, kind]
        if not len(ids):
            continue
        _, found = locate(ids, column)
        has[:, list(Modality).index(modality)] |= (column >= 0) & found
    image, text = has[:, 0], has[:, 1]
    return Shapes(bool((image & ~text).any()), bool((text & ~image).any()),
                  bool((image & text).any()))


def unseen_bound(floors: np.ndarray, weights: np.ndarray, shapes: Shapes) -> float:
    """The highest fused score an item not met yet can have. floors: [modalities], every
    unfetched vector of that modality scores at most this (-inf: none left).

    Fusion is a weighted mean, increasing in each score, so an unmet item with both
    modalities scores at most the weighted mean of the floors, and one with a single
    modality at most that modality's floor."""
    bounds = [-math.inf]
    if shapes.both:
        total = float(weights.sum())
        if np.isneginf(floors).any():
            bounds.append(-math.inf)
        else:
            bounds.append(float(weights @ floors) / (total or 1.0))
    if shapes.image_only:
        bounds.append(_single(floors[0], weights[0]))
    if shapes.text_only:
        bounds.append(_single(floors[1], weights[1]))
    return max(bounds)


def _single(floor: float, weight: float) -> float:
    # an item whose only modality has weight 0 scores 0 (the weighted mean's 0 / 1)
    return float(floor) if weight > 0 or np.isneginf(floor) else 0.0
