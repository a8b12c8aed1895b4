"""Annotated dependencies: each route takes the few shared objects it uses, by type.

Every alias resolves through one small function of the app's `Services`, so a test can
swap any one of them with `app.dependency_overrides[get_searcher] = ...`. They are all
`async def`: FastAPI runs a plain `def` dependency on the thread pool, and a search's
seven of them cost seven thread hand-offs (~5 ms a request on 2 busy cores) for work
that only reads an attribute."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Protocol, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from api.config import ApiConfig
from api.fetch import ImageFetcher
from api.metrics import Metrics
from api.problems import ApiError
from api.ratelimit import RateLimiter
from api.services import Services
from search import ImageGenerator, Searcher, Settings, Workspace

T = TypeVar("T")

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="Required by write endpoints when the server "
                                           "has XMODAL_API_KEY set")


class Runner(Protocol):
    """Runs blocking engine work on a worker thread, bounded by the request timeout."""

    def __call__(self, work: Callable[[], T]) -> Awaitable[T]: ...


@dataclass(frozen=True)
class LoadState:
    ready: bool
    collections: dict[str, str]  # name -> loading | loaded | failed


async def get_services(request: Request) -> Services:
    return request.app.state.services


_ServicesDep = Annotated[Services, Depends(get_services)]


async def get_workspace(services: _ServicesDep) -> Workspace:
    return services.workspace


async def get_searcher(services: _ServicesDep) -> Searcher:
    return services.searcher


async def get_config(services: _ServicesDep) -> ApiConfig:
    return services.config


async def get_settings(services: _ServicesDep) -> Settings:
    return services.settings


async def get_runner(services: _ServicesDep) -> Runner:
    return services.run


async def get_write_runner(services: _ServicesDep) -> Runner:
    return services.run_write


async def get_metrics(services: _ServicesDep) -> Metrics:
    return services.metrics


async def get_fetcher(services: _ServicesDep) -> ImageFetcher:
    return services.fetcher


async def get_generator_loader(services: _ServicesDep) -> Callable[[], ImageGenerator]:
    # a loader, not the generator: loading is slow and runs on a worker (via the runner)
    return services.generator


async def get_generate_limiter(services: _ServicesDep) -> RateLimiter:
    return services.generate_limiter


async def get_load_state(services: _ServicesDep) -> LoadState:
    return LoadState(services.ready.is_set(), dict(services.loading))


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
ConfigDep = Annotated[ApiConfig, Depends(get_config)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
WriteRunnerDep = Annotated[Runner, Depends(get_write_runner)]  # item writes: their own lane
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
FetcherDep = Annotated[ImageFetcher, Depends(get_fetcher)]
GeneratorLoaderDep = Annotated[Callable[[], ImageGenerator], Depends(get_generator_loader)]
GenerateLimiterDep = Annotated[RateLimiter, Depends(get_generate_limiter)]
LoadStateDep = Annotated[LoadState, Depends(get_load_state)]


async def require_writer(config: ConfigDep, settings: SettingsDep,
                         api_key: Annotated[str | None, Security(_api_key_header)] = None) -> None:
    """Writes: refused on a read-only server; need the key when one is configured."""
    if config.read_only:
        raise ApiError(403, "read-only", "this server is read-only (XMODAL_API_READ_ONLY)")
    expected = settings.api_key
    if expected is None:
        return
    given = (api_key or "").encode()
    if not secrets.compare_digest(given, expected.get_secret_value().encode()):
        detail = "missing X-API-Key header" if not api_key else "wrong API key"
        raise ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "X-API-Key"})


WriterDep = Annotated[None, Depends(require_writer)]
