"""Routes take typed dependencies (`api/deps.py`), so a test can swap one service at a time."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.config import ApiConfig
from api.deps import get_config, get_generator_loader, get_searcher, get_workspace
from api.routes import collections, compat, generate, health, items, media
from api.routes import search as search_routes
from search import Hit, SearchQuery, SearchResult, UnknownCollectionError
from search.errors import ModelError
from tests.api.conftest import WRITE


@contextmanager
def overridden(client: TestClient, dependency: Any, replacement: Any) -> Iterator[None]:
    client.app.dependency_overrides[dependency] = replacement
    try:
        yield
    finally:
        client.app.dependency_overrides.pop(dependency)


class FakeSearcher:
    """Answers every query with one known hit and remembers the query it got."""

    def __init__(self) -> None:
        self.queries: list[SearchQuery] = []

    def search(self, query: SearchQuery) -> SearchResult:
        self.queries.append(query)
        hit = Hit(item_id=7, external_id="known-🌻", score=0.5, modality="image", text="fake",
                  image_ref=None, attributes={"emoji": "🌻"}, generated=False,
                  scores={"image": 0.5})
        return SearchResult([hit], 1, {"encode_ms": 1.0, "ann_ms": 2.0, "sql_ms": 3.0})


def test_no_route_takes_the_whole_services_bag():
    routes = [r for module in (search_routes, collections, items, media, generate, compat,
                               health) for r in module.router.routes if isinstance(r, APIRoute)]
    assert len(routes) > 15
    for route in routes:
        assert "Services" not in str(inspect.signature(route.endpoint)), route.path


def _dependencies(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependencies(sub)


def test_no_route_hands_a_dependency_to_the_thread_pool():
    """A plain `def` dependency runs on the thread pool, one hand-off each: a search had
    seven, ~5 ms a request on 2 busy cores before its one real piece of work started."""
    routes = [r for module in (search_routes, collections, items, media, generate, compat,
                               health) for r in module.router.routes if isinstance(r, APIRoute)]
    calls = {call for route in routes for call in _dependencies(route.dependant)}
    assert get_searcher in calls and get_workspace in calls
    sync = sorted(getattr(call, "__qualname__", repr(call)) for call in calls
                  if not inspect.iscoroutinefunction(call)
                  and not inspect.iscoroutinefunction(type(call).__call__))  # Security()
    assert sync == []


def test_a_fake_searcher_answers_the_search_route(client: TestClient):
    fake = FakeSearcher()
    with overridden(client, get_searcher, lambda: fake):
        response = client.post("/v1/search", json={"collection": "shop", "text": "anything",
                                                   "k": 3, "target": "image"})
        compat = client.post("/knn-service", json={"text": "x", "modality": "image",
                                                   "num_images": 2, "indice_name": "shop"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hits"][0]["external_id"] == "known-🌻" and body["hits"][0]["score"] == 0.5
    assert body["hits"][0]["attributes"] == {"emoji": "🌻"}
    assert body["took_ms"]["ann_ms"] == 2.0
    assert fake.queries[0].k == 3 and fake.queries[0].target.value == "image"
    assert compat.json()[0]["id"] == 7 and fake.queries[1].k == 2
    # the override is gone: the real searcher answers again
    real = client.post("/v1/search", json={"collection": "shop", "text": "anything"}).json()
    assert "known-🌻" not in {h["external_id"] for h in real["hits"]}


def test_a_read_only_config_refuses_writes(client: TestClient):
    with overridden(client, get_config, lambda: ApiConfig(read_only=True)):
        refused = client.put("/v1/collections/shop/items/x", json={"text": "t"}, headers=WRITE)
        allowed = client.get("/v1/collections/shop")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("read-only")
    assert allowed.status_code == 200


def test_failing_dependencies_map_to_problems(client: TestClient):
    def no_workspace() -> None:
        raise UnknownCollectionError("shop")

    def loader() -> Any:
        def load() -> None:
            raise ModelError("generator weights are missing")
        return load

    with overridden(client, get_workspace, no_workspace):
        missing = client.get("/v1/collections/shop/items/sku-1")
    assert missing.status_code == 404 and missing.json()["type"].endswith("unknown-collection")
    with overridden(client, get_generator_loader, loader):
        broken = client.post("/v1/generate", json={"prompt": "red apple"}, headers=WRITE)
    assert broken.status_code == 503 and broken.json()["type"].endswith("model-unavailable")
    assert "weights are missing" in broken.json()["detail"]
