"""The lexical index: items' text and searchable attributes, inside the catalog database.

SQLite: an FTS5 table (`unicode61` tokens, `porter` stems, BM25). PostgreSQL: a `tsvector`
table with a GIN index, queried with `websearch_to_tsquery` and ranked by `ts_rank`.
Both are written in the same transaction as the item rows (`Catalog.upsert_items`,
`delete_items`, `drop_collection`), so a reader never sees an item the index lacks.

Next to it, two plain tables serve both dialects: `lexical_words` (every word seen per
collection, for one-edit typo correction of query words) and `lexical_identifiers` (exact
values of identifier attributes such as `sku`, so that an exact id ranks first).

User text never reaches a query language unescaped: it is cut into `\\w+` words, which
are then quoted (FTS5) or joined with `or` (websearch syntax has no failure mode).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, column, delete, insert, select, table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from search.catalog import loader
from search.catalog.models import LexicalIdentifierRow, LexicalWordRow
from search.catalog.transactions import core_table

log = logging.getLogger(__name__)

FTS_TABLE = "lexical_fts"  # SQLite; rowid = items.id
PG_TABLE = "lexical_docs"  # PostgreSQL; item_id = items.id
TOKENIZE = "porter unicode61 remove_diacritics 2"  # the FTS5 table's tokenizer
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 32
MIN_TYPO_LENGTH = 4  # shorter words have too many one-edit neighbours to guess from
MAX_CORRECTIONS = 4
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
# Dropped from queries (not from documents) so that "shoes for running" means shoes and
# running; a query made only of these keeps them.
_STOPWORDS = ("a an and are as at be by for from has have i in is it its of on or our the "
              "this to with without me my you your we want need looking some any")
STOPWORDS = frozenset(_STOPWORDS.split())
DEFAULT_IDENTIFIERS = ("sku", "gtin")
# Text weighs more than attributes: a word in the title says more than one in a tag list.
TEXT_WEIGHT, ATTRIBUTE_WEIGHT = 2.0, 1.0


@dataclass(frozen=True)
class LexicalSettings:
    """What a collection's lexical index covers; stored with the collection."""

    searchable: tuple[str, ...] | None = None  # None: every string / list-of-strings field
    identifiers: tuple[str, ...] = DEFAULT_IDENTIFIERS

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LexicalSettings:
        if not data:
            return cls()
        searchable = data.get("searchable")
        return cls(tuple(searchable) if searchable is not None else None,
                   tuple(data.get("identifiers", DEFAULT_IDENTIFIERS)))

    def to_json(self) -> dict[str, Any]:
        return {"searchable": list(self.searchable) if self.searchable is not None else None,
                "identifiers": list(self.identifiers)}


@dataclass(frozen=True)
class Document:
    item_id: int
    text: str
    attributes: str
    identifiers: tuple[str, ...]


def words(value: str) -> list[str]:
    return _WORD.findall(value.lower())


def normalise_identifier(value: str) -> str:
    return value.strip().casefold()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def document(item_id: int, item_text: str | None, attributes: dict[str, Any] | None,
             settings: LexicalSettings) -> Document:
    """What the index stores of one item."""
    attributes = attributes or {}
    fields = settings.searchable if settings.searchable is not None else list(attributes)
    attribute_text = " ".join(s for f in fields for s in _strings(attributes.get(f)))
    ids = tuple(sorted({normalise_identifier(s) for f in settings.identifiers
                        for s in _strings(attributes.get(f))} - {""}))
    return Document(item_id, item_text or "", attribute_text, ids)


@dataclass(frozen=True)
class KeywordQuery:
    """A user's text cut into words; `alternatives[i]` are the words tried for word i."""

    alternatives: tuple[tuple[str, ...], ...]

    @property
    def empty(self) -> bool:
        return not self.alternatives

    def terms(self) -> list[str]:
        return [w for group in self.alternatives for w in group]


def query_words(user_text: str) -> list[str]:
    found = words(user_text)
    kept = [w for w in found if w not in STOPWORDS] or found
    return list(dict.fromkeys(kept))[:MAX_QUERY_WORDS]


def one_edit(word: str) -> set[str]:
    """Every string one deletion, transposition, substitution or insertion away."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    transposes = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in _ALPHABET}
    inserts = {a + c + b for a, b in splits for c in _ALPHABET}
    return (deletes | transposes | replaces | inserts) - {word}


# -- writing ----------------------------------------------------------------------
def write_documents(session: Session, collection_id: int, docs: Sequence[Document],
                    fresh: Collection[int] = ()) -> None:
    """Replace these items' entries (same transaction as the item rows). `fresh`: ids of
    items inserted in this transaction, which have no entries to delete yet."""
    if not docs:
        return
    fresh = set(fresh)
    delete_documents(session, [d.item_id for d in docs if d.item_id not in fresh])
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text(
            f"INSERT INTO {PG_TABLE} (item_id, collection_id, document) VALUES (:item_id, :cid, "
            f"{_pg_document(':text', ':attrs')})"),
            [{"item_id": d.item_id, "cid": collection_id, "text": d.text, "attrs": d.attributes}
             for d in docs])
    else:
        session.execute(text(
            f"INSERT INTO {FTS_TABLE} (rowid, text, attrs, collection_id) "
            "VALUES (:item_id, :text, :attrs, :cid)"),
            [{"item_id": d.item_id, "cid": collection_id, "text": d.text, "attrs": d.attributes}
             for d in docs])
    identifiers = _identifier_rows(collection_id, docs)
    if identifiers:
        session.execute(insert(core_table(LexicalIdentifierRow)), identifiers)
    _add_words(session, collection_id, _vocabulary(docs), dialect)


def _pg_document(text_sql: str, attrs_sql: str) -> str:
    """The tsvector of one document: text weighs A, attributes B (one definition for the
    row-at-a-time and the bulk writer, so both index alike)."""
    return (f"setweight(to_tsvector('english', {text_sql}), 'A') || "
            f"setweight(to_tsvector('english', {attrs_sql}), 'B')")


def _identifier_rows(collection_id: int, docs: Sequence[Document]) -> list[dict[str, Any]]:
    return [{"collection_id": collection_id, "value": v[:512], "item_id": d.item_id}
            for d in docs for v in d.identifiers]


def _vocabulary(docs: Sequence[Document]) -> set[str]:
    return {w for d in docs for w in words(f"{d.text} {d.attributes}") if len(w) <= 64}


def insert_documents(session: Session, collection_id: int, docs: Sequence[Document]) -> None:
    """Entries of items that have none yet, at bulk speed (same transaction as the item
    rows). PostgreSQL: the documents are COPYed into a temporary table and turned into
    tsvectors by one INSERT ... SELECT; SQLite: batched executemany into FTS5."""
    if not docs:
        return
    postgres = loader.is_postgres(session)
    if postgres:
        session.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS lexical_load (item_id "
                             "BIGINT, text TEXT, attrs TEXT) ON COMMIT DROP"))
        loader.copy_tuples(session, "COPY lexical_load (item_id, text, attrs) FROM STDIN",
                           ((d.item_id, d.text, d.attributes) for d in docs))
        session.execute(text(
            f"INSERT INTO {PG_TABLE} (item_id, collection_id, document) SELECT item_id, "
            f":cid, {_pg_document('text', 'attrs')} FROM lexical_load"), {"cid": collection_id})
        session.execute(text("TRUNCATE lexical_load"))
    else:
        for start in range(0, len(docs), loader.SQLITE_BATCH):
            session.execute(text(
                f"INSERT INTO {FTS_TABLE} (rowid, text, attrs, collection_id) "
                "VALUES (:item_id, :text, :attrs, :cid)"),
                [{"item_id": d.item_id, "cid": collection_id, "text": d.text,
                  "attrs": d.attributes} for d in docs[start:start + loader.SQLITE_BATCH]])
    loader.load_rows(session, LexicalIdentifierRow.__table__,  # type: ignore[arg-type]
                     _identifier_rows(collection_id, docs),
                     ("collection_id", "value", "item_id"))
    _add_words(session, collection_id, _vocabulary(docs),
               "postgresql" if postgres else "sqlite")


def _add_words(session: Session, collection_id: int, vocabulary: set[str],
               dialect: str) -> None:
    if not vocabulary:
        return
    rows = [{"collection_id": collection_id, "word": w} for w in sorted(vocabulary)]
    # one cached statement, executed many: a multi-row VALUES of a new length each time
    # was compiled afresh on every write
    session.execute(_INSERT_WORD[dialect == "postgresql"], rows)


_words, _identifiers = core_table(LexicalWordRow), core_table(LexicalIdentifierRow)
_INSERT_WORD = (sqlite_insert(_words).on_conflict_do_nothing(),
                pg_insert(_words).on_conflict_do_nothing())


def delete_documents(session: Session, item_ids: Sequence[int]) -> None:
    if not item_ids:
        return
    dialect = session.get_bind().dialect.name
    for start in range(0, len(item_ids), 5000):
        chunk = [int(i) for i in item_ids[start:start + 5000]]
        if dialect == "postgresql":
            session.execute(text(f"DELETE FROM {PG_TABLE} WHERE item_id = ANY(:ids)"),
                            {"ids": chunk})
        else:
            marks = ",".join(str(i) for i in chunk)  # integers only: safe to inline
            session.execute(text(f"DELETE FROM {FTS_TABLE} WHERE rowid IN ({marks})"))
        session.execute(delete(_identifiers).where(_identifiers.c.item_id.in_(chunk)))


def delete_collection(session: Session, collection_id: int) -> None:
    name = PG_TABLE if session.get_bind().dialect.name == "postgresql" else FTS_TABLE
    session.execute(text(f"DELETE FROM {name} WHERE collection_id = :cid"),
                    {"cid": collection_id})
    for row in (LexicalIdentifierRow, LexicalWordRow):
        session.execute(delete(row).where(row.collection_id == collection_id))


# -- schema (used by the migration) -------------------------------------------------
def create_schema(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(
            f"CREATE TABLE IF NOT EXISTS {PG_TABLE} (item_id BIGINT PRIMARY KEY REFERENCES "
            "items(id) ON DELETE CASCADE, collection_id INTEGER NOT NULL, "
            "document tsvector NOT NULL)"))
        connection.execute(text(f"CREATE INDEX IF NOT EXISTS ix_{PG_TABLE}_document "
                                f"ON {PG_TABLE} USING GIN (document)"))
    else:
        connection.execute(text(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(text, attrs, "
            f"collection_id UNINDEXED, tokenize='{TOKENIZE}')"))


def drop_schema(connection: Connection) -> None:
    name = PG_TABLE if connection.dialect.name == "postgresql" else FTS_TABLE
    connection.execute(text(f"DROP TABLE IF EXISTS {name}"))


_items = table("items", column("id", Integer), column("collection_id", Integer),
               column("text"), column("attributes"))


def backfill(session: Session, batch: int = 2000) -> int:
    """Index every existing item with its collection's settings; returns the count."""
    settings = {cid: LexicalSettings.from_json(_json_value(data)) for cid, data in session.execute(
        text("SELECT id, lexical FROM collections"))}
    done, last = 0, 0
    while True:
        rows = session.execute(select(_items).where(_items.c.id > last)
                               .order_by(_items.c.id).limit(batch)).all()
        if not rows:
            return done
        by_collection: dict[int, list[Document]] = {}
        for item_id, cid, item_text, attributes in rows:
            attributes = _json_value(attributes)
            by_collection.setdefault(cid, []).append(
                document(item_id, item_text, attributes, settings.get(cid, LexicalSettings())))
        for cid, docs in by_collection.items():
            write_documents(session, cid, docs)
        done, last = done + len(rows), rows[-1][0]


def collection_settings(session: Session, collection_id: int) -> LexicalSettings:
    data = session.scalar(text("SELECT lexical FROM collections WHERE id = :id"),
                          {"id": collection_id})
    return LexicalSettings.from_json(_json_value(data))


def _json_value(value: Any) -> Any:
    """A JSON column read through Core text SQL: a str on SQLite, parsed on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def index_items(session: Session, collection_id: int,
                items: Sequence[tuple[int, str | None, dict[str, Any] | None]],
                fresh: Collection[int] = ()) -> None:
    """(Re)write the entries of `(item_id, text, attributes)` with the collection's settings
    (`fresh`: ids inserted in this transaction, with no entries yet)."""
    if not items:
        return
    settings = collection_settings(session, collection_id)
    write_documents(session, collection_id, [
        document(item_id, item_text, attributes, settings)
        for item_id, item_text, attributes in items], fresh)


def reindex_collection(session: Session, collection_id: int, batch: int = 5000) -> int:
    """Rebuild one collection's entries (after its settings changed); returns the count."""
    delete_collection(session, collection_id)
    settings = collection_settings(session, collection_id)
    done, last = 0, 0
    while True:
        rows = session.execute(
            select(_items.c.id, _items.c.text, _items.c.attributes)
            .where(_items.c.collection_id == collection_id, _items.c.id > last)
            .order_by(_items.c.id).limit(batch)).all()
        if not rows:
            return done
        # the collection's entries were all deleted above: new ones go in at bulk speed
        insert_documents(session, collection_id, [
            document(item_id, item_text, _json_value(attrs), settings)
            for item_id, item_text, attrs in rows])
        done, last = done + len(rows), rows[-1][0]


# -- upkeep -------------------------------------------------------------------------
# Keeping the lexical index's on-disk layout as fast to query as on day one.
#
# SQLite: every write transaction adds a segment to FTS5's index, and FTS5's own automerge
# keeps their number bounded, not low: a catalogue loaded in batches, or a service that has
# taken writes for months, keeps a dozen (the 1M bench catalogue: 11), and every query walks
# each word's doclist in every segment. Merged into one, the capped newest-1,000 fetch of a
# keyword stage got 12-16 % faster at 1M (README, "Measured speed"). `tidy` merges them
# once there are more than `MAX_SEGMENTS`, `MERGE_PAGES` leaf pages per step, each step its
# own short transaction so that writers interleave, within a time budget (the next pass
# goes on where it stopped).
#
# PostgreSQL: the GIN index takes writes into its pending list (fastupdate), which every
# query scans linearly until autovacuum moves it into the index; `tidy` moves it now.


def varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's varint (big-endian 7-bit groups, a 9th byte of 8 bits): (value, next)."""
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


MAX_SEGMENTS = 4
MERGE_PAGES = 2000  # per step: ~8 MB of index rewritten in one write transaction
_STRUCTURE_ROWID = 10  # FTS5's structure record: its levels and segments
_STRUCTURE_V2 = b"\xff\x00\x00\x01"  # after the cookie in tables that allow deletes


def segments(connection: Connection) -> int:
    """SQLite: how many segments FTS5's index is in (0: empty)."""
    block = connection.exec_driver_sql(
        f"SELECT block FROM {FTS_TABLE}_data WHERE id = {_STRUCTURE_ROWID}").scalar()
    if not block:
        return 0
    at = 8 if block[4:8] == _STRUCTURE_V2 else 4  # skip the cookie (and the version)
    _levels, at = varint(block, at)
    count, _ = varint(block, at)
    return count


def tidy(session: Callable[[], AbstractContextManager[Session]], dialect: str,
         budget_s: float = 30.0) -> int:
    """Tidy the index if it needs it: SQLite merge steps done, or PostgreSQL pending-list
    pages moved into the GIN index (0: it was tidy)."""
    if dialect == "postgresql":
        return _clean_pending_list(session)
    with session() as s:
        if segments(s.connection()) <= MAX_SEGMENTS:
            return 0
    steps, deadline = 0, time.monotonic() + budget_s
    while time.monotonic() < deadline and _merge_step(session):
        steps += 1
    return steps


def _merge_step(session: Callable[[], AbstractContextManager[Session]]) -> bool:
    """One bounded step of merging every segment into one; False once there was nothing
    left to merge (FTS5 changes fewer than two rows then)."""
    with session() as s:
        connection = s.connection()
        before = connection.exec_driver_sql("SELECT total_changes()").scalar() or 0
        connection.exec_driver_sql(
            f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('merge', -{MERGE_PAGES})")
        after = connection.exec_driver_sql("SELECT total_changes()").scalar() or 0
    return after - before >= 2


def _clean_pending_list(session: Callable[[], AbstractContextManager[Session]]) -> int:
    try:
        with session() as s:
            return int(s.execute(text(
                f"SELECT gin_clean_pending_list('ix_{PG_TABLE}_document'::regclass)")
            ).scalar() or 0)
    except DBAPIError as exc:  # e.g. a role that does not own the index: autovacuum does it
        log.warning("could not move the lexical index's pending list: %s", exc)
        return 0
