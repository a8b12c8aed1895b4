"""Rows into a table at bulk speed, inside the caller's transaction: PostgreSQL's `COPY ...
FROM STDIN` (psycopg 3's `cursor.copy`), SQLite's batched `executemany`.

Both take the values an ORM insert would take (Python objects: dicts for JSON columns,
aware datetimes), so a bulk-loaded row reads back exactly as one written by the ORM: JSON
goes through the engine's own serializer, and SQLite's rows through SQLAlchemy's own bind
processing. Ids are allocated before the rows are written (`allocate_ids`), so a caller
can write the rows that refer to them in the same transaction, with no RETURNING.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Table, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

SQLITE_BATCH = 10_000  # rows per executemany: bounded parameter lists


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def load_rows(session: Session, table: Table, rows: Iterable[Mapping[str, Any]],
              columns: Sequence[str]) -> int:
    """Insert `rows` (each with every name in `columns`) into `table`; returns the count.
    Columns left out take their server default (a sequence on PostgreSQL, the rowid on
    SQLite), as in an ORM insert; Python-side defaults are not applied, so pass them."""
    if is_postgres(session):
        return _copy_rows(session, table, rows, columns)
    count, batch = 0, []
    for row in rows:
        batch.append({name: row[name] for name in columns})
        if len(batch) == SQLITE_BATCH:
            session.execute(insert(table), batch)
            count, batch = count + len(batch), []
    if batch:
        session.execute(insert(table), batch)
    return count + len(batch)


def _copy_rows(session: Session, table: Table, rows: Iterable[Mapping[str, Any]],
               columns: Sequence[str]) -> int:
    dialect = session.get_bind().dialect
    serialize = getattr(dialect, "_json_serializer", None) or json.dumps
    as_json = [isinstance(table.c[name].type, JSON) for name in columns]
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    return copy_tuples(session, statement, (
        [None if row[name] is None else serialize(row[name]) if js else row[name]
         for name, js in zip(columns, as_json, strict=True)] for row in rows))


def copy_tuples(session: Session, statement: str, rows: Iterable[Sequence[Any]]) -> int:
    """PostgreSQL only: `COPY <table> (<columns>) FROM STDIN` fed plain tuples (a temporary
    table's rows, say); returns the count. The driver's errors come out as SQLAlchemy's
    (IntegrityError, OperationalError...), as from any other statement."""
    dialect = session.get_bind().dialect
    count = 0
    try:
        with _driver_cursor(session) as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    except dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(statement, None, error, dialect.loaded_dbapi.Error,
                                  dialect=dialect) from error
    return count


def _driver_cursor(session: Session) -> Any:
    """A psycopg cursor on the session's own connection: COPY joins its transaction."""
    return session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]


def allocate_ids(session: Session, table: Table, count: int) -> list[int]:
    """`count` fresh primary keys of `table`, ascending, for rows this transaction writes.

    PostgreSQL draws them from the column's sequence (safe beside concurrent writers).
    SQLite continues after the largest id (and, for AUTOINCREMENT tables, after the largest
    ever handed out, so a deleted vector's FAISS id is never reused); that is only safe
    once this transaction holds SQLite's write lock: write something first."""
    if count == 0:
        return []
    if is_postgres(session):
        return sorted(session.scalars(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                 "FROM generate_series(1, :count)"), {"table": table.name, "count": count}))
    last = int(session.scalar(select(func.max(table.c.id))) or 0)
    if table.dialect_options["sqlite"].get("autoincrement"):
        used = session.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = :name"),
                              {"name": table.name})
        last = max(last, int(used or 0))
    return list(range(last + 1, last + 1 + count))


def follow_explicit_ids(session: Session, table: Table) -> None:
    """After rows were loaded with ids of the caller's choosing: PostgreSQL's sequence moves
    past them, so the next ORM insert does not collide (SQLite's rowid follows by itself)."""
    if is_postgres(session):
        session.execute(text(
            "SELECT setval(pg_get_serial_sequence(:table, 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false)"),
            {"table": table.name})
