"""Batched image augmentation on uint8 RGBA tensors, for contrastive training on 2 cores.

Everything runs as a few tensor ops on the whole batch (one `grid_sample`, one colour
matrix), so augmentation costs a few ms per batch instead of a PIL pipeline per image.
The aim is shape over colour: a model that only matches colours and layout does not
transfer from one emoji style to another. So: random crops/zooms/rotations, flips where
the caption allows, greyscale and hue rotation where no caption names a colour, and a
background that is usually white (what `search.media` composites on) but not always.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    # Share of images augmented at all; the rest are shown as search will see them. On
    # ~2k images and a 2-core budget, augmenting every image slowed learning ~6x (12-epoch
    # runs: in-style R@1 8 % vs 49 %) without improving cross-style recall.
    apply_p: float = 0.5
    scale: tuple[float, float] = (0.8, 1.1)  # >1 zooms out (object smaller in frame)
    max_shift: float = 0.08  # of the image side
    max_rotate_deg: float = 8.0
    flip_p: float = 0.5
    greyscale_p: float = 0.15
    hue_p: float = 0.25
    jitter: float = 0.1  # brightness / contrast / saturation, +- fraction
    background_white_p: float = 0.8
    blur_p: float = 0.15


NO_AUGMENT = AugmentConfig(apply_p=0.0)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _affine(n: int, cfg: AugmentConfig, flip_ok: torch.Tensor, active: torch.Tensor,
            gen: torch.Generator) -> torch.Tensor:
    """[n, 2, 3] sampling matrices: zoom, rotate, shift, mirror (identity if not active)."""
    on = active.float()
    scale = 1 + (_uniform(n, *cfg.scale, gen) - 1) * on
    angle = _uniform(n, -cfg.max_rotate_deg, cfg.max_rotate_deg, gen) * math.pi / 180 * on
    shift = _uniform(2 * n, -cfg.max_shift, cfg.max_shift, gen).view(n, 2) * 2 * on[:, None]
    flip = (torch.rand(n, generator=gen) < cfg.flip_p) & flip_ok & active
    sign = 1.0 - 2.0 * flip.float()
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * sign, -sin, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * sign, cos, shift[:, 1]
    return theta


def _backgrounds(n: int, cfg: AugmentConfig, active: torch.Tensor,
                 gen: torch.Generator) -> torch.Tensor:
    """[n, 3, 1, 1] in [0, 1]: mostly white, else a random flat colour."""
    colour = torch.rand(n, 3, generator=gen)
    white = (torch.rand(n, generator=gen) < cfg.background_white_p) | ~active
    colour[white] = 1.0
    return colour.view(n, 3, 1, 1)


def _hue_matrices(n: int, active: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[n, 3, 3] RGB hue rotations (about the grey axis); identity where not active."""
    angle = _uniform(n, -math.pi, math.pi, gen) * active.float()
    cos, sin = torch.cos(angle), torch.sin(angle)
    eye = torch.eye(3).expand(n, 3, 3)
    ones = torch.full((3, 3), 1 / 3).expand(n, 3, 3)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3)
    return (cos.view(n, 1, 1) * eye + (1 - cos).view(n, 1, 1) * ones
            + sin.view(n, 1, 1) * cross.expand(n, 3, 3))


def _colour(rgb: torch.Tensor, cfg: AugmentConfig, colour_ok: torch.Tensor,
            active: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Hue rotation / greyscale where allowed; mild brightness-contrast-saturation."""
    n = rgb.shape[0]
    jitter = cfg.jitter * active.float().view(n, 1, 1, 1)
    colour_ok = colour_ok & active
    hue = (torch.rand(n, generator=gen) < cfg.hue_p) & colour_ok
    rgb = torch.einsum("nij,njhw->nihw", _hue_matrices(n, hue, gen), rgb)
    grey = torch.einsum("c,nchw->nhw", _LUMA, rgb).unsqueeze(1)  # [n, 1, H, W]
    to_grey = ((torch.rand(n, generator=gen) < cfg.greyscale_p) & colour_ok).view(n, 1, 1, 1)
    saturation = 1 + _uniform(n, -1, 1, gen).view(n, 1, 1, 1) * jitter
    saturation = torch.where(to_grey, torch.zeros_like(saturation), saturation)
    rgb = grey + saturation * (rgb - grey)
    contrast = 1 + _uniform(n, -1, 1, gen).view(n, 1, 1, 1) * jitter
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = mean + contrast * (rgb - mean)
    brightness = 1 + _uniform(n, -1, 1, gen).view(n, 1, 1, 1) * jitter
    return (rgb * brightness).clamp(0.0, 1.0)


def _blur(rgb: torch.Tensor, cfg: AugmentConfig, active: torch.Tensor,
          gen: torch.Generator) -> torch.Tensor:
    """3x3 box blur on some images: softens the crisp-vs-shaded difference between styles."""
    chosen = (torch.rand(rgb.shape[0], generator=gen) < cfg.blur_p) & active
    if not bool(chosen.any()):
        return rgb
    rgb = rgb.clone()
    rgb[chosen] = F.avg_pool2d(F.pad(rgb[chosen], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return rgb


def augment(pixels: torch.Tensor, out_size: int, cfg: AugmentConfig,
            flip_ok: torch.Tensor, colour_ok: torch.Tensor,
            gen: torch.Generator) -> torch.Tensor:
    """uint8 RGBA [n, 4, S, S] -> float RGB in [0, 1], [n, 3, out_size, out_size].

    flip_ok / colour_ok: bool [n], which images may be mirrored / recoloured.
    """
    n = pixels.shape[0]
    active = torch.rand(n, generator=gen) < cfg.apply_p
    rgba = pixels.float() / 255.0
    # Premultiplied alpha, so transparent pixels' hidden colour never bleeds into edges.
    premultiplied = torch.cat([rgba[:, :3] * rgba[:, 3:4], rgba[:, 3:4]], dim=1)
    grid = F.affine_grid(_affine(n, cfg, flip_ok, active, gen), [n, 4, out_size, out_size],
                         align_corners=False)
    # Outside the source is transparent, so zoom-out and rotation show the background.
    sampled = F.grid_sample(premultiplied, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    alpha = sampled[:, 3:4]
    rgb = sampled[:, :3] + _backgrounds(n, cfg, active, gen) * (1 - alpha)
    return _blur(_colour(rgb, cfg, colour_ok, active, gen), cfg, active, gen)


def normalise_pixels(rgb: torch.Tensor, mean: tuple[float, ...],
                     std: tuple[float, ...]) -> torch.Tensor:
    """[n, 3, H, W] in [0, 1] -> the model's input normalisation."""
    mean_t = torch.tensor(mean, dtype=rgb.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean_t) / std_t
