"""GET /v1/media: images and thumbnails from the store, and nothing from outside it."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def image_url(client):
    hits = client.post("/v1/search", json={"collection": "shop", "text": "x", "target": "image",
                                            "k": 1}).json()["hits"]
    return hits[0]["image_url"]


def test_original_and_thumbnail(client, image_url, shop_settings):
    original = client.get(image_url)
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.headers["x-content-type-options"] == "nosniff"
    assert "immutable" in original.headers["cache-control"]
    ref = image_url.removeprefix("/v1/media/")
    assert original.content == (shop_settings.home / "media" / ref).read_bytes()
    thumb = client.get(image_url, params={"size": 24})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 24
    for size in (0, 15, 2049, "big"):
        assert client.get(image_url, params={"size": size}).status_code == 422


@pytest.fixture(scope="module")
def secret(shop_settings):
    """A file next to the media store that no request may read."""
    path = shop_settings.home / "secret.png"
    path.write_bytes(b"top secret")
    link = shop_settings.home / "media" / "aa" / "link.png"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        os.symlink(path, link)
    return path


@pytest.mark.parametrize("path", [
    "/v1/media/../secret.png",
    "/v1/media/%2e%2e/secret.png",
    "/v1/media/%2E%2E%2Fsecret.png",
    "/v1/media/..%2fsecret.png",
    "/v1/media/aa/../../secret.png",
    "/v1/media/%2Fetc%2Fpasswd",
    "/v1/media//etc/passwd",
    "/v1/media/aa/link.png",
    "/v1/media/..%5csecret.png",
    "/v1/media/aa%00/x.png",
    "/v1/media/.staging/x",
    "/v1/media/catalog.db",
    "/v1/media/../catalog.db",
])
def test_traversal_is_impossible(client, secret, path):
    response = client.get(path)
    assert response.status_code in (404, 422), path
    assert b"top secret" not in response.content and b"root:" not in response.content
    assert b"SQLite" not in response.content
    assert client.get(path, params={"size": 32}).status_code in (404, 422)
