"""Index jobs: write prepared batches, record failures, prune, save, summarise.

A job is idempotent: items are upserted by (collection, external_id) and content hash, so
a killed job re-run resumes with nothing lost and nothing doubled."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from indexer.pipeline import IndexOptions, Prepared, chunked
from indexer.readers import RowError
from search import (
    AddReport,
    Collection,
    IndexStats,
    ItemFailure,
    PreparedItem,
    Workspace,
    index_stats,
    tidy_lexical,
)


@dataclass
class JobSummary:
    job_id: int
    collection: str
    indexed: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    generated: int = 0
    seconds: float = 0.0
    items_per_s: float = 0.0
    index: dict[str, IndexStats] = field(default_factory=dict)  # by modality name
    report: str | None = None  # the failure report (JSONL), when something failed
    lexical_tidied: int = 0  # upkeep steps the finished job ran on the lexical index

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (what `--json` prints)."""
        return asdict(self)

    def exit_code(self, strict: bool) -> int:
        """Non-zero only when nothing could be indexed, or on any failure with --strict."""
        stored = self.indexed + self.updated + self.unchanged
        if self.failed and (strict or stored == 0):
            return 1
        return 0


def tidy_after(summary: JobSummary, owner: Workspace | Collection) -> None:
    """A finished job leaves the lexical index tidy (`search.tidy_lexical`): a bulk load
    leaves FTS5 in many segments (8 after 1M rows), each read per query word, and a
    read-only server, which may be all that reads this catalogue, never runs maintenance."""
    summary.lexical_tidied = tidy_lexical(owner)


def append_failure_report(path: Path, failures: list[ItemFailure]) -> None:
    """One JSON line per failed item (which item, which stage, why), appended."""
    if not failures:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for f in failures:
            handle.write(json.dumps(asdict(f)) + "\n")


class JobRunner:
    """Consumes prepared items in full batches and keeps the job's books."""

    def __init__(self, collection: Collection, kind: str, params: dict[str, Any],
                 options: IndexOptions, report_dir: Path) -> None:
        self.collection, self.options = collection, options
        self.job_id = collection.catalog.history.start_job(collection.info.id, kind, params)
        self.summary = JobSummary(self.job_id, collection.name)
        self.report_path = options.report_path or report_dir / f"job-{self.job_id}.jsonl"
        self.seen: set[str] = set()
        self.started = time.perf_counter()

    def consume(self, stream: Iterable[Prepared], total: int | None = None) -> None:
        """Write prepared items in windows of `sort_window`, each written in batches of
        `batch_size` ordered by text length (see `_by_text_length`)."""
        window: list[PreparedItem] = []
        size = max(self.options.sort_window, self.options.batch_size)
        with tqdm(total=total, unit="item", disable=not self.options.progress,
                  desc=f"indexing {self.collection.name}") as bar:
            for entry in stream:
                self._note_id(entry)
                if isinstance(entry, PreparedItem):
                    window.append(entry)
                else:
                    self._fail([self._as_failure(entry)])
                    bar.update(1)
                if len(window) >= size:
                    self._write_window(window, bar)
                    window = []
            self._write_window(window, bar)

    def _write_window(self, window: list[PreparedItem], bar: tqdm) -> None:
        for batch in chunked(self._by_text_length(window), self.options.batch_size):
            self._write(batch)
            bar.update(len(batch))

    def _by_text_length(self, items: list[PreparedItem]) -> list[PreparedItem]:
        """Items ordered by their text's token count. The encoder runs the text tower only
        up to a batch's longest text, so a batch of similar lengths costs what its texts
        need, not what its longest caption needs (measured: see README, Benchmarks).
        Only the order of writes changes: every vector is the same."""
        texts = [p.text for p in items if p.text]
        if len(texts) <= self.options.batch_size:
            return items
        tokens = self.collection.encoder.tokenizer(texts)  # [n, context_length]
        counts = iter((tokens != 0).sum(dim=-1).tolist())  # padding is token 0
        keys = [next(counts) if p.text else 0 for p in items]
        order = sorted(range(len(items)), key=keys.__getitem__)
        return [items[i] for i in order]

    def _note_id(self, entry: Prepared) -> None:
        external_id = entry.external_id
        if external_id:
            self.seen.add(external_id)

    @staticmethod
    def _as_failure(entry: ItemFailure | RowError) -> ItemFailure:
        if isinstance(entry, RowError):
            return ItemFailure(entry.external_id, "read", f"{entry.location}: {entry.reason}")
        return entry

    def _write(self, batch: list[PreparedItem]) -> None:
        if not batch:
            return
        report = self.collection.write(batch, job_id=self.job_id)
        self._count(report)
        self._log(report.failures)

    def _fail(self, failures: list[ItemFailure]) -> None:
        self.collection.record_failures(failures, self.job_id)
        self._log(failures)

    def _count(self, report: AddReport) -> None:
        self.summary.indexed += report.new
        self.summary.updated += report.changed
        self.summary.unchanged += report.unchanged

    def note_failures(self, failures: list[ItemFailure]) -> None:
        """Failures already recorded in the catalog: count them and add them to the report."""
        self._log(failures)

    def _log(self, failures: list[ItemFailure]) -> None:
        self.summary.failed += len(failures)
        append_failure_report(self.report_path, failures)

    def prune(self) -> None:
        """Delete items that are no longer in the (completely read) source."""
        catalog, cid = self.collection.catalog, self.collection.info.id
        gone = [e for e in catalog.external_ids(cid) if e not in self.seen]
        if gone:
            self.collection.delete_items(gone)
        self.summary.deleted = len(gone)

    def finish(self, status: str = "done", error: str | None = None) -> JobSummary:
        if status == "done":
            self.summary.index = index_stats(self.collection.save())
            tidy_after(self.summary, self.collection)
        elapsed = time.perf_counter() - self.started
        done = self.summary.indexed + self.summary.updated + self.summary.unchanged
        self.summary.seconds = round(elapsed, 3)
        self.summary.items_per_s = round(done / elapsed, 2) if elapsed else 0.0
        self.summary.report = str(self.report_path) if self.summary.failed else None
        counts = {k: v for k, v in self.summary.as_dict().items()
                  if isinstance(v, int | float) and k != "job_id"}
        self.collection.catalog.history.finish_job(self.job_id, status=status, counts=counts,
                                           error=error)
        return self.summary
