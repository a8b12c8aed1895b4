"""Metadata filters on item attributes, as data: parsed once, applied by the catalog."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from search.errors import InvalidQueryError

MAX_FILTER_FIELDS = 32  # attributes filtered in one query
# An IN list becomes an OR chain in SQL, and SQLite caps expression depth.
MAX_IN_VALUES = 100
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
Scalar = str | int | float | bool


class FilterOp(StrEnum):
    EQ = "eq"
    IN = "in"
    GTE = "gte"
    LTE = "lte"
    GT = "gt"
    LT = "lt"


RANGE_OPS = {FilterOp.GTE, FilterOp.LTE, FilterOp.GT, FilterOp.LT}


@dataclass(frozen=True)
class Filter:
    field: str
    op: FilterOp
    value: Any  # a scalar; a tuple of scalars for IN; a number for range ops


def _check_scalar(field: str, value: Any) -> Scalar:
    if isinstance(value, str | int | float | bool) and value is not None:
        return value
    raise InvalidQueryError(f"filter on {field!r}: values must be strings, numbers or booleans")


def _parse_condition(field: str, op_name: str, value: Any) -> Filter:
    try:
        op = FilterOp(op_name)
    except ValueError:
        ops = ", ".join(o.value for o in FilterOp)
        message = f"filter on {field!r}: unknown operator {op_name!r} ({ops})"
        raise InvalidQueryError(message) from None
    if op is FilterOp.IN:
        if not isinstance(value, list | tuple) or not value:
            raise InvalidQueryError(f"filter on {field!r}: 'in' needs a non-empty list")
        if len(value) > MAX_IN_VALUES:
            raise InvalidQueryError(f"filter on {field!r}: an 'in' list holds at most "
                                    f"{MAX_IN_VALUES} values")
        return Filter(field, op, tuple(_check_scalar(field, v) for v in value))
    if op in RANGE_OPS and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidQueryError(f"filter on {field!r}: {op.value!r} needs a number")
    return Filter(field, op, _check_scalar(field, value))


def parse_filters(spec: dict[str, Any] | None) -> list[Filter]:
    """`{"category": "food", "color": {"in": [...]}, "price": {"gte": 1, "lte": 9}}`."""
    filters: list[Filter] = []
    if len(spec or {}) > MAX_FILTER_FIELDS:
        raise InvalidQueryError(f"at most {MAX_FILTER_FIELDS} filtered attributes")
    for field, condition in (spec or {}).items():
        if not _FIELD.match(field):
            raise InvalidQueryError(f"invalid attribute name {field!r} in filters")
        if isinstance(condition, dict):
            if not condition:
                raise InvalidQueryError(f"filter on {field!r} is empty")
            filters.extend(_parse_condition(field, op, v) for op, v in condition.items())
        elif isinstance(condition, list):
            filters.append(_parse_condition(field, "in", condition))
        else:
            filters.append(_parse_condition(field, "eq", condition))
    return filters
