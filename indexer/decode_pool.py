"""Decode worker processes that outlive a worker killed by the OS.

A worker can die without raising anything: the kernel's OOM killer, a SIGKILL, a crash
in a native decoder. `concurrent.futures` then marks the whole pool broken and fails
every pending call, which used to end the job. Here a broken pool is replaced, and each
batch it was running is retried once in a one-worker pool of its own, where nothing
else runs. If that retry dies too, its items run there one at a time, so a death is
that item's own doing: such an item becomes its own failure; the job goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Task = TypeVar("Task")
Result = TypeVar("Result")


@dataclass
class PendingBatch(Generic[Task]):
    tasks: list[Task]
    future: Future
    pool: ProcessPoolExecutor  # the pool it was submitted to


@dataclass(frozen=True)
class PoolSpec:
    """How to start workers: a multiprocessing context and a per-worker initializer."""

    workers: int
    context: multiprocessing.context.BaseContext
    initializer: Callable[..., None]
    initargs: tuple


class DecodePool(Generic[Task, Result]):
    """`submit` batches of tasks, then `results` in order, whatever happens to a worker.

    `prepare(tasks) -> results` (one per task, in order; module-level, so it travels
    by reference) runs in the workers; `died(task, reason) -> result` makes
    the failure of an item whose worker died on its batch and again on its own retry."""

    def __init__(self, spec: PoolSpec, prepare: Callable[[list[Task]], list[Result]],
                 died: Callable[[Task, str], Result]) -> None:
        self.spec, self.prepare, self.died = spec, prepare, died
        self.pool = self._start(spec.workers)
        self._retry_pool: ProcessPoolExecutor | None = None
        self.restarts = 0  # pools replaced after a worker died

    def __enter__(self) -> DecodePool[Task, Result]:
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in (self.pool, self._retry_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _start(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=self.spec.context,
                                   initializer=self.spec.initializer,
                                   initargs=self.spec.initargs)

    def submit(self, tasks: list[Task], batch_size: int) -> list[PendingBatch[Task]]:
        """Submit now, in batches of `batch_size` tasks; read with `results`."""
        pending = []
        for start in range(0, len(tasks), max(1, batch_size)):
            batch = tasks[start:start + max(1, batch_size)]
            pending.append(self._submit(batch))
        return pending

    def _submit(self, batch: list[Task]) -> PendingBatch[Task]:
        try:
            future = self.pool.submit(self.prepare, batch)
        except BrokenProcessPool:  # it broke since our last look: replace it first
            self._replace(self.pool)
            future = self.pool.submit(self.prepare, batch)
        return PendingBatch(batch, future, self.pool)

    def results(self, pending: list[PendingBatch[Task]]) -> Iterator[Result]:
        for batch in pending:
            try:
                yield from batch.future.result()
            except BrokenProcessPool:
                self._replace(batch.pool)
                yield from self._retry(batch.tasks)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """A worker of `broken` died: start a fresh pool (once per broken pool)."""
        if broken is not self.pool:
            return  # already replaced by an earlier batch of the same pool
        self.restarts += 1
        log.warning("a decode worker died (killed by the OS?); restarting the workers and "
                    "retrying its batches once")
        broken.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start(self.spec.workers)

    def _retry(self, tasks: list[Task]) -> list[Result]:
        """The batch again, alone in the one-worker retry pool. If a worker dies there
        too, each of its tasks runs alone: only one that kills its worker by itself
        fails (a batch broken by a neighbour's death may never have run at all)."""
        try:
            return self._run_alone(tasks)
        except BrokenProcessPool:
            return [self._retry_one(task) for task in tasks]

    def _retry_one(self, task: Task) -> Result:
        try:
            return self._run_alone([task])[0]
        except BrokenProcessPool:
            return self.died(task, "the decode worker died while preparing this item, "
                                   "alone, after its batch had been retried (killed by "
                                   "the OS, e.g. out of memory?)")

    def _run_alone(self, tasks: list[Task]) -> list[Result]:
        if self._retry_pool is None:
            self._retry_pool = self._start(1)
        try:
            return self._retry_pool.submit(self.prepare, tasks).result()
        except BrokenProcessPool:
            self._retry_pool.shutdown(wait=False, cancel_futures=True)
            self._retry_pool = None
            raise
