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


def _conditions(filters: list[Filter]) -> list[tuple[str, ColumnElement]]:
    """(field, condition on one attribute row) per filtered field: the range bounds of a
    field are one condition, so a list matches when some element is within the range
    (as documented) and `{"gte": 100, "lt": 150}` is one index range scan, not two
    half-open sets of most of the collection intersected."""
    out: list[tuple[str, list[ColumnElement]]] = []
    ranges: dict[str, list[ColumnElement]] = {}
    for f in filters:
        if f.op in _RANGE and f.field in ranges:
            ranges[f.field].append(_condition(f))
            continue
        conditions = [_condition(f)]
        out.append((f.field, conditions))
        if f.op in _RANGE:
            ranges[f.field] = conditions
    return [(field, and_(*conditions) if len(conditions) > 1 else conditions[0])
            for field, conditions in out]


def _matching(collection_id: int, field: str, condition: ColumnElement) -> Select:
    return select(ItemAttributeRow.item_id).where(
        ItemAttributeRow.collection_id == collection_id, ItemAttributeRow.key == field,
        condition)


def filter_clause(filters: list[Filter], collection_id: int, item_id: ColumnElement
                  ) -> ColumnElement | None:
    """`item_id` passes every filter (None: no filters)."""
    clauses = [item_id.in_(_matching(collection_id, field, condition))
               for field, condition in _conditions(filters)]
    return and_(*clauses) if clauses else None


def allowed_items(filters: list[Filter], collection_id: int) -> Select:
    """SELECT the item ids passing every filter (repeated for list elements: dedupe),
    driven by one index scan of the first field, the others checked per row."""
    (field, condition), *rest = _conditions(filters)
    stmt = _matching(collection_id, field, condition)
    for other, other_condition in rest:
        stmt = stmt.where(ItemAttributeRow.item_id.in_(
            _matching(collection_id, other, other_condition)))
    return stmt
