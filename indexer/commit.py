"""The commit step of a Ray indexing job: staged shards into the catalog and the index.

`ShardCommitter` owns the collection for the job (on the cluster it runs as one Ray actor,
so neither the driver nor the encoders ever hold the index). Each shard goes in through
`Collection.write_bulk` in large batches: items new to the collection are bulk-loaded
(items, attribute rows, lexical entries and vector rows in one transaction: `COPY` on
PostgreSQL, batched executemany on SQLite), the others take the local engine's write
path, so content-hash upserts and the "changed during the run" rule are the same.
A shard is marked in the staging ledger only after its write returned: a shard committed
twice (a kill between the two) upserts unchanged items, so nothing is doubled."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from indexer.pipeline import IndexOptions
from indexer.staging import StagingArea, read_shard
from search import (
    Collection,
    IndexStats,
    ItemFailure,
    MediaMode,
    PrepareContext,
    PreparedItem,
    RemotePolicy,
    Settings,
    Workspace,
    index_stats,
)

COMMIT_ROWS = 8192  # rows per catalog transaction (a bulk load's batch)


@dataclass(frozen=True)
class CommitTarget:
    """What the workers need to know about the collection (picklable)."""

    collection_id: int
    model: str
    pretrained: str | None
    context: PrepareContext


@dataclass
class ShardReport:
    shard: str
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    skipped: bool = False  # already in the ledger


class ShardCommitter:
    def __init__(self, settings: Settings, collection: str, model: str | None,
                 pretrained: str | None, staging_root: str) -> None:
        # nothing opened here: an error in a method reaches the driver as the typed error
        # itself (an actor's constructor error only kills the actor)
        self.settings, self.name = settings, collection
        self.model, self.pretrained = model, pretrained
        self.staging = StagingArea(Path(staging_root))
        self.seen: set[str] = set()  # ids in the source, for --prune
        self.resumed: set[str] = set()  # ids committed from a killed run's shards
        self.workspace: Workspace | None = None
        self._collection: Collection | None = None

    @property
    def collection(self) -> Collection:
        if self._collection is None:
            from indexer.operations import get_or_create

            self.workspace = Workspace.open(self.settings)
            self._collection = get_or_create(self.workspace, self.name, self.model,
                                             self.pretrained)
            self._collection.reconcile()  # drop what a killed earlier run left half-written
        return self._collection

    def target(self, media: MediaMode, remote: RemotePolicy | None = None) -> CommitTarget:
        info = self.collection.info
        return CommitTarget(info.id, info.model, info.pretrained,
                            self.collection.prepare_context(media, remote))

    def commit(self, shard: str, job_id: int | None, *, resumed: bool = False
               ) -> ShardReport:
        """Load one shard. `resumed`: a shard a killed run staged; this run reads the
        source again, so its failures and ids are reported then, and its items, found
        unchanged then, are counted once (as stored now), not twice."""
        path = Path(shard)
        report = ShardReport(path.name)
        if path.name in self.staging.committed():
            report.skipped = True
            return report
        for batch in read_shard(path, COMMIT_ROWS):
            failures = [e for e in batch if isinstance(e, ItemFailure)]
            items = [e for e in batch if isinstance(e, PreparedItem)]
            if not resumed:
                self.seen.update(e.external_id for e in batch if e.external_id)
                self.collection.record_failures(failures, job_id)
                report.failures += failures
            if items:
                self._write(items, job_id, resumed, report)
        self.staging.mark_committed(path)
        return report

    def _write(self, items: list[PreparedItem], job_id: int | None, resumed: bool,
               report: ShardReport) -> None:
        added = self.collection.write_bulk(items, job_id=job_id)
        recounted = 0
        if resumed:
            self.resumed.update(p.external_id for p in items)
        else:
            recounted = min(added.unchanged, sum(p.external_id in self.resumed for p in items))
        report.new += added.new
        report.changed += added.changed
        report.unchanged += added.unchanged - recounted
        report.failures += added.failures

    def prune(self) -> int:
        """Delete items that are no longer in the (completely read) source."""
        catalog, cid = self.collection.catalog, self.collection.info.id
        gone = [e for e in catalog.external_ids(cid) if e not in self.seen]
        if gone:
            self.collection.delete_items(gone)
        return len(gone)

    def generate(self, options: IndexOptions, job_id: int) -> tuple[int, list[ItemFailure]]:
        from search import generate_missing, load_generator

        settings = self.settings
        generator = load_generator(options.generator, options.generator_model,
                                   device=settings.device, offline=settings.offline)
        report = generate_missing(self.collection, generator, batch_size=options.batch_size,
                                  job_id=job_id)
        return report.generated, list(report.failures)

    def save(self) -> dict[str, IndexStats]:
        return index_stats(self.collection.save())

    def close(self) -> None:
        if self.workspace is not None:
            self.workspace.close()
