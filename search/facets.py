"""Facets as data: which attributes to count, and the counts, over a set of items.

`parse_facets(["category", {"field": "price", "ranges": [[0, 10], [10, 50], [50, None]]}])`.
Values are counted per item (a list attribute counts each distinct value once); a range is
`[low, high)`, either end open when None. The catalog counts in SQL over a full keyword
match set (`search.catalog.facet_sql`); `count_facets` counts over hits already fetched.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from search.errors import InvalidQueryError

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
MAX_FACETS = 16
MAX_RANGES = 32
DEFAULT_VALUES = 20  # most frequent values returned per field


class FacetScope(StrEnum):
    MATCHES = "matches"  # every item the keyword query matches (after filters)
    CANDIDATES = "candidates"  # the fused candidate list the hits were ranked from


@dataclass(frozen=True)
class FacetRequest:
    field: str
    ranges: tuple[tuple[float | None, float | None], ...] = ()  # empty: value counts
    size: int = DEFAULT_VALUES


@dataclass(frozen=True)
class FacetBucket:
    value: Any  # a value, or [low, high] for a range
    count: int


@dataclass(frozen=True)
class FacetCounts:
    field: str
    buckets: tuple[FacetBucket, ...]


def _bound(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidQueryError(f"facet {field!r}: range bounds must be numbers or null")
    return float(value)


def _parse_one(spec: Any) -> FacetRequest:
    if isinstance(spec, str):
        spec = {"field": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("field"), str):
        raise InvalidQueryError('a facet is a field name or {"field": ..., "ranges": [...]}')
    field = spec["field"]
    if not _FIELD.match(field):
        raise InvalidQueryError(f"invalid attribute name {field!r} in facets")
    unknown = set(spec) - {"field", "ranges", "size"}
    if unknown:
        raise InvalidQueryError(f"facet {field!r}: unknown keys {sorted(unknown)}")
    ranges = []
    for r in spec.get("ranges") or []:
        if not isinstance(r, list | tuple) or len(r) != 2:
            raise InvalidQueryError(f"facet {field!r}: a range is [low, high]")
        low, high = _bound(field, r[0]), _bound(field, r[1])
        if low is not None and high is not None and low >= high:
            raise InvalidQueryError(f"facet {field!r}: range {list(r)} is empty")
        ranges.append((low, high))
    if len(ranges) > MAX_RANGES:
        raise InvalidQueryError(f"facet {field!r}: at most {MAX_RANGES} ranges")
    size = spec.get("size", DEFAULT_VALUES)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1000:
        raise InvalidQueryError(f"facet {field!r}: size must be between 1 and 1000")
    return FacetRequest(field, tuple(ranges), size)


def parse_facets(specs: Iterable[Any] | None) -> list[FacetRequest]:
    facets = [_parse_one(s) for s in specs or []]
    if len(facets) > MAX_FACETS:
        raise InvalidQueryError(f"at most {MAX_FACETS} facets")
    return facets


def in_range(value: Any, low: float | None, high: float | None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (low is None or value >= low) and (high is None or value < high)


def _values(value: Any) -> set[Any]:
    items = value if isinstance(value, list) else [value]
    return {v for v in items if isinstance(v, str | int | float) and not isinstance(v, bool)}


def count_facets(requests: Iterable[FacetRequest],
                 attributes: Iterable[dict[str, Any]]) -> tuple[FacetCounts, ...]:
    """Counts over items already in memory (a candidate list)."""
    rows = list(attributes)
    out = []
    for request in requests:
        if request.ranges:
            buckets = tuple(FacetBucket([lo, hi], sum(in_range(a.get(request.field), lo, hi)
                                                      for a in rows))
                            for lo, hi in request.ranges)
        else:
            counter = Counter(v for a in rows for v in _values(a.get(request.field)))
            ordered = sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))
            buckets = tuple(FacetBucket(v, n) for v, n in ordered[:request.size])
        out.append(FacetCounts(request.field, buckets))
    return tuple(out)
