"""clip-retrieval compatible endpoints, so `ClipClient` and clip-retrieval's front end can
point at xmodal: `POST /knn-service`, `POST /metadata`, `GET /indices-list`.

clip-retrieval parses bodies as JSON whatever the Content-Type (`ClipClient` sends
none, its front end sends text/plain), so these routes read the raw body. `indice_name`
is a collection name; `id` is our internal item id. Options we do not implement
(mclip, safety and violence models, aesthetic scoring) are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api import queries
from api.config import ApiConfig
from api.deps import ConfigDep, FetcherDep, MetricsDep, RunnerDep, SearcherDep, WorkspaceDep
from api.fetch import ImageFetcher
from api.metrics import Metrics
from api.problems import ApiError, problem_responses
from api.schemas import MAX_URL_CHARS, CollectionName, Int64, QueryVector, SafeStr
from search import (
    MAX_K,
    MAX_TEXT_CHARS,
    Collection,
    QueryPart,
    Searcher,
    SearchMode,
    SearchQuery,
    Target,
    Workspace,
    items_by_id,
)

router = APIRouter(tags=["clip-retrieval compatibility"])
DEDUPE_COSINE = 0.94  # clip-retrieval's own near-duplicate threshold
MAX_METADATA_IDS = 10_000


class KnnRequest(BaseModel):
    """clip-retrieval's /knn-service body; precedence text > image > image_url >
    embedding_input. `num_images` above 1000 is capped at 1000."""

    model_config = ConfigDict(extra="allow")
    text: SafeStr | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    image: str | None = Field(default=None, description="base64 image bytes")
    image_url: SafeStr | None = Field(default=None, max_length=MAX_URL_CHARS)
    embedding_input: QueryVector | None = None
    modality: Literal["image", "text"] = Field(description="Which index to search")
    num_images: int = Field(ge=1, le=1_000_000)
    num_result_ids: int | None = Field(default=None, ge=1, le=1_000_000)
    indice_name: CollectionName
    deduplicate: bool = False


class MetadataRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    ids: list[Int64] = Field(max_length=MAX_METADATA_IDS)
    indice_name: CollectionName


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":
            raise ApiError(400, "invalid-json", "the body is not valid JSON") from None
        raise RequestValidationError(errors) from None


def _query_part(body: KnnRequest, config: ApiConfig, fetcher: ImageFetcher,
                collection: Collection) -> QueryPart:
    if body.text:
        queries.check_text(body.text, config)
        return QueryPart(text=body.text)
    if body.image:
        data = queries.decode_base64(body.image, config)
        return QueryPart(image=queries.query_image(data, config, collection))
    if body.image_url:
        data = fetcher.fetch(body.image_url)
        return QueryPart(image=queries.query_image(data, config, collection))
    if body.embedding_input:
        return QueryPart(vector=tuple(body.embedding_input))  # normalised by the engine
    raise ApiError(422, "invalid-query", "give one of text, image, image_url, embedding_input")


def compat_metadata(text: str | None, image_ref: str | None, attributes: dict[str, Any],
                    base_url: str) -> dict[str, Any]:
    """clip-retrieval's columns (caption, url, image_path) over the item's own attributes;
    an attribute named url (e.g. from a LAION parquet) wins over our media URL."""
    image_url, _ = queries.media_urls(image_ref)
    if image_url and image_url.startswith("/"):
        image_url = base_url + image_url
    meta = dict(attributes)
    meta["caption"] = text if text is not None else attributes.get("caption")
    meta["image_path"] = image_ref
    meta["url"] = attributes.get("url") or image_url
    return meta


def _knn(workspace: Workspace, searcher: Searcher, metrics: Metrics,
         part: Callable[[Collection], QueryPart], body: KnnRequest,
         base_url: str) -> list[dict[str, Any]]:
    collection = workspace.collection(body.indice_name)
    # clip-retrieval's similarity is a cosine: vector mode, whatever the default mode is.
    query = SearchQuery(collection.name, (part(collection),),
                        target=Target(body.modality), k=min(body.num_images, MAX_K),
                        dedupe=DEDUPE_COSINE if body.deduplicate else None,
                        mode=SearchMode.VECTOR)
    result = searcher.search(query)
    metrics.observe_search(result.timings_ms)
    return [{**compat_metadata(h.text, h.image_ref, h.attributes, base_url),
             "id": h.item_id, "similarity": h.score} for h in result.hits]


@router.post("/knn-service", response_model=list[dict[str, Any]],
             openapi_extra=_body_doc(KnnRequest), responses=problem_responses(400, 404, 413,
                                                                              422, 503),
             summary="clip-retrieval: nearest neighbours of a text, image or embedding")
async def knn_service(request: Request, workspace: WorkspaceDep, searcher: SearcherDep,
                      config: ConfigDep, fetcher: FetcherDep, metrics: MetricsDep,
                      run: RunnerDep) -> list[dict[str, Any]]:
    body = await _parse(request, KnnRequest)
    base_url = str(request.base_url).rstrip("/")

    def part(collection: Collection) -> QueryPart:
        return _query_part(body, config, fetcher, collection)

    return await run(lambda: _knn(workspace, searcher, metrics, part, body, base_url))


def _metadata(workspace: Workspace, body: MetadataRequest,
              base_url: str) -> list[dict[str, Any]]:
    collection = workspace.collection(body.indice_name)
    found = items_by_id(collection.catalog, collection.info.id, body.ids)
    return [{"id": i, "metadata": compat_metadata(r.text, r.image_ref, r.attributes, base_url)
             if (r := found.get(i)) else {}} for i in body.ids]


@router.post("/metadata", response_model=list[dict[str, Any]],
             openapi_extra=_body_doc(MetadataRequest),
             responses=problem_responses(400, 404, 413, 422, 503),
             summary="clip-retrieval: metadata of result ids")
async def metadata(request: Request, workspace: WorkspaceDep,
                   run: RunnerDep) -> list[dict[str, Any]]:
    body = await _parse(request, MetadataRequest)
    base_url = str(request.base_url).rstrip("/")
    return await run(lambda: _metadata(workspace, body, base_url))


@router.get("/indices-list", response_model=list[str],
            summary="clip-retrieval: the index (collection) names")
async def indices_list(workspace: WorkspaceDep, run: RunnerDep) -> list[str]:
    return await run(lambda: [c.name for c in workspace.list_collections()])
