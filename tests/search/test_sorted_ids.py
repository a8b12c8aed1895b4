"""locate() agrees with a plain dictionary lookup, sorted or not, flat or 2-D."""

import numpy as np
import pytest

from search.sorted_ids import SORT_FROM, locate


@pytest.mark.parametrize("n_wanted", [1, SORT_FROM - 1, SORT_FROM, 5000])
@pytest.mark.parametrize("shape", ["flat", "2d", "ascending"])
def test_positions_and_found_match_a_dictionary(n_wanted, shape):
    rng = np.random.default_rng(n_wanted)
    keys = np.sort(rng.choice(100_000, 20_000, replace=False)).astype(np.int64)
    wanted = rng.integers(-5, 100_005, n_wanted * 2).astype(np.int64)  # about 1 in 5 found
    if shape == "ascending":
        wanted = np.sort(wanted)
    if shape == "2d":
        wanted = wanted.reshape(-1, 2)
    index = {int(k): i for i, k in enumerate(keys)}
    pos, found = locate(keys, wanted)
    assert pos.shape == found.shape == wanted.shape
    expected = np.vectorize(lambda w: int(w) in index)(wanted)
    np.testing.assert_array_equal(found, expected)
    assert found.any() and (~found).any()
    np.testing.assert_array_equal(keys[pos[found]], wanted[found])
    assert ((pos >= 0) & (pos < len(keys))).all()  # valid even where not found
