"""EmbeddingStore: durable float16 shards, supersede/delete, replay, compaction, crashes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from search.errors import InvalidInputError, ManifestMismatchError, StoreHistoryCompactedError
from search.vectors.store import EmbeddingStore, Op
from tests.utils.synthetic import clustered_unit_vectors

DIM = 16


def _vectors(n: int, seed: int) -> np.ndarray:
    return clustered_unit_vectors(n, DIM, seed=seed)


def _f16(x: np.ndarray) -> np.ndarray:
    """What the store hands back: the float16 rounding of what went in."""
    return x.astype(np.float16).astype(np.float32)


def _live_dict(store: EmbeddingStore, batch_size: int = 7) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for ids, vectors in store.live(batch_size=batch_size):
        assert vectors.dtype == np.float32 and vectors.shape == (len(ids), DIM)
        out.update(zip(ids.tolist(), vectors, strict=True))
    return out


@pytest.fixture
def store(tmp_path: Path) -> EmbeddingStore:
    return EmbeddingStore.open(tmp_path / "store", DIM)


def test_append_then_get_returns_float16_rounded_vectors(store: EmbeddingStore) -> None:
    x = _vectors(50, seed=1)
    ids = np.arange(100, 150)
    assert store.append(ids, x) == 1
    got, found = store.get(np.array([149, 100, 5, 120]))
    assert found.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(got[[0, 1, 3]], _f16(x[[49, 0, 20]]))
    assert not got[2].any()
    assert store.count == 50 and store.latest_seq == 1


def test_later_append_supersedes_and_delete_forgets(store: EmbeddingStore) -> None:
    x, y = _vectors(10, seed=1), _vectors(3, seed=2)
    store.append(np.arange(10), x)
    store.append(np.array([2, 3, 42]), y)
    store.delete(np.array([5, 42, 999]))  # 999 was never there: ignored
    live = _live_dict(store)
    assert sorted(live) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    np.testing.assert_array_equal(live[2], _f16(y[0]))
    np.testing.assert_array_equal(live[4], _f16(x[4]))
    _, found = store.get(np.array([5, 42]))
    assert not found.any()
    assert store.count == 9 and store.latest_seq == 3


def test_readding_a_deleted_id_revives_it(store: EmbeddingStore) -> None:
    x = _vectors(4, seed=1)
    store.append(np.arange(2), x[:2])
    store.delete([1])
    store.append([1], x[2:3])
    got, found = store.get([1])
    assert found.all()
    np.testing.assert_array_equal(got[0], _f16(x[2]))


def test_ops_since_replays_in_order(store: EmbeddingStore) -> None:
    x = _vectors(6, seed=1)
    store.append(np.arange(4), x[:4])
    store.delete([1])
    store.append([7, 8], x[4:])
    ops = list(store.ops_since(1))
    assert [(op.seq, op.kind) for op in ops] == [(2, "del"), (3, "add")]
    assert isinstance(ops[0], Op) and ops[0].vectors is None
    assert ops[0].ids.tolist() == [1]
    np.testing.assert_array_equal(ops[1].vectors, _f16(x[4:]))
    assert list(store.ops_since(3)) == []


def test_reopen_from_disk_sees_the_same_state(tmp_path: Path) -> None:
    x = _vectors(20, seed=3)
    first = EmbeddingStore.open(tmp_path / "s", DIM)
    first.append(np.arange(20), x)
    first.delete([3, 4])
    again = EmbeddingStore.open(tmp_path / "s", DIM)
    assert again.latest_seq == 2 and again.count == 18
    assert _live_dict(again).keys() == _live_dict(first).keys()


def test_dim_mismatch_is_refused(tmp_path: Path) -> None:
    EmbeddingStore.open(tmp_path / "s", DIM)
    with pytest.raises(ManifestMismatchError, match="dim=16.*dim=32"):
        EmbeddingStore.open(tmp_path / "s", 32)


def test_bad_input_is_refused(store: EmbeddingStore) -> None:
    with pytest.raises(InvalidInputError):
        store.append([1, 2], _vectors(3, seed=1))
    with pytest.raises(InvalidInputError):
        store.append([1], np.zeros((1, DIM + 1), np.float32))
    with pytest.raises(InvalidInputError):
        store.append([1, 1], _vectors(2, seed=1))
    with pytest.raises(InvalidInputError):
        store.append([1], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(InvalidInputError):
        store.append([1], np.full((1, DIM), 1e6, np.float32))
    assert store.latest_seq == 0


def test_leftover_temp_and_orphan_files_from_a_crash_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = EmbeddingStore.open(root, DIM)
    store.append(np.arange(5), _vectors(5, seed=1))
    # a crash mid-append: the vec file renamed, the ids commit marker still a temp file
    np.save(root / "00000002.add.vec.npy", np.ones((3, DIM), np.float16))
    (root / ".tmp-deadbeef-00000002.add.ids.npy").write_bytes(b"\x93NUMPY half")
    reopened = EmbeddingStore.open(root, DIM)
    assert reopened.latest_seq == 1 and reopened.count == 5
    # the next append takes seq 2 and overwrites the orphan
    assert reopened.append([9], _vectors(1, seed=2)) == 2
    assert EmbeddingStore.open(root, DIM).count == 6


def test_compact_keeps_state_and_removes_old_files(store: EmbeddingStore) -> None:
    x = _vectors(30, seed=4)
    store.append(np.arange(20), x[:20])
    store.append(np.arange(10, 30), x[10:])  # supersedes 10..19
    store.delete(np.arange(0, 30, 3))
    before = _live_dict(store)
    seq = store.compact()
    assert seq == 4 and store.latest_seq == 4
    names = sorted(os.listdir(store.path))
    assert names == ["00000004.snap.ids.npy", "00000004.snap.vec.npy", "store.json"]
    for reader in (store, EmbeddingStore.open(store.path, DIM)):
        after = _live_dict(reader)
        assert after.keys() == before.keys()
        for key, vector in before.items():
            np.testing.assert_array_equal(after[key], vector)


def test_ops_since_after_compaction(store: EmbeddingStore) -> None:
    x = _vectors(4, seed=5)
    store.append(np.arange(2), x[:2])
    store.delete([0])
    store.compact()  # seq 3 restates seq 2
    store.append([5], x[2:3])
    assert [op.seq for op in store.ops_since(2)] == [4]
    with pytest.raises(StoreHistoryCompactedError):
        list(store.ops_since(1))


def test_compaction_killed_before_removing_old_files_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = EmbeddingStore.open(root, DIM)
    x = _vectors(12, seed=6)
    store.append(np.arange(12), x)
    store.delete([0, 1])
    kept = {name: (root / name).read_bytes() for name in os.listdir(root)}
    store.compact()
    # put the replaced files back, as if the compaction died right after its commit
    for name, data in kept.items():
        (root / name).write_bytes(data)
    reopened = EmbeddingStore.open(root, DIM)
    assert reopened.count == 10 and sorted(_live_dict(reopened)) == list(range(2, 12))


def test_compaction_killed_before_its_commit_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = EmbeddingStore.open(root, DIM)
    store.append(np.arange(4), _vectors(4, seed=7))
    np.save(root / "00000002.snap.vec.npy", np.zeros((1, DIM), np.float16))  # no ids: no commit
    assert EmbeddingStore.open(root, DIM).count == 4


def test_get_is_vectorised_for_many_ids(store: EmbeddingStore) -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    ids = rng.permutation(np.arange(n, dtype=np.int64) * 3)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    for part in np.array_split(np.arange(n), 4):
        store.append(ids[part], x[part])
    wanted = rng.choice(ids, 50_000, replace=False)
    got, found = store.get(wanted)
    assert found.all()
    position = {int(i): row for row, i in enumerate(ids[:1000])}
    for row, wanted_id in enumerate(wanted):
        if int(wanted_id) in position:
            np.testing.assert_array_equal(got[row], _f16(x[position[int(wanted_id)]]))


def test_readers_during_appends_see_consistent_vectors(store: EmbeddingStore) -> None:
    x = _vectors(400, seed=8)
    store.append(np.arange(100), x[:100])
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(50):
                got, found = store.get(np.arange(100))
                assert found.all()
                np.testing.assert_array_equal(got, _f16(x[:100]))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(100, 400, 50):
        store.append(np.arange(start, start + 50), x[start : start + 50])
    for t in threads:
        t.join()
    assert not errors
    assert store.count == 400
