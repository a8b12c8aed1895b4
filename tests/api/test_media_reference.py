"""GET /v1/media for media added by reference: served from the configured roots only."""

from __future__ import annotations

import io
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from search.collection.preparing import MediaMode, NewItem
from search.settings import Settings
from search.workspace import Workspace
from tests.api.conftest import API_KEY, open_client
from tests.utils.corpus import png_bytes


@pytest.fixture(scope="module")
def referenced(tmp_path_factory: pytest.TempPathFactory, tiny_model: str):
    """A home whose "refs" collection references files under photos/, which is the one
    configured root; a secret and links out of the root sit beside it."""
    base = tmp_path_factory.mktemp("ref-home")
    photos, private = base / "photos", base / "private"
    photos.mkdir()
    private.mkdir()
    (private / "secret.png").write_bytes(b"top secret")
    os.symlink(private / "secret.png", photos / "out.png")
    os.symlink(private, photos / "outdir")
    for i in range(4):
        (photos / f"{i}.png").write_bytes(png_bytes(i))
    settings = Settings(home=base / "home", model=tiny_model, device="cpu", offline=True,
                        api_key=API_KEY, media_roots=[photos])
    workspace = Workspace.open(settings)
    collection = workspace.create_collection("refs")
    items = [NewItem(f"p{i}", f"product {i}", photos / f"{i}.png") for i in range(4)]
    items.append(NewItem("remote", "remote", png_bytes(9),
                         image_source="https://cdn.example.com/9.png"))
    items.append(NewItem("bucket", "bucket", png_bytes(8), image_source="s3://bucket/8.png"))
    report = collection.add_items(items, media=MediaMode.REFERENCE)
    assert report.new == 6 and not report.failures
    collection.save()
    workspace.close()
    with open_client(settings) as client:
        yield client, photos, private


def _item(client, external_id: str) -> dict:
    response = client.get(f"/v1/collections/refs/items/{external_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_referenced_image_and_thumbnail_are_served(referenced) -> None:
    client, photos, _ = referenced
    item = _item(client, "p1")
    assert item["image_url"] == "/v1/media/" + quote(str(photos / "1.png"), safe="")
    original = client.get(item["image_url"])
    assert original.status_code == 200 and original.content == png_bytes(1)
    assert original.headers["content-type"] == "image/png"
    assert "immutable" not in original.headers["cache-control"]  # can change in place
    thumb = client.get(item["thumbnail_url"])
    assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) <= 256


def test_search_hits_point_at_referenced_media(referenced) -> None:
    client, photos, _ = referenced
    hits = client.post("/v1/search", json={"collection": "refs", "text": "product",
                                            "target": "image", "k": 10}).json()["hits"]
    urls = {h["external_id"]: (h["image_url"], h["thumbnail_url"]) for h in hits}
    assert urls["remote"] == ("https://cdn.example.com/9.png",) * 2  # the client fetches it
    assert urls["bucket"] == ("s3://bucket/8.png", None)  # the client signs it
    assert urls["p0"][0] == "/v1/media/" + quote(str(photos / "0.png"), safe="")


@pytest.mark.parametrize("ref", [
    "{private}/secret.png",                # absolute path outside the root
    "{photos}/out.png",                    # symlink out of the root
    "{photos}/outdir/secret.png",          # directory symlink out of the root
    "{photos}/../private/secret.png",      # ..
    "{photos}/%2e%2e/private/secret.png",  # encoded .. (decoded once by the server)
    "{photos}%2F..%2Fprivate%2Fsecret.png",
    "/etc/passwd",
    "{photos}",
    "s3://bucket/8.png",
    "https://cdn.example.com/9.png",
])
def test_nothing_outside_the_roots_is_served(referenced, ref: str) -> None:
    client, photos, private = referenced
    ref = ref.format(photos=photos, private=private)
    for path in (f"/v1/media/{quote(ref, safe='%')}", f"/v1/media/{ref}"):
        for params in ({}, {"size": 32}):
            response = client.get(path, params=params)
            assert response.status_code in (404, 422), (path, params)
            assert b"top secret" not in response.content and b"root:" not in response.content


def test_roots_are_a_setting(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XMODAL_MEDIA_ROOTS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert Settings().media_roots == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.delenv("XMODAL_MEDIA_ROOTS")
    assert Settings().media_roots == []
