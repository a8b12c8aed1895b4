"""What must be identical between two equivalent indexing runs: items and search answers."""

from __future__ import annotations

import json

import numpy as np

from search.engine import Searcher
from search.query import SearchMode, SearchQuery, Target

QUERIES = ("fruit product", "shoes 7", "toys")


def snapshot(ws, name: str) -> tuple[list, list]:
    collection = ws.collection(name)
    rows = []
    for batch in ws.catalog.iter_items(collection.info.id):
        for item in batch:
            full = ws.catalog.get_item(collection.info.id, item.external_id)
            rows.append((full.external_id, full.text, full.image_ref,
                         json.dumps(full.attributes, sort_keys=True), full.content_hash,
                         full.status, sorted((v.modality, v.source) for v in full.vectors)))
    searcher = Searcher(ws)
    answers = []
    for text in QUERIES:
        for target in Target:
            # vector mode: its scores are the embeddings' (compared within float16
            # rounding); keyword ties break by item id, which equivalent runs may not share
            query = SearchQuery.text(name, text, target=target, k=8, mode=SearchMode.VECTOR)
            hits = searcher.search(query).hits
            answers.append([(h.external_id, h.score) for h in hits])
    return sorted(rows), answers


SCORE_ATOL = 2e-3  # float16 storage rounding of two embeddings of the same input


def assert_same_collection(a: tuple[list, list], b: tuple[list, list]) -> None:
    """Same rows exactly; same rankings; scores equal up to float16 storage rounding
    (a text's embedding depends on its batch only by float rounding). Two hits whose
    scores differ by less than that rounding may trade places (a near-tie), nothing else."""
    assert a[0] == b[0]
    for left, right in zip(a[1], b[1], strict=True):
        assert_same_ranking(left, right)


def assert_same_ranking(left: list, right: list, atol: float = SCORE_ATOL) -> None:
    assert len(left) == len(right)
    assert np.allclose([s for _, s in left], [s for _, s in right], atol=atol)  # per rank
    by_id_left, by_id_right = dict(left), dict(right)
    for external_id in by_id_left.keys() & by_id_right.keys():  # per item
        assert abs(by_id_left[external_id] - by_id_right[external_id]) <= atol, external_id
    if left:  # an item in one top-k only was tied at the cut-off
        cutoff = min(left[-1][1], right[-1][1])
        for external_id in by_id_left.keys() ^ by_id_right.keys():
            score = by_id_left.get(external_id, by_id_right.get(external_id))
            assert abs(score - cutoff) <= 2 * atol, external_id
    for (e1, s1), (e2, _) in zip(left, right, strict=True):  # a swap needs a near-tie
        if e1 != e2 and e2 in by_id_left:
            assert abs(by_id_left[e2] - s1) <= 2 * atol, (e1, e2)
