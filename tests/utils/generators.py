"""A tiny house generator (random prior + decoder) for the tiny test encoder: no training."""

from __future__ import annotations

from pathlib import Path

import torch

from search.models.encoder import RANDOM_INIT, load_encoder
from search.models.generators.house_nets import Decoder, GeneratorConfig, Prior, save_generator

TINY_NETS = GeneratorConfig(embed_dim=32, image_size=32, latent_dim=8, prior_width=32,
                            prior_blocks=1, base_size=4, channels=(16, 8, 8, 8))


def tiny_generator_weights(path: Path, tiny_model: str) -> Path:
    """Seeded random weights, bound to the tiny model's random init like real ones are
    bound to the house encoder."""
    encoder = load_encoder(tiny_model, RANDOM_INIT, device="cpu")
    metadata = {"encoder_model": tiny_model, "encoder_pretrained": RANDOM_INIT,
                "encoder_identity": encoder.identity}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return save_generator(path, Prior(TINY_NETS), Decoder(TINY_NETS), TINY_NETS, metadata)
