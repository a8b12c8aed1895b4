"""VectorSpace: store + index kept together across saves, reopen, other writers."""

import numpy as np
import pytest

from search.errors import ManifestMismatchError
from search.vectors.space import VectorSpace
from tests.utils.synthetic import clustered_unit_vectors


def _space(root, model="m", weights="w"):
    return VectorSpace(root, dim=16, model=model, weights=weights)


def _exact_top(vectors, ids, query, k):
    order = np.argsort(-(vectors @ query))[:k]
    return ids[order].tolist()


@pytest.fixture
def data():
    vectors = clustered_unit_vectors(300, 16, seed=3)
    return np.arange(1, 301, dtype=np.int64), vectors


def test_manifest_of_another_model_is_refused(tmp_path, data):
    space = _space(tmp_path)
    space.add(*data)
    space.save()
    with pytest.raises(ManifestMismatchError):
        _space(tmp_path, weights="other-weights")


def test_reopen_replays_unsaved_writes(tmp_path, data):
    ids, vectors = data
    space = _space(tmp_path)
    space.add(ids[:200], vectors[:200])
    space.save()
    space.add(ids[200:], vectors[200:])
    space.remove(ids[:10])
    reopened = _space(tmp_path)
    assert reopened.count == 290
    found = reopened.search(vectors[250:251], 5, space_params())[1][0].tolist()
    assert found == _exact_top(vectors[10:], ids[10:], vectors[250], 5)


def test_sync_sees_another_writer(tmp_path, data):
    ids, vectors = data
    reader, writer = _space(tmp_path), _space(tmp_path)
    writer.add(ids, vectors)
    writer.remove(ids[:5])
    assert reader.count == 0
    reader.sync()
    assert reader.count == 295
    assert reader.search(vectors[:1], 1, space_params())[1][0, 0] != ids[0]


def test_store_ids_and_retrain_rule(tmp_path, data):
    ids, vectors = data
    space = _space(tmp_path)
    space.add(ids, vectors)
    assert sorted(space.store_ids().tolist()) == ids.tolist()
    assert not space.needs_retrain()  # 300 vectors: Flat is right


def space_params():
    from search.vectors.index import SearchParams

    return SearchParams()
