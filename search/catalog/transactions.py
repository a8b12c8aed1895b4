"""What the catalog's row groups share: one transaction factory and bounded IN-lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

# Bound SQL IN-lists: SQLite allows 32k host parameters, PostgreSQL 65k.
CHUNK = 5000


def chunks(values: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Transactional:
    """A group of catalog queries over one session factory (`Catalog` provides it)."""

    def session(self) -> AbstractContextManager[Session]:
        raise NotImplementedError


def core_table(model: Any) -> Table:
    """A table model's Core table: hot-path statements on it skip the ORM's unit of work."""
    return cast(Table, model.__table__)
