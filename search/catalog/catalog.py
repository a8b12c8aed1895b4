"""The SQL catalog: what every vector means. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, Select, create_engine, delete, event, func, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from search.catalog import lexical
from search.catalog.attributes import (
    IdSetCache,
    bump_write_version,
    id_set_key,
    reindex_attributes,
    unknown_keys,
    write_version,
)
from search.catalog.filter_sql import filter_clause
from search.catalog.history import CatalogHistory
from search.catalog.keyword import KeywordIndex
from search.catalog.models import (
    CollectionRow,
    FailureRow,
    GenerationRow,
    IndexVersionRow,
    ItemAttributeRow,
    ItemRow,
    JobRow,
    VectorRow,
)
from search.catalog.records import (
    CollectionCounts,
    Generation,
    ItemDetail,
    StoredItem,
    VectorRef,
)
from search.catalog.schema import (
    SchemaMigration,
    migrate,
    require_current_schema,
)
from search.errors import (
    CatalogUnavailableError,
    CollectionExistsError,
    UnknownCollectionError,
    UnknownItemError,
)
from search.filters import Filter

# Bound SQL IN-lists: SQLite allows 32k host parameters, PostgreSQL 65k.
_CHUNK = 5000


class ItemState(StrEnum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    model: str
    pretrained: str | None
    weights_identity: str
    dim: int
    index_spec: str | None


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


@dataclass(frozen=True)
class VectorInfo:
    """A vector joined with its item: everything a hit shows."""

    vector_id: int
    item_id: int
    external_id: str
    modality: str
    source: str
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any]
    image_generated: bool = False  # image_ref is a picture generated from the text


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_catalog_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def open_catalog(url: str, *, migrate_on_open: bool = True) -> Catalog:
    """Open the catalog at `url`; migrate it first, or only check it is migrated."""
    engine = create_catalog_engine(url)
    try:
        if migrate_on_open:
            migrate(engine)
        else:
            require_current_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return Catalog(engine)


def migrate_catalog(url: str) -> SchemaMigration:
    """Migrate the catalog at `url` to the newest revision (safe to run concurrently)."""
    engine = create_catalog_engine(url)
    try:
        return migrate(engine)
    finally:
        engine.dispose()


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.history = CatalogHistory(self.session)
        self.id_sets = IdSetCache()
        self.keyword = KeywordIndex(self.session, engine.dialect.name, self.id_sets)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error. A lost or
        refused connection is a typed `CatalogUnavailableError` (a 503, not a 500)."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except (OperationalError, InterfaceError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise CatalogUnavailableError(
                f"the catalog database is unavailable: {reason}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # -- collections -------------------------------------------------------------
    def create_collection(self, name: str, *, model: str, pretrained: str | None,
                          weights_identity: str, dim: int,
                          index_spec: str | None = None) -> CollectionInfo:
        """`index_spec` is an explicit FAISS factory string; None means automatic."""
        try:
            with self.session() as s:
                row = CollectionRow(name=name, model=model, pretrained=pretrained,
                                    weights_identity=weights_identity, dim=dim,
                                    index_spec=index_spec)
                s.add(row)
                s.flush()
                return _collection_info(row)
        except IntegrityError:
            raise CollectionExistsError(name) from None

    def get_collection(self, name: str) -> CollectionInfo:
        with self.session() as s:
            row = s.scalar(select(CollectionRow).where(CollectionRow.name == name))
            if row is None:
                raise UnknownCollectionError(name)
            return _collection_info(row)

    def list_collections(self) -> list[CollectionInfo]:
        with self.session() as s:
            rows = s.scalars(select(CollectionRow).order_by(CollectionRow.name))
            return [_collection_info(r) for r in rows]

    def update_collection(self, collection_id: int, **values: Any) -> None:
        with self.session() as s:
            s.execute(update(CollectionRow).where(CollectionRow.id == collection_id)
                      .values(**values))

    def drop_collection(self, collection_id: int) -> None:
        with self.session() as s:
            lexical.delete_collection(s, collection_id)
            for table in (FailureRow, JobRow, IndexVersionRow, GenerationRow, VectorRow,
                          ItemAttributeRow, ItemRow):
                s.execute(delete(table).where(table.collection_id == collection_id))
            s.execute(delete(CollectionRow).where(CollectionRow.id == collection_id))

    def collection_counts(self, collection_id: int) -> CollectionCounts:
        with self.session() as s:
            items = s.scalar(select(func.count()).where(ItemRow.collection_id == collection_id))
            rows = s.execute(
                select(VectorRow.modality, VectorRow.source, func.count())
                .where(VectorRow.collection_id == collection_id)
                .group_by(VectorRow.modality, VectorRow.source)
            ).all()
        return CollectionCounts(int(items or 0), sum(int(n) for *_, n in rows),
                                {f"{m}_{src}": int(n) for m, src, n in rows})

    # -- items -------------------------------------------------------------------
    def upsert_items(self, collection_id: int, inputs: Sequence[ItemInput]) -> list[ItemChange]:
        """Insert or update items by external id. Changed content is marked `pending`
        until its vectors are stored (`mark_active`), so a killed run redoes it."""
        by_id = {i.external_id: i for i in inputs}  # a later duplicate wins
        changes: list[ItemChange] = []
        with self.session() as s:
            existing = {}
            for chunk in _chunks(list(by_id)):
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
            for chunk in _chunks(list(item_ids)):
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
                              _generation(generation))

    def active_hashes(self, collection_id: int, external_ids: Sequence[str]) -> dict[str, str]:
        """Content hashes of items whose vectors are fully stored (status active)."""
        found: dict[str, str] = {}
        with self.session() as s:
            for chunk in _chunks(list(external_ids)):
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
            for chunk in _chunks(list(external_ids)):
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
            for chunk in _chunks([int(i) for i in item_ids]):
                rows = s.execute(select(VectorRow.item_id, VectorRow.id, VectorRow.modality,
                                        VectorRow.source).where(VectorRow.item_id.in_(chunk)))
                for item_id, vid, modality, source in rows:
                    out.setdefault(item_id, []).append((vid, modality, source))
        return out

    # -- generated images ------------------------------------------------------------
    def items_needing_generation(self, collection_id: int, *, generator: str, model: str,
                                 limit: int = 1000, after: int = 0) -> list[tuple[int, str, str]]:
        """(item_id, external_id, text) of active items with text, no real image, and no
        generated image for their current text from this generator."""
        current = select(GenerationRow.id).where(
            GenerationRow.item_id == ItemRow.id, GenerationRow.prompt == ItemRow.text,
            GenerationRow.generator == generator, GenerationRow.model == model)
        query = (select(ItemRow.id, ItemRow.external_id, ItemRow.text)
                 .where(ItemRow.collection_id == collection_id, ItemRow.status == "active",
                        ItemRow.text.is_not(None), ItemRow.image_ref.is_(None),
                        ItemRow.id > after, ~current.exists())
                 .order_by(ItemRow.id).limit(limit))
        with self.session() as s:
            return [(i, e, t) for i, e, t in s.execute(query)]

    def record_generation(self, collection_id: int, item_id: int, *, generator: str,
                          model: str, prompt: str, seed: int, image_ref: str) -> None:
        with self.session() as s:
            s.execute(delete(GenerationRow).where(GenerationRow.item_id == item_id))
            s.add(GenerationRow(collection_id=collection_id, item_id=item_id,
                                generator=generator, model=model, prompt=prompt, seed=seed,
                                image_ref=image_ref))

    def delete_generations(self, item_ids: Sequence[int]) -> None:
        with self.session() as s:
            for chunk in _chunks(list(item_ids)):
                s.execute(delete(GenerationRow).where(GenerationRow.item_id.in_(chunk)))

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

    # -- vectors -----------------------------------------------------------------
    def replace_vectors(self, collection_id: int, entries: Sequence[tuple[int, str, str]]
                        ) -> tuple[list[int], list[int]]:
        """Give each (item_id, modality, source) a fresh vector id, dropping the old one.

        Returns (new ids in entry order, replaced old ids)."""
        by_kind: dict[tuple[str, str], list[int]] = {}
        for item_id, modality, source in entries:
            by_kind.setdefault((modality, source), []).append(item_id)
        with self.session() as s:
            old: list[int] = []  # one query per chunk, not per item: bulk loads stay linear
            for (modality, source), item_ids in by_kind.items():
                for chunk in _chunks(item_ids):
                    old += s.scalars(select(VectorRow.id).where(
                        VectorRow.item_id.in_(chunk), VectorRow.modality == modality,
                        VectorRow.source == source)).all()
            for chunk in _chunks(old):
                s.execute(delete(VectorRow).where(VectorRow.id.in_(chunk)))
            rows = [VectorRow(collection_id=collection_id, item_id=i, modality=m, source=src)
                    for i, m, src in entries]
            s.add_all(rows)
            s.flush()
            bump_write_version(s, collection_id)  # new ids: cached allowed sets are stale
            return [r.id for r in rows], old

    def remove_vectors(self, item_ids: Sequence[int], modality: str, source: str) -> list[int]:
        with self.session() as s:
            ids = []
            for chunk in _chunks(list(item_ids)):
                ids += s.scalars(select(VectorRow.id).where(
                    VectorRow.item_id.in_(chunk), VectorRow.modality == modality,
                    VectorRow.source == source)).all()
            for chunk in _chunks(ids):
                s.execute(delete(VectorRow).where(VectorRow.id.in_(chunk)))
            return ids

    def vector_ids(self, collection_id: int, *, modalities: Sequence[str] | None = None,
                   filters: list[Filter] | None = None, sources: Sequence[str] | None = None,
                   within: np.ndarray | None = None) -> np.ndarray:
        """Ids of the collection's vectors whose item passes `filters` (int64, sorted)."""
        query = self._vectors_where(select(VectorRow.id), collection_id, modalities, filters,
                                    sources)
        with self.session() as s:
            if within is None:
                ids = list(s.scalars(query))
            else:
                ids = []
                for chunk in _chunks([int(i) for i in within]):
                    ids += s.scalars(query.where(VectorRow.id.in_(chunk))).all()
        return np.array(sorted(ids), dtype=np.int64)

    def count_vectors(self, collection_id: int, *, modalities: Sequence[str] | None = None,
                      filters: list[Filter] | None = None,
                      sources: Sequence[str] | None = None) -> int:
        query = self._vectors_where(select(func.count(VectorRow.id)), collection_id,
                                    modalities, filters, sources)
        with self.session() as s:
            return int(s.scalar(query) or 0)

    def _vectors_where(self, query: Select, collection_id: int,
                       modalities: Sequence[str] | None, filters: list[Filter] | None,
                       sources: Sequence[str] | None) -> Select:
        """`query` over VectorRow narrowed to a collection, modalities, sources, filters."""
        query = query.where(VectorRow.collection_id == collection_id)
        if modalities:
            query = query.where(VectorRow.modality.in_(list(modalities)))
        if sources:
            query = query.where(VectorRow.source.in_(list(sources)))
        clause = filter_clause(filters or [], collection_id, VectorRow.item_id)
        return query if clause is None else query.where(clause)

    def allowed_vector_ids(self, collection_id: int, *, modalities: Sequence[str] | None,
                           filters: Sequence[Filter], sources: Sequence[str] | None
                           ) -> np.ndarray:
        """`vector_ids(...)` through a cache valid until the collection's next write:
        a repeated filter costs one tiny stamp query, not a scan (int64, sorted)."""
        key = id_set_key(collection_id, modalities, sources, filters)
        with self.session() as s:
            version = write_version(s, collection_id)
            cached = self.id_sets.get(key, version)
            if cached is not None:
                return cached
            query = self._vectors_where(select(VectorRow.id), collection_id, modalities,
                                        list(filters), sources)
            ids = np.fromiter(s.scalars(query.order_by(VectorRow.id)), dtype=np.int64)
        self.id_sets.put(key, version, ids)
        return ids

    def vector_infos(self, vector_ids: Sequence[int]) -> dict[int, VectorInfo]:
        """Join vectors to their items in one query per chunk."""
        infos: dict[int, VectorInfo] = {}
        with self.session() as s:
            for chunk in _chunks([int(i) for i in vector_ids]):
                rows = s.execute(
                    select(VectorRow.id, VectorRow.modality, VectorRow.source, ItemRow,
                           GenerationRow.image_ref)
                    .join(ItemRow, ItemRow.id == VectorRow.item_id)
                    .outerjoin(GenerationRow, GenerationRow.item_id == ItemRow.id)
                    .where(VectorRow.id.in_(chunk))
                ).all()
                for vid, modality, source, item, generated_ref in rows:
                    image_ref = item.image_ref or generated_ref  # a real image always wins
                    infos[vid] = VectorInfo(vid, item.id, item.external_id, modality, source,
                                            item.text, image_ref, item.attributes or {},
                                            image_ref is not None and not item.image_ref)
        return infos


def _generation(row: GenerationRow | None) -> Generation | None:
    if row is None:
        return None
    return Generation(row.generator, row.model, row.prompt, row.seed, row.image_ref,
                      row.created_at)


def _collection_info(row: CollectionRow) -> CollectionInfo:
    return CollectionInfo(row.id, row.name, row.model, row.pretrained, row.weights_identity,
                          row.dim, row.index_spec)
