"""`POST /v1/search` (JSON) and `POST /v1/search/image` (multipart upload)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field, ValidationError

from api import queries
from api.deps import ConfigDep, FetcherDep, MetricsDep, RunnerDep, SearcherDep, WorkspaceDep
from api.metrics import Metrics
from api.problems import problem_responses
from api.schemas import (
    CollectionName,
    SafeStr,
    SearchOptions,
    SearchRequest,
    SearchResponse,
)
from search import (
    MAX_K,
    MAX_OFFSET,
    MAX_TEXT_CHARS,
    Collection,
    ImageTooLargeError,
    InvalidQueryError,
    QueryPart,
    Searcher,
    SearchMode,
    SearchQuery,
    Target,
    Workspace,
)

router = APIRouter(prefix="/v1", tags=["search"])
ERRORS = problem_responses(400, 403, 404, 413, 422, 503)


QueryBuilder = Callable[[Collection], SearchQuery]


def _execute(workspace: Workspace, searcher: Searcher, metrics: Metrics, name: str,
             build: QueryBuilder, root_path: str) -> SearchResponse:
    """Build the query (it needs the collection) and run it; runs on a worker thread."""
    started = time.perf_counter()
    result = searcher.search(build(workspace.collection(name)))
    metrics.observe_search(result.timings_ms)
    total_ms = (time.perf_counter() - started) * 1000
    return queries.search_response(result, total_ms, root_path)


@router.post("/search", response_model=SearchResponse, responses=ERRORS,
             summary="Search by text, image, vector or a weighted mix")
async def search(body: SearchRequest, request: Request, workspace: WorkspaceDep,
                 searcher: SearcherDep, config: ConfigDep, fetcher: FetcherDep,
                 metrics: MetricsDep, run: RunnerDep) -> SearchResponse:
    def build(collection: Collection) -> SearchQuery:
        parts = queries.query_parts(body, config, collection, fetcher.fetch)
        return queries.search_query(collection, parts, body)

    root = request.scope.get("root_path", "")
    return await run(lambda: _execute(workspace, searcher, metrics, body.collection, build,
                                      root))


class ImageSearchForm(BaseModel):
    """Form fields of an image upload search (the file goes in the `image` part)."""

    collection: CollectionName
    text: SafeStr | None = Field(default=None, max_length=MAX_TEXT_CHARS,
                             description="Optional text, combined with the image")
    target: Target = Target.ANY
    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    filters: SafeStr | None = Field(default=None, max_length=MAX_TEXT_CHARS,
                                    description="JSON object, as in /v1/search")
    min_score: float | None = Field(default=None, ge=-1, le=1, allow_inf_nan=False)
    dedupe: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    include_generated: bool = True
    mode: SearchMode | None = Field(
        default=None, description="With text: the text's keyword side may be fused (hybrid); "
                                  "the image is always searched by vector")
    facets: SafeStr | None = Field(default=None, max_length=MAX_TEXT_CHARS,
                                   description="JSON list, as in /v1/search")

    def options(self) -> SearchOptions:
        try:
            filters = json.loads(self.filters) if self.filters else None
            facets = json.loads(self.facets) if self.facets else None
            return SearchOptions(target=self.target, k=self.k, offset=self.offset,
                                 filters=filters, min_score=self.min_score, dedupe=self.dedupe,
                                 include_generated=self.include_generated, mode=self.mode,
                                 facets=facets)
        except (json.JSONDecodeError, ValidationError) as exc:
            raise InvalidQueryError(f"filters or facets: {exc}") from None


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLargeError(f"upload is over the {limit} byte limit")
    return data


@router.post("/search/image", response_model=SearchResponse, responses=ERRORS,
             summary="Search with an uploaded image (image-to-image, image-to-text)")
async def search_image(form: Annotated[ImageSearchForm, Form()],
                       image: Annotated[UploadFile, File(description="The query image")],
                       request: Request, workspace: WorkspaceDep, searcher: SearcherDep,
                       config: ConfigDep, metrics: MetricsDep,
                       run: RunnerDep) -> SearchResponse:
    data = await read_upload(image, config.max_upload_bytes)
    options = form.options()
    text = form.text.strip() if form.text and form.text.strip() else None
    if text is not None:
        queries.check_text(text, config)

    def build(collection: Collection) -> SearchQuery:
        parts = [QueryPart(image=queries.query_image(data, config, collection))]
        parts += [QueryPart(text=text)] if text else []
        return queries.search_query(collection, tuple(parts), options)

    root = request.scope.get("root_path", "")
    return await run(lambda: _execute(workspace, searcher, metrics, form.collection, build,
                                      root))
