"""Prometheus metrics of one app instance (own registry: several apps may share a process)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search import Change, QueryEmbeddingCache, Workspace

# Seconds; dense around the 20/60 ms latency goals.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1,
                   0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class IndexSizes(Collector):
    """Vectors per loaded index, read at scrape time (never stale, never stored twice)."""

    def __init__(self) -> None:
        self.workspace: Workspace | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("xmodal_index_vectors", "Vectors in a loaded index",
                                   labels=["collection", "modality"])
        cached = self.workspace.cached_collections() if self.workspace else {}
        for name, collection in sorted(cached.items()):
            for modality, space in collection.spaces.items():
                family.add_metric([name, modality.value], space.count)
        yield family


class QueryCacheStats(Collector):
    """Hits and misses of the query-embedding cache, read at scrape time."""

    def __init__(self) -> None:
        self.cache: QueryEmbeddingCache | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        if self.cache is None:
            return
        stats = self.cache.stats()
        yield CounterMetricFamily("xmodal_query_cache_hits", "Text queries whose embedding "
                                  "came from the cache", value=stats.hits)
        yield CounterMetricFamily("xmodal_query_cache_misses", "Text queries encoded by the "
                                  "model", value=stats.misses)
        yield GaugeMetricFamily("xmodal_query_cache_hit_ratio", "Hits / lookups since start",
                                value=stats.hit_rate)
        yield GaugeMetricFamily("xmodal_query_cache_entries", "Embeddings held",
                                value=stats.entries)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "xmodal_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stages = Histogram(
            "xmodal_search_stage_seconds", "Search time per stage (encode, ann, sql)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter(
            "xmodal_http_errors_total", "Error responses (status >= 400) by route",
            ["route", "status"], registry=self.registry)
        self.reloads = Counter(
            "xmodal_collection_reloads_total", "Collections caught up with the disk",
            ["collection", "change"], registry=self.registry)
        self.index_sizes = IndexSizes()
        self.registry.register(self.index_sizes)
        self.query_cache = QueryCacheStats()
        self.registry.register(self.query_cache)

    def watch(self, workspace: Workspace, query_cache: QueryEmbeddingCache | None = None
              ) -> None:
        """Report this workspace's index sizes and query cache (set at each startup)."""
        self.index_sizes.workspace = workspace
        self.query_cache.cache = query_cache

    def observe_search(self, timings_ms: dict[str, float]) -> None:
        for key, ms in timings_ms.items():
            if key != "total_ms":
                self.stages.labels(key.removesuffix("_ms")).observe(ms / 1000)

    def on_reload(self, collection: str, change: Change) -> None:
        self.reloads.labels(collection, change.value).inc()


class MetricsMiddleware:
    """Times every HTTP request under its route template (never the raw path: cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started)
            if status >= 400:
                self.metrics.errors.labels(route, str(status)).inc()
