"""Decode workers killed by the OS (indexer/decode_pool.py): the job restarts them,
retries the batch once, and reports only the items that kill a worker again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import indexer.operations as operations
from indexer import pipeline
from indexer.operations import index_source
from indexer.pipeline import IndexOptions, LocalPreparer, PrepareTask, _prepare_in_worker
from search.catalog.models import Modality
from tests.indexer.conftest import write_catalog

ALWAYS = {"sku-7"}  # kills its worker every time: an item that exhausts memory


def markers_dir(media_root: Path) -> Path:
    """Items named here kill their worker once. Found from the workers' context: the
    fork server may predate this test, so the environment cannot carry it."""
    return media_root.parent / "die-once"


def prepare_or_die(tasks: list[PrepareTask]):
    """Runs in the decode workers (imported there by reference): SIGKILL itself, as the
    OOM killer would, on the items this test names."""
    assert pipeline._worker_ctx is not None
    for task in tasks:
        external_id = task[0].item.external_id
        once = markers_dir(pipeline._worker_ctx.media_root) / f"{external_id}.die-once"
        if external_id in ALWAYS:
            os.kill(os.getpid(), signal.SIGKILL)
        if once.exists():
            once.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
    return _prepare_in_worker(tasks)


@pytest.fixture
def killer_preparer(monkeypatch, ws):
    markers = markers_dir(ws.media.root)
    markers.mkdir(parents=True)

    def preparer(collection, options):
        return LocalPreparer(collection.prepare_context(options.media), options.workers,
                             options.chunk_size, prepare=prepare_or_die)

    monkeypatch.setattr(operations, "local_preparer", preparer)
    return markers


def test_a_killed_worker_is_restarted_and_only_the_item_that_kills_again_fails(
        ws, tmp_path, killer_preparer):
    for item in ("sku-13", "sku-22"):  # die once: their retry must succeed
        (killer_preparer / f"{item}.die-once").touch()
    source = write_catalog(tmp_path / "src", 30)
    report_path = tmp_path / "report.jsonl"
    summary = index_source(ws, "shop", source, options=IndexOptions(
        workers=2, progress=False, chunk_size=6, report_path=report_path))
    assert (summary.indexed, summary.failed) == (29, 1)
    failures = [json.loads(line) for line in report_path.read_text().splitlines()]
    assert [f["external_id"] for f in failures] == ["sku-7"]
    assert "decode worker died" in failures[0]["reason"]
    assert not list(killer_preparer.iterdir())  # both die-once items did kill a worker
    collection = ws.collection("shop")
    assert set(ws.catalog.external_ids(collection.info.id)) == \
        {f"sku-{i}" for i in range(30)} - ALWAYS
    assert collection.spaces[Modality.TEXT].count == 29
