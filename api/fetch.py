"""Fetching query images by URL without becoming an SSRF proxy.

Off unless `ApiConfig.fetch_image_urls`. A URL is refused before any connection
unless its host (and port) is on the allow-list and every address it resolves to is
public (or private addresses are explicitly allowed). The connection then goes to the
address that was checked — Host header and TLS SNI carry the name — so a DNS answer
that changes between check and connect (rebinding) cannot redirect it. Redirects are
not followed; size and total time are capped.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from api.config import ApiConfig
from api.problems import ApiError
from search import ImageTooLargeError

Resolver = Callable[[str, int], list[str]]
DEFAULT_PORTS = {"http": 80, "https": 443}


def resolve_host(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class CheckedUrl:
    url: SplitResult
    host: str
    port: int
    address: str  # the vetted IP the connection must go to


def _refuse(slug: str, detail: str, status: int = 403) -> ApiError:
    return ApiError(status, slug, detail)


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


def _host_allowed(host: str, port: int, scheme: str, patterns: list[str]) -> bool:
    for name, pinned in map(_parse_pattern, patterns):
        # an entry without a port allows only the scheme's default port
        if port != (pinned if pinned is not None else DEFAULT_PORTS[scheme]):
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class ImageFetcher:
    def __init__(self, config: ApiConfig, resolver: Resolver = resolve_host,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config, self.resolver, self.transport = config, resolver, transport

    def check(self, raw_url: str) -> CheckedUrl:
        """Everything that can be refused is refused here, before any connection."""
        if not self.config.fetch_image_urls:
            raise _refuse("image-url-disabled", "image_url fetching is disabled on this server; "
                          "send the image bytes (base64) instead")
        try:
            url = urlsplit(raw_url.strip())
            port = url.port or DEFAULT_PORTS.get(url.scheme, 0)
        except ValueError as exc:
            raise _refuse("invalid-image-url", f"invalid image_url: {exc}", 422) from None
        if url.scheme not in DEFAULT_PORTS or not url.hostname:
            raise _refuse("invalid-image-url", "image_url must be an http(s) URL with a host",
                          422)
        if url.username is not None or url.password is not None:
            raise _refuse("invalid-image-url", "image_url must not carry credentials", 422)
        host = url.hostname.rstrip(".")
        if not _host_allowed(host, port, url.scheme, self.config.image_url_hosts):
            raise _refuse("image-url-host-not-allowed",
                          f"image_url host {host!r} (port {port}) is not on the allow-list")
        return CheckedUrl(url, host, port, self._vetted_address(host, port))

    def _vetted_address(self, host: str, port: int) -> str:
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise _refuse("image-url-unresolvable", f"cannot resolve {host!r}: {exc}",
                          422) from None
        if not addresses:
            raise _refuse("image-url-unresolvable", f"{host!r} has no address", 422)
        private = [a for a in addresses if not _is_public(a)]
        if private and not self.config.image_url_allow_private:
            raise _refuse("image-url-private-address",
                          f"image_url host {host!r} resolves to a non-public address")
        return addresses[0]

    def fetch(self, raw_url: str) -> bytes:
        checked = self.check(raw_url)
        return self._download(checked)

    def _download(self, checked: CheckedUrl) -> bytes:
        url = checked.url
        literal = f"[{checked.address}]" if ":" in checked.address else checked.address
        target = url._replace(netloc=f"{literal}:{checked.port}").geturl()
        host_header = checked.host if checked.port == DEFAULT_PORTS[url.scheme] \
            else f"{checked.host}:{checked.port}"
        deadline = time.monotonic() + self.config.image_url_timeout_s
        limit = self.config.max_upload_bytes
        try:
            with httpx.Client(transport=self.transport, trust_env=False, follow_redirects=False,
                              timeout=self.config.image_url_timeout_s) as client, \
                    client.stream("GET", target, headers={"Host": host_header},
                                  extensions={"sni_hostname": checked.host}) as response:
                return _read_body(response, limit, deadline)
        except httpx.HTTPError as exc:
            raise _refuse("image-url-fetch-failed", f"fetching image_url failed: {exc!r}",
                          422) from None


def _read_body(response: httpx.Response, limit: int, deadline: float) -> bytes:
    if response.status_code != 200:
        raise _refuse("image-url-fetch-failed",
                      f"image_url answered HTTP {response.status_code} (redirects are not "
                      "followed)", 422)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeError(f"image_url body is {declared} bytes, limit {limit}")
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise ImageTooLargeError(f"image_url body is over the {limit} byte limit")
        if time.monotonic() > deadline:
            raise _refuse("image-url-fetch-failed", "fetching image_url took too long", 422)
        chunks.append(chunk)
    return b"".join(chunks)
