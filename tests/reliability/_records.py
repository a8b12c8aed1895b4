"""Numbers the reliability tests measure, for the suite's summary table.

Each test calls `record(area, name, value)`; the suite's reporter (conftest) prints the
rows at the end of `make reliability`. Rows are also appended as JSON lines to
$XMODAL_RELIABILITY_RECORDS when it is set, so a run's numbers can be kept."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Record:
    area: str  # "lifecycle", "faults", "load"
    name: str  # what was measured, with its unit
    value: float | int | str


RECORDS: list[Record] = []


def record(area: str, name: str, value: float | int | str) -> None:
    row = Record(area, name, value)
    RECORDS.append(row)
    path = os.environ.get("XMODAL_RELIABILITY_RECORDS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(row)) + "\n")
