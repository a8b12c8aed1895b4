"""Query modes through `Searcher.search`: keyword (no encoder), hybrid fusion checked
against a fusion recomputed from the two rankers, exact ids first, filters on both sides,
stable paging, facets. Runs on SQLite and PostgreSQL."""

import threading
from dataclasses import replace

import pytest

from search import hybrid
from search.collection.collection import NewItem
from search.engine import Searcher
from search.errors import InvalidQueryError, UnknownItemError
from search.facets import FacetBucket, FacetScope, count_facets, parse_facets
from search.filters import parse_filters
from search.query import FusionMethod, QueryPart, SearchMode, SearchQuery, Target
from tests.utils.corpus import catalog_items, png_bytes

ITEMS = catalog_items(40) + [
    NewItem("shoe-x", text="trail runner", image=png_bytes(99),
            attributes={"category": "shoes", "keywords": ["sneakers", "running"],
                        "sku": "SKU-777", "price": 60.0}),
    NewItem("shoe-y", text="court classic", image=None,
            attributes={"category": "shoes", "keywords": ["sneakers", "tennis"],
                        "price": 45.0}),
]


@pytest.fixture
def shop(workspace):
    collection = workspace.create_collection("shop")
    assert collection.add_items(ITEMS).failed == 0
    return collection


def _ids(result):
    return [h.external_id for h in result.hits]


def test_keyword_mode_never_runs_the_encoder(workspace, shop, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the encoder ran")

    monkeypatch.setattr(shop.encoder, "encode_texts", refuse)
    monkeypatch.setattr(shop.encoder, "encode_images", refuse)
    result = Searcher(workspace).search(SearchQuery.text("shop", "sneakers",
                                                         mode=SearchMode.KEYWORD))
    assert set(_ids(result)) == {"shoe-x", "shoe-y"}
    assert result.mode is SearchMode.KEYWORD
    assert all(set(h.rankers) == {"keyword"} for h in result.hits)


def test_keyword_mode_needs_text(workspace, shop):
    with pytest.raises(InvalidQueryError, match="keyword mode needs a text"):
        Searcher(workspace).search(SearchQuery.image("shop", png_bytes(1),
                                                     mode=SearchMode.KEYWORD))


@pytest.mark.parametrize("method", list(FusionMethod))
def test_hybrid_equals_fusion_of_the_two_rankers(workspace, shop, method):
    searcher = Searcher(workspace)
    query = SearchQuery.text("shop", "sneakers for running", mode=SearchMode.HYBRID, k=15,
                             fusion_method=method, alpha=0.3)
    vector = searcher.search(replace(query, mode=SearchMode.VECTOR, k=hybrid.VECTOR_DEPTH))
    keyword = searcher.search(replace(query, mode=SearchMode.KEYWORD,
                                      k=hybrid.CANDIDATE_DEPTH))
    expected: dict[str, float] = {}
    for result, share in ((vector, 0.3), (keyword, 0.7)):
        scores = [h.rankers[result.mode.value].score for h in result.hits]
        low, high = (min(scores) if result is vector else 0.0), max(scores)
        for rank, hit in enumerate(result.hits, 1):
            score = hit.rankers[result.mode.value].score
            part = (1 / (60 + rank) if method is FusionMethod.RRF else
                    share * ((score - low) / (high - low) if high > low else 1.0))
            expected[hit.external_id] = expected.get(hit.external_id, 0.0) + part
    ranked = sorted(expected.items(), key=lambda kv: -kv[1])[:15]
    result = searcher.search(query)
    assert [round(h.score, 9) for h in result.hits] == [round(s, 9) for _, s in ranked]
    assert set(_ids(result)[:2]) == {"shoe-x", "shoe-y"}  # found by keywords
    x = next(h for h in result.hits if h.external_id == "shoe-x")
    assert set(x.rankers) == {"vector", "keyword"} and x.rankers["keyword"].rank <= 2


def test_exact_ids_rank_first(workspace, shop):
    searcher = Searcher(workspace)
    for text in ("p17", "sku-777"):
        result = searcher.search(SearchQuery.text("shop", text, mode=SearchMode.HYBRID))
        assert "exact" in result.hits[0].rankers
    assert _ids(searcher.search(SearchQuery.text("shop", "p17", mode=SearchMode.HYBRID)))[0] \
        == "p17"
    assert _ids(searcher.search(SearchQuery.text("shop", "SKU-777",
                                                 mode=SearchMode.KEYWORD)))[0] == "shoe-x"


def test_filters_apply_to_both_sides(workspace, shop):
    query = SearchQuery.text("shop", "sneakers product", mode=SearchMode.HYBRID, k=50,
                             filters=tuple(parse_filters({"price": {"lte": 50}})))
    result = Searcher(workspace).search(query)
    assert result.hits and all(h.attributes["price"] <= 50 for h in result.hits)
    assert "shoe-y" in _ids(result) and "shoe-x" not in _ids(result)


def test_paging_is_stable(workspace, shop):
    searcher = Searcher(workspace)
    query = SearchQuery.text("shop", "product shoes", mode=SearchMode.HYBRID, k=30)
    whole = _ids(searcher.search(query))
    pages = [_ids(searcher.search(replace(query, k=10, offset=o))) for o in (0, 10, 20)]
    assert sum(pages, []) == whole


def test_image_parts_stay_vector_only_and_mix_with_text(workspace, shop):
    searcher = Searcher(workspace)
    image = SearchQuery.image("shop", png_bytes(5), mode=SearchMode.HYBRID)
    vector = searcher.search(replace(image, mode=SearchMode.VECTOR))
    assert _ids(searcher.search(image)) == _ids(vector)
    mixed = SearchQuery("shop", (QueryPart(image=png_bytes(5)), QueryPart(text="sneakers")),
                        mode=SearchMode.HYBRID)
    hits = searcher.search(mixed).hits
    assert {"shoe-x", "shoe-y"} <= {h.external_id for h in hits[:3]}


def test_default_mode_of_text_and_image_queries(workspace, shop):
    searcher = Searcher(workspace)
    assert searcher.search(SearchQuery.text("shop", "sneakers")).mode is \
        hybrid.DEFAULT_TEXT_MODE
    assert searcher.search(SearchQuery.image("shop", png_bytes(5))).mode is SearchMode.VECTOR


def test_facets_say_what_they_counted(workspace, shop):
    searcher = Searcher(workspace)
    facets = tuple(parse_facets(["category", {"field": "price",
                                              "ranges": [[0, 50], [50, None]]}]))
    keyword = searcher.search(SearchQuery.text("shop", "sneakers shoes", k=1, facets=facets,
                                               mode=SearchMode.KEYWORD))
    assert keyword.facet_scope is FacetScope.MATCHES
    everything = shop.catalog.keyword
    parsed = everything.parse(shop.info.id, "sneakers shoes")
    assert keyword.facets[0].buckets == (FacetBucket("shoes", everything.count(
        shop.info.id, parsed, [])),)
    assert sum(b.count for b in keyword.facets[1].buckets) == keyword.facets[0].buckets[0].count
    query = SearchQuery.text("shop", "sneakers", k=5, facets=facets, mode=SearchMode.HYBRID)
    fused = searcher.search(query)
    assert fused.facet_scope is FacetScope.CANDIDATES
    sides = [searcher.search(replace(query, k=depth, facets=(), mode=mode)).hits
             for mode, depth in ((SearchMode.VECTOR, hybrid.VECTOR_DEPTH),
                                 (SearchMode.KEYWORD, hybrid.CANDIDATE_DEPTH))]
    candidates = {h.external_id: h.attributes for hits in sides for h in hits}
    assert fused.facets == count_facets(facets, candidates.values())


def test_vector_mode_with_facets_ranks_by_vector_only(workspace, shop):
    searcher = Searcher(workspace)
    query = SearchQuery.text("shop", "sneakers", k=10, mode=SearchMode.VECTOR)
    plain = searcher.search(query)
    faceted = searcher.search(replace(query, facets=tuple(parse_facets(["category"]))))
    assert _ids(faceted) == _ids(plain)
    assert all(set(h.rankers) == {"vector"} for h in faceted.hits)
    assert faceted.facet_scope is FacetScope.CANDIDATES


def test_keyword_matches_respect_the_target_modality(workspace, shop):
    searcher = Searcher(workspace)
    for mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
        hits = searcher.search(SearchQuery.text("shop", "sneakers", mode=mode,
                                                target=Target.IMAGE)).hits
        ids = [h.external_id for h in hits]
        assert "shoe-x" in ids and "shoe-y" not in ids  # shoe-y has no picture
        assert {h.modality for h in hits} == {"image"}


def test_a_page_reads_only_the_rows_it_needs_and_matches_the_full_ranking(workspace, shop,
                                                                            monkeypatch):
    searcher = Searcher(workspace)
    query = SearchQuery.text("shop", "product shoes sneakers", mode=SearchMode.KEYWORD, k=3)
    faceted = searcher.search(replace(query, facets=tuple(parse_facets(["category"]))))
    read: list[int] = []
    items = shop.catalog.keyword.items
    monkeypatch.setattr(shop.catalog.keyword, "items",
                        lambda ids: read.extend(ids) or items(ids))
    page = searcher.search(query)
    assert _ids(page) == _ids(faceted)  # facets make every candidate a hit: same order
    assert page.total_considered > 20  # candidates the keyword side found
    assert 3 <= len(read) <= 20  # catalog rows read: the first chunk only


def test_candidates_that_cannot_show_cost_one_more_read_not_one_per_chunk(workspace,
                                                                          monkeypatch):
    """Most keyword matches are text-only and the query targets images: the rows of the
    candidates past the first read are read in one more statement."""
    lamps = workspace.create_collection("lamps")
    items = [NewItem(f"text-{i}", text=f"brass lamp {i}") for i in range(60)]
    items += [NewItem(f"pic-{i}", text=f"a lamp with a picture, a longer text than the others {i}",
                      image=png_bytes(i)) for i in range(4)]  # ranked last
    assert lamps.add_items(items).failed == 0
    query = SearchQuery.text("lamps", "lamp", mode=SearchMode.KEYWORD, k=3,
                             target=Target.IMAGE)
    expected = Searcher(workspace).search(replace(query, facets=tuple(parse_facets(["x"]))))
    calls: list[int] = []
    read = lamps.catalog.keyword.items
    monkeypatch.setattr(lamps.catalog.keyword, "items",
                        lambda ids: calls.append(len(ids)) or read(ids))
    page = Searcher(workspace).search(query)
    assert _ids(page) == _ids(expected)[:3]
    assert len(page.hits) == 3 and all(h.external_id.startswith("pic-") for h in page.hits)
    assert len(calls) == 2 and sum(calls) == 64  # the first 20, then the other 44 at once


@pytest.mark.parametrize("target", [Target.ANY, Target.IMAGE])
def test_hybrid_reads_its_page_rows_once_whichever_side_found_them(workspace, shop,
                                                                   monkeypatch, target):
    """The vector side ranks without joining its candidates' rows; the fused page's rows
    are read in one statement, and a hit the vector side found shows as it shows there."""
    searcher = Searcher(workspace)
    query = SearchQuery.text("shop", "sneakers for running", mode=SearchMode.HYBRID, k=6,
                             target=target)
    by_vector = {h.external_id: h for h in searcher.search(
        replace(query, mode=SearchMode.VECTOR, k=hybrid.VECTOR_DEPTH)).hits}

    def refuse(*_args):
        raise AssertionError("the vector side joined its candidates' rows")

    read: list[list[int]] = []
    items = shop.catalog.keyword.items
    monkeypatch.setattr(shop.catalog, "vector_infos", refuse)
    monkeypatch.setattr(shop.catalog.keyword, "items",
                        lambda ids: read.append(list(ids)) or items(ids))
    result = searcher.search(query)
    assert len(read) == 1 and len(result.hits) == 6 <= len(read[0]) <= 20
    found = [h for h in result.hits if "vector" in h.rankers]
    assert found and {"shoe-x", "shoe-y"} & set(_ids(result))
    for hit in found:
        shown = by_vector[hit.external_id]
        assert (hit.modality, hit.text, hit.image_ref, hit.attributes, hit.generated,
                hit.scores) == (shown.modality, shown.text, shown.image_ref,
                                shown.attributes, shown.generated, shown.scores)


def _ranked(result):
    """Hits with their rankers' ranks and scores (to 1e-9: a BM25 score computed here or
    by FTS5 differs in its last bits)."""
    return [(h.external_id, round(h.score, 9),
             {name: (r.rank, round(r.score, 9)) for name, r in h.rankers.items()})
            for h in result.hits]


def test_the_two_sides_overlap_and_rank_as_they_do_in_turn(workspace, shop, monkeypatch):
    searcher, collection = Searcher(workspace), workspace.collection("shop")
    threads: list[threading.Thread] = []
    vector_ranking = searcher.vector_ranking

    def recorded(query, collection):
        threads.append(threading.current_thread())
        return vector_ranking(query, collection)

    monkeypatch.setattr(searcher, "vector_ranking", recorded)
    for text in ["sneakers for running", "trail runner", "SKU-777", "red", "court"]:
        query = SearchQuery.text("shop", text, mode=SearchMode.HYBRID, k=12)
        at_once = hybrid.run(query, collection, searcher, overlap=True)
        in_turn = hybrid.run(query, collection, searcher, overlap=False)
        assert at_once.hits and _ranked(at_once) == _ranked(in_turn)
        assert {"encode_ms", "ann_ms", "keyword_ms"} <= set(at_once.timings_ms)
    assert all(t is not threading.current_thread() for t in threads[0::2])
    assert all(t is threading.current_thread() for t in threads[1::2])


@pytest.mark.parametrize("overlap", [True, False])
def test_an_error_on_the_vector_side_reaches_the_caller(workspace, shop, overlap):
    query = SearchQuery("shop", (QueryPart(text="sneakers"), QueryPart(item_id="no-such")),
                        mode=SearchMode.HYBRID)
    with pytest.raises(UnknownItemError, match="no-such"):
        hybrid.run(query, workspace.collection("shop"), Searcher(workspace), overlap=overlap)


def test_the_setting_chooses_whether_the_sides_overlap(workspace, shop, monkeypatch):
    searcher, threads = Searcher(workspace), []
    vector_ranking = searcher.vector_ranking

    def recorded(query, collection):
        threads.append(threading.current_thread())
        return vector_ranking(query, collection)

    monkeypatch.setattr(searcher, "vector_ranking", recorded)
    for overlap in (True, False):
        monkeypatch.setattr(workspace.settings, "hybrid_overlap", overlap)
        assert searcher.search(SearchQuery.text("shop", "sneakers")).mode is SearchMode.HYBRID
    assert threads[0] is not threading.current_thread()
    assert threads[1] is threading.current_thread()


@pytest.mark.parametrize("facets", [(), ("category",)])
def test_the_request_thread_reads_the_catalog_in_one_transaction(workspace, shop,
                                                                 monkeypatch, facets):
    """Keyword stages, the page's rows and facets share one connection and snapshot."""
    collection, begun = workspace.collection("shop"), []
    begin = type(collection.catalog)._begin

    def counted(catalog):
        begun.append(threading.current_thread())
        return begin(catalog)

    monkeypatch.setattr(type(collection.catalog), "_begin", counted)
    query = SearchQuery.text("shop", "sneakers for running trail", mode=SearchMode.HYBRID,
                             k=12, facets=parse_facets(list(facets)))
    result = hybrid.run(query, collection, Searcher(workspace), overlap=True)
    assert {"shoe-x", "shoe-y"} <= set(_ids(result))
    assert begun.count(threading.current_thread()) == 1


def test_the_keyword_score_cap_setting_reaches_every_keyword_stage(workspace, shop,
                                                                   monkeypatch):
    caps: list[int] = []
    ranked = type(shop.catalog.keyword)._ranked

    def recorded(index, cid, query, limit, filters, stage, cap, allowed):
        caps.append(cap)
        return ranked(index, cid, query, limit, filters, stage, cap, allowed)

    monkeypatch.setattr(type(shop.catalog.keyword), "_ranked", recorded)
    monkeypatch.setattr(workspace.settings, "keyword_score_cap", 11)
    searcher = Searcher(workspace)
    for mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
        assert searcher.search(SearchQuery.text("shop", "sneakers for running",
                                                mode=mode)).hits
    assert caps and caps[0] == 11 and all(cap >= 11 for cap in caps)
    assert len(set(caps)) > 1  # later stages add the earlier stages' matches


@pytest.mark.parametrize("cap", [0, 9, 100_001, 10**9])
def test_a_keyword_score_cap_out_of_bounds_is_refused_at_startup(cap):
    from pydantic import ValidationError

    from search.settings import Settings

    with pytest.raises(ValidationError, match="keyword_score_cap"):
        Settings(keyword_score_cap=cap)


@pytest.mark.parametrize("mode", [SearchMode.KEYWORD, SearchMode.HYBRID])
def test_every_word_match_outranks_items_that_repeat_one_word(workspace, mode):
    """Few items hold every word, so the any-word stage runs too; its matches, which say
    the common word over and over, must not outrank the one that holds both words (on
    PostgreSQL ts_rank_cd did: its scores of the two stages' queries are not on one
    scale, and "flag guernsey" showed other flags first)."""
    collection = workspace.create_collection("flags")
    decoys = [NewItem(f"flag-{name}", text=f"flag {name}", image=None, attributes={
        "category": "Flags", "subcategory": "country flag",
        "keywords": ["flag", "nation", "banner", name, f"{name}n flag"]})
        for name in ("bermuda", "canada", "chile", "cuba", "japan", "kenya", "nepal")]
    target = NewItem("flag-guernsey", text="flag guernsey", image=None, attributes={
        "category": "Flags", "subcategory": "country flag",
        "keywords": ["gg", "flag", "nation", "banner", "guernsey"]})
    assert collection.add_items([*decoys, target]).failed == 0
    result = Searcher(workspace).search(SearchQuery.text("flags", "flag guernsey", k=5,
                                                         mode=mode))
    assert _ids(result)[0] == "flag-guernsey"
    assert len(result.hits) == 5  # the any-word stage ran: the decoys fill the page
