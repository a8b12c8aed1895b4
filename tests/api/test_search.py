"""POST /v1/search and /v1/search/image: answers equal the library's; every error is a 4xx
problem+json naming the reason."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from api.config import ApiConfig
from search.engine import Searcher
from search.filters import parse_filters
from search.query import QueryPart, SearchQuery, Target
from search.workspace import Workspace
from tests.api.conftest import open_client
from tests.utils.corpus import png_bytes


@pytest.fixture(scope="module")
def library(shop_settings):
    workspace = Workspace.open(shop_settings)
    yield Searcher(workspace)
    workspace.close()


@pytest.fixture(scope="module")
def limited(shop_settings):
    config = ApiConfig(max_upload_bytes=4096, max_image_pixels=1000, max_text_chars=50,
                       max_query_parts=2, reload_interval_s=5)
    with open_client(shop_settings, config) as test_client:
        yield test_client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ids_scores(hits):
    return [h["external_id"] for h in hits], [h["score"] for h in hits]


def assert_same(response, expected):
    assert response.status_code == 200, response.text
    ids, scores = ids_scores(response.json()["hits"])
    assert ids == [h.external_id for h in expected.hits]
    np.testing.assert_allclose(scores, [h.score for h in expected.hits], atol=1e-5)


@pytest.mark.parametrize("target", ["any", "image", "text"])
def test_text_search_equals_library(client, library, target):
    response = client.post("/v1/search", json={"collection": "shop", "text": "fruit number 7",
                                                "target": target, "k": 8})
    expected = library.search(SearchQuery.text("shop", "fruit number 7", target=Target(target),
                                               k=8))
    assert_same(response, expected)
    body = response.json()
    assert set(body["took_ms"]) == {"encode_ms", "ann_ms", "sql_ms", "keyword_ms",
                                     "total_ms"}
    assert body["total_considered"] >= 8
    if target != "any":
        assert {h["modality"] for h in body["hits"]} == {target}


def test_image_search_json_and_upload_equal_library(client, library):
    image = png_bytes(123)
    expected = library.search(SearchQuery.image("shop", image, target=Target.TEXT, k=5))
    as_json = client.post("/v1/search", json={"collection": "shop", "image": b64(image),
                                               "target": "text", "k": 5})
    assert_same(as_json, expected)
    upload = client.post("/v1/search/image", data={"collection": "shop", "target": "text",
                                                    "k": "5"},
                         files={"image": ("q.png", image, "image/png")})
    assert_same(upload, expected)
    data_url = client.post("/v1/search", json={"collection": "shop", "target": "text", "k": 5,
                                                "image": "data:image/png;base64," + b64(image)})
    assert_same(data_url, expected)


def test_vector_is_normalised_and_matches_text(client, library):
    encoder = library.workspace.collection("shop").encoder
    vector = (encoder.encode_texts(["shoes number 3"])[0] * 7.5).tolist()
    by_vector = client.post("/v1/search", json={"collection": "shop", "vector": vector, "k": 6})
    by_text = client.post("/v1/search", json={"collection": "shop", "text": "shoes number 3",
                                               "k": 6, "mode": "vector"})
    assert ids_scores(by_vector.json()["hits"])[0] == ids_scores(by_text.json()["hits"])[0]


def test_weighted_multi_query_equals_library(client, library):
    image = png_bytes(7)
    body = {"collection": "shop", "k": 7, "queries": [
        {"text": "toys", "weight": 1.0}, {"image": b64(image), "weight": -0.5},
        {"item_id": "p2", "weight": 0.3}]}
    expected = library.search(SearchQuery("shop", (
        QueryPart(text="toys"), QueryPart(image=image, weight=-0.5),
        QueryPart(item_id="p2", weight=0.3)), k=7))
    assert_same(client.post("/v1/search", json=body), expected)


@pytest.mark.parametrize("filters", [
    {"category": "fruit"},
    {"category": ["shoes", "toys"]},
    {"price": {"gte": 2, "lte": 6}},
    {"category": {"in": ["toys"]}, "price": {"lt": 9}},
])
def test_filters_equal_library(client, library, filters):
    response = client.post("/v1/search", json={"collection": "shop", "text": "product",
                                                "filters": filters, "k": 10})
    expected = library.search(SearchQuery.text("shop", "product", k=10,
                                               filters=tuple(parse_filters(filters))))
    assert_same(response, expected)
    assert response.json()["hits"]


def test_paging_min_score_dedupe_fusion(client):
    base = {"collection": "shop", "text": "clothes", "k": 10, "mode": "vector"}
    full = client.post("/v1/search", json=base).json()["hits"]
    page = client.post("/v1/search", json={**base, "k": 5, "offset": 5}).json()["hits"]
    assert [h["external_id"] for h in page] == [h["external_id"] for h in full[5:]]
    floor = full[3]["score"]
    above = client.post("/v1/search", json={**base, "min_score": floor}).json()["hits"]
    assert above and min(h["score"] for h in above) >= floor
    assert client.post("/v1/search", json={**base, "dedupe": 0.99}).status_code == 200
    text_only = client.post("/v1/search", json={**base, "fusion": {"image_weight": 0,
                                                                    "text_weight": 1}})
    assert text_only.status_code == 200


def test_hits_carry_media_urls_that_serve(client):
    hits = client.post("/v1/search", json={"collection": "shop", "text": "x", "target": "image",
                                            "k": 3}).json()["hits"]
    for hit in hits:
        assert hit["image_url"].startswith("/v1/media/") and hit["generated"] is False
        thumb = client.get(hit["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def _problem(response, status: int, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:xmodal:problem:")
    assert fragment.lower() in (body.get("detail") or "").lower(), body
    return body


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"collection": "nope", "text": "x"}, 404, "unknown collection 'nope'"),
    ({"collection": "shop"}, 422, "give text, image"),
    ({"collection": "shop", "text": "   "}, 422, "empty"),
    ({"collection": "shop", "text": "x", "k": 0}, 422, "k"),
    ({"collection": "shop", "text": "x", "k": 1001}, 422, "k"),
    ({"collection": "shop", "text": "x", "offset": 9500, "k": 1000}, 422, "offset"),
    ({"collection": "shop", "text": "x", "target": "video"}, 422, "target"),
    ({"collection": "shop", "text": "x", "filters": {"price": {"between": 1}}}, 422,
     "unknown operator"),
    ({"collection": "shop", "text": "x", "filters": {"bad name": 1}}, 422, "attribute name"),
    ({"collection": "shop", "text": "x", "filters": {"c": list(range(101))}}, 422, "100"),
    ({"collection": "shop", "vector": [0.1, 0.2]}, 422, "this collection uses 32"),
    ({"collection": "shop", "vector": [0.0] * 32}, 422, "not all zeros"),
    ({"collection": "shop", "image": "not base64!!"}, 422, "not valid base64"),
    ({"collection": "shop", "image": b64(b"GIF89a-truncated")}, 422, "gif"),
    ({"collection": "shop", "image": b64(b"hello world")}, 422, "not an image"),
    ({"collection": "shop", "queries": [{"text": "a", "image": "b"}]}, 422, "exactly one"),
    ({"collection": "shop", "queries": [{"item_id": "missing"}]}, 404, "no item 'missing'"),
    ({"collection": "shop", "queries": [{"text": "a"}, {"text": "a", "weight": -1}]}, 422,
     "zero vector"),
    ({"collection": "shop", "text": "nul\x00byte"}, 422, "nul"),
    ({"collection": "../etc", "text": "x"}, 422, "collection"),
    ({"collection": "shop", "text": "x", "surprise": 1}, 422, "extra"),
    ({"collection": "shop", "image_url": "http://example.invalid/a.png"}, 403, "disabled"),
])
def test_search_errors(client, body, status, fragment):
    _problem(client.post("/v1/search", json=body), status, fragment)


@pytest.mark.parametrize("raw", [
    b'{"collection": "shop", "text": "x", "min_score": NaN}',
    b'{"collection": "shop", "vector": [Infinity' + b", 0.0" * 31 + b"]}",
    b'{"collection": "shop", "text": ',
])
def test_non_finite_and_broken_json_are_422(client, raw):
    response = client.post("/v1/search", content=raw, headers={"Content-Type": "application/json"})
    _problem(response, 422)


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid", None])
def test_lone_surrogate_in_query_text_is_422_in_every_mode(client, mode):
    """JSON may escape half a surrogate pair; no mode may hand it to SQL or the tokenizer."""
    body = '{"collection": "shop", "text": "red \\ud800 shoe"%s}' % (
        f', "mode": "{mode}"' if mode else "")
    response = client.post("/v1/search", content=body.encode(),
                           headers={"Content-Type": "application/json"})
    _problem(response, 422, "lone surrogate")


@pytest.mark.parametrize(("data", "files", "status", "fragment"), [
    ({"collection": "shop"}, None, 422, "image"),
    ({"collection": "shop"}, {"image": ("x.txt", b"plain text", "text/plain")}, 422,
     "not an image"),
    ({"collection": "shop", "filters": "{bad"}, {"image": ("q.png", png_bytes(1), "image/png")},
     422, "filters"),
    ({"collection": "shop", "filters": '{"price": {"gte": "a"}}'},
     {"image": ("q.png", png_bytes(1), "image/png")}, 422, "number"),
    ({"collection": "nope"}, {"image": ("q.png", png_bytes(1), "image/png")}, 404, "nope"),
])
def test_image_upload_errors(client, data, files, status, fragment):
    _problem(client.post("/v1/search/image", data=data, files=files), status, fragment)


def test_configured_limits(limited):
    big = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(big, format="PNG")  # 1600 px > 1000
    _problem(limited.post("/v1/search", json={"collection": "shop", "image": b64(big.getvalue())}),
             413, "limit")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    heavy = io.BytesIO()
    Image.fromarray(noise).save(heavy, format="PNG")  # ~12 KB > 4096 bytes
    _problem(limited.post("/v1/search/image", data={"collection": "shop"},
                          files={"image": ("q.png", heavy.getvalue(), "image/png")}), 413)
    _problem(limited.post("/v1/search", json={"collection": "shop", "text": "x" * 51}), 422,
             "limit is 50")
    _problem(limited.post("/v1/search", json={"collection": "shop", "queries": [
        {"text": "a"}, {"text": "b"}, {"text": "c"}]}), 422, "limit is 2")
    huge = json.dumps({"collection": "shop", "text": "x" * 400_000})
    response = limited.post("/v1/search", content=huge,
                            headers={"Content-Type": "application/json"})
    _problem(response, 413, "byte limit")


def test_chunked_body_over_limit_is_413(limited):
    def chunks():
        for _ in range(100):
            yield b"x" * 8192

    response = limited.post("/v1/search", content=chunks(),
                            headers={"Content-Type": "application/json"})
    _problem(response, 413)


def test_slow_search_times_out_with_503(shop_settings):
    class SlowSearcher:
        def search(self, query):
            time.sleep(1.0)

    with open_client(shop_settings, ApiConfig(request_timeout_s=0.1)) as slow:
        slow.app.state.services.searcher = SlowSearcher()
        response = slow.post("/v1/search", json={"collection": "shop", "text": "x"})
        _problem(response, 503, "longer than 0.1 s")
        assert response.headers["retry-after"] == "1"
