"""A space configured with a trained spec (IVF, PQ) starts empty: it serves exact search
until it holds enough vectors to train on, then save() trains the configured spec."""

import numpy as np
import pytest

from search.errors import InvalidInputError
from search.settings import Settings
from search.vectors.index import min_training_points
from search.vectors.space import VectorSpace
from search.workspace import Workspace
from tests.utils.corpus import catalog_items
from tests.utils.synthetic import clustered_unit_vectors


def _space(root, spec):
    return VectorSpace(root, dim=16, model="m", weights="w", spec=spec)


def test_min_training_points_follow_the_spec():
    assert min_training_points("IVF64,Flat") == 64
    assert min_training_points("IVF16,PQ4") == 256
    assert min_training_points("IVF16,PQ4x4") == 16
    assert min_training_points("Flat") == 0


def test_empty_ivf_space_serves_exactly_then_trains_at_save(tmp_path):
    space = _space(tmp_path, "IVF32,Flat")  # raised "cannot train ... on 0 vectors" before
    assert space.index.spec == "Flat" and space.count == 0
    vectors = clustered_unit_vectors(400, 16, seed=1)
    ids = np.arange(1, 401, dtype=np.int64)
    space.add(ids[:10], vectors[:10])
    assert space.save().spec == "Flat"  # 10 vectors cannot train 32 lists
    got, _ = space.search(vectors[:1], 3, _params())
    assert got[0][0] == 1
    space.add(ids[10:], vectors[10:])
    assert space.save().spec == "IVF32,Flat"
    reopened = _space(tmp_path, "IVF32,Flat")
    assert reopened.index.spec == "IVF32,Flat" and reopened.count == 400


def test_explicit_rebuild_on_too_few_vectors_is_a_typed_error(tmp_path):
    space = _space(tmp_path, None)
    space.add(np.arange(1, 6, dtype=np.int64), clustered_unit_vectors(5, 16, seed=2))
    with pytest.raises(InvalidInputError, match="cannot train"):
        space.rebuild("IVF64,Flat")


def test_collection_created_with_an_ivf_spec_works_empty_and_small(tmp_path, tiny_model):
    ws = Workspace.open(Settings(home=tmp_path, device="cpu"))
    collection = ws.create_collection("shop", model=tiny_model, index_spec="IVF8,Flat")
    assert collection.stats().items == 0
    collection.add_items(catalog_items(4))
    manifests = collection.save()
    assert {m.spec for m in manifests.values()} == {"Flat"}
    collection.add_items(catalog_items(40))
    assert {m.spec for m in collection.save().values()} == {"IVF8,Flat"}
    ws.close()


def _params():
    from search.vectors.index import SearchParams

    return SearchParams()
