"""Annotated dependencies: how routes get the shared objects and the write guard."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from api.config import ApiConfig
from api.problems import ApiError
from api.services import Services
from search import Searcher, Workspace

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="Required by write endpoints when the server "
                                           "has XMODAL_API_KEY set")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_workspace(services: ServicesDep) -> Workspace:
    return services.workspace


def get_searcher(services: ServicesDep) -> Searcher:
    return services.searcher


def get_config(services: ServicesDep) -> ApiConfig:
    return services.config


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
ConfigDep = Annotated[ApiConfig, Depends(get_config)]


def require_writer(services: ServicesDep,
                   api_key: Annotated[str | None, Security(_api_key_header)] = None) -> None:
    """Writes: refused on a read-only server; need the key when one is configured."""
    if services.config.read_only:
        raise ApiError(403, "read-only", "this server is read-only (XMODAL_API_READ_ONLY)")
    expected = services.settings.api_key
    if expected is None:
        return
    given = (api_key or "").encode()
    if not secrets.compare_digest(given, expected.get_secret_value().encode()):
        detail = "missing X-API-Key header" if not api_key else "wrong API key"
        raise ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "X-API-Key"})


WriterDep = Annotated[None, Depends(require_writer)]
