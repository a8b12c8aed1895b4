"""Text-to-image generators: one interface, a registry of backends, one factory.

    generator = load_generator("house")                   # shipped, CPU, 64 px
    generator = load_generator("diffusers", model="stabilityai/sd-turbo")  # [generate] extra
    images = generator.generate(["red apple"], seed=7)    # list[PIL.Image], RGB

A seed fixes each image: the same (prompt, seed, size) gives the same picture however
prompts are batched, because every prompt draws its noise from its own seeded generator.
Prompts and sizes are checked here, once, for every backend.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from PIL import Image

from search.errors import InvalidInputError, InvalidPromptError, UnknownGeneratorError
from search.models.encoder import resolve_device

MAX_PROMPT_CHARS = 1000  # CLIP tokenizers read far less; longer is a client mistake
MAX_PROMPTS = 256  # per call: a bound on memory, not a batching hint
MIN_SIZE, MAX_SIZE = 16, 2048  # output side in pixels
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed accepts 64-bit seeds

# A loader builds a generator from (model, device, offline); see `load_generator`.
GeneratorLoader = Callable[[str | None, torch.device, bool], "ImageGenerator"]

# Backends as "module:function" so that importing this module never imports diffusers.
_BACKENDS: dict[str, str | GeneratorLoader] = {
    "house": "search.models.generators.house:load_house_generator",
    "diffusers": "search.models.generators.diffusers_backend:load_diffusers_generator",
}
_lock = threading.Lock()


class ImageGenerator(ABC):
    """Turns prompts into images. Subclasses implement `_generate` on checked input."""

    name: ClassVar[str]  # registry name, recorded with every generated image
    model_id: str  # exact weights (hash, hub id or path), recorded as provenance
    native_size: int  # the side the model draws at; `size=None` means this
    size_multiple: int = 1  # output sides must be a multiple of this (latent models: 8)

    def generate(self, prompts: Sequence[str], seed: int = 0,
                 size: int | None = None) -> list[Image.Image]:
        """One RGB image per prompt, `size` x `size` px (default `native_size`)."""
        texts = check_prompts(prompts)
        seed = check_seed(seed)
        side = check_size(size, self.native_size, self.size_multiple)
        if not texts:
            return []
        return [image.convert("RGB") for image in self._generate(texts, seed, side)]

    @abstractmethod
    def _generate(self, prompts: list[str], seed: int, size: int) -> list[Image.Image]:
        """Prompts are non-empty stripped strings; seed and size are valid."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model_id={self.model_id!r})"


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """The one place prompts are validated: strings, not blank, at most MAX_PROMPT_CHARS."""
    if isinstance(prompts, str):
        raise InvalidPromptError("prompts must be a list of strings, not one string")
    texts = list(prompts)
    if len(texts) > MAX_PROMPTS:
        raise InvalidPromptError(f"{len(texts)} prompts in one call; the limit is {MAX_PROMPTS}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidPromptError(f"prompt {index} is {type(text).__name__}, not a string")
        if not text.strip():
            raise InvalidPromptError(f"prompt {index} is empty")
        if len(text) > MAX_PROMPT_CHARS:
            raise InvalidPromptError(f"prompt {index} is {len(text)} characters long; the "
                                     f"limit is {MAX_PROMPT_CHARS}")
    return [text.strip() for text in texts]


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return seed


def check_size(size: int | None, native: int, multiple: int = 1) -> int:
    if size is None:
        return native
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInputError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], "
                                f"got {size!r}")
    if size % multiple:
        raise InvalidInputError(f"size must be a multiple of {multiple} for this generator, "
                                f"got {size}")
    return size


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: the same noise on every device, so a seed means one picture."""
    return torch.Generator(device="cpu").manual_seed(seed)


def register_generator(name: str, loader: str | GeneratorLoader) -> None:
    """Add (or replace) a backend: a loader or its "module:function" path."""
    with _lock:
        _BACKENDS[name] = loader


def available_generators() -> list[str]:
    with _lock:
        return sorted(_BACKENDS)


def _resolve_loader(name: str) -> GeneratorLoader:
    with _lock:
        loader = _BACKENDS.get(name)
    if loader is None:
        known = ", ".join(available_generators())
        raise UnknownGeneratorError(f"unknown generator {name!r} (known: {known})")
    if isinstance(loader, str):
        module_name, _, attribute = loader.partition(":")
        loader = getattr(importlib.import_module(module_name), attribute)
    return loader


def load_generator(name: str, model: str | None = None, device: str = "auto", *,
                   offline: bool = False) -> ImageGenerator:
    """The only way to get a generator.

    `name` is a registered backend (`house`, `diffusers`); `model` is backend-specific
    (house: a weights file or None for the shipped one; diffusers: a hub id or a local
    pipeline directory). `offline=True` never contacts the model hub.
    """
    if not isinstance(name, str):
        raise UnknownGeneratorError(f"generator name must be a string, got {name!r}")
    return _resolve_loader(name)(model, resolve_device(device), offline)
