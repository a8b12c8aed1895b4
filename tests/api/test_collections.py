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


def _keyword_ids(client, collection, text):
    response = client.post("/v1/search", json={"collection": collection, "text": text,
                                                "mode": "keyword"})
    assert response.status_code == 200, response.text
    return [(h["external_id"], sorted(h["rankers"])) for h in response.json()["hits"]]


def test_search_fields_read_and_declared(client):
    assert client.post("/v1/collections", json={"name": "fields-c"},
                       headers=WRITE).status_code == 201
    items = [{"external_id": "shoe", "text": "running shoe",
              "attributes": {"keywords": ["sneakers"], "brand": "Acme", "mpn": "RS-1"}},
             {"external_id": "mug", "text": "coffee mug",
              "attributes": {"keywords": ["kitchen"], "brand": "Bolt", "mpn": "CM-7"}}]
    added = client.post("/v1/collections/fields-c/items", json={"items": items}, headers=WRITE)
    assert added.status_code == 200, added.text
    url = "/v1/collections/fields-c/settings"
    assert client.get(url).json() == {"collection": "fields-c", "searchable_fields": None,
                                      "identifier_fields": ["sku", "gtin"], "reindexed": None}
    assert _keyword_ids(client, "fields-c", "sneakers") == [("shoe", ["keyword"])]
    body = {"searchable_fields": ["brand"], "identifier_fields": ["mpn"]}
    assert client.put(url, json=body).status_code == 401  # a write: key required
    declared = client.put(url, json=body, headers=WRITE)
    assert declared.status_code == 200, declared.text
    assert declared.json() == {"collection": "fields-c", "searchable_fields": ["brand"],
                               "identifier_fields": ["mpn"], "reindexed": 2}
    assert client.get(url).json()["searchable_fields"] == ["brand"]
    assert _keyword_ids(client, "fields-c", "sneakers") == []
    assert _keyword_ids(client, "fields-c", "cm-7") == [("mug", ["exact"])]  # not searchable
    reset = client.put(url, json={}, headers=WRITE)  # back to the defaults
    assert reset.json()["searchable_fields"] is None
    assert reset.json()["identifier_fields"] == ["sku", "gtin"]
    assert _keyword_ids(client, "fields-c", "sneakers") == [("shoe", ["keyword"])]
    client.delete("/v1/collections/fields-c", headers=WRITE)


def test_search_fields_errors_are_typed(client):
    url = "/v1/collections/shop/settings"
    unknown = client.put(url, json={"searchable_fields": ["category", "colour"]},
                         headers=WRITE)
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "urn:xmodal:problem:unknown-field"
    assert "'colour'" in unknown.json()["detail"]
    for body in ({"searchable_fields": ["bad name"]}, {"identifier_fields": ["a", "a"]},
                 {"searchable_fields": "category"}, {"other": 1},
                 {"searchable_fields": [f"f{i}" for i in range(65)]}):
        response = client.put(url, json=body, headers=WRITE)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get(url).json()["searchable_fields"] is None  # nothing changed
    assert client.get("/v1/collections/nope/settings").status_code == 404
    assert client.put("/v1/collections/nope/settings", json={},
                      headers=WRITE).status_code == 404
