"""The `diffusers` generator: any diffusers text-to-image pipeline, by hub id or local path.

Needs the `[generate]` extra (diffusers + transformers). fp16 on CUDA, fp32 on CPU. Noise
comes from one seeded CPU generator per prompt, so a seed gives the same latents on
every device and however prompts are batched.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from search.errors import GeneratorUnavailableError
from search.models.encoder import _hub_reachable
from search.models.generator import ImageGenerator, seeded_generator

EXTRA_HINT = "install the [generate] extra: pip install 'xmodal[generate]'"
DEFAULT_NATIVE_SIZE = 512


class DiffusersGenerator(ImageGenerator):
    """Wraps a loaded pipeline; `steps` / `guidance_scale` None keep the pipeline's defaults
    (distilled models such as SD-Turbo want steps=1, guidance_scale=0.0)."""

    name = "diffusers"

    def __init__(self, pipeline: Any, model_id: str, *, steps: int | None = None,
                 guidance_scale: float | None = None) -> None:
        self.pipeline = pipeline
        self.model_id = model_id
        self.steps = steps
        self.guidance_scale = guidance_scale
        scale = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
        # Latent pipelines need sides divisible by the VAE factor; SDXL/Flux-style
        # patching needs twice that, which is also safe for the others.
        self.size_multiple = 2 * scale
        self.native_size = _native_size(pipeline, scale)
        self._lock = threading.Lock()  # a pipeline call mutates its scheduler: one at a time

    def _generate(self, prompts: list[str], seed: int, size: int) -> list[Image.Image]:
        options: dict[str, Any] = {"height": size, "width": size, "output_type": "pil",
                                   "generator": [seeded_generator(seed) for _ in prompts]}
        if self.steps is not None:
            options["num_inference_steps"] = self.steps
        if self.guidance_scale is not None:
            options["guidance_scale"] = self.guidance_scale
        with self._lock, torch.inference_mode():
            return list(self.pipeline(prompt=prompts, **options).images)


def _native_size(pipeline: Any, scale: int) -> int:
    default = getattr(pipeline, "default_sample_size", None)
    if default:
        return int(default) * scale
    for part in ("unet", "transformer", "prior", "decoder"):
        sample_size = getattr(getattr(getattr(pipeline, part, None), "config", None),
                              "sample_size", None)
        if isinstance(sample_size, int):
            return sample_size * scale
    return DEFAULT_NATIVE_SIZE


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise GeneratorUnavailableError(f"the diffusers generator needs diffusers and "
                                        f"transformers; {EXTRA_HINT}") from exc
    return diffusers


def _from_pretrained(diffusers: Any, source: str, **options: Any) -> Any:
    """AutoPipeline knows the text-to-image class of every family; anything else (a custom
    pipeline) is loaded as whatever its model_index.json names."""
    try:
        return diffusers.AutoPipelineForText2Image.from_pretrained(source, **options)
    except ValueError:
        return diffusers.DiffusionPipeline.from_pretrained(source, **options)


def _load_pipeline(model: str, dtype: torch.dtype, offline: bool) -> tuple[Any, str]:
    diffusers = _import_diffusers()
    local = Path(model).expanduser()
    try:
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise GeneratorUnavailableError(
                    f"{local} is not a diffusers pipeline directory (no model_index.json)")
            return _from_pretrained(diffusers, str(local), dtype=dtype), str(local.resolve())
        try:  # already in the hub cache: no network needed
            return _from_pretrained(diffusers, model, dtype=dtype, local_files_only=True), model
        except Exception:  # noqa: BLE001 - any cache miss (not found, partial) means: fetch
            if offline or not _hub_reachable():
                raise GeneratorUnavailableError(
                    f"diffusers model {model!r} is not a local directory, not in the hub "
                    "cache, and the model hub cannot be reached (offline); pass a local "
                    "pipeline directory (pipeline.save_pretrained(dir))") from None
        return _from_pretrained(diffusers, model, dtype=dtype), model
    except GeneratorUnavailableError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise GeneratorUnavailableError(f"cannot load diffusers model {model!r}: {exc}") from exc


def load_diffusers_generator(model: str | None, device: torch.device,
                             offline: bool = False) -> DiffusersGenerator:
    """Registry loader: `model` is a hub id (`stabilityai/sd-turbo`) or a local directory."""
    if not model:
        raise GeneratorUnavailableError(
            "the diffusers generator needs a model: a hub id (e.g. stabilityai/sd-turbo) "
            "or a local pipeline directory (--generator-model)")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipeline, model_id = _load_pipeline(model, dtype, offline)
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return DiffusersGenerator(pipeline, model_id)
