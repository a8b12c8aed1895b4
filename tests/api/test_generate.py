"""`POST /v1/generate`, generated items' provenance over HTTP, and the rate limiter."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from api.config import ApiConfig
from api.problems import ApiError
from api.ratelimit import RateLimiter
from search.collection.backfill import generate_missing
from search.collection.collection import NewItem
from search.models.generator import load_generator
from search.settings import Settings
from search.workspace import Workspace
from tests.api.conftest import WRITE, build_home, open_client
from tests.utils.generators import tiny_generator_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_model):
    return tiny_generator_weights(tmp_path_factory.mktemp("gen") / "g.safetensors", tiny_model)


@pytest.fixture(scope="module")
def settings(tmp_path_factory, tiny_model, weights) -> Settings:
    """A home whose "gen" collection has one real picture and two generated ones."""
    settings = Settings(home=tmp_path_factory.mktemp("gen-home"), model=tiny_model,
                        device="cpu", offline=True, api_key="test-key")
    build_home(settings, "gen", [NewItem("real", text="a real photo", image=_png()),
                                 NewItem("t1", text="red apple"), NewItem("t2", text="shoe")])
    workspace = Workspace.open(settings)
    collection = workspace.collection("gen")
    report = generate_missing(collection, load_generator("house", str(weights), device="cpu"))
    assert report.generated == 2
    collection.save()
    workspace.close()
    return settings


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def client(settings, weights):
    config = ApiConfig(generator="house", generator_model=str(weights), generate_max_size=64,
                       generate_per_minute=6, reload_interval_s=0.1)
    with open_client(settings, config) as test_client:
        yield test_client


def _generate(client, headers=WRITE, **body):
    return client.post("/v1/generate", json={"prompt": "red apple", **body}, headers=headers)


def test_generate_returns_a_seeded_png_with_provenance_headers(client):
    first, again, other = _generate(client, seed=3), _generate(client, seed=3), \
        _generate(client, seed=4, size=48)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(first.content)).size == (32, 32)  # the tiny nets' own side
    assert Image.open(io.BytesIO(other.content)).size == (48, 48)
    assert first.content == again.content != other.content
    assert first.headers["x-generator"] == "house" and first.headers["x-seed"] == "3"
    assert first.headers["x-generator-model"].startswith("house-generator|")


def test_bad_generate_requests_are_4xx_naming_the_problem(client):
    assert _generate(client, headers={}).status_code == 401
    empty = client.post("/v1/generate", json={"prompt": ""}, headers=WRITE)
    assert empty.status_code == 422 and "prompt" in empty.json()["detail"]
    blank = client.post("/v1/generate", json={"prompt": "   "}, headers=WRITE)
    assert (blank.status_code, blank.json()["type"]) == (422, "urn:xmodal:problem:invalid-prompt")
    assert client.post("/v1/generate", json={"prompt": "x" * 1001},
                       headers=WRITE).status_code == 422
    big = _generate(client, size=512)
    assert big.status_code == 413 and "limit of 64 px" in big.json()["detail"]
    assert _generate(client, extra=1).status_code == 422


def test_generated_items_show_provenance_and_serve_their_image(client):
    item = client.get("/v1/collections/gen/items/t1").json()
    assert item["generated"] is True and item["generation"]["prompt"] == "red apple"
    assert item["generation"]["generator"] == "house"
    assert client.get(item["image_url"]).headers["content-type"] == "image/png"
    real = client.get("/v1/collections/gen/items/real").json()
    assert real["generated"] is False and real["generation"] is None and real["image_url"]
    hits = client.post("/v1/search", json={"collection": "gen", "text": "red apple",
                                           "target": "image", "k": 3}).json()["hits"]
    assert {h["external_id"]: h["generated"] for h in hits} == {
        "real": False, "t1": True, "t2": True}


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_include_generated_false_matches_real_pictures_only(client, mode):
    """Both sides of hybrid leave out items whose only picture is generated."""
    body = {"collection": "gen", "text": "red apple", "k": 3, "include_generated": False,
            "mode": mode}
    images = client.post("/v1/search", json={**body, "target": "image"}).json()["hits"]
    assert [h["external_id"] for h in images] == ["real"]
    fused = client.post("/v1/search", json=body).json()["hits"]
    by_id = {h["external_id"]: h for h in fused}
    assert set(by_id) == {"real", "t1", "t2"} and by_id["t1"]["generated"] is True
    assert set(by_id["t1"]["scores"]) == {"text"} and by_id["t1"]["image_url"]
    upload = client.post("/v1/search/image", files={"image": ("q.png", _png(), "image/png")},
                         data={"collection": "gen", "target": "image", "k": "3",
                               "include_generated": "false"})
    assert [h["external_id"] for h in upload.json()["hits"]] == ["real"]
    bad = client.post("/v1/search", json={**body, "include_generated": "maybe"})
    assert bad.status_code == 422


def test_unavailable_generator_is_a_503_naming_it_and_the_service_stays_up(settings):
    config = ApiConfig(generator="house", generator_model="/nonexistent/gen.safetensors")
    with open_client(settings, config) as client:
        response = _generate(client)
        assert response.status_code == 503 and "/nonexistent/gen.safetensors" in \
            response.json()["detail"]
        assert client.get("/healthz").status_code == 200
    with open_client(settings, ApiConfig(generator="nope")) as client:
        response = _generate(client)
        assert response.status_code == 422 and "nope" in response.json()["detail"]


def test_rate_limit_per_client_and_refill():
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(ApiError) as refused:
        limiter.take("a")
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "30"}
    limiter.take("b")  # another client has its own bucket
    now[0] = 30.0  # half a minute refills one token
    limiter.take("a")
    with pytest.raises(ApiError):
        limiter.take("a")


def test_generate_is_rate_limited_over_http(settings, weights):
    config = ApiConfig(generator="house", generator_model=str(weights), generate_per_minute=2)
    with open_client(settings, config) as client:
        codes = [_generate(client, seed=i).status_code for i in range(3)]
        assert codes == [200, 200, 429]
        assert int(_generate(client).headers["retry-after"]) > 0
