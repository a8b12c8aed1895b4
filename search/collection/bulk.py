"""Large batches of new items that carry their vectors (a Ray job's staged shards, a first
import): catalogued by one bulk load (`Catalog.insert_new_items`: COPY on PostgreSQL,
executemany on SQLite) instead of the row-at-a-time upsert, then indexed.

The crash rule is the write path's: the rows commit `pending` (items, attribute rows,
lexical entries and vector rows together), the embeddings are stored, and only then are
the items marked active; a write killed in between leaves pending items that
`Collection.reconcile` hides and the next run redoes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from search.catalog.bulk import NewVector
from search.catalog.items import ItemInput
from search.catalog.models import Modality
from search.collection.preparing import PreparedItem

if TYPE_CHECKING:
    from search.collection.collection import Collection


def split_new(collection: Collection, prepared: Sequence[PreparedItem]
              ) -> tuple[list[PreparedItem], list[PreparedItem]]:
    """(items a bulk load takes, the rest). It takes an item the collection does not hold,
    that appears once in the batch and has nothing left to embed."""
    catalog, cid = collection.catalog, collection.info.id
    held = catalog.existing_external_ids(cid, [p.external_id for p in prepared])
    counts = Counter(p.external_id for p in prepared)
    fresh, rest = [], []
    for p in prepared:
        ready = (not p.skipped_decode and p.pixels is None
                 and (not p.text or p.text_vector is not None)
                 and (not p.has_image or p.image_vector is not None))
        if ready and counts[p.external_id] == 1 and p.external_id not in held:
            fresh.append(p)
        else:
            rest.append(p)
    return fresh, rest


def load_new(collection: Collection, fresh: Sequence[PreparedItem]) -> None:
    """Catalog and index `fresh` (from `split_new`); the caller holds the write lock."""
    if not fresh:
        return
    vectors: list[NewVector] = []
    arrays: list[np.ndarray] = []
    for position, p in enumerate(fresh):
        for modality, vector in ((Modality.TEXT, p.text_vector),
                                 (Modality.IMAGE, p.image_vector)):
            if vector is not None:
                vectors.append(NewVector(position, modality.value))
                arrays.append(vector)
    catalog = collection.catalog
    loaded = catalog.insert_new_items(collection.info.id, [
        ItemInput(p.external_id, p.text, p.image_ref, p.attributes, p.content_hash)
        for p in fresh], vectors)
    for modality in Modality:
        chosen = [i for i, v in enumerate(vectors) if v.modality == modality.value]
        if chosen:
            collection.spaces[modality].add(
                np.asarray([loaded.vector_ids[i] for i in chosen], dtype=np.int64),
                np.stack([arrays[i] for i in chosen]).astype(np.float32, copy=False))
    catalog.mark_active(loaded.item_ids)
