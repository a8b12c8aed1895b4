"""image_url queries: the engine's remote fetcher (search.RemoteFetcher, the same SSRF
guard the indexer uses for URL catalogs) under the API's own policy, its refusals mapped
to HTTP problems.

Off unless `ApiConfig.fetch_image_urls`. Only http(s), only hosts on
`image_url_hosts`, only public addresses unless `image_url_allow_private`; all of it is
refused before any connection, redirects are re-checked hop by hop, and size and total
time are capped (`max_upload_bytes`, `image_url_timeout_s`).
"""

from __future__ import annotations

from api.config import ApiConfig
from api.problems import ApiError
from search import (
    FetchFailure,
    RemoteFetcher,
    RemoteFetchError,
    RemotePolicy,
    Resolver,
    resolve_host,
)

# (status, slug) per failure: a refusal by policy is 403, a URL that does not work is 422
_PROBLEMS: dict[FetchFailure, tuple[int, str]] = {
    FetchFailure.INVALID_URL: (422, "invalid-image-url"),
    FetchFailure.HOST_NOT_ALLOWED: (403, "image-url-host-not-allowed"),
    FetchFailure.PRIVATE_ADDRESS: (403, "image-url-private-address"),
    FetchFailure.UNRESOLVABLE: (422, "image-url-unresolvable"),
}


def api_policy(config: ApiConfig) -> RemotePolicy:
    return RemotePolicy(schemes=("http", "https"), hosts=tuple(config.image_url_hosts),
                        allow_private=config.image_url_allow_private,
                        timeout_s=config.image_url_timeout_s,
                        max_bytes=config.max_upload_bytes)


class ImageFetcher:
    def __init__(self, config: ApiConfig, resolver: Resolver = resolve_host) -> None:
        self.enabled = config.fetch_image_urls
        self.remote = RemoteFetcher(api_policy(config), resolver)

    def fetch(self, raw_url: str) -> bytes:
        """The image's bytes; ApiError (or ImageTooLargeError, 413) saying why not."""
        if not self.enabled:
            raise ApiError(403, "image-url-disabled", "image_url fetching is disabled on "
                           "this server; send the image bytes (base64) instead")
        try:
            return self.remote.fetch(raw_url)
        except RemoteFetchError as exc:
            status, slug = _PROBLEMS.get(exc.kind, (422, "image-url-fetch-failed"))
            raise ApiError(status, slug, f"image_url: {exc}") from None
