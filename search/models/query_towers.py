"""The towers one encoder runs queries with, built from its `QueryRuntime`.

torch float32 (the stored vectors' own towers), torch int8 copies, or ONNX Runtime on an
exported copy (float32 or int8). Each returns features, never normalised: the Encoder
normalises. Where an option cannot apply (no CPU, a tower that does not quantise or
export), the tower stays float32 torch and the effective runtime says so.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from search.models.onnx_towers import IMAGE, TEXT, OnnxTower, TowerSpec, open_tower
from search.models.query_runtime import (
    QueryBackend,
    QueryRuntime,
    quantised_copy,
    quantised_visual,
)
from search.models.text_prefix import encode_text_prefix, supports_prefix, trim_tokens

log = logging.getLogger(__name__)
Features = torch.Tensor | np.ndarray  # [batch, embed_dim], not normalised


class QueryTowers:
    """`text(tokens, threads)` and `image(pixels, threads)` for `Encoder.encode_query_*`."""

    def __init__(self, model, requested: QueryRuntime, identity: str, config: dict,
                 on_cpu: bool, threads: tuple[int, ...]) -> None:
        self.model = model
        self._torch_text: torch.nn.Module | None = None  # int8 transformer copy
        self._torch_visual: torch.nn.Module | None = None  # visual with an int8 transformer
        self._onnx: dict[str, OnnxTower] = {}
        onnx_build = _OnnxBuild(model, identity, config, requested.onnx_cache, threads)
        text_on = on_cpu and supports_prefix(model)  # int8 and onnx need the prefix run
        text_backend, text_int8 = self._build_text(requested, text_on, onnx_build)
        image_backend, image_int8 = self._build_image(requested, on_cpu, onnx_build)
        self.runtime = replace(requested, text_int8=text_int8, image_int8=image_int8,
                               text_backend=text_backend, image_backend=image_backend)

    def _build_text(self, requested: QueryRuntime, allowed: bool, onnx: _OnnxBuild
                    ) -> tuple[QueryBackend, bool]:
        int8 = requested.text_int8 and allowed
        if allowed and requested.text_backend == QueryBackend.ONNX:
            tower = onnx.tower(TEXT, int8)
            if tower is not None:
                self._onnx[TEXT] = tower
                return QueryBackend.ONNX, int8
        self._torch_text = quantised_copy(self.model.transformer) if int8 else None
        return QueryBackend.TORCH, int8

    def _build_image(self, requested: QueryRuntime, allowed: bool, onnx: _OnnxBuild
                     ) -> tuple[QueryBackend, bool]:
        if allowed and requested.image_backend == QueryBackend.ONNX:
            tower = onnx.tower(IMAGE, requested.image_int8)
            if tower is not None:
                self._onnx[IMAGE] = tower
                return QueryBackend.ONNX, requested.image_int8
        int8 = requested.image_int8 and allowed
        self._torch_visual = quantised_visual(self.model.visual) if int8 else None
        return QueryBackend.TORCH, self._torch_visual is not None

    def text(self, tokens: torch.Tensor, threads: int) -> Features:
        """tokens [batch, context] (padded) -> features [batch, embed_dim]."""
        if TEXT in self._onnx:
            return self._onnx[TEXT].run(trim_tokens(tokens).cpu().numpy(), threads)
        if supports_prefix(self.model):
            return encode_text_prefix(self.model, tokens, self._torch_text)
        return self.model.encode_text(tokens)

    def image(self, pixels: torch.Tensor, threads: int) -> Features:
        """pixels [batch, 3, H, W] (preprocessed) -> features [batch, embed_dim]."""
        if IMAGE in self._onnx:
            return self._onnx[IMAGE].run(pixels.float().cpu().numpy(), threads)
        if self._torch_visual is not None:
            return self._torch_visual(pixels)
        return self.model.encode_image(pixels)


class _OnnxBuild:
    """Exports (or finds in the cache) one tower and opens it under ONNX Runtime."""

    def __init__(self, model, identity: str, config: dict, cache, threads: tuple[int, ...]
                 ) -> None:
        self.model, self.identity, self.config, self.cache = model, identity, config, cache
        self.threads = threads  # (1, most): sessions opened now, so no query pays for it

    def tower(self, tower: str, int8: bool) -> OnnxTower | None:
        spec = TowerSpec(self.identity, self.config, tower, int8)
        try:
            return open_tower(self.model, spec, self.cache, self.threads)
        except Exception as error:  # noqa: BLE001 - an unexportable tower keeps torch
            log.warning("%s tower of %s not run by ONNX Runtime (%s: %s); using torch",
                        tower, self.identity, type(error).__name__, error)
            return None
