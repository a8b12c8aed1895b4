"""search/live.py: a serving workspace catches up with what another process writes.

Two Workspace objects on one home stand for two processes (each has its own cache,
FAISS indexes and embedding-store views; only the disk and the catalog are shared)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from search.collection.collection import NewItem
from search.collection.locks import collection_write_lock
from search.engine import Searcher
from search.live import Change, CollectionRefresher, committed_seq_on_disk
from search.query import SearchQuery
from search.vectors.index import SearchParams
from search.vectors.store import EmbeddingStore
from search.workspace import Workspace
from tests.utils.corpus import catalog_items


@pytest.fixture
def pair(settings):
    """(server, other): the serving process and a writer such as the indexer."""
    server, other = Workspace.open(settings), Workspace.open(settings)
    other.create_collection("shop").add_items(catalog_items(20))
    other.collection("shop").save()
    server.collection("shop")
    yield server, other
    server.close()
    other.close()


def search_ids(workspace, text="product", k=50):
    result = Searcher(workspace).search(SearchQuery.text("shop", text, k=k))
    return {h.external_id for h in result.hits}


def test_unchanged_disk_is_unchanged(pair):
    server, _ = pair
    assert CollectionRefresher(server).refresh_all().changes == {"shop": Change.UNCHANGED}


def test_new_index_version_is_reopened_and_in_flight_object_keeps_working(pair):
    server, other = pair
    before = server.collection("shop")
    other.collection("shop").add_items([NewItem("late", text="a late arrival")])
    other.collection("shop").save()
    report = CollectionRefresher(server).refresh_all()
    assert report.changes == {"shop": Change.REOPENED}
    assert server.collection("shop") is not before
    assert "late" in search_ids(server, "a late arrival")
    # a query that started before the swap still holds the old object: it must still work
    query = np.ones((1, before.info.dim), np.float32) / np.sqrt(before.info.dim)
    for space in before.spaces.values():
        assert space.search(query, 3, SearchParams())[1].shape == (1, 3)


def test_unsaved_writes_are_replayed_without_reopening(pair):
    server, other = pair
    before = server.collection("shop")
    other.collection("shop").add_items([NewItem("fresh", text="brand new words")])
    other.collection("shop").delete_items(["p1"])
    assert CollectionRefresher(server).refresh_all().changes == {"shop": Change.SYNCED}
    assert server.collection("shop") is before
    found = search_ids(server)
    assert "fresh" in found and "p1" not in found
    assert CollectionRefresher(server).refresh_all().changes == {"shop": Change.UNCHANGED}


def test_compaction_elsewhere_reopens(pair):
    server, other = pair
    other.collection("shop").add_items([NewItem("x1", text="compacted away")])
    for space in other.collection("shop").spaces.values():
        space.store.compact()
    other.collection("shop").add_items([NewItem("x2", text="after compaction")])
    # The engine opens an index only if the store still holds the ops after it, so a
    # compacting writer saves a version too; the refresher then reopens.
    other.collection("shop").save()
    assert CollectionRefresher(server).refresh_all().changes["shop"] is Change.REOPENED
    assert {"x1", "x2"} <= search_ids(server)


def test_dropped_and_recreated_collections(pair):
    server, other = pair
    refresher = CollectionRefresher(server)  # one per process, as in the API
    other.drop_collection("shop")
    assert refresher.refresh_all().changes == {"shop": Change.DROPPED}
    assert "shop" not in server.cached_collections()
    other.create_collection("shop").add_items([NewItem("again", text="second life")])
    old = server.collection("shop")
    assert refresher.refresh_all().changes == {"shop": Change.UNCHANGED}
    other.drop_collection("shop")  # SQLite may hand the new row the same id again
    other.create_collection("shop").add_items([NewItem("third", text="third life")])
    assert refresher.refresh_all().changes == {"shop": Change.REOPENED}
    assert server.collection("shop") is not old
    assert search_ids(server) == {"third"}


def test_failed_reload_keeps_serving(pair):
    server, other = pair
    space = other.collection("shop").spaces[next(iter(other.collection("shop").spaces))]
    (space.index_dir / "CURRENT").write_text("v-does-not-exist")
    changes = []
    report = CollectionRefresher(server, on_change=lambda n, c: changes.append(c)).refresh_all()
    assert report.changes == {"shop": Change.FAILED} and "shop" in report.errors
    assert changes == [Change.FAILED]
    assert search_ids(server)  # the old object still answers


def test_background_refresher_picks_up_writes(pair):
    server, other = pair
    refresher = CollectionRefresher(server)
    refresher.start(0.05)
    try:
        other.collection("shop").add_items([NewItem("bg", text="seen in the background")])
        deadline = time.monotonic() + 5
        while "bg" not in search_ids(server, "seen in the background"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        refresher.stop()


def test_writers_in_two_workspaces_never_collide(pair):
    server, other = pair
    for i, workspace in enumerate([server, other, server, other]):
        workspace.collection("shop").add_items([NewItem(f"w{i}", text=f"writer number {i}")])
    CollectionRefresher(server).refresh_all()
    CollectionRefresher(other).refresh_all()
    assert {"w0", "w1", "w2", "w3"} <= search_ids(server) == search_ids(other)


def test_refresh_waits_for_a_writer_holding_the_lock(pair):
    server, other = pair
    other_shop = other.collection("shop")
    done = threading.Event()
    with collection_write_lock(other_shop.root):
        other_shop.add_items([NewItem("held", text="written under the lock")])
        refresher = threading.Thread(target=lambda: (CollectionRefresher(server).refresh_all(),
                                                     done.set()))
        refresher.start()
        time.sleep(0.3)
        assert not done.is_set()  # a writer's batch is seen whole or not at all
    refresher.join(10)
    assert done.is_set() and "held" in search_ids(server, "written under the lock")


def test_committed_seq_on_disk_agrees_with_the_store(tmp_path):
    store = EmbeddingStore.open(tmp_path / "emb", 4)
    assert committed_seq_on_disk(tmp_path / "emb") == store.latest_seq == 0
    store.append([1, 2], np.eye(4, dtype=np.float32)[:2])
    store.delete([1])
    assert committed_seq_on_disk(tmp_path / "emb") == store.latest_seq == 2
    store.compact()
    assert committed_seq_on_disk(tmp_path / "emb") == store.latest_seq == 3
    assert committed_seq_on_disk(tmp_path / "missing") == 0


def test_workspace_cache_methods(pair):
    server, _ = pair
    cached = server.cached_collections()
    assert set(cached) == {"shop"}
    fresh = server.reopen_collection("shop")
    assert fresh is not cached["shop"] and server.collection("shop") is fresh
    server.forget_collection("shop")
    server.forget_collection("never-opened")  # no error
    assert server.cached_collections() == {}
    assert server.collection("shop") is not fresh  # opened again on demand
