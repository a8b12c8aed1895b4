"""What the catalog's row groups share: one transaction factory and bounded IN-lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager

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
