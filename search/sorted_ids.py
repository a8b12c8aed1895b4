"""Finding ids in a sorted id array: the lookup every query makes, many thousand times
for a fused one (owner map, score pool, embedding store)."""

from __future__ import annotations

import numpy as np

# Below this many wanted ids, sorting them first costs more than it saves.
SORT_FROM = 256


def locate(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in `keys` (sorted, not empty) of each wanted id, found mask), both shaped
    like `wanted`; the position of an id not found is some valid index.

    Searched in ascending order: over a million keys each binary search misses the cache
    about twenty times unless the previous one walked the same path, so sorted ids search
    3x faster, the sort included (13k ids in 1M keys: 2.6 -> 0.9 ms)."""
    flat = wanted.ravel()
    if len(flat) >= SORT_FROM and len(keys) >= SORT_FROM and (np.diff(flat) < 0).any():
        order = np.argsort(flat, kind="stable")
        pos = np.empty(len(flat), np.int64)
        pos[order] = np.searchsorted(keys, flat[order])
    else:
        pos = np.searchsorted(keys, flat)
    pos = np.minimum(pos, len(keys) - 1).reshape(wanted.shape)
    return pos, keys[pos] == wanted
