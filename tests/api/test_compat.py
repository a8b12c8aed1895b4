"""clip-retrieval compatibility, driven by the request bodies its clients send.

`ClipClient.__search_knn_api__` (clip_retrieval/clip_client.py) posts
`data=json.dumps({...})` with no Content-Type, always sending every key below; its
front end (front/src/clip-service.js) posts the same keys as text/plain.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.utils.corpus import png_bytes


def clip_client_body(indice_name: str, *, text=None, image=None, image_url=None,
                     embedding_input=None, modality: str = "image", num_images: int = 40,
                     deduplicate: bool = True) -> str:
    """What ClipClient(url, indice_name, ...).query(...) puts on the wire (its defaults)."""
    return json.dumps({
        "text": text, "image": image, "image_url": image_url,
        "embedding_input": embedding_input, "deduplicate": deduplicate,
        "use_safety_model": True, "use_violence_detector": True, "indice_name": indice_name,
        "use_mclip": False, "aesthetic_score": 9, "aesthetic_weight": 0.5,
        "modality": modality, "num_images": num_images, "num_result_ids": num_images})


def knn(client, body: str, content_type: str | None = None):
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post("/knn-service", content=body.encode(), headers=headers)


def ours(client, **query):
    """Our own API in vector mode: /knn-service answers cosines, whatever the default."""
    body = {"collection": "shop", "mode": "vector", **query}
    return client.post("/v1/search", json=body).json()["hits"]


def test_text_query_shape_and_scores(client):
    response = knn(client, clip_client_body("shop", text="fruit", modality="image",
                                            num_images=5, deduplicate=False))
    assert response.status_code == 200, response.text
    results = response.json()
    assert isinstance(results, list) and len(results) == 5
    for result in results:
        assert {"id", "similarity", "caption", "url", "image_path", "category"} <= set(result)
        assert isinstance(result["id"], int) and isinstance(result["similarity"], float)
        assert result["url"].startswith("http://testserver/v1/media/")
    expected = ours(client, text="fruit", target="image", k=5)
    assert [r["id"] for r in results] == [h["item_id"] for h in expected]
    np.testing.assert_allclose([r["similarity"] for r in results],
                               [h["score"] for h in expected], atol=1e-6)


def test_image_query_as_client_sends_it(client, tmp_path):
    path = tmp_path / "query.png"
    path.write_bytes(png_bytes(5))
    encoded = str(base64.b64encode(path.read_bytes()).decode("utf-8"))  # as ClipClient does
    results = knn(client, clip_client_body("shop", image=encoded, modality="text",
                                           num_images=4)).json()
    expected = ours(client, image=encoded, target="text", k=4, dedupe=0.94)
    assert [r["id"] for r in results] == [h["item_id"] for h in expected]
    assert all(r["caption"] for r in results)


def test_embedding_input_is_normalised(client):
    text_results = knn(client, clip_client_body("shop", text="toys", num_images=6,
                                                deduplicate=False)).json()
    encoder = client.app.state.services.workspace.collection("shop").encoder
    embedding = encoder.encode_texts(["toys"])[0] * 3.0  # clip-retrieval users may not normalise
    by_embedding = knn(client, clip_client_body("shop", embedding_input=embedding.tolist(),
                                                num_images=6, deduplicate=False)).json()
    assert [r["id"] for r in by_embedding] == [r["id"] for r in text_results]
    assert by_embedding[0]["similarity"] <= 1.0 + 1e-5


def test_precedence_text_over_image_and_empty_text_ignored(client):
    image = base64.b64encode(png_bytes(8)).decode()
    both = knn(client, clip_client_body("shop", text="shoes", image=image,
                                        num_images=3)).json()
    text_only = knn(client, clip_client_body("shop", text="shoes", num_images=3)).json()
    assert [r["id"] for r in both] == [r["id"] for r in text_only]
    empty_text = knn(client, clip_client_body("shop", text="", image=image, num_images=3))
    image_only = knn(client, clip_client_body("shop", image=image, num_images=3))
    assert empty_text.json() == image_only.json()


def test_front_end_body_with_text_plain(client):
    body = json.dumps({"text": "clothes", "image": None, "image_url": None,
                       "embedding_input": None, "modality": "text", "num_images": 2000,
                       "indice_name": "shop", "num_result_ids": 3000, "use_mclip": False,
                       "deduplicate": True, "use_safety_model": False,
                       "use_violence_detector": False, "aesthetic_score": "",
                       "aesthetic_weight": ""})
    response = knn(client, body, "text/plain;charset=UTF-8")
    assert response.status_code == 200, response.text
    assert 0 < len(response.json()) <= 1000


def test_metadata_and_indices_list(client):
    results = knn(client, clip_client_body("shop", text="fruit", num_images=3)).json()
    ids = [r["id"] for r in results] + [987654]
    response = client.post("/metadata", content=json.dumps({"ids": ids, "indice_name": "shop"}))
    assert response.status_code == 200
    metas = response.json()
    assert [m["id"] for m in metas] == ids and metas[-1]["metadata"] == {}
    for meta, result in zip(metas, results, strict=False):
        assert meta["metadata"]["caption"] == result["caption"]
        assert meta["metadata"]["url"] == result["url"]
    empty = client.post("/metadata", content=json.dumps({"ids": [], "indice_name": "shop"}))
    assert empty.json() == []
    assert "shop" in client.get("/indices-list").json()


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ("{not json", 400, "not valid json"),
    (json.dumps({"text": "x", "num_images": 3, "indice_name": "shop"}), 422, "modality"),
    (json.dumps({"text": "x", "modality": "image", "indice_name": "shop"}), 422, "num_images"),
    (json.dumps({"text": "x", "modality": "image", "num_images": 3}), 422, "indice_name"),
    (json.dumps({"text": "x", "modality": "audio", "num_images": 3, "indice_name": "shop"}), 422,
     "modality"),
    (clip_client_body("nope", text="x"), 404, "unknown collection"),
    (clip_client_body("shop"), 422, "give one of"),
    (clip_client_body("shop", image="@@@"), 422, "base64"),
    (clip_client_body("shop", embedding_input=[1.0, 2.0]), 422, "uses 32"),
    (clip_client_body("shop", image_url="http://images.invalid/cat.jpg"), 403, "disabled"),
])
def test_knn_errors(client, body, status, fragment):
    response = knn(client, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert fragment in response.json()["detail"].lower()


def test_metadata_errors(client):
    assert client.post("/metadata", content=b"[").status_code == 400
    assert client.post("/metadata", content=json.dumps({"ids": [1]})).status_code == 422
    missing = client.post("/metadata", content=json.dumps({"ids": [1], "indice_name": "zz"}))
    assert missing.status_code == 404
    huge = client.post("/metadata", content=json.dumps({"ids": [2**70], "indice_name": "shop"}))
    assert huge.status_code == 422
