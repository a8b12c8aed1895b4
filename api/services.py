"""The heavy objects of one app, built once at startup and shared by every request."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import anyio.to_thread
import faiss
import torch

from api.config import ApiConfig
from api.fetch import ImageFetcher
from api.metrics import Metrics
from api.problems import ApiError
from api.ratelimit import RateLimiter
from search import (
    CollectionRefresher,
    ImageGenerator,
    Searcher,
    Settings,
    Workspace,
    XmodalError,
    load_generator,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    config: ApiConfig
    workspace: Workspace
    searcher: Searcher
    refresher: CollectionRefresher
    metrics: Metrics
    fetcher: ImageFetcher
    slots: anyio.CapacityLimiter | None = None  # created on first use, in the event loop
    write_slots: anyio.CapacityLimiter | None = None  # the writers' own lane (see run_write)
    ready: threading.Event = field(default_factory=threading.Event)
    loading: dict[str, str] = field(default_factory=dict)  # name -> loading|loaded|failed
    generate_limiter: RateLimiter = field(init=False)  # from config, in __post_init__
    _generator: ImageGenerator | None = None
    _generator_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings, config: ApiConfig, metrics: Metrics) -> Services:
        """Catalog, encoder and helpers; collections are opened by `start` (background)."""
        if config.compute_threads is not None:
            # one request runs one query: intra-op threads only fight each other
            torch.set_num_threads(config.compute_threads)
            faiss.omp_set_num_threads(config.compute_threads)
        if config.switch_interval_ms is not None:
            # A write's Python (SQL, bookkeeping) and a query share the GIL: a query
            # coming back from a torch or FAISS call waits for the switch interval
            # each time (5 ms by default, many times per query). Shorter: reads first.
            sys.setswitchinterval(config.switch_interval_ms / 1000)
        workspace = Workspace.open(settings)
        workspace.encoder()  # the default model: loaded now, not on the first query
        searcher = Searcher(workspace)
        metrics.watch(workspace, searcher.query_cache)
        refresher = CollectionRefresher(  # a read-only replica never rewrites storage
            workspace, on_change=metrics.on_reload,
            maintain_every_s=None if config.read_only else settings.maintenance_interval_s,
            read_only=config.read_only)
        return cls(settings, config, workspace, searcher, refresher, metrics,
                   ImageFetcher(config))

    def __post_init__(self) -> None:
        self.generate_limiter = RateLimiter(self.config.generate_per_minute)

    def generator(self) -> ImageGenerator:
        """The configured image generator, loaded on first use (most servers never
        generate) and kept; a load failure is raised each time, never cached."""
        with self._generator_lock:
            if self._generator is None:
                self._generator = load_generator(self.config.generator,
                                                 self.config.generator_model,
                                                 device=self.settings.device,
                                                 offline=self.settings.offline)
            return self._generator

    def start(self) -> None:
        threading.Thread(target=self._preload, name="xmodal-preload", daemon=True).start()

    def _preload(self) -> None:
        """Open every collection (indexes into memory), then watch the disk for changes."""
        names = [i.name for i in self.workspace.list_collections()] if self.config.preload \
            else []
        self.loading.update(dict.fromkeys(names, "loading"))
        for name in names:
            try:
                self.workspace.collection(name)
                self.searcher.warm(name)
                self.loading[name] = "loaded"
            except XmodalError as exc:
                log.error("could not open collection %r: %s", name, exc)
                self.loading[name] = "failed"
        self.ready.set()
        self.refresher.start(self.config.reload_interval_s)

    def close(self) -> None:
        self.refresher.stop()
        self.workspace.close()

    async def run(self, work: Callable[[], T]) -> T:
        """Run blocking engine work on a worker thread, bounded by the request timeout.

        At most `compute_slots` run at once: more threads than cores only queue on the
        GIL and the index locks, which stretches every request. On timeout (waiting
        included) the client gets a 503 at once; a started thread finishes in the
        background (Python cannot cancel it)."""
        if self.slots is None:
            self.slots = anyio.CapacityLimiter(self.config.compute_slots or os.cpu_count() or 1)
        return await self._run_on(self.slots, work)

    async def run_write(self, work: Callable[[], T]) -> T:
        """Run a write (item upsert or delete) in the writers' own lane.

        A write spends most of its time off the CPU: waiting for the collection's
        cross-process lock (another writer, the indexer, the refresher), and in fsync.
        In the readers' slots that wait would stall every query queued behind it; in
        their own lane (`write_slots`, default 1: writes serialise on the collection
        lock anyway) reads keep their slots, and a write's encoder runs on the
        process's intra-op threads like any call."""
        if self.write_slots is None:
            self.write_slots = anyio.CapacityLimiter(self.config.write_slots)
        threads = self.config.write_threads

        def write() -> T:
            # OpenMP threads are per calling thread, and pool threads also serve reads
            # (which choose their own): set the writer's every time
            torch.set_num_threads(threads)
            return work()

        return await self._run_on(self.write_slots, write)

    async def _run_on(self, slots: anyio.CapacityLimiter, work: Callable[[], T]) -> T:
        try:
            with anyio.fail_after(self.config.request_timeout_s):
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True,
                                                      limiter=slots)
        except TimeoutError:
            raise ApiError(503, "timeout", f"the request took longer than "
                           f"{self.config.request_timeout_s:g} s", {"Retry-After": "1"}) from None
