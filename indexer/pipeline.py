"""The local indexing pipeline: read -> prepare (worker processes) -> encode -> write.

`LocalPreparer` turns source rows into prepared items; `JobRunner` writes them and closes
the job. The Ray path (indexer/distributed.py) runs the same prepare and write functions
as Ray Data stages."""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from indexer.decode_pool import DecodePool, PendingBatch, PoolSpec
from indexer.readers import RowError, SourceRecord
from search import (
    Collection,
    ItemFailure,
    MediaMode,
    PrepareContext,
    PreparedItem,
    RemotePolicy,
    prepare_batch,
)

Prepared = PreparedItem | ItemFailure | RowError
KnownHashes = Callable[[list[str]], dict[str, str]]

_worker_ctx: PrepareContext | None = None
_INLINE_PIECE = 64  # items the parent fetches and prepares at a time


@dataclass(frozen=True)
class IndexOptions:
    batch_size: int = 64
    workers: int = 2  # decode/preprocess processes; 0 runs inline
    prune: bool = False
    strict: bool = False
    progress: bool = True
    report_path: Path | None = None
    chunk_size: int = 256  # records handed to the workers at a time
    generate_missing: bool = False  # give text-only items a generated image
    generator: str = "house"
    generator_model: str | None = None
    # read images and sidecars whose symlink leads outside the source's root
    follow_external_symlinks: bool = False
    sort_window: int = 256  # items whose texts are batched by length (jobs.JobRunner)
    media: MediaMode = MediaMode.COPY  # copy images into the store, or reference them
    remote: RemotePolicy = RemotePolicy()  # image URLs: what may be fetched (search.remote)


def _init_worker(ctx: PrepareContext) -> None:
    global _worker_ctx
    torch.set_num_threads(1)  # the parent's encoder owns the cores' BLAS threads
    _worker_ctx = ctx


PrepareTask = tuple[SourceRecord, str | None]  # a record and its known content hash


def _prepare_in_worker(tasks: list[PrepareTask]) -> list[PreparedItem | ItemFailure]:
    """One piece of a chunk: its remote images fetched concurrently, then decoded."""
    assert _worker_ctx is not None
    return prepare_batch([(record.item, known) for record, known in tasks], _worker_ctx)


def _worker_died(task: PrepareTask, reason: str) -> ItemFailure:
    item_id = task[0].item.external_id
    return ItemFailure(item_id if isinstance(item_id, str) else None, "decode", reason)


def _pool_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fresh single-threaded server that imported the engine once.

    Plain fork is unsafe (the parent's torch threads can deadlock a child) and spawn makes
    every worker import torch, open_clip and the engine again: seconds of CPU each, taken
    from the encoder on a small machine (measured with py-spy: README, Benchmarks)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # no effect once the server runs: harmless
    return context


def chunked(rows: Iterable, size: int) -> Iterator[list]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class LocalPreparer:
    """Decode and preprocess in worker processes, a few chunks ahead of the writer."""

    def __init__(self, ctx: PrepareContext, workers: int, chunk_size: int, *,
                 prepare: Callable[[list[PrepareTask]], list[PreparedItem | ItemFailure]]
                 = _prepare_in_worker) -> None:
        """`prepare` runs in the workers (module-level: it is pickled by reference)."""
        self.ctx, self.workers, self.chunk_size = ctx, workers, chunk_size
        self.prepare = prepare

    def stream(self, rows: Iterable[SourceRecord | RowError], known: KnownHashes
               ) -> Iterator[Prepared]:
        """Prepared items in source order. The parent prepares the first chunk itself
        while the workers start (spawning one imports torch: seconds), so the encoder is
        busy from the start; a source of one chunk never starts a pool at all."""
        chunks = chunked(rows, self.chunk_size)
        first, second = next(chunks, None), next(chunks, None)
        if first is None:
            return
        if self.workers <= 0 or second is None:
            for chunk in itertools.chain([first], [second] if second else [], chunks):
                yield from self._inline(chunk, known)
            return
        spec = PoolSpec(self.workers, _pool_context(), _init_worker, (self.ctx,))
        with DecodePool(spec, self.prepare, _worker_died) as pool:
            window: deque = deque([self._submit(pool, second, known)])
            yield from self._inline(first, known)
            for chunk in chunks:
                window.append(self._submit(pool, chunk, known))
                if len(window) > 2:  # keep workers busy while the parent encodes
                    yield from window.popleft()
            while window:
                yield from window.popleft()

    def _inline(self, chunk: list, known: KnownHashes) -> Iterator[Prepared]:
        records = [r for r in chunk if isinstance(r, SourceRecord)]
        hashes = known([r.item.external_id for r in records])
        yield from (r for r in chunk if isinstance(r, RowError))
        # the encoder is idle while the parent prepares: decode on as many threads as it
        # computes with (between encoder batches, so the two never compete for cores)
        threads = torch.get_num_threads()
        for piece in chunked(records, _INLINE_PIECE):  # bounds the fetched bytes held
            yield from prepare_batch([(r.item, hashes.get(r.item.external_id)) for r in piece],
                                     self.ctx, threads)

    def _submit(self, pool: DecodePool, chunk: list, known: KnownHashes
                ) -> Iterator[Prepared]:
        """Submits the chunk now; results are read when iterated. A worker killed by
        the OS costs a retry of its batch, then failures of the items that kill it."""
        records = [r for r in chunk if isinstance(r, SourceRecord)]
        hashes = known([r.item.external_id for r in records])
        tasks = [(r, hashes.get(r.item.external_id)) for r in records]
        # pieces of ~1/16 chunk: small enough to share out, big enough for the fetch
        # threads of one worker to overlap a piece's URLs
        tasks = [(r, hashes.get(r.item.external_id)) for r in records]
        pending: list[PendingBatch] = pool.submit(tasks, max(1, len(tasks) // 16))
        errors = [r for r in chunk if isinstance(r, RowError)]
        return itertools.chain(errors, pool.results(pending))


def local_preparer(collection: Collection, options: IndexOptions) -> LocalPreparer:
    return LocalPreparer(collection.prepare_context(options.media, options.remote),
                         options.workers, options.chunk_size)
