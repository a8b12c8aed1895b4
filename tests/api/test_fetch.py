"""image_url fetching (SSRF): refused before any connection unless allow-listed and public;
when allowed, size, time and redirect limits hold. Network: loopback only."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api.config import ApiConfig
from api.fetch import ImageFetcher, _host_allowed
from api.problems import ApiError
from search.errors import ImageTooLargeError
from tests.api.conftest import open_client
from tests.utils.corpus import png_bytes

IMAGE = png_bytes(11, size=16)  # under the 4096-byte limit below


class Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        Handler.hosts.append(self.headers.get("Host", ""))
        if self.path == "/ok.png":
            self._send(IMAGE)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok.png")
            self.end_headers()
        elif self.path == "/big":
            self._send(b"\0" * 5000)
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"3e8\r\n" + b"\0" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def verify_request(self, request, client_address) -> bool:
        self.connections += 1
        return True


@pytest.fixture(scope="module")
def server() -> Iterator[CountingServer]:
    httpd = CountingServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


@pytest.fixture
def connects(monkeypatch) -> list:
    """Every outgoing TCP connection attempt from this process (the fetcher uses httpx)."""
    calls: list = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        calls.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return calls


def fetcher(resolved: list | None = None, **options) -> tuple[ImageFetcher, list]:
    """A fetcher whose DNS is a spy: returns `resolved` (or really resolves if None)."""
    asked: list = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        if resolved is None:
            return [info[4][0] for info in socket.getaddrinfo(host, port)]
        return resolved

    config = ApiConfig(**{"fetch_image_urls": True, "max_upload_bytes": 4096,
                          "image_url_timeout_s": 1.0, **options})
    return ImageFetcher(config, resolver=resolver), asked


def refused(fetch: ImageFetcher, url: str, status: int, slug: str) -> None:
    with pytest.raises(ApiError) as caught:
        fetch.fetch(url)
    assert (caught.value.status, caught.value.slug) == (status, slug), caught.value.detail


def test_disabled_by_default_refuses_before_dns_or_connect(server, connects):
    fetch, asked = fetcher(fetch_image_urls=False)
    port = server.server_address[1]
    refused(fetch, f"http://127.0.0.1:{port}/ok.png", 403, "image-url-disabled")
    assert asked == [] and connects == [] and server.connections == 0


@pytest.mark.parametrize("url", [
    "http://evil.invalid/cat.png",
    "http://images.example.invalid.evil.invalid/cat.png",
    "http://evilimages.invalid/cat.png",
    "https://images.invalid:8443/cat.png",  # port not on the list
    "http://127.0.0.1/cat.png",
    "http://[::1]/cat.png",
    "http://169.254.169.254/latest/meta-data/",
])
def test_hosts_off_the_list_are_refused_before_dns(url, connects):
    fetch, asked = fetcher(image_url_hosts=["images.invalid", "*.cdn.invalid"])
    refused(fetch, url, 403, "image-url-host-not-allowed")
    assert asked == [] and connects == []


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "gopher://images.invalid/", "ftp://images.invalid/a.png",
    "http://user:pw@images.invalid/a.png", "http:///nohost", "http://images.invalid:99999/",
])
def test_malformed_urls_are_422(url, connects):
    fetch, asked = fetcher(image_url_hosts=["images.invalid"])
    refused(fetch, url, 422, "invalid-image-url")
    assert asked == [] and connects == []


def test_invalid_tld_does_not_resolve(connects):
    fetch, _ = fetcher(image_url_hosts=["cdn.invalid"])
    refused(fetch, "http://cdn.invalid/cat.png", 422, "image-url-unresolvable")
    assert connects == []


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.7", "169.254.169.254",
                                     "::1", "::ffff:127.0.0.1", "fd00::1", "0.0.0.0",
                                     "100.64.0.1", "224.0.0.1"])
def test_private_addresses_are_refused_before_connect(address, server, connects):
    port = server.server_address[1]
    fetch, asked = fetcher([address], image_url_hosts=[f"images.invalid:{port}"])
    before = server.connections
    refused(fetch, f"http://images.invalid:{port}/ok.png", 403, "image-url-private-address")
    assert asked == ["images.invalid"] and connects == [] and server.connections == before


def test_loopback_literal_and_localhost_refused_without_allow_private(server, connects):
    port = server.server_address[1]
    fetch, _ = fetcher(image_url_hosts=[f"127.0.0.1:{port}", f"localhost:{port}"])
    before = server.connections
    refused(fetch, f"http://127.0.0.1:{port}/ok.png", 403, "image-url-private-address")
    refused(fetch, f"http://localhost:{port}/ok.png", 403, "image-url-private-address")
    assert connects == [] and server.connections == before


def test_allowed_fetch_goes_to_the_vetted_address(server):
    port = server.server_address[1]
    fetch, asked = fetcher(["127.0.0.1"], image_url_hosts=[f"images.test:{port}"],
                           image_url_allow_private=True)
    Handler.hosts.clear()
    assert fetch.fetch(f"http://images.test:{port}/ok.png") == IMAGE
    # connected to the checked IP, while the Host header still names the host
    assert asked == ["images.test"] and Handler.hosts == [f"images.test:{port}"]


@pytest.mark.parametrize(("path", "error"), [
    ("/redirect", "image-url-fetch-failed"), ("/missing", "image-url-fetch-failed"),
    ("/slow", "image-url-fetch-failed")])
def test_redirects_errors_and_slow_bodies(server, path, error):
    port = server.server_address[1]
    fetch, _ = fetcher(image_url_hosts=[f"127.0.0.1:{port}"], image_url_allow_private=True)
    started = time.monotonic()
    refused(fetch, f"http://127.0.0.1:{port}{path}", 422, error)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_size_limit(server, path):
    port = server.server_address[1]
    fetch, _ = fetcher(image_url_hosts=[f"127.0.0.1:{port}"], image_url_allow_private=True)
    with pytest.raises(ImageTooLargeError):
        fetch.fetch(f"http://127.0.0.1:{port}{path}")


def test_wildcards_match_subdomains_only():
    patterns = ["*.cdn.test", "[::1]:8080"]
    assert _host_allowed("a.cdn.test", 443, "https", patterns)
    assert _host_allowed("a.b.cdn.test", 80, "http", patterns)
    assert not _host_allowed("cdn.test", 443, "https", patterns)
    assert not _host_allowed("evilcdn.test", 443, "https", patterns)
    assert _host_allowed("::1", 8080, "http", patterns)
    assert not _host_allowed("::1", 80, "http", patterns)


def test_endpoints_fetch_when_enabled(shop_settings, server):
    port = server.server_address[1]
    config = ApiConfig(fetch_image_urls=True, image_url_hosts=[f"127.0.0.1:{port}"],
                       image_url_allow_private=True)
    url = f"http://127.0.0.1:{port}/ok.png"
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
