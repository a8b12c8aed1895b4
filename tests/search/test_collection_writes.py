"""A collection's write path: one catalog transaction before the embedding log, one
after, and one log operation per space that changes."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from search.catalog.items import ItemInput
from search.catalog.models import ItemRow, Modality, VectorRow
from search.collection.collection import NewItem
from tests.utils.corpus import png_bytes


@pytest.fixture
def shop(workspace):
    return workspace.create_collection("shop")


def _seqs(collection) -> dict[Modality, int]:
    return {m: space.store.latest_seq for m, space in collection.spaces.items()}


def _commits(catalog) -> list[int]:
    done: list[int] = []
    event.listen(catalog.engine, "commit", lambda _conn: done.append(1))
    return done


def test_catalog_rows_are_committed_pending_before_the_log_then_marked_active(shop,
                                                                           monkeypatch):
    seen = []
    space = shop.spaces[Modality.TEXT]
    replace = space.replace

    def log_write(old_ids, ids, vectors):
        # what another connection sees while the embedding is written: committed
        # rows, the item still pending (a kill here is rolled back by repair)
        with shop.catalog.engine.connect() as other:
            status = other.scalar(select(ItemRow.status).where(ItemRow.external_id == "a"))
            rows = other.scalars(select(VectorRow.id)).all()
        seen.append((status, sorted(rows), [int(i) for i in ids]))
        replace(old_ids, ids, vectors)

    monkeypatch.setattr(space, "replace", log_write)
    commits = _commits(shop.catalog)
    report = shop.add_items([NewItem("a", text="a red apple")])
    assert report.new == 1
    (status, rows, ids), = seen
    assert status == "pending" and rows == ids and len(ids) == 1
    # the hash look-up's read, commit 1 (rows), commit 2 (active): no more
    assert len(commits) == 3
    assert shop.catalog.get_item(shop.info.id, "a").status == "active"


def test_one_log_operation_per_changed_space(shop):
    before = _seqs(shop)
    shop.add_items([NewItem("a", text="a red apple", image=png_bytes(1))])
    after_both = _seqs(shop)
    assert {m: after_both[m] - before[m] for m in Modality} == {Modality.TEXT: 1,
                                                              Modality.IMAGE: 1}
    shop.add_items([NewItem("a", text="a green apple")])  # the image goes, the text changes
    after_text = _seqs(shop)
    assert {m: after_text[m] - after_both[m] for m in Modality} == {Modality.TEXT: 1,
                                                                  Modality.IMAGE: 1}
    assert shop.spaces[Modality.IMAGE].store.count == 0
    assert shop.spaces[Modality.TEXT].store.count == 1
    shop.add_items([NewItem("a", text="a green apple", attributes={"colour": "green"})])
    assert _seqs(shop) == after_text  # attributes alone: catalog only, no log operation
    (detail_vector,) = shop.catalog.get_item(shop.info.id, "a").vectors
    assert detail_vector.modality == "text"
    assert shop.delete_items(["a"]) == 1


def test_transaction_commits_everything_or_nothing(catalog, collection):
    with pytest.raises(RuntimeError), catalog.transaction():
        (change,) = catalog.upsert_items(collection.id, [ItemInput("a", "apple", None, {},
                                                                   "h")])
        catalog.replace_vectors(collection.id, [(change.item_id, "text", "original")])
        raise RuntimeError("killed midway")
    assert catalog.item_id(collection.id, "a") is None
    assert len(catalog.vector_ids(collection.id)) == 0
    with catalog.transaction():
        (change,) = catalog.upsert_items(collection.id, [ItemInput("a", "apple", None, {},
                                                                   "h")])
        (vector,), _ = catalog.replace_vectors(collection.id,
                                               [(change.item_id, "text", "original")])
        catalog.mark_active([change.item_id])
    assert catalog.get_item(collection.id, "a").status == "active"
    assert list(catalog.vector_ids(collection.id)) == [vector]
