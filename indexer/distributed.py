"""Scale-out on Ray Data: the source streams through the cluster; the driver keeps books.

    read (a Ray task runs our readers: indexer/ray_source.py)
      -> prepare (map_batches tasks: content-hash check, decode, preprocess, store media)
      -> encode (an actor pool: one GPU per actor, or CPU actors) -> a Parquet shard each
      -> commit (one actor: shards into the catalog and index, ledger; indexer/commit.py)

The driver never holds rows or vectors: it receives each shard's name and counts, passes
the name to the committer and appends failures to the report. Semantics are the local
engine's (same readers, same `prepare_batch`, same `Collection.write`): a bad row is one
failure, unchanged items are skipped by content hash, `--media` and `--generate-missing`
behave the same. A killed job re-run commits what the killed run staged, then skips what
is already committed (indexer/staging.py)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from indexer.commit import CommitTarget, ShardCommitter, ShardReport
from indexer.jobs import JobSummary, append_failure_report, tidy_after
from indexer.pipeline import IndexOptions
from indexer.ray_source import SourceSpec, resolve_source, source_datasource, table_rows
from indexer.readers import ColumnMap, RowError, SourceOptions
from indexer.staging import SHARD_SCHEMA, StagingArea, shard_entry, shard_row, write_shard
from search import (
    DecodeLimits,
    ItemFailure,
    NewItem,
    PreparedItem,
    Settings,
    Workspace,
    embed_prepared,
    prepare_batch,
)

PREPARE_CPUS = 0.5  # per decode task (see _dataset)
PREPARED_SCHEMA = SHARD_SCHEMA.append(pa.field("pixels", pa.binary()))  # float32 [3, S, S]


@dataclass(frozen=True)
class PrepareJob:
    """What a prepare task needs (picklable): the collection, the catalog, the source."""

    target: CommitTarget
    settings: Settings  # to open the catalog read-only for the content-hash check
    source: SourceSpec


# -- prepare: map_batches tasks ---------------------------------------------------------
_catalogs: dict[str, Workspace] = {}  # one catalog connection per worker process


def _known_hashes(job: PrepareJob, external_ids: list[str]) -> dict[str, str]:
    settings = job.settings.model_copy(update={"migrate_on_open": False})
    key = settings.resolved_database_url()
    if key not in _catalogs:
        _catalogs[key] = Workspace.open(settings)
    return _catalogs[key].catalog.active_hashes(job.target.collection_id, external_ids)


def prepare_block(table: pa.Table, job: PrepareJob) -> pa.Table:
    rows = list(table_rows(table))
    ids = [r.item.external_id for _, r in rows if not isinstance(r, RowError)]
    known = _known_hashes(job, ids) if ids else {}
    out, pending = [], []
    for seq, row in rows:
        if isinstance(row, RowError):  # as the local JobRunner reports a reader's refusal
            out.append((seq, ItemFailure(row.external_id, "read",
                                         f"{row.location}: {row.reason}")))
            continue
        item = _fetch_remote_image(row.item, job.source)
        if isinstance(item, ItemFailure):
            out.append((seq, item))
        else:
            pending.append((seq, item))
    # image URLs fetched concurrently under the job's policy, as the local decode stage does
    prepared = prepare_batch([(item, known.get(item.external_id)) for _, item in pending],
                             job.target.context)
    out += [(seq, result) for (seq, _), result in zip(pending, prepared, strict=True)]
    out.sort(key=lambda entry: entry[0])
    return _prepared_table(out)


def _fetch_remote_image(item: NewItem, source: SourceSpec) -> NewItem | ItemFailure:
    """An image named relative to an object-store catalog is read from that store
    (bounded), and referenced by its URI."""
    image = item.image
    if source.is_local or not isinstance(image, Path) or image.is_absolute():
        return item
    limit = DecodeLimits().max_bytes
    try:
        with source.filesystem.open_input_stream(image.as_posix()) as handle:
            data = handle.read(limit + 1)  # one byte over tells the decoder it is too big
    except (OSError, pa.ArrowException) as exc:
        return ItemFailure(item.external_id, "prepare", f"cannot read image {image}: {exc}")
    uri = f"{source.filesystem.type_name}://{image.as_posix()}"
    return NewItem(item.external_id, item.text, data, item.attributes, image_source=uri)


def _prepared_table(entries: list[tuple[int, PreparedItem | ItemFailure]]) -> pa.Table:
    rows = []
    for seq, entry in entries:
        row = shard_row(seq, entry)
        pixels = getattr(entry, "pixels", None)
        row["pixels"] = None if pixels is None else pixels.astype("float32").tobytes()
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA)


# -- encode: an actor pool that writes shards -----------------------------------------
class ShardEncoder:
    """Ray Data actor: loads its encoder once; embeds a block and stages it as a shard."""

    def __init__(self, model: str, pretrained: str | None, device: str, staging_root: str,
                 run: int, batch_size: int) -> None:
        from search import load_encoder

        self.encoder = load_encoder(model, pretrained, device=device)
        self.staging, self.run, self.batch_size = StagingArea(Path(staging_root)), run, batch_size

    def __call__(self, table: pa.Table) -> pa.Table:
        import numpy as np

        entries = []
        for row in table.to_pylist():
            entry = shard_entry(row)
            if isinstance(entry, PreparedItem) and row["pixels"] is not None:
                flat = np.frombuffer(row["pixels"], dtype=np.float32)
                side = int(round((len(flat) / 3) ** 0.5))
                entry.pixels = flat.reshape(3, side, side)  # [3, H, W]
            entries.append((row["seq"], entry))
        items = [e for _, e in entries if isinstance(e, PreparedItem)]
        for start in range(0, len(items), self.batch_size):
            embed_prepared(self.encoder, items[start:start + self.batch_size])
        path = self.staging.shard_path(self.run, entries[0][0])
        write_shard(path, entries)
        return pa.table({"shard": [str(path)], "rows": [len(entries)]})


# -- the driver ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RayRun:
    """One `--engine ray` job: what it reads and where it runs."""

    collection: str
    source: str | Path
    columns: ColumnMap
    options: IndexOptions
    model: str | None = None
    pretrained: str | None = None
    address: str | None = None

    @property
    def shard_rows(self) -> int:
        return max(self.options.chunk_size, self.options.batch_size)


def index_with_ray(workspace: Workspace, run: RayRun) -> JobSummary:
    """Add or update every item of `run.source` through Ray; resumable and idempotent."""
    import ray

    spec = resolve_source(run.source, run.columns, SourceOptions(
        follow_external_symlinks=run.options.follow_external_symlinks))
    resources = _init_ray(run.address)
    staging = StagingArea.for_job(workspace.settings.home, run.collection, {
        "source": spec.label, "columns": json.dumps(asdict(run.columns)),
        "media": run.options.media.value, "model": f"{run.model}/{run.pretrained}"})
    committer = ray.remote(num_cpus=0)(ShardCommitter).remote(
        workspace.settings, run.collection, run.model, run.pretrained, str(staging.root))
    try:
        target = ray.get(committer.target.remote(run.options.media, run.options.remote))
        books = _Books(workspace, target.collection_id, run, spec.label)
        try:
            _run(books, committer, staging, PrepareJob(target, workspace.settings, spec),
                 resources)
        except BaseException as exc:
            books.finish(None, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        summary = books.finish(ray.get(committer.save.remote()))
        staging.remove()
        _catch_up(workspace, run.collection)
        return summary
    finally:
        try:
            ray.get(committer.close.remote())
        finally:
            ray.kill(committer)


def _catch_up(workspace: Workspace, name: str) -> None:
    """A collection this process already had open learns what the committer wrote (the
    driver opens none itself: a cached one is the caller's)."""
    cached = workspace.cached_collections().get(name)
    if cached is not None:
        cached.sync()


def _run(books: _Books, committer: Any, staging: StagingArea, job: PrepareJob,
         resources: dict[str, float]) -> None:
    import ray

    done = staging.committed()
    for leftover in staging.shards():  # staged by a killed run: commit, don't recompute
        if leftover.name not in done:
            books.count(commit_shard(committer, str(leftover), books.job_id, True))
    for row in _dataset(books.run, job, staging, books.job_id, resources).iter_rows():
        books.count(commit_shard(committer, row["shard"], books.job_id, False))
    options = books.run.options
    if options.prune:
        books.summary.deleted = ray.get(committer.prune.remote())
    if options.generate_missing:
        generated, failures = ray.get(committer.generate.remote(options, books.job_id))
        books.summary.generated = generated
        books.log(failures)


def commit_shard(committer: Any, shard: str, job_id: int, resumed: bool) -> ShardReport:
    import ray

    return ray.get(committer.commit.remote(shard, job_id, resumed=resumed))


def _init_ray(address: str | None) -> dict[str, float]:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    return ray.cluster_resources()


def _dataset(run: RayRun, job: PrepareJob, staging: StagingArea, job_id: int,
             resources: dict[str, float]) -> Any:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # commit in source order, as local
    context.enable_progress_bars = run.options.progress
    gpus = int(resources.get("GPU", 0))
    actors = gpus or max(1, int(resources.get("CPU", 1)) // 2)
    # The read task lives as long as the source: a quarter CPU, so decode tasks and the
    # encoders keep theirs. Decode tasks ask for another share than the encoders, which
    # keeps Ray from fusing them into the encoder actors (decode would then not overlap
    # with encoding, and would run on the GPU actors' CPUs).
    ds = ray.data.read_datasource(source_datasource(job.source, run.shard_rows),
                                  override_num_blocks=1, num_cpus=0.25)
    ds = ds.map_batches(prepare_block, fn_kwargs={"job": job}, batch_size=run.shard_rows,
                        batch_format="pyarrow", num_cpus=PREPARE_CPUS)
    return ds.map_batches(
        ShardEncoder, fn_constructor_kwargs={
            "model": job.target.model, "pretrained": job.target.pretrained,
            "device": "cuda" if gpus else "cpu", "staging_root": str(staging.root),
            "run": job_id, "batch_size": run.options.batch_size},
        compute=ActorPoolStrategy(size=actors), num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1, batch_size=run.shard_rows, batch_format="pyarrow")


class _Books:
    """The job's record and failure report, kept by the driver from shard counts only."""

    def __init__(self, workspace: Workspace, collection_id: int, run: RayRun,
                 source: str) -> None:
        from indexer.operations import report_dir

        self.workspace, self.run = workspace, run
        params = {"source": source, "engine": "ray", "prune": run.options.prune}
        self.job_id = workspace.catalog.history.start_job(collection_id, "add", params)
        self.summary = JobSummary(self.job_id, run.collection)
        self.report_path = (run.options.report_path or report_dir(workspace, run.collection)
                            / f"job-{self.job_id}.jsonl")
        self.started = _now()

    def count(self, report: ShardReport) -> None:
        self.summary.indexed += report.new
        self.summary.updated += report.changed
        self.summary.unchanged += report.unchanged
        self.log(report.failures)

    def log(self, failures: list[ItemFailure]) -> None:
        self.summary.failed += len(failures)
        append_failure_report(self.report_path, failures)

    def finish(self, index: dict | None, status: str = "done", error: str | None = None
               ) -> JobSummary:
        summary = self.summary
        summary.index = index or {}
        if status == "done":
            tidy_after(summary, self.workspace)
        elapsed = _now() - self.started
        done = summary.indexed + summary.updated + summary.unchanged
        summary.seconds = round(elapsed, 3)
        summary.items_per_s = round(done / elapsed, 2) if elapsed else 0.0
        summary.report = str(self.report_path) if summary.failed else None
        counts = {k: v for k, v in summary.as_dict().items()
                  if isinstance(v, int | float) and k != "job_id"}
        self.workspace.catalog.history.finish_job(self.job_id, status=status, counts=counts,
                                                  error=error)
        return summary


def _now() -> float:
    import time

    return time.perf_counter()

