"""`POST /v1/generate`: a PNG preview of what the configured generator draws for a prompt."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import ConfigDep, GenerateLimiterDep, GeneratorLoaderDep, RunnerDep, WriterDep
from api.problems import ApiError, problem_responses
from api.schemas import GenerateRequest
from search import ImageGenerator

router = APIRouter(prefix="/v1", tags=["generate"])
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The generated image (PNG)"}}


def _png(load: Callable[[], ImageGenerator],
         body: GenerateRequest) -> tuple[bytes, dict[str, str]]:
    generator = load()
    image = generator.generate([body.prompt], seed=body.seed, size=body.size)[0]
    out = io.BytesIO()
    image.save(out, format="PNG")
    headers = {"X-Generator": generator.name, "X-Generator-Model": generator.model_id,
               "X-Seed": str(body.seed), "Cache-Control": "no-store"}
    return out.getvalue(), headers


@router.post("/generate", response_class=Response, responses={
    **PNG, **problem_responses(400, 401, 403, 413, 422, 429, 503)},
    summary="Generate an image for a prompt (preview; nothing is stored)")
async def generate(body: GenerateRequest, request: Request, config: ConfigDep,
                   load_generator: GeneratorLoaderDep, limiter: GenerateLimiterDep,
                   run: RunnerDep, _writer: WriterDep) -> Response:
    """Write-protected like item writes (it spends the server's compute), limited per
    client to `XMODAL_API_GENERATE_PER_MINUTE` and to sides of
    `XMODAL_API_GENERATE_MAX_SIZE` pixels."""
    limit = config.generate_max_size
    if body.size is not None and body.size > limit:
        raise ApiError(413, "image-too-large", f"size {body.size} is over this server's "
                       f"limit of {limit} px (XMODAL_API_GENERATE_MAX_SIZE)")
    limiter.take(request.client.host if request.client else "unknown")
    data, headers = await run(lambda: _png(load_generator, body))
    return Response(data, media_type="image/png", headers=headers)
