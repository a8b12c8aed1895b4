"""The indexer's library calls; `indexer/cli.py` is a thin wrapper over each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.jobs import JobRunner, JobSummary
from indexer.pipeline import IndexOptions, local_preparer
from indexer.readers import IMAGE_SUFFIXES, ColumnMap, SourceOptions, open_source
from search import (
    Collection,
    CollectionStats,
    FailureRecord,
    InvalidInputError,
    JobRecord,
    LexicalSettings,
    UnknownCollectionError,
    Workspace,
)

if TYPE_CHECKING:
    from search import ImageGenerator


@dataclass(frozen=True)
class DeleteReport:
    collection: str
    requested: int
    vectors_removed: int


@dataclass(frozen=True)
class SearchFieldsReport:
    """What `xmodal-index settings` shows."""

    collection: str
    searchable_fields: list[str] | None  # None: every string and list-of-strings attribute
    identifier_fields: list[str]
    reindexed: int | None  # items whose keyword entries were rebuilt; None: only shown


ALL_STRING_FIELDS = ("*",)  # as `searchable`: every string and list-of-strings attribute


@dataclass(frozen=True)
class CollectionStatus:
    """What `xmodal-index status` shows."""

    collection: str
    model: str
    weights: str
    dim: int
    counts: CollectionStats
    recent_jobs: list[JobRecord]
    recent_failures: list[FailureRecord]


def count_rows(source: Path) -> int | None:
    """A cheap total for the progress bar's ETA (None when unknown, or unreadable: the
    reader reports why, row by row)."""
    try:
        return _count_rows(Path(source))
    except Exception:  # noqa: BLE001 - an ETA is cosmetic; never fail a job over it
        return None


def _count_rows(source: Path) -> int | None:
    if source.is_dir():
        return sum(1 for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(source).metadata.num_rows
    with source.open("rb") as handle:
        lines = sum(1 for _ in handle)
    return lines - 1 if source.suffix.lower() == ".csv" else lines


def get_or_create(workspace: Workspace, name: str, model: str | None,
                  pretrained: str | None) -> Collection:
    try:
        return workspace.collection(name)
    except UnknownCollectionError:
        return workspace.create_collection(name, model=model, pretrained=pretrained)


def report_dir(workspace: Workspace, collection: str) -> Path:
    return workspace.settings.home / "reports" / collection


def index_source(workspace: Workspace, collection_name: str, source: Path | str, *,
                 columns: ColumnMap | None = None, options: IndexOptions | None = None,
                 model: str | None = None, pretrained: str | None = None,
                 engine: str = "local", ray_address: str | None = None) -> JobSummary:
    """Add or update every item of `source`; resumable and idempotent. The Ray engine
    also reads URIs (s3://, gs://, file://...: indexer/ray_source.py)."""
    columns, options = columns or ColumnMap(), options or IndexOptions()
    if engine == "ray":
        from indexer.distributed import RayRun, index_with_ray

        if options.generate_missing:  # a bad generator name fails before any item is read
            _load_generator(workspace, options)
        return index_with_ray(workspace, RayRun(collection_name, source, columns, options,
                                                model, pretrained, ray_address))
    source = _local_path(source)
    # a bad generator name or missing weights fails here, before any item is read
    generator = _load_generator(workspace, options) if options.generate_missing else None
    collection = get_or_create(workspace, collection_name, model, pretrained)
    collection.reconcile()  # drop what a killed earlier run left half-written
    params = {"source": str(source), "engine": engine, "prune": options.prune}
    runner = JobRunner(collection, "add", params, options, report_dir(workspace,
                                                                      collection_name))
    try:
        source_options = SourceOptions(
            follow_external_symlinks=options.follow_external_symlinks)
        rows = open_source(source, columns, source_options)
        stream = local_preparer(collection, options).stream(rows, collection.known_hashes)
        runner.consume(stream, total=count_rows(source) if options.progress else None)
        if options.prune:
            runner.prune()
        if generator is not None:
            _generate(collection, generator, runner, options)
    except BaseException as exc:
        runner.finish(status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return runner.finish()


def _local_path(source: Path | str) -> Path:
    text = str(source)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if "://" in text:
        raise InvalidInputError(f"{text}: the local engine reads local paths; read URIs "
                                "with --engine ray")
    return Path(source)


def _load_generator(workspace: Workspace, options: IndexOptions) -> ImageGenerator:
    from search import load_generator

    return load_generator(options.generator, options.generator_model,
                          device=workspace.settings.device, offline=workspace.settings.offline)


def _generate(collection: Collection, generator: ImageGenerator, runner: JobRunner,
              options: IndexOptions) -> None:
    from search import generate_missing

    report = generate_missing(collection, generator, batch_size=options.batch_size,
                              job_id=runner.job_id)
    runner.summary.generated = report.generated
    runner.note_failures(report.failures)


def delete_items(workspace: Workspace, collection_name: str,
                 external_ids: list[str]) -> DeleteReport:
    collection = workspace.collection(collection_name)
    removed = collection.delete_items(external_ids)
    collection.save()
    return DeleteReport(collection_name, len(external_ids), removed)


def collection_status(workspace: Workspace, collection_name: str) -> CollectionStatus:
    collection = workspace.collection(collection_name)
    history, cid = workspace.catalog.history, collection.info.id
    return CollectionStatus(collection_name, collection.encoder.name,
                            collection.encoder.weights.identity, collection.info.dim,
                            collection.stats(), history.recent_jobs(cid, 5),
                            history.recent_failures(cid, 10))


def search_fields(workspace: Workspace, collection_name: str,
                  searchable: Sequence[str] | None = None,
                  identifiers: Sequence[str] | None = None) -> SearchFieldsReport:
    """Show the collection's searchable and identifier fields or, with either given,
    declare them (the other keeps its value) and rebuild its keyword index."""
    collection = workspace.collection(collection_name)
    current = collection.search_fields()
    if searchable is None and identifiers is None:
        return _fields_report(collection_name, current, None)
    if searchable is None:
        new_searchable = current.searchable
    else:
        new_searchable = None if tuple(searchable) == ALL_STRING_FIELDS else tuple(searchable)
    reindexed = collection.set_search_fields(
        new_searchable, current.identifiers if identifiers is None else tuple(identifiers))
    return _fields_report(collection_name, collection.search_fields(), reindexed)


def _fields_report(name: str, fields: LexicalSettings, reindexed: int | None
                   ) -> SearchFieldsReport:
    searchable = list(fields.searchable) if fields.searchable is not None else None
    return SearchFieldsReport(name, searchable, list(fields.identifiers), reindexed)
