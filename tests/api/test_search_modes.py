"""Query modes and facets over HTTP: answers equal the library's; bad input is a 4xx."""

from __future__ import annotations

import json

import pytest

from search.engine import Searcher
from search.facets import parse_facets
from search.filters import parse_filters
from search.query import QueryPart, SearchMode, SearchQuery
from search.workspace import Workspace
from tests.utils.corpus import png_bytes


@pytest.fixture(scope="module")
def library(shop_settings):
    workspace = Workspace.open(shop_settings)
    yield Searcher(workspace)
    workspace.close()


FACETS = ["category", {"field": "price", "ranges": [[0, 5], [5, None]]}]


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_modes_equal_library(client, library, mode):
    body = {"collection": "shop", "text": "fruit number 7", "k": 8, "mode": mode,
            "filters": {"price": {"lte": 9}}, "facets": FACETS}
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    expected = library.search(SearchQuery.text(
        "shop", "fruit number 7", k=8, mode=SearchMode(mode),
        filters=tuple(parse_filters({"price": {"lte": 9}})), facets=tuple(parse_facets(FACETS))))
    assert [h["external_id"] for h in data["hits"]] == [h.external_id for h in expected.hits]
    assert [h["rankers"] for h in data["hits"]] == [
        {n: {"rank": r.rank, "score": pytest.approx(r.score, abs=1e-6)}
         for n, r in h.rankers.items()} for h in expected.hits]
    assert data["mode"] == mode
    assert data["facet_scope"] == ("matches" if mode == "keyword" else "candidates")
    assert data["facets"][0]["field"] == "category"
    assert [(b["value"], b["count"]) for b in data["facets"][0]["buckets"]] == [
        (b.value, b.count) for b in expected.facets[0].buckets]
    assert [b["value"] for b in data["facets"][1]["buckets"]] == [[0, 5], [5, None]]


def test_keyword_hits_name_their_ranker_and_exact_ids_come_first(client):
    data = client.post("/v1/search", json={"collection": "shop", "text": "p13",
                                           "mode": "hybrid"}).json()
    assert data["hits"][0]["external_id"] == "p13"
    assert "exact" in data["hits"][0]["rankers"]


@pytest.mark.parametrize("text", ['"unclosed', "NEAR(a b", "*", "a OR", "col:x", "'; --"])
def test_query_syntax_in_text_is_never_an_error(client, text):
    response = client.post("/v1/search", json={"collection": "shop", "text": text,
                                               "mode": "keyword"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("body, reason", [
    ({"text": "x", "mode": "fuzzy"}, "mode"),
    ({"text": "x", "facets": [{"field": "price", "ranges": [[5, 1]]}]}, "empty"),
    ({"text": "x", "facets": ["bad field!"]}, "attribute name"),
    ({"text": "x", "rrf_k": 0}, "rrf_k"),
    ({"text": "x", "alpha": 2}, "alpha"),
    ({"vector": [0.1] * 4, "mode": "keyword"}, "keyword mode"),
])
def test_bad_mode_options_are_4xx(client, body, reason):
    response = client.post("/v1/search", json={"collection": "shop", **body})
    assert 400 <= response.status_code < 500
    assert reason in response.text


def test_image_form_mixes_text_hybrid_and_refuses_keyword(client, library):
    files = {"image": ("q.png", png_bytes(3), "image/png")}
    form = {"collection": "shop", "text": "fruit", "mode": "hybrid", "k": "5",
            "facets": json.dumps(["category"])}
    response = client.post("/v1/search/image", data=form, files=files)
    assert response.status_code == 200, response.text
    expected = library.search(SearchQuery("shop", (QueryPart(image=png_bytes(3)),
                                                   QueryPart(text="fruit")),
                                          k=5, mode=SearchMode.HYBRID,
                                          facets=tuple(parse_facets(["category"]))))
    assert [h["external_id"] for h in response.json()["hits"]] == \
        [h.external_id for h in expected.hits]
    assert response.json()["facets"][0]["field"] == "category"
    refused = client.post("/v1/search/image", data={**form, "mode": "keyword"}, files=files)
    assert 400 <= refused.status_code < 500 and "keyword mode" in refused.text
