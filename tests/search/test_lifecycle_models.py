"""Storage lifecycle: the files of a model a collection no longer serves (left behind by
`reindex --model`) are collected, never those of the serving model or of a reindex in
flight, safely against a kill midway and against readers that still hold them."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from indexer import reindex
from indexer.pipeline import IndexOptions
from search.collection.collection import model_key
from search.collection.locks import collection_write_lock
from search.engine import Searcher
from search.lifecycle import StoragePolicy, collect_unserved_models, maintain
from search.query import SearchQuery, Target
from search.settings import Settings
from search.workspace import Workspace
from tests.indexer.test_reindex import other_model  # noqa: F401 - a fixture
from tests.utils.corpus import catalog_items

QUIET = IndexOptions(workers=0, progress=False, batch_size=16)
NOW = StoragePolicy(model_grace_s=0)


@pytest.fixture
def home(tmp_path, tiny_model):
    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True)
    workspace = Workspace.open(settings)
    workspace.create_collection("shop").add_items(catalog_items(20))
    workspace.collection("shop").save()
    yield workspace
    workspace.close()


def _model_dirs(workspace: Workspace) -> set[str]:
    return {p.name for p in workspace.collection("shop").root.iterdir() if p.is_dir()}


def _ranking(workspace: Workspace, text: str = "red fruit") -> list[str]:
    hits = Searcher(workspace).search(SearchQuery.text("shop", text, target=Target.TEXT,
                                                       k=8)).hits
    return [h.external_id for h in hits]


def _serving_key(workspace: Workspace) -> str:
    return model_key(workspace.collection("shop").encoder.identity)


def test_the_old_model_is_removed_after_a_reindex_and_answers_do_not_change(
        home, other_model):  # noqa: F811
    old_key = _serving_key(home)
    reindex.reindex_model(home, "shop", other_model, options=QUIET)
    new_key = _serving_key(home)
    assert _model_dirs(home) == {old_key, new_key}
    before = _ranking(home)
    report = maintain(home, NOW, media=False)
    assert report.models_removed == [f"shop/{old_key}"]
    assert _model_dirs(home) == {new_key}
    assert _ranking(home) == before
    home.reopen_collection("shop")  # from disk alone: the serving model is whole
    assert _ranking(home) == before
    assert maintain(home, NOW, media=False).models_removed == []


def test_a_model_touched_within_the_grace_period_is_kept(home, other_model):  # noqa: F811
    old_key = _serving_key(home)
    reindex.reindex_model(home, "shop", other_model, options=QUIET)
    assert maintain(home, StoragePolicy(model_grace_s=3600), media=False).models_removed == []
    assert old_key in _model_dirs(home)


def test_a_reindex_in_flight_keeps_its_files(home, tmp_path):
    """A reindex holds the collection's write lock from its first embedding to the
    switch: the collector waits for it, and then sees what the catalog serves."""
    collection = home.collection("shop")
    in_flight = collection.root / ("f" * 12)  # a new model's spaces, being written
    (in_flight / "text" / "embeddings").mkdir(parents=True)
    (in_flight / "text" / "embeddings" / "00000001.put.npz").write_bytes(b"partial")
    old = os.path.getmtime(in_flight) - 7200
    for path in [in_flight, *in_flight.rglob("*")]:
        os.utime(path, (old, old))  # older than the grace period: only the lock saves it
    removed: list[str] = []
    with collection_write_lock(collection.root):
        collector = threading.Thread(target=lambda: removed.extend(collect_unserved_models(
            collection, 3600)))
        collector.start()
        collector.join(0.5)
        assert collector.is_alive()  # it waits for the "reindex"
        assert in_flight.exists()
    collector.join(10)
    # the "reindex" ended without switching (killed): its stale files go, the served stay
    assert removed == ["f" * 12]
    assert _model_dirs(home) == {_serving_key(home)}
    assert _ranking(home)


def test_a_pass_killed_midway_leaves_a_tombstone_the_next_pass_removes(
        home, other_model, monkeypatch):  # noqa: F811
    old_key = _serving_key(home)
    reindex.reindex_model(home, "shop", other_model, options=QUIET)
    before = _ranking(home)
    real_rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):  # the process dies after the rename
        raise SystemExit("killed")

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(SystemExit):
        collect_unserved_models(home.collection("shop"), 0)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    root = home.collection("shop").root
    tombstones = [p.name for p in root.iterdir() if p.name.startswith(".gc-")]
    assert len(tombstones) == 1 and old_key not in _model_dirs(home)
    assert _ranking(home) == before  # the serving model was never touched
    collect_unserved_models(home.collection("shop"), 0)
    assert not [p for p in root.iterdir() if p.name.startswith(".gc-")]
    assert _model_dirs(home) == {_serving_key(home)}


def test_a_reader_still_holding_the_old_model_keeps_answering(home, tmp_path, tiny_model,
                                                              other_model):  # noqa: F811
    """A server that has not reopened the collection since the switch searches files
    that are gone from the directory: its loaded index and mapped embeddings stay."""
    reader = Workspace.open(home.settings)
    try:
        before = _ranking(reader)
        reindex.reindex_model(home, "shop", other_model, options=QUIET)
        maintain(home, NOW, media=False)
        assert _ranking(reader) == before
        assert Path(reader.collection("shop").root).exists()
    finally:
        reader.close()
