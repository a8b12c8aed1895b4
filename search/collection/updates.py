"""What one write does to a collection's spaces: the log operation each space gets
(one per space and write), run in parallel when both change."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from search.catalog.models import Modality

# Writes the spaces' log operations of one write in parallel (see in_parallel).
_LOG_WRITERS = ThreadPoolExecutor(max_workers=len(Modality), thread_name_prefix="log-write")


@dataclass(frozen=True)
class SpaceUpdate:
    """What one write does to one space's embedding log: a single operation."""

    removed: list[int]  # vector ids leaving the space
    ids: np.ndarray  # int64 [n]: new vector ids
    vectors: np.ndarray  # float32 [len(ids), dim]


def in_parallel(writes: list[Callable[[], None]]) -> None:
    """Run the spaces' log operations of one write; two at once when both change (an
    item with a text and an image), so that their fsyncs overlap instead of adding up.
    Waits for all, then raises the first error."""
    if len(writes) <= 1:
        for write in writes:
            write()
        return
    futures = [_LOG_WRITERS.submit(write) for write in writes]
    for future in futures:
        future.exception()
    for future in futures:
        future.result()
