"""Replaying the embedding log into a lookup: where each live id's newest row is.

Built once from all shards (`build_lookup`), then kept current one shard at a time
(`apply_shard`): a write costs O(live ids), not a full replay of the log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from search.sorted_ids import locate
from search.vectors.oplog import Shard


@dataclass(frozen=True)
class Lookup:
    """Where each live id's newest row is; arrays aligned, sorted by id."""

    ids: np.ndarray  # int64 [m]
    shard: np.ndarray  # int32 [m], position in the view's shards
    row: np.ndarray  # int64 [m], row within that shard


def _events(shards: tuple[Shard, ...]) -> Iterator[tuple[np.ndarray, int, np.ndarray, bool]]:
    """(ids, shard position, rows, is a deletion) in replay order."""
    for i, s in enumerate(shards):
        if s.removed is not None and len(s.removed):
            yield s.removed, i, np.full(len(s.removed), -1, np.int64), True
        yield s.ids, i, np.arange(len(s.ids), dtype=np.int64), s.kind == "del"


def build_lookup(shards: tuple[Shard, ...]) -> Lookup:
    """Replay all shards at once: per id, the last event wins; drop ids whose is a del."""
    events = list(_events(shards))
    if not events:
        empty = np.empty(0, np.int64)
        return Lookup(empty, np.empty(0, np.int32), empty)
    ids = np.concatenate([e[0] for e in events])
    shard = np.concatenate([np.full(len(e[0]), e[1], np.int32) for e in events])
    row = np.concatenate([e[2] for e in events])
    is_del = np.concatenate([np.full(len(e[0]), e[3]) for e in events])
    # stable sort keeps seq order among equal ids, so the last of each run is the newest
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_ids[1:] != sorted_ids[:-1]
    keep = order[last]
    keep = keep[~is_del[keep]]
    return Lookup(ids[keep], shard[keep], row[keep])


def apply_shard(lookup: Lookup, shard: Shard, position: int) -> Lookup:
    """The lookup after one more shard: its ids drop their old rows; an add re-adds them."""
    gone = shard.ids if shard.removed is None else np.concatenate([shard.removed, shard.ids])
    keep = np.ones(len(lookup.ids), dtype=bool)
    if len(lookup.ids) and len(gone):  # lookup.ids is sorted: a binary search per id
        pos, found = locate(lookup.ids, gone)
        keep[pos[found]] = False
    ids, where, row = lookup.ids[keep], lookup.shard[keep], lookup.row[keep]
    if shard.kind == "del":
        return Lookup(ids, where, row)
    order = np.argsort(shard.ids, kind="stable")
    new_ids = shard.ids[order]
    at = np.searchsorted(ids, new_ids)
    return Lookup(np.insert(ids, at, new_ids),
                   np.insert(where, at, np.full(len(new_ids), position, np.int32)),
                   np.insert(row, at, order.astype(np.int64)))
