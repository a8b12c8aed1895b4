"""Scale-out on Ray: the same prepare + encode stages in a pool of encoder actors (one GPU
per actor where the cluster has GPUs, CPU actors otherwise); the driver writes, as in the
local run.

The driver streams: it reads the source row by row and keeps at most `2 x actors` batches
in flight, so its memory is bounded by the batch size, never by the source (the earlier
version collected every row into one `ray.data.from_items` list). Results come back in
source order, so failures, content-hash skips and `--generate-missing` behave exactly as
in the local engine. Not yet here: Ray Data reading the source itself on the workers,
workers writing embedding shards, and a commit step on the driver (deploy/SCALING.md)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from indexer.pipeline import IndexOptions, KnownHashes, Prepared, chunked
from indexer.readers import RowError, SourceRecord
from search import (
    Collection,
    ItemFailure,
    PrepareContext,
    PreparedItem,
    embed_prepared,
    prepare_or_fail,
)

Task = tuple[SourceRecord, str | None]  # a record and its stored content hash, if any
IN_FLIGHT_PER_ACTOR = 2  # one batch running, one queued: actors never wait for the driver


class EmbedActor:
    """Ray actor: loads its encoder once, then prepares and embeds batches of records."""

    def __init__(self, ctx: PrepareContext, model: str, pretrained: str | None,
                 device: str) -> None:
        from search import load_encoder

        self.ctx = ctx
        self.encoder = load_encoder(model, pretrained, device=device)

    def embed(self, tasks: list[Task]) -> list[PreparedItem | ItemFailure]:
        results = [prepare_or_fail(record.item, self.ctx, known) for record, known in tasks]
        embed_prepared(self.encoder, [r for r in results if isinstance(r, PreparedItem)])
        return results


class RayPreparer:
    def __init__(self, collection: Collection, options: IndexOptions,
                 address: str | None = None) -> None:
        self.collection, self.options, self.address = collection, options, address

    def _init_ray(self) -> dict[str, float]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
        return ray.cluster_resources()

    def _start_actors(self, resources: dict[str, float]) -> list[Any]:
        import ray

        gpus = int(resources.get("GPU", 0))
        count = gpus or max(1, int(resources.get("CPU", 1)) // 2)
        remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(EmbedActor)
        info = self.collection.info
        context = self.collection.prepare_context(self.options.media)
        return [remote.remote(context, info.model, info.pretrained, "cuda" if gpus else "cpu")
                for _ in range(count)]

    def stream(self, rows: Iterable[SourceRecord | RowError], known: KnownHashes
               ) -> Iterator[Prepared]:
        import ray

        actors = self._start_actors(self._init_ray())
        in_flight: deque = deque()
        try:
            for number, chunk in enumerate(chunked(rows, self.options.batch_size)):
                records = [r for r in chunk if isinstance(r, SourceRecord)]
                yield from (r for r in chunk if isinstance(r, RowError))
                if not records:
                    continue
                hashes = known([r.item.external_id for r in records])
                tasks = [(r, hashes.get(r.item.external_id)) for r in records]
                in_flight.append(actors[number % len(actors)].embed.remote(tasks))
                while len(in_flight) >= IN_FLIGHT_PER_ACTOR * len(actors):
                    yield from ray.get(in_flight.popleft())
            while in_flight:
                yield from ray.get(in_flight.popleft())
        finally:
            for actor in actors:
                ray.kill(actor)
