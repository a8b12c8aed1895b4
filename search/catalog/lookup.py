"""Read-only item lookups by internal id (what clip-retrieval style clients hold)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from search.catalog.catalog import Catalog
from search.catalog.models import ItemRow

_CHUNK = 5000  # bound SQL IN-lists, as the catalog does


@dataclass(frozen=True)
class ItemRecord:
    item_id: int
    external_id: str
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any]


def items_by_id(catalog: Catalog, collection_id: int,
                item_ids: Sequence[int]) -> dict[int, ItemRecord]:
    """The items of one collection with these ids; ids of other collections are absent."""
    wanted = sorted({int(i) for i in item_ids})
    found: dict[int, ItemRecord] = {}
    with catalog.session() as session:
        for start in range(0, len(wanted), _CHUNK):
            rows = session.scalars(select(ItemRow).where(
                ItemRow.collection_id == collection_id,
                ItemRow.id.in_(wanted[start : start + _CHUNK])))
            for row in rows:
                found[row.id] = ItemRecord(row.id, row.external_id, row.text, row.image_ref,
                                           dict(row.attributes or {}))
    return found
