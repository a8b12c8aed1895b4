"""A filter's allowed item ids as a membership test SQLite calls per FTS5 match.

Built from the sorted id arrays of the catalog's cache of allowed sets
(`attributes.allowed_item_ids`), registered as an SQL function on the connection that
runs the statement: a bitmap over the set's id span, or a frozenset when the set is
sparse in its span.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

# An allowed set is tested through a bitmap over its id span while that costs at most
# this many bytes per allowed id (or BITMAP_FREE_BYTES in all); a sparser set through a
# frozenset (~60 bytes per id, and a slower test).
BITMAP_BYTES_PER_ID = 32
BITMAP_FREE_BYTES = 1 << 20
# SQL function (per connection) that says whether a match's item passes the filters.
ALLOWED_FUNCTION = "xmodal_allowed"


@dataclass(frozen=True, eq=False)
class AllowedItems:
    """A filter's allowed item ids as a test SQLite calls per match: `test(rowid -
    offset)` is truthy for an allowed id within [low, high]."""

    low: int
    high: int
    offset: int
    test: Callable[[int], Any]

    @classmethod
    def of(cls, ids: np.ndarray) -> AllowedItems:
        """From sorted, non-empty ids."""
        low, high = int(ids[0]), int(ids[-1])
        span = high - low + 1
        if span <= max(BITMAP_BYTES_PER_ID * len(ids), BITMAP_FREE_BYTES):
            bitmap = np.zeros(span, dtype=np.uint8)
            bitmap[ids - low] = 1
            return cls(low, high, low, bitmap.data.__getitem__)  # a memoryview: ints
        members: Container[int] = frozenset(ids.tolist())
        return cls(low, high, 0, members.__contains__)


class AllowedTests:
    """The last few `AllowedItems`, by the cached id array they were built from (the
    cache returns the same array until the collection's next write)."""

    def __init__(self, size: int = 8) -> None:
        self._built: OrderedDict[int, tuple[np.ndarray, AllowedItems]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def of(self, ids: np.ndarray) -> AllowedItems:
        with self._lock:
            found = self._built.get(id(ids))
            if found is not None and found[0] is ids:
                self._built.move_to_end(id(ids))
                return found[1]
        built = AllowedItems.of(ids)
        with self._lock:
            self._built[id(ids)] = (ids, built)  # holding `ids` keeps its id() unique
            while len(self._built) > self._size:
                self._built.popitem(last=False)
        return built


def use(session: Session, allowed: AllowedItems) -> None:
    """Make `ALLOWED_FUNCTION` test `allowed` on this session's SQLite connection
    (registered again only when it changes: that re-prepares the connection's cached
    statements)."""
    connection = session.connection().connection
    if connection.info.get(ALLOWED_FUNCTION) is not allowed:
        driver: Any = connection.driver_connection  # sqlite3.Connection
        driver.create_function(ALLOWED_FUNCTION, 1, allowed.test, deterministic=True)
        connection.info[ALLOWED_FUNCTION] = allowed
