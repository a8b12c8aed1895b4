"""Translate `search.filters.Filter` into SQL over the typed attribute index.

Each filter is one indexed scan of `item_attributes` (collection, key, typed value) giving
the matching item ids; filters combine with AND. Types never mix: a range filter only
matches numbers, `"1"` never equals `1`, `true` never equals `1` — as on the JSON
column before, where comparisons were type-guarded the same way. A list attribute has one
row per element, so on a list `eq` and `in` mean "contains" and a range means "some
element is in range" (a facet click on `keywords: red` finds `["red", "fruit"]`).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, or_, select

from search.catalog.models import ItemAttributeRow
from search.filters import Filter, FilterOp

_RANGE = {
    FilterOp.GTE: lambda col, v: col >= v,
    FilterOp.LTE: lambda col, v: col <= v,
    FilterOp.GT: lambda col, v: col > v,
    FilterOp.LT: lambda col, v: col < v,
}


def _equals(value) -> ColumnElement:
    if isinstance(value, bool):
        return ItemAttributeRow.bool_value == value
    if isinstance(value, int | float):
        return ItemAttributeRow.num_value == float(value)
    return ItemAttributeRow.text_value == value


def _condition(f: Filter) -> ColumnElement:
    if f.op is FilterOp.EQ:
        return _equals(f.value)
    if f.op is FilterOp.IN:
        # one indexed IN per type present (bools, numbers, strings)
        by_type: dict[str, list] = {}
        for value in f.value:
            kind = "bool" if isinstance(value, bool) else (
                "num" if isinstance(value, int | float) else "text")
            by_type.setdefault(kind, []).append(value)
        columns = {"bool": ItemAttributeRow.bool_value, "num": ItemAttributeRow.num_value,
                   "text": ItemAttributeRow.text_value}
        return or_(*(columns[kind].in_([float(v) if kind == "num" else v for v in values])
                     for kind, values in by_type.items()))
    return _RANGE[f.op](ItemAttributeRow.num_value, float(f.value))


def matching_items(collection_id: int, f: Filter) -> Select:
    """SELECT item_id of the collection's items whose attribute passes one filter."""
    return select(ItemAttributeRow.item_id).where(
        ItemAttributeRow.collection_id == collection_id, ItemAttributeRow.key == f.field,
        _condition(f))


def filter_clause(filters: list[Filter], collection_id: int, item_id: ColumnElement
                  ) -> ColumnElement | None:
    """`item_id` passes every filter (None: no filters)."""
    clauses = [item_id.in_(matching_items(collection_id, f)) for f in filters]
    return and_(*clauses) if clauses else None
