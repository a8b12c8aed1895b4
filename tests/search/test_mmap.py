"""Index versions served memory-mapped (VectorSpace(mmap=True), search/vectors/versions.py):
same answers as in memory, and the first write copies the mapping into memory instead of
writing into read-only lists (which aborts the process inside FAISS)."""

import numpy as np
import pytest

from search.vectors.index import SearchParams
from search.vectors.space import VectorSpace
from search.vectors.versions import can_mmap
from tests.utils.synthetic import clustered_unit_vectors

SPEC = "IVF8,Flat"


def _space(root, mmap, spec=SPEC):
    return VectorSpace(root, dim=16, model="m", weights="w", spec=spec, mmap=mmap)


def _top(space, queries, k=10):
    return space.search(queries, k, SearchParams(nprobe=8))[1].tolist()


@pytest.fixture
def saved(tmp_path):
    vectors = clustered_unit_vectors(600, 16, seed=5)
    ids = np.arange(1, 601, dtype=np.int64)
    writer = _space(tmp_path, mmap=False, spec=None)  # an IVF cannot start empty
    writer.add(ids[:500], vectors[:500])
    writer.rebuild(SPEC)  # trains the IVF and saves it as the current version
    writer.fixed_spec = SPEC
    return tmp_path, ids, vectors, writer


def test_only_ivf_specs_are_mapped():
    assert can_mmap("IVF1024,PQ64") and can_mmap("IVF8,Flat")
    assert not can_mmap("Flat") and not can_mmap("PQ16")


def test_mapped_space_answers_like_the_in_memory_one(saved):
    root, _, vectors, _ = saved
    mapped, loaded = _space(root, mmap=True), _space(root, mmap=False)
    assert mapped.mapped and not loaded.mapped
    assert _top(mapped, vectors[:20]) == _top(loaded, vectors[:20])


def test_flat_index_is_read_in_even_when_mmap_is_asked(tmp_path):
    vectors = clustered_unit_vectors(50, 16, seed=1)
    writer = _space(tmp_path, mmap=False, spec="Flat")
    writer.add(np.arange(50, dtype=np.int64), vectors)
    writer.save()
    reader = _space(tmp_path, mmap=True, spec="Flat")
    assert not reader.mapped
    reader.add(np.array([99], dtype=np.int64), vectors[:1])  # an ordinary index takes it
    assert reader.count == 51


def test_write_into_a_mapped_space_copies_it_into_memory_first(saved):
    root, ids, vectors, _ = saved
    space = _space(root, mmap=True)
    space.add(ids[500:], vectors[500:])
    space.remove(ids[:5])
    assert not space.mapped and space.count == 595
    assert 1 not in _top(space, vectors[:1])[0] and _top(space, vectors[500:501])[0][0] == 501
    space.save()  # an in-memory index is written, not a reference to the mapped file
    again = _space(root, mmap=True)
    assert again.mapped and again.count == 595


def test_replica_catches_up_with_a_writer_by_copying_then_remapping(saved):
    root, ids, vectors, writer = saved
    replica = _space(root, mmap=True)
    writer.add(ids[500:], vectors[500:])  # store operations after the saved version
    replica.sync()
    assert not replica.mapped and replica.count == 600
    assert _top(replica, vectors[550:551])[0][0] == 551
    writer.save()
    fresh = _space(root, mmap=True)  # what the refresher does on a version switch
    assert fresh.mapped and fresh.count == 600


def test_reopen_with_unsaved_writes_loads_in_memory(saved):
    root, ids, vectors, writer = saved
    writer.add(ids[500:], vectors[500:])
    space = _space(root, mmap=True)
    assert not space.mapped and space.count == 600
