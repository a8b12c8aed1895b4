"""What must be identical between two equivalent indexing runs: items and search answers."""

from __future__ import annotations

import json

import numpy as np

from search.engine import Searcher
from search.query import SearchQuery, Target

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
            hits = searcher.search(SearchQuery.text(name, text, target=target, k=8)).hits
            answers.append([(h.external_id, h.score) for h in hits])
    return sorted(rows), answers


def assert_same_collection(a: tuple[list, list], b: tuple[list, list]) -> None:
    """Same rows exactly; same rankings; scores equal up to float16 storage rounding
    (a text's embedding depends on its batch only by float rounding)."""
    assert a[0] == b[0]
    for left, right in zip(a[1], b[1], strict=True):
        assert [e for e, _ in left] == [e for e, _ in right]
        assert np.allclose([s for _, s in left], [s for _, s in right], atol=2e-3)
