"""How query encodes run: intra-op threads chosen by load, int8 towers for queries,
torch or ONNX Runtime.

A query is one text or one image: alone on the machine it should use every core, but
under concurrency each extra thread only steals cores from another request. Writes
(indexing) are batched and keep their own thread settings; nothing here touches them.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch

_PROC_STAT = Path("/proc/stat")


class QueryBackend(StrEnum):
    """What runs a query tower: eager torch, or ONNX Runtime on an exported copy (CPU)."""

    TORCH = "torch"
    ONNX = "onnx"


@dataclass(frozen=True)
class QueryRuntime:
    """`threads`: None = chosen per call by load; a number = always that many.
    `text_int8` / `image_int8`: dynamic int8 quantisation of that tower's Linear layers
    (MatMuls under ONNX Runtime) for queries; stored vectors always come from the float32
    torch towers. `text_backend` / `image_backend`: torch or onnx; `onnx_cache`: where
    exported towers are kept (None: exported in memory at each load)."""

    threads: int | None = None
    text_int8: bool = False
    image_int8: bool = False
    text_backend: QueryBackend = QueryBackend.TORCH
    image_backend: QueryBackend = QueryBackend.TORCH
    onnx_cache: Path | None = field(default=None, compare=False)

    @property
    def variant(self) -> str:
        """What changes query vectors (threads never do): part of the cache key."""
        parts = [_tower_variant("text", self.text_backend, self.text_int8),
                 _tower_variant("image", self.image_backend, self.image_int8)]
        return "+".join(part for part in parts if part) or "fp32"


def _tower_variant(tower: str, backend: QueryBackend, int8: bool) -> str:
    onnx = "-onnx" if backend == QueryBackend.ONNX else ""
    return f"{tower}{onnx}{'-int8' if int8 else ''}" if onnx or int8 else ""


def runnable_elsewhere() -> int:
    """Threads on the machine ready to run besides the caller (Linux `procs_running`);
    0 where /proc is missing, so a lone caller still gets the cores."""
    try:
        with _PROC_STAT.open("rb") as stat:
            for line in stat:
                if line.startswith(b"procs_running"):
                    return max(0, int(line.split()[1]) - 1)
    except OSError:
        pass
    return 0


class ThreadChooser:
    """Intra-op threads for one query call: the cores nobody else is using right now.

    In-process calls in flight count first (they are certain); other processes (other
    API workers, other jobs) through the kernel's run queue."""

    def __init__(self, fixed: int | None = None, cores: int | None = None) -> None:
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
                (os.cpu_count() or 1)
        self.fixed, self.cores = fixed, cores
        self._in_flight = 0
        self._lock = threading.Lock()

    def choose(self, in_flight: int) -> int:
        if self.fixed is not None:
            return self.fixed
        if in_flight > 1:
            return 1
        return max(1, min(self.cores, self.cores - runnable_elsewhere()))

    @contextmanager
    def threads(self) -> Iterator[int]:
        """Set this thread's intra-op threads for the duration of one call."""
        with self._lock:
            self._in_flight += 1
            in_flight = self._in_flight
        try:
            count = self.choose(in_flight)
            # OpenMP's thread count is per calling thread: other threads are unaffected.
            torch.set_num_threads(count)
            yield count
        finally:
            with self._lock:
                self._in_flight -= 1


def quantised_copy(tower: torch.nn.Module) -> torch.nn.Module:
    """An int8 copy of `tower` (dynamic quantisation of its Linear layers, fp32 in/out).

    Attention's fused input projection is a bare parameter and its output projection is
    excluded by torch, so the MLPs (two thirds of a transformer block's FLOPs) go int8."""
    with warnings.catch_warnings():  # torch points eager quantisation at torchao
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        quantise = torch.ao.quantization.quantize_dynamic
        return quantise(copy.deepcopy(tower).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def quantised_visual(visual: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of a ViT image tower whose transformer runs int8; None for other towers
    (a ResNet's attention pool reads its Linear weights directly: not quantisable)."""
    tower = getattr(visual, "transformer", None)
    if tower is None:
        return None
    visual = copy.copy(visual)  # shallow: shares the conv stem and the projection
    visual._modules = dict(visual._modules)
    visual.transformer = quantised_copy(tower)
    return visual
