"""Keeping the lexical index's on-disk layout as fast to query as on day one.

SQLite: every write transaction adds a segment to FTS5's index, and FTS5's own automerge
keeps their number bounded, not low: a catalogue loaded in batches, or a service that has
taken writes for months, keeps a dozen (the 1M bench catalogue: 11), and every query walks
each word's doclist in every segment. Merged into one, the capped newest-1,000 fetch of a
keyword stage got 12-16 % faster at 1M (README, "Measured speed"). `tidy` merges them
once there are more than `MAX_SEGMENTS`, `MERGE_PAGES` leaf pages per step, each step its
own short transaction so that writers interleave, within a time budget (the next pass
goes on where it stopped).

PostgreSQL: the GIN index takes writes into its pending list (fastupdate), which every
query scans linearly until autovacuum moves it into the index; `tidy` moves it now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from search.catalog.bm25 import varint
from search.catalog.lexical import FTS_TABLE, PG_TABLE

log = logging.getLogger(__name__)

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
