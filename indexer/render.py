"""What `xmodal-index` prints: a few readable lines per result, or plain JSON (`--json`).

The library calls return typed records; this module is the only place that turns them
into text, so the commands in `indexer/cli.py` stay thin."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from indexer.jobs import JobSummary
from indexer.operations import CollectionStatus, DeleteReport
from indexer.reindex import ReindexReport
from search import FailureRecord, IndexStats, JobRecord

FAILURES_SHOWN = 5


def to_json(value: Any) -> Any:
    """Records (dataclasses), dicts and lists as plain JSON values; dates and paths as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, datetime | Path):
        return str(value)
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_json(value), indent=2, default=str)


def render(result: Any) -> str:
    """Human text for any result of an `xmodal-index` command."""
    if isinstance(result, JobSummary):
        return render_job(result)
    if isinstance(result, CollectionStatus):
        return render_status(result)
    if isinstance(result, DeleteReport):
        return (f"{result.collection}: {result.requested} id(s) deleted, "
                f"{result.vectors_removed} vector(s) removed from search")
    if isinstance(result, ReindexReport):
        return "\n".join([f"{result.collection}: {result.items} items re-embedded with "
                          f"{result.model}", *index_lines(result.index)])
    if isinstance(result, dict) and all(isinstance(v, IndexStats) for v in result.values()):
        return "\n".join(index_lines(result))
    return "\n".join(key_values(to_json(result)))


def index_lines(indexes: dict[str, IndexStats]) -> list[str]:
    return [f"{modality:<6} index: {stats.spec}, {stats.vectors} vectors, version "
            f"{stats.version or '(not saved)'}" for modality, stats in sorted(indexes.items())]


def render_job(summary: JobSummary) -> str:
    counts = (f"{summary.indexed} indexed, {summary.updated} updated, {summary.unchanged} "
              f"unchanged, {summary.deleted} deleted, {summary.failed} failed, "
              f"{summary.generated} generated")
    lines = [f"{summary.collection}: {counts} (job {summary.job_id})",
             f"{summary.items_per_s:g} items/s, {_seconds(summary.seconds)} elapsed",
             *index_lines(summary.index)]
    if summary.failed and summary.report:
        lines.append(f"{summary.failed} failed; every failure is in {summary.report}")
        lines += [f"  {line}" for line in _report_head(Path(summary.report))]
    return "\n".join(lines)


def render_status(status: CollectionStatus) -> str:
    counts = status.counts
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.vectors_by_kind.items()))
    lines = [f"collection {status.collection}: model {status.model} ({status.weights}), "
             f"dim {status.dim}",
             f"{counts.items} items, {counts.vectors} vectors" + (f" ({kinds})" if kinds
                                                                    else ""),
             *index_lines(counts.indexes)]
    lines += _section("recent jobs", [job_line(j) for j in status.recent_jobs])
    lines += _section("recent failures", [failure_line(f) for f in status.recent_failures])
    return "\n".join(lines)


def job_line(job: JobRecord) -> str:
    counts = ", ".join(f"{n:g} {k}" for k, n in job.counts.items()
                       if k in ("indexed", "updated", "unchanged", "deleted", "failed",
                                "generated") and n)
    when = _when(job.started_at)
    line = f"job {job.id} {job.kind} {job.status} {when}" + (f": {counts}" if counts else "")
    return line + (f" ({job.error})" if job.error else "")


def failure_line(failure: FailureRecord) -> str:
    where = failure.external_id if failure.external_id is not None else "(no id)"
    job = f" (job {failure.job_id})" if failure.job_id is not None else ""
    return f"{where} [{failure.stage}] {failure.reason}{job}"


def key_values(value: Any, indent: str = "") -> Iterable[str]:
    """Nested JSON values as `key: value` lines (Unicode as is)."""
    if not isinstance(value, dict):
        yield f"{indent}{_scalar(value)}"
        return
    for key, item in value.items():
        if isinstance(item, dict) and item:
            yield f"{indent}{key}:"
            yield from key_values(item, indent + "  ")
        else:
            yield f"{indent}{key}: {_scalar(item)}"


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"{title}:", *(f"  {line}" for line in lines)] if lines else [f"{title}: none"]


def _report_head(report: Path) -> list[str]:
    """The first failures of a job's JSONL report (it has them all)."""
    shown: list[str] = []
    try:
        with report.open(encoding="utf-8") as handle:
            for line in handle:
                if len(shown) == FAILURES_SHOWN:
                    break
                entry = json.loads(line)
                shown.append(failure_line(FailureRecord(entry.get("external_id"),
                                                        entry.get("stage", "?"),
                                                        entry.get("reason", ""), None, None)))
    except (OSError, ValueError):
        return []
    return shown


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "(not started)"
