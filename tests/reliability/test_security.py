"""Security checks of the service as a whole. Covered elsewhere and not repeated here:
media path traversal (tests/api/test_media.py::test_traversal_is_impossible,
tests/api/test_server.py::test_raw_traversal_requests), image_url SSRF refused before DNS or
connect (tests/api/test_fetch.py), chunked bodies over the limit
(tests/api/test_search.py::test_chunked_body_over_limit_is_413); the body limit over a real
socket is in test_hostile_api.py::test_body_limit_answers_before_the_body_is_sent."""

from __future__ import annotations

import pickle
import re

import pytest
import torch

from api import deps
from api.config import ApiConfig
from search.models.encoder import HOUSE_MODEL, load_encoder
from search.settings import Settings
from tests.api.conftest import API_KEY, WRITE, build_home, open_client
from tests.utils.corpus import catalog_items

INJECTION = "'; DROP TABLE items; --"


@pytest.fixture(scope="module")
def secured(tmp_path_factory, tiny_model: str):
    settings = Settings(home=tmp_path_factory.mktemp("secured"), model=tiny_model,
                        device="cpu", offline=True, api_key=API_KEY)
    build_home(settings, "shop", catalog_items(24))
    with open_client(settings) as client:
        yield client


def _write_operations(client) -> list[tuple[str, str]]:
    """Every operation the API documents as answering 401: the write endpoints."""
    spec = client.get("/openapi.json").json()
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "401" in operation.get("responses", {}):
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "shop", path)))
    return found


def test_every_write_needs_the_key(secured):
    operations = _write_operations(secured)
    methods = {m for m, _ in operations}
    assert {"PUT", "POST", "DELETE"} <= methods and len(operations) >= 4
    for method, path in operations:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"},
                        {"X-API-Key": ""}):
            response = secured.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "X-API-Key"
    assert secured.get("/v1/collections/shop").status_code == 200  # nothing was dropped


def test_key_is_compared_in_constant_time(secured, monkeypatch):
    calls = []
    real = deps.secrets.compare_digest

    def spy(given, expected):
        calls.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(deps.secrets, "compare_digest", spy)
    secured.put("/v1/collections/shop/items/k", json={"text": "x"},
                headers={"X-API-Key": "wrong"})
    put = secured.put("/v1/collections/shop/items/k", json={"text": "x"}, headers=WRITE)
    assert put.status_code in (200, 201)
    assert calls == [(b"wrong", API_KEY.encode()), (API_KEY.encode(), API_KEY.encode())]


@pytest.mark.parametrize("filters", [
    {"category": INJECTION},
    {"category": {"in": [INJECTION, "x' OR '1'='1"]}},
    {INJECTION: "fruit"},
    {"category') OR 1=1 --": "x"},
    {"price": {"gte": INJECTION}},
])
def test_filter_values_are_bound_parameters(secured, filters):
    before = secured.get("/v1/collections/shop").json()
    response = secured.post("/v1/search", json={"collection": "shop", "text": "fruit",
                                                 "k": 50, "filters": filters})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["hits"] == []  # matches nothing, least of all every row
    lexical = secured.post("/v1/search", json={"collection": "shop", "text": INJECTION})
    assert lexical.status_code == 200
    after = secured.get("/v1/collections/shop").json()
    assert after == before
    hits = secured.post("/v1/search", json={"collection": "shop", "text": "fruit", "k": 5})
    assert len(hits.json()["hits"]) == 5


def test_weights_load_without_pickle(monkeypatch, tmp_path, tiny_model):
    """The shipped house model and our saved checkpoints are safetensors: nothing runs
    the unpickler (which would execute code a weights file carries)."""
    saved = load_encoder(tiny_model, device="cpu").save(tmp_path / "model")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading weights")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    for name in (HOUSE_MODEL, str(saved)):
        encoder = load_encoder(name, device="cpu")
        assert encoder.encode_texts(["a red apple"]).shape[0] == 1


def test_cors_is_off(secured):
    origin = {"Origin": "https://evil.invalid"}
    preflight = secured.options("/v1/search", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key"})
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code in (404, 405)
    for response in (secured.get("/v1/collections", headers=origin),
                     secured.post("/v1/search", headers=origin,
                                  json={"collection": "shop", "text": "fruit"})):
        assert response.status_code == 200
        assert not any(h.startswith("access-control-") for h in response.headers)


def test_cors_answers_only_configured_origins(tmp_path, tiny_model: str):
    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True)
    build_home(settings, "shop", catalog_items(4))
    config = ApiConfig(reload_interval_s=0.1, cors_origins=["https://shop.invalid"])
    with open_client(settings, config) as client:
        asked = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
        allowed = client.options("/v1/search", headers={"Origin": "https://shop.invalid",
                                                        **asked})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.invalid"
        refused = client.options("/v1/search", headers={"Origin": "https://evil.invalid",
                                                        **asked})
        assert "access-control-allow-origin" not in refused.headers
        search = client.post("/v1/search", headers={"Origin": "https://shop.invalid"},
                             json={"collection": "shop", "text": "fruit"})
        assert search.status_code == 200
        assert search.headers["access-control-allow-origin"] == "https://shop.invalid"
