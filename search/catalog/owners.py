"""Which item owns each vector, held in memory: the fused query path's sibling lookups.

A fused (`target: any`) query scores every item it meets by all of its vectors. Asking
SQL for the siblings of thousands of ANN hits cost most of such a query (issue 14: 267
of 319 ms on 2,000 items, more per round on 100k); this map answers with two binary
searches over numpy arrays.

Kept current by the collection's stamp: its `write_version`, which every insert of
vector rows bumps in its own transaction, and its creation time (a collection dropped
and created again may get the same id). One tiny stamp query per search; when the stamp
moved, one query for the rows above the highest id held. Vector ids grow and are never reused,
and a collection's rows are written under its write lock, so they commit in id order.
Rows deleted since stay in the map: a deleted vector is gone from the embedding store,
and the query path drops any member the store cannot find (see `search.fusion`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import chain

import numpy as np
from sqlalchemy import bindparam, select

from search.catalog.catalog import Catalog
from search.catalog.models import CollectionRow, Modality, Source
from search.catalog.transactions import core_table
from search.sorted_ids import locate

# A vector's kind: its column in `OwnerSnapshot.members` (an item has at most one vector
# per modality and source: the catalog's unique constraint).
KINDS = ((Modality.IMAGE, Source.ORIGINAL), (Modality.IMAGE, Source.GENERATED),
         (Modality.TEXT, Source.ORIGINAL), (Modality.TEXT, Source.GENERATED))
# Rebuild from scratch once the rows read as deltas outnumber those of the last full read:
# bounds the dead rows (replaced vectors) the map carries.
REBUILD_AFTER_SHARE = 1.0
_FETCH_BATCH = 65_536  # rows held as Python tuples at once while reading
Stamp = tuple[str, int]  # (the collection's creation time, its write_version)

_ROWS_SQL = (  # kind computed by SQL, so rows land in one int64 array without a Python loop
    "SELECT id, item_id, "
    "CASE modality WHEN 'image' THEN 0 WHEN 'text' THEN 2 ELSE -8 END + "
    "CASE source WHEN 'original' THEN 0 WHEN 'generated' THEN 1 ELSE -8 END "
    "FROM vectors WHERE collection_id = {collection} AND id > {after} ORDER BY id")


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields
class OwnerSnapshot:
    """The vector -> item and item -> vectors maps as of one `write_version`. Immutable:
    a search keeps the snapshot it started with while a refresh builds the next."""

    stamp: Stamp | None  # None: never read
    vector_ids: np.ndarray  # int64 [v], sorted
    vector_items: np.ndarray  # int64 [v], the owning item of each
    item_ids: np.ndarray  # int64 [i], sorted
    members: np.ndarray  # int64 [i, len(KINDS)]: the item's vector id of each kind; -1 none
    delta_rows: int = 0  # rows added by deltas since the last full read

    @classmethod
    def empty(cls, stamp: Stamp | None = None) -> OwnerSnapshot:
        none = np.zeros(0, np.int64)
        return cls(stamp, none, none, none, np.zeros((0, len(KINDS)), np.int64))

    @property
    def max_vector_id(self) -> int:
        return int(self.vector_ids[-1]) if len(self.vector_ids) else 0

    def owners(self, vector_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item id of each vector [n], known mask [n]); unknown rows read -1."""
        return _lookup(self.vector_ids, self.vector_items, vector_ids)

    def members_of(self, item_ids: np.ndarray) -> np.ndarray:
        """int64 [n, len(KINDS)] vector ids of these items (-1: none or unknown item)."""
        if not len(self.item_ids):
            return np.full((len(item_ids), len(KINDS)), -1, np.int64)
        pos, found = locate(self.item_ids, item_ids)
        rows = self.members[pos]
        rows[~found] = -1
        return rows

    def with_rows(self, stamp: Stamp, rows: np.ndarray, full: bool = False) -> OwnerSnapshot:
        """This map plus `rows` (int64 [r, 3]: vector id, item id, kind; ids ascending and
        above every id held)."""
        rows = rows[rows[:, 2] >= 0]  # modalities or sources this map does not know
        items = np.union1d(self.item_ids, rows[:, 1])
        members = np.full((len(items), len(KINDS)), -1, np.int64)
        members[np.searchsorted(items, self.item_ids)] = self.members
        # rows come in id order, so a later (newer) vector of the same kind wins
        members[np.searchsorted(items, rows[:, 1]), rows[:, 2]] = rows[:, 0]
        return OwnerSnapshot(stamp, np.concatenate([self.vector_ids, rows[:, 0]]),
                             np.concatenate([self.vector_items, rows[:, 1]]), items, members,
                             0 if full else self.delta_rows + len(rows))


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    if not len(keys):
        return np.full(len(wanted), -1, np.int64), np.zeros(len(wanted), bool)
    pos, known = locate(keys, wanted)
    return np.where(known, values[pos], -1), known


class OwnerMap:
    """One collection's owner map, refreshed by its write stamp. Thread-safe."""

    def __init__(self, catalog: Catalog, collection_id: int) -> None:
        self.catalog, self.collection_id = catalog, collection_id
        self._snapshot = OwnerSnapshot.empty()
        self._lock = threading.Lock()  # one refresh at a time; readers never wait on it

    def current(self, force: bool = False) -> OwnerSnapshot:
        """The map as of the catalog's current stamp: one stamp query; rows only when
        it moved (or `force`: a search met a vector id the map does not hold yet)."""
        stamp = self._stamp()
        held = self._snapshot
        if held.stamp == stamp and not force:
            return held
        with self._lock:
            held = self._snapshot
            if stamp is None:  # the collection is gone: hold nothing
                self._snapshot = OwnerSnapshot.empty()
            elif held.stamp != stamp or force:
                self._snapshot = self._refreshed(held, stamp)
            return self._snapshot

    def _stamp(self) -> Stamp | None:
        with self.catalog.session() as session:  # Core: one per query, the ORM cost 3x
            row = session.execute(_STAMP, {"id": self.collection_id}).first()
        return None if row is None else (str(row[0]), int(row[1]))

    def _refreshed(self, held: OwnerSnapshot, stamp: Stamp) -> OwnerSnapshot:
        full = held.stamp is None or held.stamp[0] != stamp[0] or (
            held.delta_rows > REBUILD_AFTER_SHARE * max(len(held.vector_ids) - held.delta_rows,
                                                        1))
        base = OwnerSnapshot.empty() if full else held
        rows = self._rows_after(base.max_vector_id)
        return base.with_rows(stamp, rows, full=full)

    def _rows_after(self, after: int) -> np.ndarray:
        sql = _ROWS_SQL.format(collection=int(self.collection_id), after=int(after))
        parts = [np.zeros(0, np.int64)]
        with self.catalog.session() as session:
            # the driver's cursor, in batches: SQLAlchemy's row objects cost 3x the query
            # (and np.array on them probes each for the array protocol: 18 s for 200k)
            cursor = session.connection().exec_driver_sql(sql).cursor
            while batch := cursor.fetchmany(_FETCH_BATCH):
                parts.append(np.fromiter(chain.from_iterable(batch), dtype=np.int64,
                                         count=3 * len(batch)))
        return np.concatenate(parts).reshape(-1, 3)


_collections = core_table(CollectionRow)
_STAMP = (select(_collections.c.created_at, _collections.c.write_version)
          .where(_collections.c.id == bindparam("id")))
