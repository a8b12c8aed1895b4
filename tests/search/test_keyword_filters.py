"""Filtered keyword search: every filter shape gives exactly the matches that pass it
(SQLite checks them against the catalog's cached allowed sets, PostgreSQL in SQL), and
the allowed sets follow writes. SQLite and PostgreSQL."""

import numpy as np
import pytest

from search.catalog import allowed_items, keyword
from search.catalog.allowed_items import AllowedItems
from search.catalog.items import ItemInput
from search.filters import parse_filters

BRANDS = ("Acme", "Bolt", "Lumo")


def _items(n: int) -> list[ItemInput]:
    return [ItemInput(f"i{i}", f"{'red' if i % 3 else 'blue'} cup number{i}", None,
                      {"brand": BRANDS[i % 3], "price": float(i), "in_stock": i % 2 == 0,
                       "sizes": [i % 5, 10 + i % 7]}, f"h{i}") for i in range(n)]


def _passes(attributes: dict, spec: dict) -> bool:
    """The filter semantics, written out: a list passes when some element does."""
    for field, condition in spec.items():
        values = attributes[field] if isinstance(attributes[field], list) else [attributes[field]]
        if isinstance(condition, dict):
            bounds = {"gte": lambda v, b: v >= b, "lt": lambda v, b: v < b,
                      "lte": lambda v, b: v <= b, "gt": lambda v, b: v > b}
            if "in" in condition:
                ok = any(v in condition["in"] for v in values)
            else:
                ok = any(all(bounds[op](v, b) for op, b in condition.items()) for v in values)
        else:
            ok = condition in values
        if not ok:
            return False
    return True


SPECS = [
    {"price": {"gte": 10, "lt": 25}},
    {"price": {"gt": 58}},
    {"brand": {"in": ["Acme", "Lumo"]}},
    {"brand": "Bolt", "in_stock": True},
    {"sizes": {"gte": 3, "lt": 5}},  # some element within the range
    {"sizes": {"gte": 5, "lt": 10}},  # no element is: [0..4] and [10..16]
    {"sizes": 12, "price": {"lte": 40}, "brand": {"in": ["Acme", "Bolt"]}},
    {"price": {"gte": 1000}},  # nothing passes
]


@pytest.mark.parametrize("dense", [True, False])
def test_every_filter_shape_gives_exactly_the_matches_that_pass(catalog, collection, dense,
                                                                monkeypatch):
    if not dense:  # the sparse path: a frozenset instead of a bitmap
        monkeypatch.setattr(allowed_items, "BITMAP_BYTES_PER_ID", 0)
        monkeypatch.setattr(allowed_items, "BITMAP_FREE_BYTES", 0)
    items = _items(60)
    ids = {c.external_id: c.item_id for c in catalog.upsert_items(collection.id, items)}
    every, red = (catalog.keyword.parse(collection.id, q) for q in ("cup", "red cup"))
    for spec in SPECS:
        passing = [it for it in items if _passes(it.attributes, spec)]
        found = catalog.keyword.search(collection.id, every, 100, parse_filters(spec))
        assert {m.item_id for m in found} == {ids[it.external_id] for it in passing}, spec
        # two words: the red ones (every word) rank before the blue (any word)
        found = catalog.keyword.search(collection.id, red, 100, parse_filters(spec))
        reds = sum("red" in it.text for it in passing)
        assert {m.item_id for m in found[:reds]} == {
            ids[it.external_id] for it in passing if "red" in it.text}, spec
        assert catalog.keyword.count(collection.id, red, parse_filters(spec)) == \
            (reds or len(passing)), spec


def test_a_filtered_stage_fills_its_cap_from_the_allowed_matches(catalog, collection,
                                                                 monkeypatch):
    items = _items(60)
    ids = {c.external_id: c.item_id for c in catalog.upsert_items(collection.id, items)}
    monkeypatch.setattr(keyword, "SCORE_CAP", 5)
    spec = {"brand": "Bolt"}
    found = catalog.keyword.search(collection.id, catalog.keyword.parse(collection.id, "cup"),
                                   3, parse_filters(spec))
    allowed = sorted((ids[it.external_id] for it in items if it.attributes["brand"] == "Bolt"),
                     reverse=True)
    assert len(found) == 3 and {m.item_id for m in found} <= set(allowed)
    if catalog.engine.dialect.name == "sqlite":  # the newest five allowed are the scored
        assert {m.item_id for m in found} <= set(allowed[:5])


def test_allowed_sets_follow_writes(catalog, collection):
    catalog.upsert_items(collection.id, _items(12))
    parsed, spec = catalog.keyword.parse(collection.id, "cup"), parse_filters({"brand": "Zed"})
    assert catalog.keyword.search(collection.id, parsed, 10, spec) == []
    [new] = catalog.upsert_items(collection.id, [ItemInput("z", "green cup", None,
                                                           {"brand": "Zed"}, "hz")])
    assert [m.item_id for m in catalog.keyword.search(collection.id, parsed, 10, spec)] == \
        [new.item_id]
    catalog.upsert_items(collection.id, [ItemInput("z", "green cup", None,
                                                   {"brand": "Other"}, "hz")])
    assert catalog.keyword.search(collection.id, parsed, 10, spec) == []


@pytest.mark.parametrize("ids", [[5], [3, 9, 4000], [1, 2, 3, 2_000_000_000]])
def test_allowed_items_test_members_only(ids):
    allowed = AllowedItems.of(np.array(ids, dtype=np.int64))
    assert (allowed.low, allowed.high) == (ids[0], ids[-1])
    span = range(ids[0], min(ids[-1], ids[0] + 5000) + 1)
    assert [i for i in span if allowed.test(i - allowed.offset)] == \
        [i for i in ids if i in span]
    assert allowed.test(ids[-1] - allowed.offset)
