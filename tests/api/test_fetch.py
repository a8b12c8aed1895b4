"""image_url queries: the engine's fetcher (tests/search/test_remote.py covers its guard in
depth) under the API's policy, each refusal mapped to its HTTP problem. Network: loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from api.config import ApiConfig
from api.fetch import ImageFetcher
from api.problems import ApiError
from search import MediaMode, NewItem, RemotePolicy, Settings, Workspace
from search.errors import ImageTooLargeError
from tests.api.conftest import API_KEY, open_client
from tests.utils.image_server import BIG, IMAGE, ImageServer, image_server


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with image_server() as httpd:
        yield httpd


def fetcher(resolved: list | None = None, **options) -> tuple[ImageFetcher, list]:
    asked: list = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        if resolved is None:
            return [info[4][0] for info in socket.getaddrinfo(host, port)]
        return resolved

    config = ApiConfig(**{"fetch_image_urls": True, "max_upload_bytes": BIG - 1000,
                          "image_url_timeout_s": 3.0, **options})
    return ImageFetcher(config, resolver=resolver), asked


def refused(fetch: ImageFetcher, url: str, status: int, slug: str) -> None:
    with pytest.raises(ApiError) as caught:
        fetch.fetch(url)
    assert (caught.value.status, caught.value.slug) == (status, slug), caught.value.detail


def test_disabled_by_default_refuses_before_dns_or_connect(server, connects):
    fetch, asked = fetcher(fetch_image_urls=False)
    refused(fetch, f"{server.base}/ok.png", 403, "image-url-disabled")
    assert asked == [] and connects == []


@pytest.mark.parametrize("url", [
    "http://evil.invalid/cat.png",
    "http://images.example.invalid.evil.invalid/cat.png",
    "https://images.invalid:8443/cat.png",  # port not on the list
    "http://127.0.0.1/cat.png",
    "http://[::1]/cat.png",
])
def test_hosts_off_the_list_are_403_before_dns(url, connects):
    fetch, asked = fetcher(image_url_hosts=["images.invalid", "*.cdn.invalid"])
    refused(fetch, url, 403, "image-url-host-not-allowed")
    assert asked == [] and connects == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "s3://images.invalid/a.png",
                                 "http://user:pw@images.invalid/a.png", "http:///nohost"])
def test_malformed_urls_are_422(url, connects):
    fetch, asked = fetcher(image_url_hosts=["images.invalid"])
    refused(fetch, url, 422, "invalid-image-url")
    assert asked == [] and connects == []


def test_unresolvable_is_422(connects):
    fetch, _ = fetcher(image_url_hosts=["cdn.invalid"])
    refused(fetch, "http://cdn.invalid/cat.png", 422, "image-url-unresolvable")
    assert connects == []


def test_loopback_refused_without_allow_private(server, connects):
    port = server.server_address[1]
    fetch, _ = fetcher(image_url_hosts=[f"127.0.0.1:{port}", f"localhost:{port}"])
    before = server.connections
    refused(fetch, f"{server.base}/ok.png", 403, "image-url-private-address")
    refused(fetch, f"http://localhost:{port}/ok.png", 403, "image-url-private-address")
    assert connects == [] and server.connections == before


def test_allowed_fetch_follows_rechecked_redirects(server):
    port = server.server_address[1]
    fetch, asked = fetcher(["127.0.0.1"], image_url_hosts=[f"images.test:{port}"],
                           image_url_allow_private=True)
    assert fetch.fetch(f"http://images.test:{port}/redirect") == IMAGE
    assert asked == ["images.test", "images.test"]
    refused(fetch, f"http://images.test:{port}/redirect-out", 403,
            "image-url-host-not-allowed")


@pytest.mark.parametrize("path", ["/missing", "/slow"])
def test_errors_and_slow_bodies_are_422(server, path):
    port = server.server_address[1]
    fetch, _ = fetcher(image_url_hosts=[f"127.0.0.1:{port}"], image_url_allow_private=True,
                       image_url_timeout_s=0.5)
    started = time.monotonic()
    refused(fetch, f"{server.base}{path}", 422, "image-url-fetch-failed")
    assert time.monotonic() - started < 3


def test_size_limit(server):
    port = server.server_address[1]
    fetch, _ = fetcher(image_url_hosts=[f"127.0.0.1:{port}"], image_url_allow_private=True)
    with pytest.raises(ImageTooLargeError):
        fetch.fetch(f"{server.base}/big-chunked")


def test_endpoints_fetch_when_enabled(shop_settings, server):
    port = server.server_address[1]
    config = ApiConfig(fetch_image_urls=True, image_url_hosts=[f"127.0.0.1:{port}"],
                       image_url_allow_private=True)
    url = f"{server.base}/ok.png"
    with open_client(shop_settings, config) as client:
        ours = client.post("/v1/search", json={"collection": "shop", "image_url": url, "k": 3})
        assert ours.status_code == 200, ours.text
        theirs = client.post("/knn-service", json={"image_url": url, "modality": "image",
                                                   "num_images": 3, "indice_name": "shop"})
        assert theirs.status_code == 200, theirs.text
        assert [r["id"] for r in theirs.json()] == [
            h["item_id"] for h in client.post("/v1/search", json={
                "collection": "shop", "image_url": url, "target": "image", "k": 3}).json()["hits"]]
        blocked = client.post("/v1/search", json={"collection": "shop",
                                                  "image_url": "http://x.invalid/a.png"})
        assert blocked.status_code == 403
        missing = client.post("/v1/search", json={"collection": "shop",
                                                  "image_url": f"{server.base}/missing"})
        assert missing.status_code == 422


def test_media_of_a_url_reference_is_404_and_never_fetched(tmp_path, tiny_model, server):
    """/v1/media serves no URL reference (a redirect-free proxy would make every stored
    URL a fetch the service makes on request): hits carry the URL itself, for the client."""
    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True,
                        api_key=API_KEY)
    workspace = Workspace.open(settings)
    url = f"{server.base}/ok.png"
    report = workspace.create_collection("urls").add_items(
        [NewItem("u", "a url image", url)], media=MediaMode.REFERENCE,
        remote=RemotePolicy(allow_private=True))
    assert report.new == 1 and not report.failures  # fetched once, to embed it
    workspace.close()
    before = (server.connections, len(server.requests))
    with open_client(settings) as client:
        item = client.get("/v1/collections/urls/items/u").json()
        assert item["image_url"] == url and item["thumbnail_url"] == url
        for path in (f"/v1/media/{quote(url, safe='')}", f"/v1/media/{url}"):
            for params in ({}, {"size": 64}):
                assert client.get(path, params=params).status_code == 404, (path, params)
    assert (server.connections, len(server.requests)) == before
