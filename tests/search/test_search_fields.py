"""Declaring a collection's searchable and identifier fields through `Collection`: names
checked, unknown fields refused once items exist, the keyword index rebuilt. SQLite and
PostgreSQL."""

import pytest

from search import (
    MAX_DECLARED_FIELDS,
    InvalidInputError,
    NewItem,
    Searcher,
    SearchMode,
    SearchQuery,
    UnknownFieldError,
)

ITEMS = [
    NewItem("shoe-1", text="running shoe", attributes={
        "keywords": ["sneakers", "sport"], "brand": "Acme", "mpn": "RS-1",
        "description": "x" * 2000 + " trail", "spec": {"size": 42}}),
    NewItem("mug-1", text="coffee mug", attributes={
        "keywords": ["kitchen"], "brand": "Bolt", "mpn": "CM-7"}),
]


def _hits(workspace, text):
    return Searcher(workspace).search(SearchQuery.text("shop", text, k=10,
                                                       mode=SearchMode.KEYWORD)).hits


def _keyword(workspace, text):
    return [h.external_id for h in _hits(workspace, text)]


def _exact(workspace, text):
    return [h.external_id for h in _hits(workspace, text) if "exact" in h.rankers]


def test_declared_fields_rebuild_the_keyword_index(workspace):
    shop = workspace.create_collection("shop")
    shop.add_items(ITEMS)
    assert shop.search_fields().searchable is None  # default: every string field
    assert _keyword(workspace, "sneakers") == ["shoe-1"]
    assert _exact(workspace, "cm-7") == []  # mpn is not an identifier yet
    # a long string (not in the attribute index) and an object are still known fields
    assert shop.set_search_fields(["brand", "description", "spec"], ["mpn"]) == 2
    assert shop.search_fields().searchable == ("brand", "description", "spec")
    assert shop.search_fields().identifiers == ("mpn",)
    assert _keyword(workspace, "sneakers") == []  # keywords are no longer read
    assert _keyword(workspace, "bolt") == ["mug-1"]
    assert _keyword(workspace, "trail") == ["shoe-1"]
    assert _exact(workspace, "CM-7") == ["mug-1"]  # case-insensitive identifier
    shop.set_search_fields(None)  # back to every string field, default identifiers
    assert _keyword(workspace, "sneakers") == ["shoe-1"]
    assert shop.search_fields().identifiers == ("sku", "gtin")


def test_unknown_and_invalid_fields_are_refused_and_change_nothing(workspace):
    shop = workspace.create_collection("shop")
    shop.add_items(ITEMS)
    with pytest.raises(UnknownFieldError, match="'brnad'") as caught:
        shop.set_search_fields(["brand", "brnad"], ["skuu"])
    assert caught.value.fields == ["brnad", "skuu"]
    for searchable, identifiers in ((["bad name"], []), (["brand", "brand"], []),
                                    ([], ["1sku"]), ("brand", []), ([""], []),
                                    ([f"f{i}" for i in range(MAX_DECLARED_FIELDS + 1)], [])):
        with pytest.raises(InvalidInputError):
            shop.set_search_fields(searchable, identifiers)
    assert shop.search_fields().searchable is None  # untouched
    assert _keyword(workspace, "sneakers") == ["shoe-1"]


def test_fields_may_be_declared_before_the_first_item(workspace):
    shop = workspace.create_collection("shop")
    assert shop.set_search_fields(["brand"], ["mpn"]) == 0
    shop.add_items(ITEMS)  # new items are indexed with the declared fields
    assert _keyword(workspace, "sneakers") == []
    assert _keyword(workspace, "acme") == ["shoe-1"]
    assert _exact(workspace, "rs-1") == ["shoe-1"]
