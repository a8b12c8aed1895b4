"""The SQL catalog: what every vector means. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from search.catalog import lexical
from search.catalog.attributes import IdSetCache
from search.catalog.bulk import BulkRows
from search.catalog.generations import GenerationRows
from search.catalog.history import CatalogHistory
from search.catalog.items import ItemRows
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
from search.catalog.records import CollectionCounts
from search.catalog.schema import (
    SchemaMigration,
    migrate,
    require_current_schema,
)
from search.catalog.vectors import VectorRows
from search.errors import (
    CatalogUnavailableError,
    CollectionExistsError,
    UnknownCollectionError,
)


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    model: str
    pretrained: str | None
    weights_identity: str
    dim: int
    index_spec: str | None


# Reads of the database file through a memory map rather than a read() per page: FTS5
# walks doclists page by page and a hit's row is a few pages of B-tree. At 1M items,
# warm, the every-word FTS5 statement was 10-30 % faster (p50 3.4 -> 2.4-3.0 ms). SQLite
# clamps this to its compile-time maximum (2 GiB in CPython's build); writes still go
# through write(), so a reader never sees a torn page.
SQLITE_MMAP_BYTES = 1 << 31


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
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


class Catalog(ItemRows, VectorRows, GenerationRows, BulkRows):
    """Collections here; items, vectors and generated images in their row groups (and
    new items in bulk: `BulkRows`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._open = threading.local()  # the transaction() this thread is inside, if any
        self.history = CatalogHistory(self.session)
        self.id_sets = IdSetCache()
        self.keyword = KeywordIndex(self.session, engine.dialect.name, self.id_sets)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error. A lost or
        refused connection is a typed `CatalogUnavailableError` (a 503, not a 500).
        Inside `transaction()` on this thread, it is that transaction's session."""
        joined = getattr(self._open, "session", None)
        if joined is not None:
            yield joined
            return
        with self._begin() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Group row-group calls into one transaction, committed once at the end: every
        `session()` opened inside it on this thread joins it (a write's item rows,
        lexical entries, attribute rows and vector rows are one commit, not four)."""
        if getattr(self._open, "session", None) is not None:
            with self.session() as session:  # already inside one: join it
                yield session
            return
        with self._begin() as session:
            self._open.session = session
            try:
                yield session
            finally:
                self._open.session = None

    @contextmanager
    def _begin(self) -> Iterator[Session]:
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


def _collection_info(row: CollectionRow) -> CollectionInfo:
    return CollectionInfo(row.id, row.name, row.model, row.pretrained, row.weights_identity,
                          row.dim, row.index_spec)
