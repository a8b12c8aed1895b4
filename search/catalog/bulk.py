"""Bulk loads of new items: the rows of many items that the catalog does not hold yet, with
their attribute rows, lexical entries and vector rows, in one transaction, at COPY speed
on PostgreSQL and batched executemany on SQLite (`search.catalog.loader`).

The row-at-a-time path (`ItemRows.upsert_items`, `VectorRows.replace_vectors`) compares
each item with its stored row and replaces old vectors; a bulk load skips all of that, so
it takes only items whose external ids are new to the collection (the caller checks
under the collection's write lock; a collision is refused by the unique constraint and
nothing of the batch is written). What it writes is exactly what those methods would
write for the same new items: the same columns and JSON text, the same typed attribute
rows, the same lexical documents, identifiers and words.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from search.catalog import lexical, loader
from search.catalog.attributes import attribute_rows, bump_write_version
from search.catalog.items import ItemInput
from search.catalog.models import ItemAttributeRow, ItemRow, VectorRow, utcnow
from search.catalog.transactions import Transactional, chunks

ITEM_COLUMNS = ("id", "collection_id", "external_id", "text", "image_ref", "attributes",
                "content_hash", "status", "created_at", "updated_at")
ATTRIBUTE_COLUMNS = ("collection_id", "item_id", "key", "text_value", "num_value",
                     "bool_value")
VECTOR_COLUMNS = ("id", "collection_id", "item_id", "modality", "source", "created_at")


@dataclass(frozen=True)
class NewVector:
    """A vector row of the item at `item` (its position in the batch)."""

    item: int
    modality: str
    source: str = "original"


@dataclass(frozen=True)
class BulkLoad:
    item_ids: list[int]  # in input order
    vector_ids: list[int]  # in the order of the `NewVector`s given


class BulkRows(Transactional):
    def insert_new_items(self, collection_id: int, items: Sequence[ItemInput],
                         vectors: Sequence[NewVector] = (), *, status: str = "pending"
                         ) -> BulkLoad:
        """Insert items new to the collection, and their vector rows, in one transaction.

        `status` "pending" (the default) keeps the items out of search until the caller
        has stored their embeddings and calls `mark_active`, as the row-at-a-time path
        does; a duplicate external id in `items` is a ValueError naming it."""
        _refuse_duplicates(items)
        for v in vectors:
            if not 0 <= v.item < len(items):
                raise ValueError(f"vector of item position {v.item}: the batch has "
                                 f"{len(items)} items")
        with self.session() as s:
            # first a write: SQLite then holds its write lock, so the ids are ours
            bump_write_version(s, collection_id)
            item_ids = loader.allocate_ids(s, _table(ItemRow), len(items))
            vector_ids = loader.allocate_ids(s, _table(VectorRow), len(vectors))
            now = utcnow()
            loader.load_rows(s, _table(ItemRow), _item_rows(collection_id, items, item_ids,
                                                            status, now), ITEM_COLUMNS)
            load_attribute_rows(s, collection_id,
                                zip(item_ids, [i.attributes for i in items], strict=True))
            loader.load_rows(s, _table(VectorRow), (
                {"id": vid, "collection_id": collection_id, "item_id": item_ids[v.item],
                 "modality": v.modality, "source": v.source, "created_at": now}
                for vid, v in zip(vector_ids, vectors, strict=True)), VECTOR_COLUMNS)
            settings = lexical.collection_settings(s, collection_id)
            lexical.insert_documents(s, collection_id, [
                lexical.document(item_id, item.text, item.attributes, settings)
                for item_id, item in zip(item_ids, items, strict=True)])
        return BulkLoad(item_ids, vector_ids)

    def existing_external_ids(self, collection_id: int, external_ids: Sequence[str]
                              ) -> set[str]:
        """Which of these external ids the collection holds (in any status)."""
        found: set[str] = set()
        with self.session() as s:
            for chunk in chunks(list(dict.fromkeys(external_ids))):
                found.update(s.scalars(select(ItemRow.external_id).where(
                    ItemRow.collection_id == collection_id, ItemRow.external_id.in_(chunk))))
        return found


def load_attribute_rows(session: Session, collection_id: int,
                        items: Iterable[tuple[int, Mapping[str, Any]]]) -> int:
    """The typed attribute rows of (item_id, attributes) whose item has none yet."""
    return loader.load_rows(session, _table(ItemAttributeRow), (
        row for item_id, attributes in items
        for row in attribute_rows(collection_id, item_id, attributes or {})),
        ATTRIBUTE_COLUMNS)


def _item_rows(collection_id: int, items: Sequence[ItemInput], ids: Sequence[int],
               status: str, now: Any) -> Iterator[dict[str, Any]]:
    for item_id, item in zip(ids, items, strict=True):
        yield {"id": item_id, "collection_id": collection_id, "external_id": item.external_id,
               "text": item.text, "image_ref": item.image_ref,
               "attributes": dict(item.attributes), "content_hash": item.content_hash,
               "status": status, "created_at": now, "updated_at": now}


def _refuse_duplicates(items: Sequence[ItemInput]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.external_id in seen:
            raise ValueError(f"item {item.external_id!r} appears twice in one bulk load")
        seen.add(item.external_id)


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]
