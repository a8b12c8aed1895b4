"""Reliability suite: fixtures and the end-of-session table (tests/reliability/report.py).

The short version of each check runs in the normal suite; the full one is marked `slow`
(`make reliability` runs both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability._records import RECORDS
from tests.reliability.report import REPORT, ReliabilityReport

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ARG001
    """Mark everything here `reliability`, so `make test` can leave out the long parts
    (`-m "not (slow and reliability)"`) while keeping every other slow test."""
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def reliability_report() -> ReliabilityReport:
    return REPORT


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if not REPORT.rows and not RECORDS:
        return
    terminalreporter.section("reliability")
    if REPORT.rows:
        terminalreporter.write_line(REPORT.render())
        terminalreporter.write_line(f"written to {REPORT.write_json()}")
    if RECORDS:  # faults, load and lifecycle numbers (tests/reliability/_records.py)
        width = max(len(f"{r.area}: {r.name}") for r in RECORDS)
        for r in RECORDS:
            terminalreporter.write_line(f"{f'{r.area}: {r.name}':<{width}}  {r.value}")


@pytest.fixture
def ws(tmp_path, tiny_model: str):
    """An empty SQLite workspace of one test's own."""
    from search.settings import Settings
    from search.workspace import Workspace

    workspace = Workspace.open(Settings(home=tmp_path / "home", model=tiny_model,
                                        device="cpu", offline=True))
    yield workspace
    workspace.close()
