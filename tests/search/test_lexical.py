"""The lexical index in the catalog: upkeep with item writes, BM25 / ts_rank ranking,
typo correction, exact identifiers, facets. Every test runs on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import text

from search.catalog import keyword, lexical
from search.catalog.items import ItemInput
from search.catalog.lexical import LexicalSettings
from search.facets import FacetBucket, parse_facets
from search.filters import parse_filters


@pytest.fixture
def shop(collection):
    return collection.id


ITEMS = [
    ItemInput("shoe-1", "running shoe", None,
              {"keywords": ["sneakers", "sport"], "brand": "Acme", "price": 80,
               "sku": "AC-100"}, "h1"),
    ItemInput("shoe-2", "leather boot", None,
              {"keywords": ["boots", "winter"], "brand": "Bolt", "price": 120}, "h2"),
    ItemInput("mug-1", "coffee mug", None,
              {"keywords": ["kitchen", "ceramic"], "brand": "Acme", "price": 9.5,
               "gtin": "0123456789012"}, "h3"),
    ItemInput("lamp-1", "desk lamp", None,
              {"keywords": ["light", "office"], "brand": "Lumo", "price": 35}, "h4"),
]


def _ids(catalog, shop, matches):
    views = catalog.keyword.items([m.item_id for m in matches])
    return [views[m.item_id].external_id for m in matches]


def _search(catalog, shop, query, filters=None, limit=10):
    keyword = catalog.keyword
    return _ids(catalog, shop, keyword.search(shop, keyword.parse(shop, query), limit,
                                              parse_filters(filters)))


def test_text_and_attributes_are_searched_with_stemming(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    assert _search(catalog, shop, "sneaker")[0] == "shoe-1"  # keywords, stemmed
    assert _search(catalog, shop, "sneakers for running") == ["shoe-1"]
    assert _search(catalog, shop, "acme") == ["mug-1", "shoe-1"] or \
        sorted(_search(catalog, shop, "acme")) == ["mug-1", "shoe-1"]
    assert _search(catalog, shop, "boots winter")[0] == "shoe-2"


def test_words_matching_more_terms_rank_higher(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    found = _search(catalog, shop, "acme coffee")
    assert found[0] == "mug-1" and set(found) == {"mug-1", "shoe-1"}


def test_items_with_all_but_one_word_rank_before_items_with_one(catalog, shop):
    catalog.upsert_items(shop, [
        ItemInput("one", "red thing", None, {}, "a"),
        ItemInput("two", "red wool thing", None, {}, "b"),
        ItemInput("other", "wool hat", None, {}, "c"),
        ItemInput("none", "blue cup", None, {}, "d")])
    found = _search(catalog, shop, "red wool scarf")  # nobody has all three words
    assert found[0] == "two" and set(found) == {"one", "two", "other"}
    assert keyword.stages(catalog.keyword.parse(shop, "red wool scarf")) == [
        keyword.Stage.ALL, keyword.Stage.ALL_BUT_ONE, keyword.Stage.ANY]


def test_each_stage_scores_at_most_the_cap_and_stops_once_enough(catalog, shop, monkeypatch):
    items = [ItemInput(f"cup-{i}", f"cup number{i}" + (" red" if i % 2 else ""), None, {},
                       f"h{i}") for i in range(10)]
    ids = {c.external_id: c.item_id for c in catalog.upsert_items(shop, items)}
    monkeypatch.setattr(keyword, "SCORE_CAP", 4)
    matches = catalog.keyword.search(shop, catalog.keyword.parse(shop, "red cup"), 3, [])
    # every word: 4 of the 5 red cups are scored (SQLite: the newest); no any-word stage
    red = sorted((ids[f"cup-{i}"] for i in range(1, 10, 2)), reverse=True)
    scored = set(red[:4]) if catalog.engine.dialect.name == "sqlite" else set(red)
    assert len(matches) == 3 and {m.item_id for m in matches} <= scored
    more = catalog.keyword.search(shop, catalog.keyword.parse(shop, "red cup"), 8, [])
    assert len(more) == 8 and len({m.item_id for m in more}) == 8
    assert {m.item_id for m in more[:4]} <= scored and len(set(red) & {
        m.item_id for m in more[:4]}) == 4  # the every-word stage's four come first


def test_relaxed_stages_only_run_while_the_strict_ones_found_too_few(catalog, shop):
    items = [ItemInput(f"both-{i}", f"red cup {i}", None, {}, f"b{i}") for i in range(6)]
    items += [ItemInput(f"red-{i}", f"red plate {i}", None, {}, f"r{i}") for i in range(4)]
    catalog.upsert_items(shop, items)
    parsed = catalog.keyword.parse(shop, "red cup")

    def found(relax_below: int) -> set[str]:
        return set(_ids(catalog, shop, catalog.keyword.search(shop, parsed, 20, [],
                                                              relax_below=relax_below)))

    both = {f"both-{i}" for i in range(6)}
    assert found(6) == both  # six every-word matches are enough: no any-word stage
    assert found(7) == both | {f"red-{i}" for i in range(4)}  # too few: relaxed
    # the default threshold is keyword.RELAX_BELOW, bounded by the limit asked for
    assert found(keyword.RELAX_BELOW) == found(7)
    small = catalog.keyword.search(shop, parsed, 4, [])
    assert {m.item_id for m in small} <= {i for i, v in catalog.keyword.items(
        [m.item_id for m in small]).items() if v.external_id in both}


@pytest.mark.parametrize("query", ['"unclosed', "AND OR NOT", "(((", "near(a b", "*", "-x",
                                   "shoe:", "col:value ^2", "😀 🚀", "'; DROP TABLE items"])
def test_query_syntax_in_user_text_never_fails(catalog, shop, query):
    catalog.upsert_items(shop, ITEMS)
    _search(catalog, shop, query)  # no exception; words are quoted or joined safely


def test_typos_are_corrected_from_the_collection_vocabulary(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    parsed = catalog.keyword.parse(shop, "sneekers")
    assert "sneakers" in parsed.alternatives[0]
    assert _search(catalog, shop, "sneekers") == ["shoe-1"]
    assert _search(catalog, shop, "cofee") == ["mug-1"]
    assert _search(catalog, shop, "zzzzzz") == []


def test_filters_apply_to_keyword_matches(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    assert _search(catalog, shop, "acme", {"price": {"lte": 10}}) == ["mug-1"]
    assert catalog.keyword.count(shop, catalog.keyword.parse(shop, "acme"),
                                 parse_filters({"brand": "Acme"})) == 2


def test_index_follows_updates_and_deletes(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    changed = ItemInput("lamp-1", "floor lamp", None, {"keywords": ["standing"]}, "h4")
    catalog.upsert_items(shop, [changed])
    assert _search(catalog, shop, "standing") == ["lamp-1"]
    assert _search(catalog, shop, "office") == []
    # attributes alone changed (the content hash covers text and image only)
    catalog.upsert_items(shop, [ItemInput("lamp-1", "floor lamp", None,
                                          {"keywords": ["tall"]}, "h4")])
    assert _search(catalog, shop, "tall") == ["lamp-1"]
    catalog.delete_items(shop, ["shoe-1"])
    assert _search(catalog, shop, "sneakers") == []
    assert catalog.keyword.exact(shop, "AC-100", []) == []


def test_collections_are_separate_and_drop_cleans_up(catalog, shop):
    other = catalog.create_collection("other", model="m", pretrained=None,
                                      weights_identity="w", dim=4).id
    catalog.upsert_items(shop, ITEMS)
    catalog.upsert_items(other, [ItemInput("x", "running track", None, {}, "hx")])
    assert _search(catalog, shop, "track") == []
    catalog.drop_collection(shop)
    table = "lexical_docs" if catalog.engine.dialect.name == "postgresql" else "lexical_fts"
    with catalog.session() as s:
        left = s.scalar(text(f"SELECT count(*) FROM {table} WHERE collection_id = {shop}"))
    assert left == 0


def test_exact_external_id_and_identifier_attributes(catalog, shop):
    changes = catalog.upsert_items(shop, ITEMS)
    ids = {c.external_id: c.item_id for c in changes}
    assert catalog.keyword.exact(shop, "mug-1", []) == [ids["mug-1"]]
    assert catalog.keyword.exact(shop, " ac-100 ", []) == [ids["shoe-1"]]  # case, spaces
    assert catalog.keyword.exact(shop, "0123456789012", []) == [ids["mug-1"]]
    assert catalog.keyword.exact(shop, "0123456789012", parse_filters({"price": 80})) == []
    assert catalog.keyword.exact(shop, "Acme", []) == []  # brand is not an identifier


def test_declared_searchable_and_identifier_fields(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    rebuilt = catalog.set_lexical_settings(shop, LexicalSettings(searchable=("brand",),
                                                                 identifiers=("brand",)))
    assert rebuilt == len(ITEMS)
    assert _search(catalog, shop, "sneakers") == []  # keywords no longer searched
    assert _search(catalog, shop, "running") == ["shoe-1"]  # text always is
    assert len(catalog.keyword.exact(shop, "acme", [])) == 2
    assert catalog.lexical_settings(shop).searchable == ("brand",)
    catalog.upsert_items(shop, [ItemInput("new", "thing", None, {"keywords": ["zebra"],
                                                                "brand": "Zed"}, "h")])
    assert _search(catalog, shop, "zebra") == [] and _search(catalog, shop, "zed") == ["new"]


def test_facets_over_the_full_match_set(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    keyword = catalog.keyword
    parsed = keyword.parse(shop, "acme bolt lumo")
    brand, keywords, price = keyword.facets(shop, parsed, [], parse_facets(
        ["brand", "keywords", {"field": "price", "ranges": [[0, 10], [10, 50], [50, None]]}]))
    assert brand.buckets == (FacetBucket("Acme", 2), FacetBucket("Bolt", 1),
                             FacetBucket("Lumo", 1))
    assert dict((b.value, b.count) for b in keywords.buckets)["sneakers"] == 1
    assert len(keywords.buckets) == 8
    assert [b.count for b in price.buckets] == [1, 1, 2]
    filtered = keyword.facets(shop, parsed, parse_filters({"brand": "Acme"}),
                              parse_facets(["brand"]))
    assert filtered[0].buckets == (FacetBucket("Acme", 2),)


def test_backfill_indexes_items_written_before_the_migration(catalog, shop):
    catalog.upsert_items(shop, ITEMS)
    with catalog.session() as s:
        lexical.delete_collection(s, shop)
    assert _search(catalog, shop, "lamp") == []
    with catalog.session() as s:
        assert lexical.backfill(s) == len(ITEMS)
    assert _search(catalog, shop, "lamp") == ["lamp-1"]
