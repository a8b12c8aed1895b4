"""The attribute index: items' scalar attributes, and the scalar elements of their list
attributes, as typed, indexed rows (kept in step with `items.attributes` on every write),
and cached allowed-id sets per filter.

A filter becomes index range scans over `item_attributes` instead of a JSON parse per
item; a search with the same filter again reads a cached sorted numpy array, valid while
the collection's `write_version` (bumped by every write that can change it) stays put.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    String,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from search.catalog.filter_sql import allowed_items
from search.catalog.models import CollectionRow, ItemAttributeRow, ItemRow
from search.catalog.transactions import core_table
from search.filters import Filter

MAX_TEXT_VALUE = 1024  # longer strings are not indexed, so no filter matches them
MAX_LIST_VALUES = 256  # elements indexed per list attribute (later ones never match)
FILTERABLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")  # as search.filters
CACHED_SETS = 64
CACHED_IDS = 20_000_000  # int64 ids held in all cached sets together (160 MB)

IdSetKey = tuple[int, tuple[str, ...], tuple[str, ...], tuple[tuple, ...]]
# The "modality" of item-id sets in the cache: no vector space has this name.
ITEMS = "*items"


def attribute_rows(collection_id: int, item_id: int, attributes: Mapping[str, Any]
                   ) -> list[dict[str, Any]]:
    """The typed rows of one item's filterable attributes: one per scalar, and one per
    scalar element of a list (so `{"keywords": "red"}` matches `["red", "fruit"]`, as a
    facet on the list counts it)."""
    rows = []
    for key, value in attributes.items():
        if not isinstance(key, str) or not FILTERABLE_KEY.match(key):
            continue
        values = value[:MAX_LIST_VALUES] if isinstance(value, list) else [value]
        seen: set[tuple[str, Any]] = set()  # a repeated element is one row
        for element in values:
            row = _typed_row(collection_id, item_id, key, element)
            if row is None:
                continue
            marker = (type(element).__name__, element)
            if marker not in seen:
                seen.add(marker)
                rows.append(row)
    return rows


def _typed_row(collection_id: int, item_id: int, key: str, value: Any
               ) -> dict[str, Any] | None:
    row: dict[str, Any] = {"collection_id": collection_id, "item_id": item_id, "key": key,
                           "text_value": None, "num_value": None, "bool_value": None}
    if isinstance(value, bool):
        row["bool_value"] = value
    elif isinstance(value, int | float) and np.isfinite(float(value)):
        row["num_value"] = float(value)
    elif isinstance(value, str) and len(value) <= MAX_TEXT_VALUE:
        row["text_value"] = value
    else:
        return None  # objects, nulls, nested lists: filters never match them
    return row


_attributes = core_table(ItemAttributeRow)  # Core: the write path needs no ORM objects
_collections = core_table(CollectionRow)


def reindex_attributes(session: Session, collection_id: int,
                       items: Iterable[tuple[int, Mapping[str, Any]]],
                       fresh: Collection[int] = ()) -> None:
    """Replace the attribute rows of these (item_id, attributes) in this transaction
    (`fresh`: ids of items inserted in it, which have no rows to delete)."""
    items = list(items)
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        stale = [item_id for item_id, _ in chunk if item_id not in fresh]
        if stale:
            session.execute(delete(_attributes).where(_attributes.c.item_id.in_(stale)))
        rows = [r for item_id, attrs in chunk
                for r in attribute_rows(collection_id, item_id, attrs or {})]
        if rows:
            session.execute(insert(_attributes), rows)


def unknown_keys(session: Session, collection_id: int, names: Sequence[str]) -> list[str]:
    """The names no item of the collection has as an attribute ([] while it has no items:
    fields may be declared before the first write). Indexed keys are found in the attribute
    index; the rest (objects, long strings) by one JSON probe per name."""
    if not session.scalar(select(exists().where(ItemRow.collection_id == collection_id))):
        return []
    indexed = set(session.scalars(select(ItemAttributeRow.key).distinct().where(
        ItemAttributeRow.collection_id == collection_id,
        ItemAttributeRow.key.in_(list(names)))))
    return [name for name in names if name not in indexed
            and not session.scalar(select(exists().where(
                ItemRow.collection_id == collection_id, _has_key(session, name))))]


def _has_key(session: Session, name: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return ItemRow.attributes.op("->")(bindparam(None, name, String)).isnot(None)
    return func.json_type(ItemRow.attributes, bindparam(None, f'$."{name}"', String)
                          ).isnot(None)


def bump_write_version(session: Session, collection_id: int) -> None:
    """Once per transaction and collection: readers see its changes at commit, together."""
    bumped = session.info.setdefault("bumped_write_versions", set())
    if collection_id in bumped:
        return
    bumped.add(collection_id)
    session.execute(update(_collections).where(_collections.c.id == collection_id)
                    .values(write_version=_collections.c.write_version + 1))


def write_version(session: Session, collection_id: int) -> int:
    return int(session.scalar(select(CollectionRow.write_version)
                              .where(CollectionRow.id == collection_id)) or 0)


class IdSetCache:
    """LRU of allowed vector-id sets, each stamped with the write_version it was read at."""

    def __init__(self, max_sets: int = CACHED_SETS, max_ids: int = CACHED_IDS) -> None:
        self.max_sets, self.max_ids = max_sets, max_ids
        self._sets: OrderedDict[IdSetKey, tuple[int, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: IdSetKey, version: int) -> np.ndarray | None:
        with self._lock:
            found = self._sets.get(key)
            if found is None or found[0] != version:
                return None
            self._sets.move_to_end(key)
            return found[1]

    def put(self, key: IdSetKey, version: int, ids: np.ndarray) -> None:
        ids.flags.writeable = False
        with self._lock:
            self._sets[key] = (version, ids)
            self._sets.move_to_end(key)
            while len(self._sets) > self.max_sets or (
                    len(self._sets) > 1 and sum(len(v) for _, v in self._sets.values())
                    > self.max_ids):
                self._sets.popitem(last=False)


def id_set_key(collection_id: int, modalities: Sequence[str] | None,
               sources: Sequence[str] | None, filters: Sequence[Filter]) -> IdSetKey:
    return (collection_id, tuple(sorted(modalities or ())), tuple(sorted(sources or ())),
            tuple((f.field, f.op.value, _typed(f.value)) for f in filters))


def allowed_item_ids(session: Session, cache: IdSetCache, collection_id: int,
                     filters: Sequence[Filter]) -> np.ndarray:
    """The collection's item ids passing every filter (int64, sorted), through the cache
    that holds the vector side's allowed sets, valid until the collection's next write."""
    key = id_set_key(collection_id, (ITEMS,), None, filters)
    version = write_version(session, collection_id)
    cached = cache.get(key, version)
    if cached is not None:
        return cached
    ids = np.unique(np.fromiter(session.scalars(allowed_items(list(filters), collection_id)),
                                dtype=np.int64))
    cache.put(key, version, ids)
    return ids


def _typed(value: Any) -> tuple:
    """Python says True == 1 (and hashes them alike); filters must not."""
    if isinstance(value, tuple):
        return tuple(_typed(v) for v in value)
    return (type(value).__name__, value)
