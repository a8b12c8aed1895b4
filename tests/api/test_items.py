"""Items: put (JSON and multipart), batch, get, delete; auth and every error path."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import WRITE, open_client
from tests.utils.corpus import png_bytes


@pytest.fixture(scope="module")
def store(client):
    """A collection of this module's own (writes never touch the shared "shop")."""
    assert client.post("/v1/collections", json={"name": "items-test"},
                       headers=WRITE).status_code == 201
    return "/v1/collections/items-test/items"


def top_ids(client, text, **options):
    body = {"collection": "items-test", "text": text, "k": 5, **options}
    return [h["external_id"] for h in client.post("/v1/search", json=body).json()["hits"]]


def test_put_json_is_searchable_at_once_then_unchanged_then_changed(client, store):
    put = client.put(f"{store}/apple", json={"text": "a crisp red apple",
                                             "attributes": {"price": 1.5}}, headers=WRITE)
    assert put.status_code == 201, put.text
    item = put.json()
    assert item["state"] == "new" and item["attributes"] == {"price": 1.5}
    assert item["vectors"] == [{"modality": "text", "source": "original"}]
    assert top_ids(client, "a crisp red apple")[0] == "apple"
    again = client.put(f"{store}/apple", json={"text": "a crisp red apple",
                                               "attributes": {"price": 1.5}}, headers=WRITE)
    assert (again.status_code, again.json()["state"]) == (200, "unchanged")
    changed = client.put(f"{store}/apple", json={"text": "a green pear"}, headers=WRITE)
    assert (changed.status_code, changed.json()["state"]) == (200, "changed")
    assert client.get(f"{store}/apple").json()["text"] == "a green pear"


def test_put_multipart_with_image_and_base64_json(client, store):
    image = png_bytes(77)
    put = client.put(f"{store}/photo", data={"text": "a photo", "attributes": '{"kind": "p"}'},
                     files={"image": ("p.png", image, "image/png")}, headers=WRITE)
    assert put.status_code == 201, put.text
    item = put.json()
    assert {v["modality"] for v in item["vectors"]} == {"image", "text"}
    assert client.get(item["image_url"]).content == image
    hits = client.post("/v1/search/image", data={"collection": "items-test", "target": "image"},
                       files={"image": ("q.png", image, "image/png")}).json()["hits"]
    assert hits[0]["external_id"] == "photo" and hits[0]["score"] > 0.99
    as_json = client.put(f"{store}/photo2", json={"image": base64.b64encode(image).decode()},
                         headers=WRITE)
    assert as_json.status_code == 201 and as_json.json()["image_url"] == item["image_url"]


def test_get_and_delete(client, store):
    client.put(f"{store}/gone", json={"text": "soon deleted thing"}, headers=WRITE)
    got = client.get(f"{store}/gone")
    assert got.status_code == 200 and got.json()["external_id"] == "gone"
    assert client.delete(f"{store}/gone", headers=WRITE).status_code == 204
    assert "gone" not in top_ids(client, "soon deleted thing")
    assert client.get(f"{store}/gone").status_code == 404
    assert client.delete(f"{store}/gone", headers=WRITE).status_code == 404


def test_batch_reports_bad_items_and_keeps_the_rest(client, store):
    batch = {"items": [
        {"external_id": "b1", "text": "batch one", "attributes": {"n": 1}},
        {"external_id": "b2", "image": base64.b64encode(png_bytes(9)).decode()},
        {"external_id": "b3"},  # neither text nor image
    ]}
    report = client.post(store, json=batch, headers=WRITE)
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["new"], body["failed"]) == (2, 1)
    assert body["failures"][0]["external_id"] == "b3"
    assert client.get(f"{store}/b2").status_code == 200


def _problem(response, status, fragment=""):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fragment.lower() in response.json().get("detail", "").lower()


def test_writes_need_the_key(client, store):
    _problem(client.put(f"{store}/x", json={"text": "x"}), 401, "missing x-api-key")
    _problem(client.put(f"{store}/x", json={"text": "x"}, headers={"X-API-Key": "wrong"}), 401,
             "wrong api key")
    _problem(client.delete(f"{store}/x"), 401)
    _problem(client.post(store, json={"items": [{"external_id": "x", "text": "x"}]}), 401)


def _truncated_png() -> bytes:
    return png_bytes(3)[:60]


@pytest.mark.parametrize(("kwargs", "status", "fragment"), [
    ({"json": {"text": "x", "image": "%%%"}}, 422, "base64"),
    ({"json": {"text": "x", "image": base64.b64encode(_truncated_png()).decode()}}, 422, "png"),
    ({"json": {"attributes": {"a": 1}}}, 422, "neither text nor image"),
    ({"json": {"text": "nul \x00"}}, 422, "nul"),
    ({"json": {"text": "x", "attributes": {"big": 2**70}}}, 422, "64 bits"),
    ({"json": {"text": "x", "attributes": {"k\x00": 1}}}, 422, "nul"),
    ({"json": {"text": "x", "extra": 1}}, 422, "extra"),
    ({"content": b'{"text": "x", "attributes": {"v": NaN}}',
      "headers": {"Content-Type": "application/json"}}, 422, "finite"),
    ({"content": b"text=x", "headers": {"Content-Type": "text/plain"}}, 415, "json"),
    ({"data": {"text": "x", "attributes": "{not json"}}, 422, "attributes"),
    ({"data": {"text": "x"}, "files": {"image": ("a.png", b"nope", "image/png")}}, 422, "image"),
])
def test_put_errors(client, store, kwargs, status, fragment):
    headers = {**WRITE, **kwargs.pop("headers", {})}
    _problem(client.put(f"{store}/bad", headers=headers, **kwargs), status, fragment)
    assert client.get(f"{store}/bad").status_code == 404  # nothing half-written


def test_unknown_collection_and_long_id(client):
    _problem(client.put("/v1/collections/nope/items/a", json={"text": "x"}, headers=WRITE), 404,
             "nope")
    _problem(client.get("/v1/collections/nope/items/a"), 404)
    _problem(client.get("/v1/collections/shop/items/" + "x" * 513), 422)
    _problem(client.get("/v1/collections/shop/items/missing"), 404, "no item 'missing'")


def test_upload_and_batch_limits(fresh_settings):
    from api.config import ApiConfig

    with open_client(fresh_settings, ApiConfig(max_upload_bytes=2048, max_batch_items=2,
                                               max_image_pixels=5000)) as small:
        small.post("/v1/collections", json={"name": "c"}, headers=WRITE)
        base = "/v1/collections/c/items"
        noise = io.BytesIO()  # random pixels do not compress: ~10 KB > 2048 bytes
        pixels = np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(noise, "PNG")
        _problem(small.put(f"{base}/a", data={"text": "x"}, headers=WRITE,
                           files={"image": ("a.png", noise.getvalue(), "image/png")}), 413)
        wide = io.BytesIO()
        Image.new("RGB", (100, 60)).save(wide, "PNG")  # 6000 px, a few hundred bytes
        _problem(small.put(f"{base}/a", headers=WRITE, json={
            "image": base64.b64encode(wide.getvalue()).decode()}), 413, "limit")
        items = [{"external_id": str(i), "text": "t"} for i in range(3)]
        _problem(small.post(base, json={"items": items}, headers=WRITE), 422, "limit is 2")


def test_read_only_server_refuses_writes(shop_settings):
    from api.config import ApiConfig

    with open_client(shop_settings, ApiConfig(read_only=True)) as read_only:
        _problem(read_only.put("/v1/collections/shop/items/z", json={"text": "z"},
                               headers=WRITE), 403, "read-only")
        assert read_only.post("/v1/search", json={"collection": "shop", "text": "z"}
                              ).status_code == 200


@pytest.mark.postgres
def test_item_flow_on_postgres(tmp_path, tiny_model, postgres_cluster):
    from search.settings import Settings
    from tests.api.conftest import API_KEY

    url = postgres_cluster.create_database("t_api_items")
    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True,
                        database_url=url, api_key=API_KEY)
    with open_client(settings) as pg:
        assert pg.post("/v1/collections", json={"name": "pg"}, headers=WRITE).status_code == 201
        put = pg.put("/v1/collections/pg/items/a", headers=WRITE,
                     json={"text": "blue suede shoes", "attributes": {"price": 3}})
        assert put.status_code == 201, put.text
        hits = pg.post("/v1/search", json={"collection": "pg", "text": "blue suede shoes",
                                           "filters": {"price": {"lte": 5}}}).json()["hits"]
        assert [h["external_id"] for h in hits] == ["a"]
        _problem(pg.put("/v1/collections/pg/items/b", headers=WRITE,
                        json={"text": "x\x00"}), 422)
        assert pg.delete("/v1/collections/pg/items/a", headers=WRITE).status_code == 204
        body = json.loads(pg.get("/v1/collections/pg").text)
        assert body["items"] == 0
