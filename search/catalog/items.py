"""Item rows: upserts by external id, lookups, deletes, and the model a collection's
items were embedded with. Text and attributes go to the lexical and attribute indexes in
the same transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update

from search.catalog import lexical
from search.catalog.attributes import bump_write_version, reindex_attributes, unknown_keys
from search.catalog.generations import stored_generation
from search.catalog.models import (
    CollectionRow,
    GenerationRow,
    ItemAttributeRow,
    ItemRow,
    VectorRow,
)
from search.catalog.records import ItemDetail, StoredItem, VectorRef
from search.catalog.transactions import Transactional, chunks
from search.errors import UnknownItemError


class ItemState(StrEnum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ItemInput:
    external_id: str
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""


@dataclass(frozen=True)
class ItemChange:
    item_id: int
    external_id: str
    state: ItemState


class ItemRows(Transactional):
    def upsert_items(self, collection_id: int, inputs: Sequence[ItemInput]) -> list[ItemChange]:
        """Insert or update items by external id. Changed content is marked `pending`
        until its vectors are stored (`mark_active`), so a killed run redoes it."""
        by_id = {i.external_id: i for i in inputs}  # a later duplicate wins
        changes: list[ItemChange] = []
        with self.session() as s:
            existing = {}
            for chunk in chunks(list(by_id)):
                rows = s.scalars(select(ItemRow).where(ItemRow.collection_id == collection_id,
                                                       ItemRow.external_id.in_(chunk)))
                existing.update({r.external_id: r for r in rows})
            new_rows: list[ItemRow] = []
            reworded: list[ItemRow] = []
            reindex: list[ItemRow] = []
            for ext_id, item in by_id.items():
                row = existing.get(ext_id)
                # The lexical entry follows text and attributes (attributes are not hashed).
                reword = row is None or (row.text, row.attributes) != (item.text,
                                                                       item.attributes)
                if row is None:
                    row = ItemRow(collection_id=collection_id, external_id=ext_id,
                                  status="pending")
                    new_rows.append(row)
                    state = ItemState.NEW
                elif row.content_hash != item.content_hash or row.status != "active":
                    row.status = "pending"
                    state = ItemState.CHANGED
                else:
                    state = ItemState.UNCHANGED
                if state is ItemState.NEW or row.attributes != dict(item.attributes):
                    reindex.append(row)
                row.text, row.image_ref = item.text, item.image_ref
                row.attributes, row.content_hash = dict(item.attributes), item.content_hash
                changes.append((row, state))
                if reword:
                    reworded.append(row)
            s.add_all(new_rows)
            s.flush()
            lexical.index_items(s, collection_id,
                                [(r.id, r.text, r.attributes) for r in reworded])
            if reindex:  # the attribute index follows items.attributes in one transaction
                reindex_attributes(s, collection_id, [(r.id, r.attributes) for r in reindex])
                bump_write_version(s, collection_id)
            return [ItemChange(r.id, r.external_id, st) for r, st in changes]

    def unknown_attribute_keys(self, collection_id: int, names: Sequence[str]) -> list[str]:
        with self.session() as s:
            return unknown_keys(s, collection_id, names)

    def lexical_settings(self, collection_id: int) -> lexical.LexicalSettings:
        with self.session() as s:
            return lexical.collection_settings(s, collection_id)

    def set_lexical_settings(self, collection_id: int,
                             settings: lexical.LexicalSettings) -> int:
        """Store what the lexical index covers and rebuild the collection's entries in
        the same transaction; returns the number of items re-indexed."""
        with self.session() as s:
            s.execute(update(CollectionRow).where(CollectionRow.id == collection_id)
                      .values(lexical=settings.to_json()))
            return lexical.reindex_collection(s, collection_id)

    def mark_active(self, item_ids: Sequence[int]) -> None:
        with self.session() as s:
            for chunk in chunks(list(item_ids)):
                s.execute(update(ItemRow).where(ItemRow.id.in_(chunk)).values(status="active"))

    def get_item(self, collection_id: int, external_id: str,
                 collection_name: str = "") -> ItemDetail:
        with self.session() as s:
            row = s.scalar(select(ItemRow).where(ItemRow.collection_id == collection_id,
                                                 ItemRow.external_id == external_id))
            if row is None:
                raise UnknownItemError(collection_name or str(collection_id), external_id)
            vectors = s.execute(select(VectorRow.id, VectorRow.modality, VectorRow.source)
                                .where(VectorRow.item_id == row.id)).all()
            generation = s.scalar(select(GenerationRow).where(GenerationRow.item_id == row.id))
            return ItemDetail(row.id, row.external_id, row.text, row.image_ref,
                              dict(row.attributes or {}), row.status, row.content_hash,
                              row.created_at, row.updated_at,
                              tuple(VectorRef(v, m, src) for v, m, src in vectors),
                              stored_generation(generation))

    def active_hashes(self, collection_id: int, external_ids: Sequence[str]) -> dict[str, str]:
        """Content hashes of items whose vectors are fully stored (status active)."""
        found: dict[str, str] = {}
        with self.session() as s:
            for chunk in chunks(list(external_ids)):
                rows = s.execute(select(ItemRow.external_id, ItemRow.content_hash).where(
                    ItemRow.collection_id == collection_id, ItemRow.status == "active",
                    ItemRow.external_id.in_(chunk)))
                found.update({e: h for e, h in rows})
        return found

    def delete_items(self, collection_id: int, external_ids: Sequence[str]
                     ) -> dict[str, list[int]]:
        """Delete items and their vector rows; returns removed vector ids by modality."""
        removed: dict[str, list[int]] = {}
        with self.session() as s:
            for chunk in chunks(list(external_ids)):
                item_ids = select(ItemRow.id).where(ItemRow.collection_id == collection_id,
                                                    ItemRow.external_id.in_(chunk))
                for vid, modality in s.execute(select(VectorRow.id, VectorRow.modality)
                                               .where(VectorRow.item_id.in_(item_ids))):
                    removed.setdefault(modality, []).append(vid)
                s.execute(delete(GenerationRow).where(GenerationRow.item_id.in_(item_ids)))
                lexical.delete_documents(s, s.scalars(item_ids).all())
                s.execute(delete(ItemAttributeRow).where(ItemAttributeRow.item_id.in_(item_ids)))
                s.execute(delete(VectorRow).where(VectorRow.item_id.in_(item_ids)))
                s.execute(delete(ItemRow).where(ItemRow.collection_id == collection_id,
                                                ItemRow.external_id.in_(chunk)))
            bump_write_version(s, collection_id)
        return removed

    def item_vectors(self, item_ids: Sequence[int]) -> dict[int, list[tuple[int, str, str]]]:
        """Every vector of these items: item_id -> [(vector_id, modality, source)]."""
        out: dict[int, list[tuple[int, str, str]]] = {}
        with self.session() as s:
            for chunk in chunks([int(i) for i in item_ids]):
                rows = s.execute(select(VectorRow.item_id, VectorRow.id, VectorRow.modality,
                                        VectorRow.source).where(VectorRow.item_id.in_(chunk)))
                for item_id, vid, modality, source in rows:
                    out.setdefault(item_id, []).append((vid, modality, source))
        return out


    def item_id(self, collection_id: int, external_id: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(ItemRow.id).where(ItemRow.collection_id == collection_id,
                                                     ItemRow.external_id == external_id))

    def iter_items(self, collection_id: int, batch: int = 1000) -> Iterator[list[StoredItem]]:
        """Every item with its vector ids, in id order, `batch` at a time."""
        last = 0
        while True:
            with self.session() as s:
                rows = s.scalars(select(ItemRow).where(ItemRow.collection_id == collection_id,
                                                       ItemRow.id > last)
                                 .order_by(ItemRow.id).limit(batch)).all()
                if not rows:
                    return
                vectors = self.item_vectors([r.id for r in rows])
                yield [StoredItem(r.id, r.external_id, r.text, r.image_ref,
                                  tuple(VectorRef(*v) for v in vectors.get(r.id, [])))
                       for r in rows]
                last = rows[-1].id

    def switch_model(self, collection_id: int, *, model: str, pretrained: str | None,
                     weights_identity: str, dim: int, hashes: dict[int, str]) -> None:
        """Point a collection at another encoder and its items' new content hashes, in one
        transaction: readers see the old model or the new one, never a mix."""
        with self.session() as s:
            s.execute(update(CollectionRow).where(CollectionRow.id == collection_id).values(
                model=model, pretrained=pretrained, weights_identity=weights_identity,
                dim=dim))
            for item_id, content_hash in hashes.items():
                s.execute(update(ItemRow).where(ItemRow.id == item_id)
                          .values(content_hash=content_hash))

    def external_ids(self, collection_id: int) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(ItemRow.external_id)
                                  .where(ItemRow.collection_id == collection_id)))

