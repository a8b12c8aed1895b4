"""The house generator's networks: a prior and a conditional-VAE decoder (DALL-E 2, small).

    text embedding --Prior--> image embedding --Decoder(z ~ N(0, I))--> 64 px RGB image

Both work in the house CLIP space (unit vectors, `embed_dim` wide). The decoder is the
generative half of a conditional VAE; its inference network (`PosteriorEncoder`) is only
needed for training and is not shipped. Weights live in one safetensors file whose
metadata holds the config and the identity of the encoder they were trained against.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

FORMAT = "xmodal-house-generator/1"


@dataclass(frozen=True)
class GeneratorConfig:
    embed_dim: int = 256  # the CLIP space (house: 256)
    image_size: int = 64
    latent_dim: int = 8  # z: what the CLIP embedding leaves open (pose, palette)
    prior_width: int = 512
    prior_blocks: int = 2
    base_size: int = 4  # the decoder starts from a base_size^2 grid and doubles it
    channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # per resolution, base first

    def __post_init__(self) -> None:
        expected = self.base_size * 2 ** (len(self.channels) - 1)
        if expected != self.image_size:
            raise ValueError(f"{len(self.channels)} stages from {self.base_size} px give "
                             f"{expected} px, not image_size={self.image_size}")

    @classmethod
    def from_json(cls, text: str) -> GeneratorConfig:
        values = json.loads(text)
        values["channels"] = tuple(values["channels"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class ResidualMLP(nn.Module):
    """Pre-norm residual block: x + W2 gelu(W1 LN(x))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Prior(nn.Module):
    """Text embedding [B, D] -> predicted image embedding [B, D], unit length.

    A deterministic regression prior (DALL-E 2 also tried these next to its diffusion
    prior); the decoder's z supplies the variety."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        width = config.prior_width
        self.net = nn.Sequential(
            nn.Linear(config.embed_dim, width),
            *[ResidualMLP(width) for _ in range(config.prior_blocks)],
            nn.LayerNorm(width), nn.Linear(width, config.embed_dim))
        # Start as the identity map: the text vector is already a fair guess (CLIP aligns
        # the towers), and training then moves it toward where images of it lie.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        # Predict a residual on the text vector: the two towers' spaces are aligned already.
        return F.normalize(text + self.net(text), dim=-1)


class UpBlock(nn.Module):
    """x2 upsample, then conv-norm-act with the condition as a FiLM scale and shift."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, out_channels), out_channels, affine=False)
        self.film = nn.Linear(cond_dim, 2 * out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # [B, C_in, 2H, 2W]
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)  # [B, C_out, 1, 1]
        h = F.silu(self.norm(self.conv1(x)) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)  # [B, C_out, 2H, 2W]


class Decoder(nn.Module):
    """(z [B, latent], image embedding [B, D]) -> RGB [B, 3, S, S] in [0, 1]."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        cond_dim = config.embed_dim + config.latent_dim
        first = config.channels[0]
        self.stem = nn.Linear(cond_dim, first * config.base_size**2)
        self.blocks = nn.ModuleList(
            UpBlock(a, b, cond_dim) for a, b in zip(config.channels, config.channels[1:],
                                                    strict=False))
        self.to_rgb = nn.Sequential(nn.GroupNorm(min(8, config.channels[-1]),
                                                 config.channels[-1]),
                                    nn.SiLU(), nn.Conv2d(config.channels[-1], 3, 3, padding=1))

    def forward(self, z: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([embedding, z], dim=-1)  # [B, D + latent]
        side = self.config.base_size
        x = self.stem(cond).view(len(cond), -1, side, side)  # [B, C0, 4, 4]
        for block in self.blocks:
            x = block(x, cond)
        return torch.sigmoid(self.to_rgb(x))  # [B, 3, S, S]


class PosteriorEncoder(nn.Module):
    """q(z | image, embedding): image [B, 3, S, S] -> (mean, log-variance) [B, latent].

    Training only: it lets the VAE learn what z should carry."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        channels = config.channels[::-1]  # fine to coarse
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1)]
        for a, b in zip(channels, channels[1:], strict=False):
            layers += [nn.GroupNorm(min(8, a), a), nn.SiLU(),
                       nn.Conv2d(a, b, 4, stride=2, padding=1)]
        self.convs = nn.Sequential(*layers)
        flat = channels[-1] * config.base_size**2
        self.head = nn.Linear(flat + config.embed_dim, 2 * config.latent_dim)

    def forward(self, image: torch.Tensor, embedding: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.convs(image * 2 - 1).flatten(1)  # [B, C * base^2]
        mean, log_var = self.head(torch.cat([features, embedding], dim=-1)).chunk(2, dim=-1)
        return mean, log_var.clamp(-10.0, 10.0)


def save_generator(path: Path, prior: Prior, decoder: Decoder, config: GeneratorConfig,
                   metadata: dict[str, str]) -> Path:
    """fp16 safetensors: prior.* and decoder.* tensors, config + provenance as metadata."""
    tensors = {f"prior.{k}": v for k, v in prior.state_dict().items()}
    tensors |= {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": FORMAT, "config": config.to_json(),
                                             **metadata})
    return path


def read_generator(path: Path) -> tuple[Prior, Decoder, GeneratorConfig, dict[str, str]]:
    """Inverse of `save_generator`; networks in fp32 eval mode on CPU."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not a house generator file (format "
                             f"{metadata.get('format')!r}, expected {FORMAT!r})")
        tensors = {key: handle.get_tensor(key).float() for key in handle.keys()}  # noqa: SIM118
    config = GeneratorConfig.from_json(metadata["config"])
    prior, decoder = Prior(config), Decoder(config)
    prior.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("prior.")})
    decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
    return prior.eval(), decoder.eval(), config, metadata
