"""Fetching remote images (http(s) URLs, s3:// and gs:// objects) without becoming an
SSRF proxy: the one mechanism behind the indexer's URL catalogs and the API's image_url.

For an http(s) URL, everything that can be refused is refused before any connection: the
scheme must be allowed, the host on the allow-list (when there is one), and every address
the host resolves to public (unless the policy allows private ones). The connection then
goes to the address that was checked — the Host header and TLS SNI/certificate check carry
the name — so a DNS answer that changes between check and connect (rebinding) cannot
redirect it. Each redirect is a new URL checked the same way. The body is read up to the
byte limit + 1 under one deadline for the whole fetch (connect, redirects, body).

Object-store URIs go through pyarrow's filesystems, configured by the environment the way
the cloud SDKs are (credentials, region, endpoint): their endpoint is the operator's, never
the item's. Every failure is a `RemoteFetchError` whose `kind` says why, or an
`ImageTooLargeError`, so that one bad URL is one item's failure.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from search.errors import FetchFailure, ImageTooLargeError, RemoteFetchError
from search.media import DEFAULT_LIMITS

Resolver = Callable[[str, int], list[str]]
DEFAULT_PORTS = {"http": 80, "https": 443}
OBJECT_STORE_SCHEMES = ("s3", "gs")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class RemotePolicy:
    """What may be fetched, and at what cost. Frozen and picklable: it travels to decode
    worker processes and Ray actors inside `PrepareContext`.

    hosts: allow-list patterns ('cdn.example.com', '*.example.com', 'host:8080',
        '[v6]:port'); None allows any host, as long as it resolves to public addresses.
    allow_private: also fetch from hosts resolving to loopback, private, link-local or
        other non-public addresses (a cluster-internal image server; tests' loopback).
    timeout_s: the whole fetch, redirects and body included.
    threads: concurrent fetches per decode process (network latency overlaps).
    """

    schemes: tuple[str, ...] = ("http", "https", *OBJECT_STORE_SCHEMES)
    hosts: tuple[str, ...] | None = None
    allow_private: bool = False
    timeout_s: float = 10.0
    max_bytes: int = DEFAULT_LIMITS.max_bytes
    max_redirects: int = 3
    threads: int = 16


@dataclass(frozen=True)
class CheckedUrl:
    url: SplitResult
    host: str
    port: int
    address: str  # the vetted IP the connection must go to


def resolve_host(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def host_allowed(host: str, port: int, scheme: str, patterns: tuple[str, ...] | list[str]
                 ) -> bool:
    """Whether `host:port` matches a pattern; a pattern without a port allows only the
    scheme's default port, and '*.domain' matches subdomains only."""
    for name, pinned in map(_parse_pattern, patterns):
        if port != (pinned if pinned is not None else DEFAULT_PORTS.get(scheme)):
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _parse_pattern(pattern: str) -> tuple[str, int | None]:
    """'host', 'host:port', '*.domain', '[v6]' or '[v6]:port' -> (host, port or None)."""
    text = pattern.strip().lower().rstrip(".")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    return host, int(port) if port.isdigit() else None


def _fail(kind: FetchFailure, detail: str) -> RemoteFetchError:
    return RemoteFetchError(kind, detail)


class RemoteFetcher:
    """Fetches under one `RemotePolicy`; thread-safe, so one fetcher serves a thread pool.
    `fetcher_for(policy)` keeps one per policy and process."""

    def __init__(self, policy: RemotePolicy, resolver: Resolver = resolve_host) -> None:
        self.policy, self.resolver = policy, resolver
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._filesystems: dict[str, Any] = {}

    def fetch(self, raw_url: str) -> bytes:
        scheme = urlsplit(raw_url.strip()).scheme.lower() if "://" in raw_url else ""
        if scheme in OBJECT_STORE_SCHEMES and scheme in self.policy.schemes:
            return self._fetch_object(raw_url.strip())
        return self._fetch_http(raw_url)

    # -- http(s) ----------------------------------------------------------------------
    def check(self, raw_url: str) -> CheckedUrl:
        """Everything that can be refused is refused here, before any connection."""
        try:
            url = urlsplit(raw_url.strip())
            port = url.port or DEFAULT_PORTS.get(url.scheme.lower(), 0)
        except ValueError as exc:
            raise _fail(FetchFailure.INVALID_URL, f"invalid URL: {exc}") from None
        scheme = url.scheme.lower()
        if scheme not in DEFAULT_PORTS or scheme not in self.policy.schemes:
            allowed = ", ".join(self.policy.schemes)
            raise _fail(FetchFailure.INVALID_URL, f"URL scheme {scheme!r} is not allowed "
                        f"(allowed: {allowed})")
        if not url.hostname:
            raise _fail(FetchFailure.INVALID_URL, "URL has no host")
        if url.username is not None or url.password is not None:
            raise _fail(FetchFailure.INVALID_URL, "URL must not carry credentials")
        try:  # an internationalised name travels as IDNA (ASCII) in DNS, Host and SNI
            host = url.hostname.rstrip(".").encode("idna").decode("ascii")
        except UnicodeError:
            raise _fail(FetchFailure.INVALID_URL, "URL host is not a valid name") from None
        hosts = self.policy.hosts
        if hosts is not None and not host_allowed(host, port, scheme, hosts):
            raise _fail(FetchFailure.HOST_NOT_ALLOWED,
                        f"host {host!r} (port {port}) is not on the allow-list")
        return CheckedUrl(url._replace(scheme=scheme), host, port, self._vetted(host, port))

    def _vetted(self, host: str, port: int) -> str:
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise _fail(FetchFailure.UNRESOLVABLE, f"cannot resolve {host!r}: {exc}") from None
        if not addresses:
            raise _fail(FetchFailure.UNRESOLVABLE, f"{host!r} has no address")
        if not self.policy.allow_private and not all(map(is_public_address, addresses)):
            raise _fail(FetchFailure.PRIVATE_ADDRESS,
                        f"host {host!r} resolves to a non-public address")
        return addresses[0]

    def _fetch_http(self, raw_url: str) -> bytes:
        deadline = time.monotonic() + self.policy.timeout_s
        url = raw_url.strip()
        for _ in range(self.policy.max_redirects + 1):
            checked = self.check(url)
            location, body = self._get(checked, deadline)
            if body is not None:
                return body
            url = urljoin(checked.url.geturl(), location)  # re-checked on the next turn
        raise _fail(FetchFailure.HTTP_STATUS,
                    f"more than {self.policy.max_redirects} redirects from {raw_url[:200]!r}")

    def _get(self, checked: CheckedUrl, deadline: float) -> tuple[str, bytes | None]:
        """(redirect location, None) or ("", body)."""
        connection = None
        try:
            connection = self._connection(checked, _remaining(deadline))
            # spaces and other bytes catalogs leave unescaped; existing escapes stay
            target = quote(checked.url.path or "/", safe=_PATH_SAFE)
            if checked.url.query:
                target += "?" + quote(checked.url.query, safe=_PATH_SAFE + "?")
            connection.request("GET", target, headers={"Accept": "image/*",
                                                       "User-Agent": "xmodal"})
            response = connection.getresponse()
            location = response.getheader("Location")
            if response.status in _REDIRECTS and location:
                return location, None
            if response.status != 200:
                raise _fail(FetchFailure.HTTP_STATUS,
                            f"{_shown(checked)} answered HTTP {response.status}")
            return "", self._read_body(connection, response, deadline)
        except (OSError, http.client.HTTPException) as exc:
            kind = FetchFailure.TIMEOUT if isinstance(exc, TimeoutError) \
                else FetchFailure.CONNECTION
            raise _fail(kind, f"fetching {_shown(checked)} failed: {exc!r}") from None
        finally:
            if connection is not None:
                connection.close()

    def _connection(self, checked: CheckedUrl, timeout: float) -> http.client.HTTPConnection:
        if checked.url.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                checked.host, checked.port, timeout=timeout, context=self._tls_context())
        else:
            connection = http.client.HTTPConnection(checked.host, checked.port,
                                                    timeout=timeout)
        address = checked.address

        def pinned(_: Any, timeout: float, source: Any = None) -> socket.socket:
            # to the vetted address, whatever the name resolves to now; TLS still checks
            # the certificate against the name (server_hostname=host)
            return socket.create_connection((address, checked.port), timeout, source)

        connection._create_connection = pinned  # type: ignore[attr-defined]
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls

    def _read_body(self, connection: http.client.HTTPConnection,
                   response: http.client.HTTPResponse, deadline: float) -> bytes:
        limit = self.policy.max_bytes
        declared = response.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ImageTooLargeError(f"remote image is {int(declared):,} bytes, limit {limit:,}")
        chunks, total = [], 0
        while True:
            # a slow trickle must not outlive the deadline (each read is also bounded by
            # the socket timeout, set from the deadline when connecting)
            remaining = _remaining(deadline)
            if connection.sock is not None:
                connection.sock.settimeout(remaining)
            chunk = response.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise ImageTooLargeError(f"remote image is over the {limit:,} byte limit")
            chunks.append(chunk)

    # -- object stores -----------------------------------------------------------------
    def _fetch_object(self, uri: str) -> bytes:
        url = urlsplit(uri)
        bucket, key = url.netloc, url.path.lstrip("/")
        if not bucket or not key or url.query or url.fragment:
            raise _fail(FetchFailure.INVALID_URL, f"invalid object URI {uri[:200]!r}: "
                        "expected scheme://bucket/key")
        filesystem = self._filesystem(url.scheme.lower())
        limit = self.policy.max_bytes
        try:
            with filesystem.open_input_file(f"{bucket}/{key}") as stream:
                if stream.size() > limit:  # known from the metadata: nothing downloaded
                    raise ImageTooLargeError(f"remote image is {stream.size():,} bytes, "
                                             f"limit {limit:,}")
                data = stream.read(limit + 1)
        except FileNotFoundError:
            raise _fail(FetchFailure.HTTP_STATUS, f"no object at {uri[:200]!r}") from None
        except ImageTooLargeError:
            raise
        except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses
            raise _fail(FetchFailure.CONNECTION, f"reading {uri[:200]!r} failed: {exc}"
                        ) from None
        if len(data) > limit:
            raise ImageTooLargeError(f"remote image is over the {limit:,} byte limit")
        return bytes(data)

    def _filesystem(self, scheme: str) -> Any:
        with self._lock:
            if scheme not in self._filesystems:
                self._filesystems[scheme] = _object_filesystem(scheme, self.policy.timeout_s)
            return self._filesystems[scheme]


def _object_filesystem(scheme: str, timeout_s: float) -> Any:
    """pyarrow's S3 or GCS filesystem, configured from the environment (AWS_* / GOOGLE_*
    variables, instance credentials); a clear error when this pyarrow lacks it."""
    try:
        import pyarrow.fs as pafs

        if scheme == "s3":
            # the AWS SDK's endpoint variables (MinIO, other S3-compatible stores), which
            # this pyarrow does not read by itself
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
                "AWS_ENDPOINT_URL")
            options: dict[str, Any] = {}
            if endpoint:
                url = urlsplit(endpoint)
                options = {"endpoint_override": url.netloc, "scheme": url.scheme or "https"}
            return pafs.S3FileSystem(connect_timeout=timeout_s, request_timeout=timeout_s,
                                     **options)
        import datetime

        return pafs.GcsFileSystem(retry_time_limit=datetime.timedelta(seconds=timeout_s))
    except (ImportError, AttributeError, OSError) as exc:
        raise _fail(FetchFailure.UNAVAILABLE, f"{scheme}:// objects cannot be read here: "
                    f"pyarrow's {scheme} filesystem is unavailable ({exc})") from None


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch took longer than its timeout")
    return left


def _shown(checked: CheckedUrl) -> str:
    return checked.url.geturl()[:200]


@functools.lru_cache(maxsize=16)
def fetcher_for(policy: RemotePolicy) -> RemoteFetcher:
    """One fetcher per policy and process: TLS context and object-store clients reused."""
    return RemoteFetcher(policy)

