"""Translate `search.filters.Filter` into SQL over the JSON `items.attributes` column.

Comparisons are type-guarded so a non-numeric value never makes PostgreSQL's CAST fail:
a range filter simply does not match an item whose attribute is a string.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, case, func, or_

from search.catalog.models import ItemRow
from search.filters import Filter, FilterOp


def _json_type(field: str, dialect: str) -> ColumnElement:
    if dialect == "postgresql":
        return func.json_typeof(ItemRow.attributes[field])
    return func.json_type(ItemRow.attributes, f'$."{field}"')


def _is_number(field: str, dialect: str) -> ColumnElement:
    kind = _json_type(field, dialect)
    return kind.in_(["number"]) if dialect == "postgresql" else kind.in_(["integer", "real"])


def _as_number(field: str, dialect: str) -> ColumnElement:
    return case((_is_number(field, dialect), ItemRow.attributes[field].as_float()), else_=None)


def _equals(field: str, value, dialect: str) -> ColumnElement:
    if isinstance(value, bool):
        kind = _json_type(field, dialect)
        wanted = ["boolean"] if dialect == "postgresql" else ["true" if value else "false"]
        if dialect == "postgresql":
            return and_(kind.in_(wanted), ItemRow.attributes[field].as_string() ==
                        ("true" if value else "false"))
        return kind.in_(wanted)
    if isinstance(value, int | float):
        return _as_number(field, dialect) == float(value)
    return and_(_json_type(field, dialect).in_(["string", "text"]),
                ItemRow.attributes[field].as_string() == value)


_RANGE = {
    FilterOp.GTE: lambda col, v: col >= v,
    FilterOp.LTE: lambda col, v: col <= v,
    FilterOp.GT: lambda col, v: col > v,
    FilterOp.LT: lambda col, v: col < v,
}


def filter_clause(filters: list[Filter], dialect: str) -> ColumnElement | None:
    clauses = []
    for f in filters:
        if f.op is FilterOp.EQ:
            clauses.append(_equals(f.field, f.value, dialect))
        elif f.op is FilterOp.IN:
            clauses.append(or_(*(_equals(f.field, v, dialect) for v in f.value)))
        else:
            clauses.append(_RANGE[f.op](_as_number(f.field, dialect), float(f.value)))
    return and_(*clauses) if clauses else None
