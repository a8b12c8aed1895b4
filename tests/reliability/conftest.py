"""Reliability suite: fixtures and the end-of-session table (tests/reliability/report.py).

The short version of each check runs in the normal suite; the full one is marked `slow`
(`make reliability` runs both)."""

from __future__ import annotations

import pytest

from tests.reliability.report import REPORT, ReliabilityReport


@pytest.fixture(scope="session")
def reliability_report() -> ReliabilityReport:
    return REPORT


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if not REPORT.rows:
        return
    terminalreporter.section("reliability")
    terminalreporter.write_line(REPORT.render())
    path = REPORT.write_json()
    terminalreporter.write_line(f"written to {path}")


@pytest.fixture
def ws(tmp_path, tiny_model: str):
    """An empty SQLite workspace of one test's own."""
    from search.settings import Settings
    from search.workspace import Workspace

    workspace = Workspace.open(Settings(home=tmp_path / "home", model=tiny_model,
                                        device="cpu", offline=True))
    yield workspace
    workspace.close()
