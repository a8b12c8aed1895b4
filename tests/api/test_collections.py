"""Collections: list, describe, create, drop."""

from __future__ import annotations

from tests.api.conftest import SHOP_ITEMS, WRITE


def test_list_and_describe(client):
    listed = client.get("/v1/collections")
    assert listed.status_code == 200
    shop = next(c for c in listed.json()["collections"] if c["name"] == "shop")
    assert shop == client.get("/v1/collections/shop").json()
    assert shop["items"] == len(SHOP_ITEMS) and shop["dim"] == 32
    indexes = {i["modality"]: i for i in shop["indexes"]}
    assert indexes["image"]["spec"] == "Flat" and indexes["image"]["version"]
    assert indexes["image"]["vectors"] + indexes["text"]["vectors"] == shop["vectors"]


def test_create_then_drop(client):
    created = client.post("/v1/collections", json={"name": "tmp-c"}, headers=WRITE)
    assert created.status_code == 201
    assert created.json()["items"] == 0 and created.json()["indexes"][0]["vectors"] == 0
    duplicate = client.post("/v1/collections", json={"name": "tmp-c"}, headers=WRITE)
    assert duplicate.status_code == 409
    assert duplicate.json()["type"] == "urn:xmodal:problem:collection-exists"
    assert "tmp-c" in client.get("/indices-list").json()
    assert client.delete("/v1/collections/tmp-c", headers=WRITE).status_code == 204
    assert client.get("/v1/collections/tmp-c").status_code == 404
    assert client.delete("/v1/collections/tmp-c", headers=WRITE).status_code == 404


def test_errors(client):
    for bad in ("../x", "-x", "a" * 129, "a b"):
        response = client.post("/v1/collections", json={"name": bad}, headers=WRITE)
        assert response.status_code == 422, bad
    assert client.post("/v1/collections", json={"name": "x"}).status_code == 401
    assert client.delete("/v1/collections/shop").status_code == 401
    missing = client.get("/v1/collections/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/collections/..%2Fetc").status_code in (404, 422)
    assert client.get("/v1/nothing-here").status_code == 404
    wrong_method = client.patch("/v1/collections/shop")
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == 405
