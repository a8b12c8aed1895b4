"""Facet counts in SQL over a set of items given as a select of their ids.

Value counts read scalar attributes and each element of list attributes (SQLite
`json_each`; PostgreSQL `json_array_elements_text`), counting each item once per value.
Range buckets use the same type-guarded number as range filters.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import Session

from search.catalog.models import ItemRow
from search.facets import FacetBucket, FacetCounts, FacetRequest


def _json_type(field: str, dialect: str) -> ColumnElement:
    if dialect == "postgresql":
        return func.json_typeof(ItemRow.attributes[field])
    return func.json_type(ItemRow.attributes, f'$."{field}"')


def _as_number(field: str, dialect: str) -> ColumnElement:
    """The attribute as a float where it is a JSON number, else NULL (never a failed CAST)."""
    kind = _json_type(field, dialect)
    is_number = kind.in_(["number"]) if dialect == "postgresql" else kind.in_(["integer", "real"])
    return case((is_number, ItemRow.attributes[field].as_float()), else_=None)


def _values_sqlite(field: str, ids: Select) -> Select:
    each = func.json_each(ItemRow.attributes, f'$."{field}"').table_valued("value", "type")
    return (select(each.c.value.label("value"), ItemRow.id.label("item_id"))
            .select_from(ItemRow).join(each, true())
            .where(ItemRow.id.in_(ids), each.c.type.in_(["text", "integer", "real"])))


def _values_postgresql(field: str, ids: Select) -> CompoundSelect:
    attribute = ItemRow.attributes[field]
    kind = func.json_typeof(attribute)
    # The CASE keeps json_array_elements_text away from scalars, which it rejects.
    elements = func.json_array_elements_text(
        case((kind == "array", attribute), else_=cast(literal("[]"), JSON))
    ).table_valued("value")
    in_lists = (select(elements.c.value.label("value"), ItemRow.id.label("item_id"))
                .select_from(ItemRow).join(elements, true()).where(ItemRow.id.in_(ids)))
    scalars = select(attribute.as_string().label("value"), ItemRow.id.label("item_id")).where(
        ItemRow.id.in_(ids), kind.in_(["string", "number"]))
    return union_all(in_lists, scalars)


def _value_counts(session: Session, dialect: str, ids: Select,
                  request: FacetRequest) -> tuple[FacetBucket, ...]:
    values = (_values_postgresql(request.field, ids) if dialect == "postgresql"
              else _values_sqlite(request.field, ids)).subquery()
    count = func.count(distinct(values.c.item_id))
    rows = session.execute(select(values.c.value, count).group_by(values.c.value)
                           .order_by(count.desc(), values.c.value).limit(request.size))
    return tuple(FacetBucket(v, int(n)) for v, n in rows)


def _range_counts(session: Session, dialect: str, ids: Select,
                  request: FacetRequest) -> tuple[FacetBucket, ...]:
    number = _as_number(request.field, dialect)
    sums = []
    for low, high in request.ranges:
        conditions: list[ColumnElement[bool]] = [number.is_not(None)]
        conditions += [number >= low] if low is not None else []
        conditions += [number < high] if high is not None else []
        sums.append(func.coalesce(func.sum(case((and_(*conditions), 1), else_=0)), 0))
    row = session.execute(select(*sums).where(ItemRow.id.in_(ids))).one()
    return tuple(FacetBucket([lo, hi], int(n))
                 for (lo, hi), n in zip(request.ranges, row, strict=True))


def facet_counts(session: Session, dialect: str, ids: Select,
                 request: FacetRequest) -> FacetCounts:
    count = _range_counts if request.ranges else _value_counts
    return FacetCounts(request.field, count(session, dialect, ids, request))

