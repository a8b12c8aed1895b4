"""kill -9 an indexing process at arbitrary points, re-run, and compare with a clean run."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.models.encoder import load_encoder
from search.settings import Settings
from search.workspace import Workspace
from tests.indexer.conftest import write_catalog
from tests.utils.snapshots import assert_same_collection, snapshot

pytestmark = pytest.mark.slow


def _command(source: Path, home: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "indexer.cli", "add", str(source), "--collection", "shop",
            "--home", str(home), "--model", str(model), "--workers", "0", "--batch-size", "4",
            "--no-progress", "--json"]


def _active_items(home: Path) -> int:
    try:
        with sqlite3.connect(home / "catalog.db", timeout=1) as db:
            return db.execute("select count(*) from items where status='active'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _run_and_kill(command: list[str], home: Path, at_least: int) -> None:
    """Start indexing, SIGKILL it once `at_least` items are stored, while it still runs."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _active_items(home) < at_least:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process.poll() is None, "finished before it could be killed: grow the corpus"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_runs_resume_to_the_same_result(tmp_path, tiny_model):
    model = load_encoder(tiny_model, device="cpu").save(tmp_path / "model")
    source = write_catalog(tmp_path / "src", 300)
    killed_home, clean_home = tmp_path / "killed", tmp_path / "clean"
    for threshold in (8, 100, 200):  # three kills at different stages
        _run_and_kill(_command(source, killed_home, model), killed_home, threshold)
    assert _active_items(killed_home) < 300
    for home in (killed_home, clean_home):
        done = subprocess.run(_command(source, home, model), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    snapshots = []
    for home in (killed_home, clean_home):
        ws = Workspace.open(Settings(home=home, device="cpu"))
        snapshots.append(snapshot(ws, "shop"))
        stats = ws.collection("shop").stats()
        assert stats.items == 300
        assert stats.indexes["image"].vectors + stats.indexes["text"].vectors == \
            stats.vectors  # nothing doubled in FAISS, nothing missing
        ws.close()
    assert_same_collection(*snapshots)
