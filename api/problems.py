"""Every error leaves the service as RFC 9457 problem+json; engine errors are mapped here, once.

Client mistakes are 4xx with a detail naming the reason; only faults of the server
(a damaged index, an unexpected exception) are 5xx.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from search import errors as engine

log = logging.getLogger(__name__)
PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:xmodal:problem:"


class Problem(BaseModel):
    """An error response (RFC 9457)."""

    type: str = Field(description="URN naming the kind of problem, e.g. "
                                  "urn:xmodal:problem:unknown-collection")
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Field-level validation errors (loc, msg, type).")


class ApiError(Exception):
    """A problem raised by the HTTP layer itself (auth, limits, timeouts, image_url)."""

    def __init__(self, status: int, slug: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.headers = status, slug, detail, headers


# (status, slug) per engine error class; the most specific class in the MRO wins.
ENGINE_ERRORS: dict[type[BaseException], tuple[int, str]] = {
    engine.ImageTooLargeError: (413, "image-too-large"),
    engine.CorruptImageError: (422, "bad-image"),
    engine.InvalidQueryError: (422, "invalid-query"),
    engine.UnknownFieldError: (422, "unknown-field"),
    engine.InvalidPromptError: (422, "invalid-prompt"),
    engine.UnknownGeneratorError: (422, "unknown-generator"),
    engine.UnknownModelError: (422, "unknown-model"),
    engine.InvalidInputError: (422, "invalid-input"),
    engine.UnknownCollectionError: (404, "unknown-collection"),
    engine.UnknownItemError: (404, "unknown-item"),
    engine.MediaNotFoundError: (404, "media-not-found"),
    engine.NotFoundError: (404, "not-found"),
    engine.CollectionExistsError: (409, "collection-exists"),
    engine.ModelError: (503, "model-unavailable"),
    engine.GeneratorError: (503, "generator-unavailable"),
    engine.IndexError_: (503, "index-unavailable"),
    engine.StorageError: (507, "insufficient-storage"),
    engine.CatalogUnavailableError: (503, "catalog-unavailable"),
    engine.XmodalError: (500, "engine-error"),
}

_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 413: "Content too large",
           415: "Unsupported media type", 422: "Unprocessable content",
           429: "Too many requests",
           500: "Internal server error", 503: "Service unavailable",
           507: "Insufficient storage"}


def engine_status(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ENGINE_ERRORS:
            return ENGINE_ERRORS[cls]
    return 500, "internal-error"


def problem_response(status: int, slug: str, detail: str | None, *,
                     errors: list[dict[str, Any]] | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(type=_TYPE_PREFIX + slug, title=_TITLES.get(status, "Error"),
                   status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status,
                        media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only loc/msg/type: `input` may echo a megabyte of base64, `ctx` may hold exceptions.
    return [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in exc.errors()]


async def _on_engine_error(request: Request, exc: Exception) -> JSONResponse:
    status, slug = engine_status(exc)
    if status >= 500:
        log.error("engine error on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(status, slug, str(exc))


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(exc.status, exc.slug, exc.detail, headers=exc.headers)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where, message = ".".join(first["loc"]), str(first["msg"])
    detail = f"{where}: {message}" if where else message
    return problem_response(422, "validation-error", detail, errors=errors)


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    slug = _TITLES.get(exc.status_code, "error").lower().replace(" ", "-")
    return problem_response(exc.status_code, slug, detail, headers=dict(exc.headers or {}))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal-error", "unexpected server error")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(engine.XmodalError, _on_engine_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json for these statuses."""
    schema = {"$ref": "#/components/schemas/Problem"}  # added by `add_problem_schema`
    return {status: {"description": _TITLES.get(status, "Error"),
                     "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}
            for status in statuses}


def add_problem_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    return openapi
