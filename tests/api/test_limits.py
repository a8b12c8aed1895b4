"""One source of truth: the API's bounds are the engine's constants, and one `Modality`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import search
from api import schemas
from search import InvalidQueryError, QueryPart, SearchQuery, parse_filters


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict:
    return client.get("/openapi.json").json()["components"]["schemas"]


def _field(openapi: dict, model: str, name: str) -> dict:
    field = openapi[model]["properties"][name]
    options = field.get("anyOf", [field])  # optional fields: [{...}, {"type": "null"}]
    return next(o for o in options if o.get("type") != "null")


def test_openapi_bounds_are_the_engine_constants(openapi: dict):
    assert _field(openapi, "SearchRequest", "k")["maximum"] == search.MAX_K
    assert _field(openapi, "SearchRequest", "offset")["maximum"] == search.MAX_OFFSET
    assert search.MAX_OFFSET + search.MAX_K == search.MAX_DEPTH
    assert _field(openapi, "SearchRequest", "text")["maxLength"] == search.MAX_TEXT_CHARS
    assert _field(openapi, "SearchRequest", "vector")["maxItems"] == search.MAX_VECTOR_DIM
    assert _field(openapi, "SearchRequest", "queries")["maxItems"] == search.MAX_QUERY_PARTS
    assert _field(openapi, "SearchRequest", "nprobe")["maximum"] == search.MAX_NPROBE
    assert _field(openapi, "SearchRequest", "rerank_factor")["maximum"] == \
        search.MAX_RERANK_FACTOR
    assert _field(openapi, "ItemBatchEntry", "external_id")["maxLength"] == \
        search.MAX_EXTERNAL_ID
    assert _field(openapi, "ItemWrite", "text")["maxLength"] == search.MAX_TEXT_CHARS
    assert openapi["ItemUpload"]["properties"]["text"]["maxLength"] == search.MAX_TEXT_CHARS
    assert _field(openapi, "KnnRequest", "embedding_input")["maxItems"] == \
        search.MAX_VECTOR_DIM
    assert _field(openapi, "GenerateRequest", "prompt")["maxLength"] == search.MAX_PROMPT_CHARS
    assert _field(openapi, "GenerateRequest", "size")["maximum"] == search.MAX_GENERATED_SIDE
    assert _field(openapi, "CollectionCreate", "name")["pattern"] == \
        search.COLLECTION_NAME_PATTERN


def test_one_modality_enum(openapi: dict):
    assert schemas.Modality is search.Modality
    assert schemas.HitPublic.model_fields["modality"].annotation is search.Modality
    assert openapi["Modality"]["enum"] == ["image", "text"]
    assert openapi["HitPublic"]["properties"]["modality"]["$ref"].endswith("/Modality")


def test_filter_caps_hold_in_the_api_and_the_engine(client: TestClient):
    too_many_values = {"category": list(range(search.MAX_IN_VALUES + 1))}
    too_many_fields = {f"f{i}": 1 for i in range(search.MAX_FILTER_FIELDS + 1)}
    for filters in (too_many_values, too_many_fields):
        response = client.post("/v1/search", json={"collection": "shop", "text": "fruit",
                                                   "filters": filters})
        assert response.status_code == 422, filters
        with pytest.raises(InvalidQueryError, match="at most"):
            parse_filters(filters)
    at_cap = {"category": {"in": [f"c{i}" for i in range(search.MAX_IN_VALUES)]}}
    assert len(parse_filters(at_cap)[0].value) == search.MAX_IN_VALUES
    ok = client.post("/v1/search", json={"collection": "shop", "text": "fruit",
                                         "filters": at_cap})
    assert ok.status_code == 200 and ok.json()["hits"] == []


@pytest.mark.parametrize("options", [{"k": search.MAX_K + 1}, {"nprobe": search.MAX_NPROBE + 1},
                                     {"rerank_factor": search.MAX_RERANK_FACTOR + 1},
                                     {"offset": search.MAX_OFFSET + 1}])
def test_query_caps_hold_in_the_api_and_the_engine(client: TestClient, options: dict):
    response = client.post("/v1/search", json={"collection": "shop", "text": "x", **options})
    assert response.status_code == 422
    if "offset" in options:  # the engine bounds offset + k
        options = {"offset": search.MAX_OFFSET + 1, "k": search.MAX_K}
    with pytest.raises(InvalidQueryError):
        SearchQuery.text("shop", "x", **options)


def test_engine_refuses_oversized_query_parts():
    with pytest.raises(InvalidQueryError, match="characters"):
        QueryPart(text="a" * (search.MAX_TEXT_CHARS + 1))
    with pytest.raises(InvalidQueryError, match="vector"):
        QueryPart(vector=(0.0,) * (search.MAX_VECTOR_DIM + 1))
    with pytest.raises(InvalidQueryError, match="inputs"):
        SearchQuery("shop", (QueryPart(text="x"),) * (search.MAX_QUERY_PARTS + 1))
