"""Item rows: upserts by external id, lookups, deletes, and the model a collection's
items were embedded with. Text and attributes go to the lexical and attribute indexes in
the same transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from search.catalog import lexical
from search.catalog.attributes import bump_write_version, reindex_attributes, unknown_keys
from search.catalog.models import (
    CollectionRow,
    GenerationRow,
    ItemAttributeRow,
    ItemRow,
    VectorRow,
)
from search.catalog.records import Generation, ItemDetail, StoredItem, VectorRef
from search.catalog.transactions import Transactional, chunks, core_table
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


_items = core_table(ItemRow)  # Core statements on the write path: no ORM unit of work
_generations, _vector_table = core_table(GenerationRow), core_table(VectorRow)
_DETAIL = (_items.c.id, _items.c.external_id, _items.c.text, _items.c.image_ref,
           _items.c.attributes, _items.c.status, _items.c.content_hash, _items.c.created_at,
           _items.c.updated_at)
_GENERATION = (_generations.c.generator, _generations.c.model, _generations.c.prompt,
               _generations.c.seed, _generations.c.image_ref, _generations.c.created_at)
# executed with one dict per row: its keys (bar "_id") are the SET clause
_SET_ITEM = update(_items).where(_items.c.id == bindparam("_id"))


@dataclass(frozen=True)
class _Stored:
    """An item row as the upsert compares it."""

    id: int
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any]
    content_hash: str
    status: str


class ItemRows(Transactional):
    def upsert_items(self, collection_id: int, inputs: Sequence[ItemInput]) -> list[ItemChange]:
        """Insert or update items by external id. Changed content is marked `pending`
        until its vectors are stored (`mark_active`), so a killed run redoes it."""
        by_id = {i.external_id: i for i in inputs}  # a later duplicate wins
        with self.session() as s:
            existing = _stored_items(s, collection_id, list(by_id))
            states: dict[str, ItemState] = {}
            updates: list[dict[str, Any]] = []
            for ext_id, item in by_id.items():
                row = existing.get(ext_id)
                states[ext_id] = _state(row, item)
                if row is not None and _differs(row, item, states[ext_id]):
                    updates.append(_values(item, states[ext_id]) | {"_id": row.id})
            fresh = [e for e, st in states.items() if st is ItemState.NEW]
            ids = {e: r.id for e, r in existing.items()} | _insert_items(
                s, collection_id, [(e, by_id[e]) for e in fresh])
            if updates:
                s.execute(_SET_ITEM, updates)
            # The lexical entry follows text and attributes (attributes are not hashed).
            reworded = [e for e in by_id if e not in existing or (
                existing[e].text, existing[e].attributes) != (by_id[e].text,
                                                              by_id[e].attributes)]
            lexical.index_items(s, collection_id, [
                (ids[e], by_id[e].text, by_id[e].attributes) for e in reworded],
                fresh=[ids[e] for e in fresh])
            reindex = [e for e in by_id if e not in existing
                       or existing[e].attributes != dict(by_id[e].attributes)]
            if reindex:  # the attribute index follows items.attributes in one transaction
                reindex_attributes(s, collection_id,
                                   [(ids[e], by_id[e].attributes) for e in reindex],
                                   fresh={ids[e] for e in fresh})
                bump_write_version(s, collection_id)
            return [ItemChange(ids[e], e, states[e]) for e in by_id]

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
            for chunk in chunks([int(i) for i in item_ids]):
                s.execute(update(_items).where(_items.c.id.in_(chunk))
                          .values(status="active"))

    def get_item(self, collection_id: int, external_id: str,
                 collection_name: str = "") -> ItemDetail:
        with self.session() as s:
            row = s.execute(select(*_DETAIL, *_GENERATION).outerjoin(
                _generations, _generations.c.item_id == _items.c.id).where(
                _items.c.collection_id == collection_id,
                _items.c.external_id == external_id)).first()
            if row is None:
                raise UnknownItemError(collection_name or str(collection_id), external_id)
            vectors = s.execute(select(_vector_table.c.id, _vector_table.c.modality,
                                       _vector_table.c.source)
                                .where(_vector_table.c.item_id == row[0])).all()
        item_id, ext_id, text, image_ref, attributes, status, content_hash, created, updated \
            = row[:len(_DETAIL)]
        generator, *provenance = row[len(_DETAIL):]
        return ItemDetail(item_id, ext_id, text, image_ref, dict(attributes or {}), status,
                          content_hash, created, updated,
                          tuple(VectorRef(v, m, src) for v, m, src in vectors),
                          Generation(generator, *provenance) if generator is not None
                          else None)

    def active_hashes(self, collection_id: int, external_ids: Sequence[str]) -> dict[str, str]:
        """Content hashes of items whose vectors are fully stored (status active)."""
        found: dict[str, str] = {}
        with self.session() as s:
            for chunk in chunks(list(external_ids)):
                rows = s.execute(select(_items.c.external_id, _items.c.content_hash).where(
                    _items.c.collection_id == collection_id, _items.c.status == "active",
                    _items.c.external_id.in_(chunk)))
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


def _stored_items(session: Session, collection_id: int, external_ids: list[str]
                  ) -> dict[str, _Stored]:
    found: dict[str, _Stored] = {}
    for chunk in chunks(external_ids):
        rows = session.execute(select(
            _items.c.external_id, _items.c.id, _items.c.text, _items.c.image_ref,
            _items.c.attributes, _items.c.content_hash, _items.c.status).where(
            _items.c.collection_id == collection_id, _items.c.external_id.in_(chunk)))
        for ext_id, item_id, text, image_ref, attributes, content_hash, status in rows:
            found[ext_id] = _Stored(item_id, text, image_ref, attributes or {}, content_hash,
                                    status)
    return found


def _state(row: _Stored | None, item: ItemInput) -> ItemState:
    if row is None:
        return ItemState.NEW
    if row.content_hash != item.content_hash or row.status != "active":
        return ItemState.CHANGED
    return ItemState.UNCHANGED


def _values(item: ItemInput, state: ItemState) -> dict[str, Any]:
    return {"text": item.text, "image_ref": item.image_ref,
            "attributes": dict(item.attributes), "content_hash": item.content_hash,
            "status": "active" if state is ItemState.UNCHANGED else "pending"}


def _differs(row: _Stored, item: ItemInput, state: ItemState) -> bool:
    """Whether the row needs an UPDATE (an unchanged item may still carry new attributes
    or another image reference to the same bytes)."""
    return state is not ItemState.UNCHANGED or (
        row.text, row.image_ref, row.attributes) != (item.text, item.image_ref,
                                                     dict(item.attributes))


def _insert_items(session: Session, collection_id: int,
                  new: list[tuple[str, ItemInput]]) -> dict[str, int]:
    """Insert new items as `pending`; their ids by external id (one multi-row INSERT ...
    RETURNING per batch on SQLite and PostgreSQL)."""
    if not new:
        return {}
    rows = session.execute(
        insert(_items).returning(_items.c.external_id, _items.c.id),
        [{"collection_id": collection_id, "external_id": ext_id}
         | _values(item, ItemState.NEW) for ext_id, item in new])
    return {ext_id: item_id for ext_id, item_id in rows}
