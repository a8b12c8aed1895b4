"""The reliability suite's shared report: every check adds rows, the session prints one
table per kind at the end and writes them as JSON to tests/reliability/results/.

Kinds and their columns (a check passes the metrics it measured; missing ones show "-"):
- faults:  injected, survived
- inputs:  tried, rejected, accepted, crashed, hung  (rejected = refused cleanly, with reason)
- load:    requests, failed, p50_ms, p99_ms
- storage: files_before, files_after, data_lost
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COLUMNS: dict[str, tuple[str, ...]] = {
    "faults": ("injected", "survived"),
    "inputs": ("tried", "rejected", "accepted", "crashed", "hung"),
    "load": ("requests", "failed", "p50_ms", "p99_ms"),
    "storage": ("files_before", "files_after", "data_lost"),
}
RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True)
class ReportRow:
    kind: str
    check: str
    metrics: dict[str, Any]


@dataclass
class ReliabilityReport:
    rows: list[ReportRow] = field(default_factory=list)

    def add(self, kind: str, check: str, **metrics: Any) -> None:
        if kind not in COLUMNS:
            raise ValueError(f"unknown report kind {kind!r}; one of {sorted(COLUMNS)}")
        unknown = set(metrics) - set(COLUMNS[kind])
        if unknown:
            raise ValueError(f"{kind} rows take {COLUMNS[kind]}, not {sorted(unknown)}")
        self.rows.append(ReportRow(kind, check, metrics))

    def render(self) -> str:
        """Markdown tables, one per kind that has rows."""
        parts = []
        for kind, columns in COLUMNS.items():
            rows = [r for r in self.rows if r.kind == kind]
            if not rows:
                continue
            parts.append(f"{kind}:")
            parts.append("| check | " + " | ".join(columns) + " |")
            parts.append("|---|" + "---|" * len(columns))
            for row in rows:
                cells = [_cell(row.metrics.get(c)) for c in columns]
                parts.append(f"| {row.check} | " + " | ".join(cells) + " |")
            parts.append("")
        return "\n".join(parts)

    def write_json(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "rows": [asdict(r) for r in self.rows]}
        path = directory / f"reliability-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(payload, indent=2))
        (directory / "latest.json").write_text(json.dumps(payload, indent=2))
        return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# One collector per pytest session (the conftest fixture hands it to checks).
REPORT = ReliabilityReport()
