"""Scale-out on Ray Data: the same prepare + encode stages in an actor pool of encoders
(one GPU per actor where the cluster has GPUs); the driver writes, as in the local run."""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator

import numpy as np

from indexer.pipeline import IndexOptions, KnownHashes, Prepared, chunked
from indexer.readers import RowError, SourceRecord
from search import Collection, PrepareContext, PreparedItem, embed_prepared, prepare_or_fail


class EmbedActor:
    """Ray actor: loads its encoder once, then prepares and embeds batches of records."""

    def __init__(self, ctx: PrepareContext, model: str, pretrained: str | None,
                 device: str) -> None:
        from search import load_encoder

        self.ctx = ctx
        self.encoder = load_encoder(model, pretrained, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        results = []
        for payload in batch["payload"]:
            record, known = pickle.loads(payload)
            results.append(prepare_or_fail(record.item, self.ctx, known))
        embed_prepared(self.encoder, [r for r in results if isinstance(r, PreparedItem)])
        return {"payload": [pickle.dumps(r) for r in results]}


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

    def stream(self, rows: Iterable[SourceRecord | RowError], known: KnownHashes
               ) -> Iterator[Prepared]:
        import ray.data

        resources = self._init_ray()
        tasks: list[dict[str, bytes]] = []
        for chunk in chunked(rows, 4096):
            records = [r for r in chunk if isinstance(r, SourceRecord)]
            yield from (r for r in chunk if isinstance(r, RowError))
            hashes = known([r.item.external_id for r in records])
            tasks += [{"payload": pickle.dumps((r, hashes.get(r.item.external_id)))}
                      for r in records]
        if not tasks:
            return
        yield from self._run(ray.data.from_items(tasks), resources)

    def _run(self, dataset, resources: dict[str, float]) -> Iterator[Prepared]:
        gpus = int(resources.get("GPU", 0))
        actors = gpus or max(1, int(resources.get("CPU", 1)) // 2)
        info = self.collection.info
        device = "cuda" if gpus else "cpu"
        embedded = dataset.map_batches(
            EmbedActor, batch_size=self.options.batch_size, concurrency=actors,
            num_gpus=1 if gpus else 0, batch_format="numpy",
            fn_constructor_args=(self.collection.prepare_context(self.options.media), info.model,
                                 info.pretrained, device))
        for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
            for payload in batch["payload"]:
                yield pickle.loads(payload)
