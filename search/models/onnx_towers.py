"""Query towers under ONNX Runtime: exported once per model identity, cached on disk.

A 7-token text query is ~180 small ops; eager torch pays its dispatch overhead on each,
ONNX Runtime runs a fused graph (LayerNorm, GELU, attention pieces) with less of it, and
its dynamic int8 quantisation covers every MatMul (attention projections too). Exports
are keyed by everything that shapes the graph or its weights, written atomically (a
temporary file, then rename) under a lock, so concurrent workers export once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch

from search.models.text_prefix import TextPrefixGraph

log = logging.getLogger(__name__)

OPSET = 17
EXPORT_FORMAT = 2  # bump when the exported graphs change: old cache files stop matching
TEXT, IMAGE = "text", "image"
_INPUTS = {TEXT: "tokens", IMAGE: "pixels"}
_OPEN_LIMIT = 8  # towers kept open per process (a server holds 2 per model)
_open: OrderedDict[tuple[str, tuple[int, ...]], OnnxTower] = OrderedDict()
_open_lock = threading.Lock()


@dataclass(frozen=True)
class TowerSpec:
    """Which tower of which model, and how: what names an export in the cache."""

    identity: str  # Encoder.identity: architecture + exact weights
    config: dict  # the open_clip model config (covers random-init weights too)
    tower: str  # TEXT | IMAGE
    int8: bool

    def key(self) -> str:
        import onnxruntime

        fields = {"identity": self.identity, "config": self.config, "tower": self.tower,
                  "int8": self.int8, "torch": torch.__version__, "opset": OPSET,
                  "open_clip": open_clip.__version__, "format": EXPORT_FORMAT,
                  "onnxruntime": onnxruntime.__version__ if self.int8 else None}
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def file_name(self) -> str:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.identity.split("|")[0])[-40:]
        return f"{name}-{self.tower}{'-int8' if self.int8 else ''}-{self.key()}.onnx"


def open_tower(model, spec: TowerSpec, cache_dir: Path | None, threads: tuple[int, ...]
               ) -> OnnxTower:
    """The tower under ONNX Runtime, shared in this process by every encoder of the same
    weights (the key names them exactly): one export and one set of sessions."""
    key = (spec.key(), threads)
    with _open_lock:
        tower = _open.get(key)
        if tower is None:
            source = export_tower(model, spec, cache_dir)
            tower = OnnxTower(source, spec.tower, max(threads), threads)
            _open[key] = tower
        _open.move_to_end(key)
        while len(_open) > _OPEN_LIMIT:
            _open.popitem(last=False)
        return tower


def export_tower(model, spec: TowerSpec, cache_dir: Path | None) -> Path | bytes:
    """The exported tower: a cached file, or bytes when no cache directory is writable."""
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            return _cached_export(model, spec, cache_dir)
        except OSError as error:
            log.warning("ONNX cache %s not writable (%s): exporting in memory", cache_dir,
                        error)
    with tempfile.TemporaryDirectory(prefix="xmodal-onnx-") as scratch:
        return _cached_export(model, spec, Path(scratch)).read_bytes()


def _cached_export(model, spec: TowerSpec, cache_dir: Path) -> Path:
    path = cache_dir / spec.file_name()
    if path.is_file():
        return path
    source = _cached_export(model, TowerSpec(spec.identity, spec.config, spec.tower, False),
                            cache_dir) if spec.int8 else None
    with _locked(path):
        if path.is_file():  # another process finished it while we waited
            return path
        with _atomic(path) as scratch:
            if source is not None:
                _quantise(source, scratch)
            else:
                _export(model, spec.tower, scratch)
    log.info("exported %s", path)
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    scratch = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield scratch
        with scratch.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def _export(model, tower: str, target: Path) -> None:
    """torch.onnx's TorchScript exporter (`dynamo=False`): it traces open_clip's towers as
    they are, with no extra dependency; batch (and text length) axes stay dynamic.

    Grad mode on, even inside a caller's inference_mode: without it nn.MultiheadAttention
    takes its fused fast path, which has no ONNX export."""
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        graph, sample, axes = _graph(model, tower)
        graph.eval()  # the exporter restores the wrapper's mode on every submodule after
        torch.onnx.export(graph, (sample,), str(target), input_names=[_INPUTS[tower]],
                          output_names=["features"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)


def _graph(model, tower: str) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """(module, sample input, dynamic axes) of one tower."""
    if tower == TEXT:
        vocab = model.token_embedding.num_embeddings
        sample = torch.randint(0, vocab, (2, 5))  # [batch, length]
        axes = {"tokens": {0: "batch", 1: "length"}, "features": {0: "batch"}}
        return TextPrefixGraph(model), sample, axes
    size = _image_size(model.visual)
    sample = torch.zeros(2, 3, size, size)  # [batch, 3, H, W]
    return model.visual, sample, {"pixels": {0: "batch"}, "features": {0: "batch"}}


def _image_size(visual) -> int:
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantise(source: Path, target: Path) -> None:
    """Dynamic int8 for every MatMul / Gemm (weights int8, activations quantised per call);
    convolutions stay float32 (ConvInteger was slower than float32 on the house ResNet).
    Weights use 7 bits (`reduce_range`): on x86 CPUs without VNNI, ONNX Runtime's u8 x s8
    kernel adds pairs of products in saturating 16-bit sums, which full-range weights
    overflow (a tiny ViT's image tower fell to cosine 0.97 on an AVX2-only EPYC; 7-bit
    weights keep it at 0.99+ there, and the house towers at 0.9999)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8,
                         reduce_range=True)
    finally:
        logging.getLogger().removeFilter(hint)


class OnnxTower:
    """One exported tower under ONNX Runtime's CPU provider.

    A session's intra-op thread count is fixed when it is built, so there is one session
    per count the thread chooser asks for, rounded down to a power of two (at most
    log2(cores) + 1 sessions, each with its own copy of the weights)."""

    def __init__(self, source: Path | bytes, tower: str, max_threads: int,
                 eager_threads: tuple[int, ...] = ()) -> None:
        self.source, self.input = source, _INPUTS[tower]
        self.max_threads = max(1, max_threads)
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()
        for count in eager_threads:
            self._session(count)

    def run(self, array: np.ndarray, threads: int) -> np.ndarray:
        """[batch, ...] -> [batch, embed_dim] float32 features (not normalised)."""
        return self._session(threads).run(None, {self.input: array})[0]

    def _session(self, threads: int):
        count = 1 << (max(1, min(threads, self.max_threads)).bit_length() - 1)
        session = self._sessions.get(count)
        if session is None:
            with self._lock:
                session = self._sessions.get(count) or self._new_session(count)
                self._sessions[count] = session
        return session

    def _new_session(self, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning workers steal shared cores from other requests (cf. OMP_WAIT_POLICY).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = self.source if isinstance(self.source, bytes) else str(self.source)
        return onnxruntime.InferenceSession(source, options,
                                            providers=["CPUExecutionProvider"])
