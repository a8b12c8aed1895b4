"""Liveness, readiness, Prometheus metrics, the page and the OpenAPI document."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ApiConfig
from search.workspace import Workspace


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "collections": {"shop": "loaded"}}


def test_readyz_is_503_while_indexes_load(shop_settings, monkeypatch):
    release = threading.Event()
    original = Workspace.collection

    def slow_collection(self, name):
        release.wait(10)
        return original(self, name)

    monkeypatch.setattr(Workspace, "collection", slow_collection)
    with TestClient(create_app(shop_settings, ApiConfig())) as client:
        loading = client.get("/readyz")
        assert loading.status_code == 503
        assert loading.json() == {"status": "loading", "collections": {"shop": "loading"}}
        assert client.get("/healthz").status_code == 200
        release.set()


def test_metrics_cover_routes_stages_sizes_and_errors(client):
    client.post("/v1/search", json={"collection": "shop", "text": "fruit"})
    client.post("/v1/search", json={"collection": "missing", "text": "fruit"})
    client.get("/v1/no-such-route/123")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    text = response.text
    assert ('xmodal_http_request_duration_seconds_count{method="POST",route="/v1/search",'
            'status="200"}') in text
    assert 'route="/v1/no-such-route/123"' not in text  # raw paths never become labels
    for stage in ("encode", "ann", "sql"):
        assert f'xmodal_search_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'xmodal_index_vectors{collection="shop",modality="image"}' in text
    assert 'xmodal_http_errors_total{route="/v1/search",status="404"}' in text
    assert 'xmodal_http_errors_total{route="unmatched",status="404"}' in text


def test_metrics_report_the_query_cache_hit_rate(client):
    before = _cache_counts(client.get("/metrics").text)
    for text in ("cache probe one", "cache probe one", "Cache  probe one", "cache probe two"):
        assert client.post("/v1/search", json={"collection": "shop", "text": text}
                           ).status_code == 200
    text = client.get("/metrics").text
    hits, misses = _cache_counts(text)
    assert (hits - before[0], misses - before[1]) == (2, 2)
    assert "xmodal_query_cache_hit_ratio " in text and "xmodal_query_cache_entries " in text


def _cache_counts(text: str) -> tuple[float, float]:
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("xmodal_query_cache_")}
    return values["xmodal_query_cache_hits_total"], values["xmodal_query_cache_misses_total"]


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>xmodal search</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/v1/search", "/v1/search/image", "/v1/collections", "/v1/collections/{name}",
                 "/v1/collections/{name}/items/{external_id}", "/v1/media/{ref}", "/healthz",
                 "/readyz", "/metrics", "/knn-service", "/metadata", "/indices-list"):
        assert path in spec["paths"], path
    problem = spec["paths"]["/v1/search"]["post"]["responses"]["404"]["content"]
    assert problem["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    assert {"Problem", "ItemWrite", "ItemUpload", "KnnRequest"} <= set(
        spec["components"]["schemas"])
    assert client.get("/docs").status_code == 200
