"""The remote-image fetcher (search/remote.py), the SSRF guard shared by the indexer and the
API: refusals happen before any connection, the connection goes to the vetted address,
redirects are re-checked, size and time are capped. Network: loopback only."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from search import FetchFailure, RemoteFetcher, RemoteFetchError, RemotePolicy, host_allowed
from search.errors import ImageTooLargeError
from search.remote import is_public_address
from tests.utils.image_server import BIG, IMAGE, ImageServer, image_server


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with image_server() as httpd:
        yield httpd


def fetcher(resolved: list[str] | None = None, **policy) -> tuple[RemoteFetcher, list[str]]:
    """A fetcher whose DNS is a spy: answers `resolved` (or really resolves if None)."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        if resolved is None:
            return sorted({i[4][0] for i in socket.getaddrinfo(host, port)})
        return resolved

    options = {"timeout_s": 3.0, "max_bytes": BIG - 1000, **policy}
    return RemoteFetcher(RemotePolicy(**options), resolver), asked


def refused(fetch: RemoteFetcher, url: str, kind: FetchFailure) -> RemoteFetchError:
    with pytest.raises(RemoteFetchError) as caught:
        fetch.fetch(url)
    assert caught.value.kind is kind, caught.value
    return caught.value


def test_loopback_is_refused_by_default_before_any_connection(server, connects):
    fetch = RemoteFetcher(RemotePolicy())  # the real resolver, the default policy
    port = server.server_address[1]
    before = (server.connections, len(server.requests))
    for url in (f"{server.base}/ok.png", f"http://localhost:{port}/ok.png",
                f"http://[::1]:{port}/ok.png"):
        error = refused(fetch, url, FetchFailure.PRIVATE_ADDRESS)
        assert "non-public" in str(error)
    assert connects == [] and (server.connections, len(server.requests)) == before


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_any_non_public_answer_refuses_the_host(address, server, connects):
    port = server.server_address[1]
    fetch, asked = fetcher([address])
    refused(fetch, f"http://images.test:{port}/ok.png", FetchFailure.PRIVATE_ADDRESS)
    assert asked == ["images.test"] and connects == []
    assert not is_public_address(address)


@pytest.mark.parametrize("url", ["http://cdn.invalid/cat.png", "https://a.b.invalid/x.jpg"])
def test_hosts_under_invalid_do_not_resolve(url, connects):
    fetch, asked = fetcher()  # real DNS: .invalid never resolves (RFC 6761)
    refused(fetch, url, FetchFailure.UNRESOLVABLE)
    assert asked and connects == []


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "gopher://images.test/", "ftp://images.test/a.png",
    "http://user:pw@images.test/a.png", "http:///nohost", "http://images.test:99999/",
    "s3://images.test/a.png",  # not in this policy's schemes
])
def test_malformed_or_disallowed_urls_are_refused_before_dns(url, connects):
    fetch, asked = fetcher(schemes=("http", "https"))
    refused(fetch, url, FetchFailure.INVALID_URL)
    assert asked == [] and connects == []


def test_allow_list_refuses_before_dns(server, connects):
    port = server.server_address[1]
    fetch, asked = fetcher(["127.0.0.1"], hosts=("images.test", "*.cdn.test"),
                           allow_private=True)
    for url in ("http://evil.test/a.png", f"http://images.test:{port}/ok.png",
                "http://cdn.test/a.png", f"{server.base}/ok.png"):
        refused(fetch, url, FetchFailure.HOST_NOT_ALLOWED)
    assert asked == [] and connects == []


def test_allowed_fetch_connects_to_the_vetted_address(server, connects):
    port = server.server_address[1]
    fetch, asked = fetcher(["127.0.0.1"], allow_private=True)
    server.requests.clear()
    assert fetch.fetch(f"http://images.test:{port}/ok.png?v=1") == IMAGE
    # connected to the checked IP, while the Host header still names the host
    assert asked == ["images.test"] and connects == [("127.0.0.1", port)]
    assert server.requests == [("/ok.png?v=1", f"images.test:{port}")]


def test_unescaped_paths_and_international_names(server):
    server.images["/a%20b/%C3%BC.png"] = IMAGE  # what the server sees once escaped
    fetch, asked = fetcher(["127.0.0.1"], allow_private=True)
    port = server.server_address[1]
    assert fetch.fetch(f"http://bücher.test:{port}/a b/ü.png") == IMAGE
    assert fetch.fetch(f"http://images.test:{port}/a%20b/%C3%BC.png") == IMAGE
    assert asked == ["xn--bcher-kva.test", "images.test"]
    refused(fetch, "http://a..b/x.png", FetchFailure.INVALID_URL)


def test_redirects_are_followed_and_each_hop_rechecked(server):
    port = server.server_address[1]
    fetch, asked = fetcher(["127.0.0.1"], allow_private=True, hosts=(f"images.test:{port}",))
    assert fetch.fetch(f"http://images.test:{port}/redirect") == IMAGE
    assert asked == ["images.test", "images.test"]  # resolved and vetted again
    server.requests.clear()
    # to an address that is not on the list: refused, never requested
    refused(fetch, f"http://images.test:{port}/redirect-to?{server.base}/ok.png",
            FetchFailure.HOST_NOT_ALLOWED)
    assert [p for p, _ in server.requests] == [f"/redirect-to?{server.base}/ok.png"]


def test_redirect_to_a_refused_host_and_redirect_loops(server):
    fetch, _ = fetcher(allow_private=True)  # real DNS
    refused(fetch, f"{server.base}/redirect-out", FetchFailure.UNRESOLVABLE)
    refused(fetch, f"{server.base}/loop", FetchFailure.HTTP_STATUS)


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_size_limit_holds_with_or_without_content_length(server, path):
    fetch, _ = fetcher(allow_private=True)
    with pytest.raises(ImageTooLargeError, match="limit"):
        fetch.fetch(f"{server.base}{path}")
    big, _ = fetcher(allow_private=True, max_bytes=BIG)  # exactly the limit passes
    assert len(big.fetch(f"{server.base}{path}")) == BIG


def test_slow_body_times_out(server):
    fetch, _ = fetcher(allow_private=True, timeout_s=0.5)
    started = time.monotonic()
    refused(fetch, f"{server.base}/slow", FetchFailure.TIMEOUT)
    assert time.monotonic() - started < 2.5  # the body alone takes 5 s


def test_missing_is_an_http_status_failure(server):
    fetch, _ = fetcher(allow_private=True)
    error = refused(fetch, f"{server.base}/missing.png", FetchFailure.HTTP_STATUS)
    assert "404" in str(error)


def test_closed_port_is_a_connection_failure():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetch, _ = fetcher(allow_private=True)
    refused(fetch, f"http://127.0.0.1:{port}/a.png", FetchFailure.CONNECTION)


def test_object_store_without_a_filesystem_is_a_clear_failure(monkeypatch):
    import pyarrow.fs

    def unavailable(*args, **kwargs):
        raise ImportError("built without S3 support")

    monkeypatch.setattr(pyarrow.fs, "S3FileSystem", unavailable)
    fetch, asked = fetcher()
    error = refused(fetch, "s3://bucket/key.jpg", FetchFailure.UNAVAILABLE)
    assert "s3://" in str(error) and asked == []
    refused(fetch, "s3://bucket-only", FetchFailure.INVALID_URL)


def test_s3_objects_through_the_configured_endpoint(server, monkeypatch):
    """An S3-compatible store (here the loopback server speaking HeadObject and ranged
    GetObject), named by the operator's environment, never by the item's URI."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.base)
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    server.images["/bucket/a/b.png"] = IMAGE
    server.images["/bucket/huge.bin"] = b"\0" * BIG
    fetch, asked = fetcher(max_bytes=BIG - 1)
    assert fetch.fetch("s3://bucket/a/b.png") == IMAGE
    refused(fetch, "s3://bucket/missing.png", FetchFailure.HTTP_STATUS)
    server.requests.clear()
    with pytest.raises(ImageTooLargeError):
        fetch.fetch("s3://bucket/huge.bin")
    assert [p for p, _ in server.requests] == ["HEAD /bucket/huge.bin"]  # size known first
    assert asked == []  # the endpoint is configuration: no per-item DNS vetting


def test_errors_survive_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(RemoteFetchError(FetchFailure.TIMEOUT, "slow")))
    assert error.kind is FetchFailure.TIMEOUT and str(error) == "slow"


def test_wildcards_match_subdomains_only():
    patterns = ("*.cdn.test", "[::1]:8080")
    assert host_allowed("a.cdn.test", 443, "https", patterns)
    assert host_allowed("a.b.cdn.test", 80, "http", patterns)
    assert not host_allowed("cdn.test", 443, "https", patterns)
    assert not host_allowed("evilcdn.test", 443, "https", patterns)
    assert host_allowed("::1", 8080, "http", patterns)
    assert not host_allowed("::1", 80, "http", patterns)
