"""`create_app(settings)`: the FastAPI service. Nothing heavy happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from api.config import ApiConfig
from api.metrics import Metrics, MetricsMiddleware
from api.middleware import BodyLimitMiddleware
from api.problems import add_problem_schema, install_problem_handlers
from api.routes import collections, compat, generate, health, items, media, search, web
from api.routes.compat import KnnRequest, MetadataRequest
from api.schemas import ItemWrite
from api.services import Services
from search import MAX_TEXT_CHARS, Settings

DESCRIPTION = """Cross-modal (text <-> image) search over your collections.

Errors are `application/problem+json` (RFC 9457). Write endpoints need `X-API-Key`
when the server has `XMODAL_API_KEY` set. clip-retrieval clients can use
`/knn-service`, `/metadata` and `/indices-list`."""

# Multipart form of PUT /v1/collections/{name}/items/{external_id}.
ITEM_UPLOAD_SCHEMA = {
    "title": "ItemUpload", "type": "object", "properties": {
        "text": {"type": "string", "maxLength": MAX_TEXT_CHARS},
        "attributes": {"type": "string", "description": "JSON object"},
        "image": {"type": "string", "format": "binary"}}}


def serving_settings(settings: Settings, config: ApiConfig) -> Settings:
    """A read-only replica never migrates (that is `xmodal-index migrate`'s job, run once)
    and maps index versions instead of reading them in, unless told otherwise."""
    if not config.read_only:
        return settings
    defaults = {"migrate_on_open": False, "mmap_index": True}
    return settings.model_copy(update={key: value for key, value in defaults.items()
                                       if key not in settings.model_fields_set})


def create_app(settings: Settings, config: ApiConfig | None = None) -> FastAPI:
    config = config or ApiConfig()
    settings = serving_settings(settings, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await anyio.to_thread.run_sync(Services.open, settings, config,
                                                  app.state.metrics)
        app.state.services = services
        services.start()  # opens collections in the background; /readyz says when done
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(services.close)

    app = FastAPI(title="xmodal", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.metrics = Metrics()
    install_problem_handlers(app)
    for module in (search, collections, items, media, generate, compat, health, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.WEB_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_request_bytes)
    if config.cors_origins:  # off unless configured: no Access-Control-* headers at all
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["content-type", "x-api-key", "authorization"])
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: times all
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the bodies that routes parse themselves (documented anyway)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
        add_problem_schema(spec)
        schemas = spec["components"]["schemas"]
        ref = "#/components/schemas/{model}"
        for model in (ItemWrite, KnnRequest, MetadataRequest):
            for name, schema in model.model_json_schema(ref_template=ref).pop("$defs",
                                                                               {}).items():
                schemas.setdefault(name, schema)
            schemas[model.__name__] = model.model_json_schema(ref_template=ref)
            schemas[model.__name__].pop("$defs", None)
        schemas["ItemUpload"] = ITEM_UPLOAD_SCHEMA
        app.openapi_schema = spec
    return app.openapi_schema


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` workers: settings from XMODAL_* variables."""
    return create_app(Settings(), ApiConfig())
