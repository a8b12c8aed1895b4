"""The `house` generator: house CLIP text tower -> prior -> conditional-VAE decoder, on CPU.

Weights (`search/models/weights/house-generator.safetensors`, fp16) are trained by
`python -m indexer.house.generator_train` against one exact house encoder; the file
records that encoder's identity and loading refuses any other, since the decoder only
understands the space it was trained in.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError

from search.errors import GeneratorUnavailableError
from search.models.encoder import Encoder, load_encoder
from search.models.generator import ImageGenerator, seeded_generator
from search.models.generators.house_nets import Decoder, Prior, read_generator

WEIGHTS_FILE = "house-generator.safetensors"
TRAIN_COMMAND = "python -m indexer.house.generator_train --out search/models/weights"
DEFAULT_TEMPERATURE = 0.8  # z scale at sampling (< 1: less variety, cleaner); files say theirs


def shipped_weights_path() -> Path:
    return Path(str(resources.files("search.models") / "weights" / WEIGHTS_FILE))


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class HouseGenerator(ImageGenerator):
    """64 px images from prompts; one seeded z per prompt, so batching never changes one."""

    name = "house"
    native_size = 64

    def __init__(self, encoder: Encoder, prior: Prior, decoder: Decoder, model_id: str,
                 temperature: float = DEFAULT_TEMPERATURE) -> None:
        self.encoder = encoder
        self.prior = prior.eval()
        self.decoder = decoder.eval()
        self.model_id = model_id
        self.temperature = temperature
        self.native_size = decoder.config.image_size
        self.latent_dim = decoder.config.latent_dim

    def _latents(self, count: int, seed: int) -> torch.Tensor:
        # Every prompt gets the same seed's z: a picture depends on (prompt, seed) only.
        z = torch.randn(1, self.latent_dim, generator=seeded_generator(seed))
        return z.expand(count, -1) * self.temperature  # [n, latent]

    @torch.inference_mode()
    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Predicted CLIP image embeddings [n, D] for prompts (the prior's output)."""
        text = torch.from_numpy(self.encoder.encode_texts(prompts))  # [n, D], unit
        return self.prior(text)

    @torch.inference_mode()
    def _generate(self, prompts: list[str], seed: int, size: int) -> list[Image.Image]:
        embedding = self.embed_prompts(prompts)
        pixels = self.decoder(self._latents(len(prompts), seed), embedding)  # [n, 3, S, S]
        return [_resize(to_pil(image), size) for image in pixels]


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> RGB image."""
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _resize(image: Image.Image, size: int) -> Image.Image:
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _weights_file(model: str | None) -> Path:
    if model is None:
        path = shipped_weights_path()
        if not path.is_file():
            raise GeneratorUnavailableError(
                f"the house generator has no shipped weights ({path} is missing); train "
                f"them with `{TRAIN_COMMAND}` or pass a weights file as the model")
        return path
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise GeneratorUnavailableError(f"house generator weights not found: {path}")
    return path


def _encoder_for(metadata: dict[str, str], device: torch.device) -> Encoder:
    """The encoder the weights were trained against, or a typed error saying why not."""
    pretrained = metadata.get("encoder_pretrained") or None
    encoder = load_encoder(metadata.get("encoder_model", "house"), pretrained,
                           device=str(device))
    expected = metadata.get("encoder_identity")
    if expected and encoder.identity != expected:
        raise GeneratorUnavailableError(
            f"the house generator was trained against encoder {expected}, but "
            f"{encoder.identity} is installed; retrain it with `{TRAIN_COMMAND}`")
    return encoder


def load_house_generator(model: str | None, device: torch.device,
                         offline: bool = False) -> HouseGenerator:
    """Registry loader: `model` is a weights file (or its directory); None = shipped."""
    path = _weights_file(model)
    try:
        prior, decoder, _, metadata = read_generator(path)
    except (SafetensorError, ValueError, KeyError, OSError, RuntimeError) as exc:
        raise GeneratorUnavailableError(f"cannot read house generator weights {path}: "
                                        f"{exc}") from exc
    encoder = _encoder_for(metadata, device)
    # The networks are small: CPU is fast enough and keeps generation off the GPU encoder.
    temperature = float(metadata.get("temperature", DEFAULT_TEMPERATURE))
    return HouseGenerator(encoder, prior, decoder, f"house-generator|sha256:{_file_digest(path)}",
                          temperature)

