"""Exact late fusion (search.fusion), the owner map (search.catalog.owners) and the depth
planning of fused queries (search.candidates), each against a brute-force reference."""

import math

import numpy as np
import pytest

from search import candidates
from search.catalog.models import Modality
from search.catalog.owners import KINDS, OwnerSnapshot
from search.fusion import ScorePool, Shapes, fuse, item_shapes, unseen_bound


def _rows(*triples):
    return np.array(triples, dtype=np.int64).reshape(-1, 3)


def test_owner_snapshot_merges_rows_newest_kind_wins():
    snapshot = OwnerSnapshot.empty().with_rows(("t", 1), _rows((1, 10, 0), (2, 10, 2),
                                                               (3, 11, 2)), full=True)
    # item 10 gets a new image (id 4 replaces 1), item 12 is new; kind -8: unknown modality
    snapshot = snapshot.with_rows(("t", 2), _rows((4, 10, 0), (5, 12, 1), (6, 12, -6)))
    items, known = snapshot.owners(np.array([4, 1, 3, 5, 6, 99]))
    assert items.tolist() == [10, 10, 11, 12, -1, -1]
    assert known.tolist() == [True, True, True, True, False, False]
    members = snapshot.members_of(np.array([10, 11, 12, 13]))
    assert members.tolist() == [[4, -1, 2, -1], [-1, -1, 3, -1], [-1, 5, -1, -1],
                                [-1, -1, -1, -1]]
    assert (snapshot.stamp, snapshot.max_vector_id, snapshot.delta_rows) == (("t", 2), 5, 2)


def test_fuse_matches_a_per_item_reference():
    rng = np.random.default_rng(0)
    n = 200
    members = np.arange(n * len(KINDS), dtype=np.int64).reshape(n, len(KINDS))
    members[rng.random(members.shape) < 0.4] = -1
    scores = np.where(members >= 0, rng.normal(size=members.shape), np.nan)
    weights = np.array([2.0, 0.5])
    fused = fuse(np.arange(n, dtype=np.int64) + 1000, members, scores, weights)
    expected = {}
    for row in range(n):
        best = {}
        for kind, (modality, _) in enumerate(KINDS):
            if members[row, kind] >= 0:
                best[modality] = max(best.get(modality, -math.inf), scores[row, kind])
        if best:
            w = {Modality.IMAGE: 2.0, Modality.TEXT: 0.5}
            expected[row + 1000] = sum(w[m] * s for m, s in best.items()) / sum(
                w[m] for m in best)
    order = sorted(expected, key=lambda i: (-expected[i], i))
    assert fused.item_ids.tolist() == order
    np.testing.assert_allclose(fused.scores, [expected[i] for i in order])


def test_unseen_bound_covers_each_item_shape():
    floors, weights = np.array([0.2, 0.6]), np.array([1.0, 1.0])
    assert unseen_bound(floors, weights, Shapes(False, False, True)) == pytest.approx(0.4)
    assert unseen_bound(floors, weights, Shapes(False, True, True)) == pytest.approx(0.6)
    assert unseen_bound(floors, weights, Shapes(True, False, True)) == pytest.approx(0.4)
    # a space with nothing left: an unmet item cannot have that modality
    assert unseen_bound(np.array([-np.inf, 0.6]), weights, Shapes(False, False, True)) \
        == -math.inf
    assert unseen_bound(np.array([-np.inf, 0.6]), weights, Shapes(False, True, True)) == 0.6
    # a single modality with weight 0 scores 0
    assert unseen_bound(np.array([0.2, 0.6]), np.array([1.0, 0.0]),
                        Shapes(False, True, False)) == 0.0


def test_item_shapes_count_only_vectors_the_store_still_holds():
    snapshot = OwnerSnapshot.empty().with_rows(
        ("t", 1), _rows((1, 10, 0), (2, 10, 2), (3, 11, 0), (4, 11, 2), (5, 12, 1), (6, 12, 2)),
        full=True)
    everything = np.ones(len(KINDS), bool)
    live = {Modality.IMAGE: np.array([1, 3, 5]), Modality.TEXT: np.array([2, 4, 6])}
    assert item_shapes(snapshot, live, everything) == Shapes(False, False, True)
    no_generated = np.array([True, False, True, True])
    assert item_shapes(snapshot, live, no_generated) == Shapes(False, True, True)
    live[Modality.IMAGE] = np.array([1, 5])  # item 11's image was removed
    assert item_shapes(snapshot, live, everything) == Shapes(False, True, True)


def test_score_pool_keeps_the_first_score_of_an_id():
    pool = ScorePool()
    pool.add(np.array([5, 3]), np.array([0.5, 0.3]))
    pool.add(np.array([3, 9]), np.array([0.9, np.nan]))
    scores, known = pool.get(np.array([[3, 9], [4, 5]]))
    assert known.tolist() == [[True, True], [False, True]]
    assert scores[0, 0] == 0.3 and np.isnan(scores[0, 1]) and scores[1, 1] == 0.5


def test_predicted_depth_reaches_the_target_on_a_normal_tail():
    """From the top 128 of 100k normal scores, the depth predicted for a score far below
    is past the rank where it really falls (so one more round suffices), and not
    wastefully far past it."""
    rng = np.random.default_rng(1)
    for target_rank in (500, 2000, 8000):
        scores = np.sort(rng.normal(size=100_000))[::-1]
        predicted = candidates._predicted_depth(scores[:128], float(scores[target_rank]))
        assert target_rank <= predicted <= 6 * target_rank, target_rank
    assert candidates._predicted_depth(np.ones(128), 0.5) == math.inf  # flat: no slope


def test_deeper_rounds_move_only_spaces_above_the_target():
    hits = {m: candidates.SpaceHits(np.arange(100), np.linspace(1.0, 0.5, 100), 0.5)
            for m in Modality}
    hits[Modality.TEXT] = candidates.SpaceHits(np.arange(100), np.linspace(0.5, 0.1, 100),
                                               0.1)
    depths = {m: 100 for m in Modality}
    deeper = candidates._deeper(hits, depths, {m: 10_000 for m in Modality}, target=0.3)
    assert deeper[Modality.TEXT] == 100 and deeper[Modality.IMAGE] >= 200
    capped = candidates._deeper(hits, depths, {m: 150 for m in Modality}, target=0.3)
    assert capped[Modality.IMAGE] == 150
