"""Train the house generator (prior + conditional-VAE decoder) on a catalog's pictures.

    python -m indexer.house.generator_train --out search/models/weights
        [--catalog data/sample/catalog.jsonl] [--encoder house]

Writes `<out>/house-generator.safetensors` (fp16), trained against the house encoder that
`load_encoder("house")` gives now (its identity is recorded and checked at load time).
Concepts in the held-out slice (`generator_data.is_heldout`) are never trained on; the
eval (`python -m indexer.house.generator_eval`) measures on them. Seeded: the same
catalog, encoder, config and thread count give the same weights.

Losses: the prior regresses image embeddings from text embeddings (cosine); the decoder
is a conditional VAE (Gaussian reconstruction + KL to N(0, I)), plus a CLIP-consistency
term: the house image tower must map a decoded image back to the embedding it was decoded
from, which keeps small, blurry 64 px reconstructions recognisable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence
from torch.optim.lr_scheduler import LambdaLR

from indexer.house.generator_data import (
    DEFAULT_CATALOG,
    HOLDOUT_PERCENT,
    GeneratorData,
    build_data,
    clip_normalisation,
    read_catalog,
)
from indexer.house.train import fp32_attention
from search.models import GENERATOR_WEIGHTS_FILE as WEIGHTS_FILE
from search.models import (
    HOUSE_MODEL,
    Decoder,
    Encoder,
    GeneratorConfig,
    PosteriorEncoder,
    Prior,
    load_encoder,
    save_generator,
)

Log = Callable[[dict], None]


@dataclass(frozen=True)
class GeneratorTrainConfig:
    out: Path
    catalog: Path = DEFAULT_CATALOG
    encoder_model: str = HOUSE_MODEL
    encoder_pretrained: str | None = None  # None: the shipped house weights
    nets: GeneratorConfig = field(default_factory=GeneratorConfig)
    holdout_percent: int = HOLDOUT_PERCENT
    seed: int = 0
    threads: int = 2
    bf16: bool = True
    prior_steps: int = 600
    prior_batch: int = 256
    prior_lr: float = 1e-3
    decoder_epochs: int = 12
    decoder_batch: int = 32
    decoder_lr: float = 2e-3
    pixel_sigma: float = 0.2  # Gaussian likelihood scale: smaller = sharper, larger KL
    kl_weight: float = 4.0  # beta > 1: z keeps less, so N(0, I) samples look like recons
    clip_weight: float = 2000.0  # CLIP consistency, in the reconstruction's units
    cond_noise: float = 0.04  # per-dim noise on the condition: prior outputs are not exact
    sample_temperature: float = 0.8  # z scale for the CLIP term; generation uses the same
    max_items: int | None = None  # first N items only (tests, smoke runs)


def _cosine_schedule(optimizer: torch.optim.Optimizer, total: int) -> LambdaLR:
    """Linear warmup over the first 5 %, then cosine decay to zero."""
    warmup = max(1, total // 20)
    return LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def train_prior(data: GeneratorData, train: torch.Tensor, config: GeneratorTrainConfig,
                log: Log) -> Prior:
    """Regress unit image embeddings from unit text embeddings (1 - cosine)."""
    rows = torch.nonzero(train[data.caption_item]).squeeze(1)  # captions of training items
    texts = data.caption_embeddings[rows]  # [m, D]
    targets = data.image_embeddings[data.caption_item[rows]]  # [m, D]
    prior = Prior(config.nets).train()
    optimizer = torch.optim.AdamW(prior.parameters(), lr=config.prior_lr, weight_decay=0.05)
    schedule = _cosine_schedule(optimizer, config.prior_steps)
    for step in range(config.prior_steps):
        batch = torch.randint(0, len(rows), (config.prior_batch,))
        loss = (1 - F.cosine_similarity(prior(texts[batch]), targets[batch])).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            log({"stage": "prior", "step": step + 1, "loss": round(loss.item(), 4)})
    return prior.eval()


class ClipConsistency:
    """1 - cos(house image tower(decoded image), target embedding), differentiable in the
    image; the encoder's weights stay frozen."""

    def __init__(self, encoder: Encoder) -> None:
        self.model = encoder.model.eval().requires_grad_(False)
        self.mean, self.std = clip_normalisation(encoder)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        features = self.model.encode_image((images - self.mean) / self.std)  # [B, D]
        return 1 - F.cosine_similarity(features.float(), targets, dim=-1)  # [B]


def _noisy(embeddings: torch.Tensor, scale: float) -> torch.Tensor:
    if scale <= 0:
        return embeddings
    return F.normalize(embeddings + scale * torch.randn_like(embeddings), dim=-1)


def decoder_loss(pixels: torch.Tensor, embeddings: torch.Tensor, posterior: PosteriorEncoder,
                 decoder: Decoder, clip: ClipConsistency | None,
                 config: GeneratorTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative ELBO per image + CLIP consistency, for pixels [B, 3, S, S] in [0, 1].

    The CLIP term is taken on images decoded from z ~ N(0, I) at the sampling temperature,
    i.e. what generation does: on posterior z it is easy to satisfy and does not carry
    over to sampling, since the posterior hides details in z that N(0, I) never supplies.
    """
    batch = len(pixels)
    condition = _noisy(embeddings, config.cond_noise)  # [B, D]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
        mean, log_var = posterior(pixels, condition)  # [B, latent] each
        q = Normal(mean.float(), (0.5 * log_var.float()).exp())
        z = q.rsample()  # [B, latent]
        if clip is not None:  # one decoder call for both halves batches better than two
            z = torch.cat([z, torch.randn_like(z) * config.sample_temperature])
        decoded = decoder(z, condition.repeat(len(z) // batch, 1)).float()  # [B or 2B, ...]
        reconstructed, generated = decoded[:batch], decoded[batch:]
        consistency = (clip(generated, embeddings).mean() if clip is not None
                       else decoded.new_zeros(()))
    # Gaussian log-likelihood up to a constant: squared error / (2 sigma^2), summed.
    reconstruction = F.mse_loss(reconstructed, pixels, reduction="sum") / (
        2 * config.pixel_sigma**2 * batch)
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1).mean()
    loss = reconstruction + config.kl_weight * kl + config.clip_weight * consistency
    return loss, {"rec": reconstruction.item(), "kl": kl.item(), "clip": consistency.item()}


def train_decoder(data: GeneratorData, train: torch.Tensor, encoder: Encoder | None,
                  config: GeneratorTrainConfig, log: Log) -> Decoder:
    """The conditional VAE on real images and their (clean) house-CLIP embeddings."""
    rows = torch.nonzero(train).squeeze(1)
    posterior, decoder = PosteriorEncoder(config.nets).train(), Decoder(config.nets).train()
    clip = ClipConsistency(encoder) if encoder is not None and config.clip_weight > 0 else None
    parameters = [*posterior.parameters(), *decoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.decoder_lr, weight_decay=0.01)
    steps_per_epoch = max(1, len(rows) // config.decoder_batch)
    schedule = _cosine_schedule(optimizer, steps_per_epoch * config.decoder_epochs)
    started = time.monotonic()
    with fp32_attention():
        for epoch in range(config.decoder_epochs):
            order = rows[torch.randperm(len(rows))]
            totals: dict[str, float] = {}
            for step in range(steps_per_epoch):
                batch = order[step * config.decoder_batch:(step + 1) * config.decoder_batch]
                loss, parts = decoder_loss(data.pixels[batch], data.image_embeddings[batch],
                                           posterior, decoder, clip, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, 100.0)
                optimizer.step()
                schedule.step()
                totals = {k: totals.get(k, 0.0) + v / steps_per_epoch for k, v in parts.items()}
            log({"stage": "decoder", "epoch": epoch + 1, **{k: round(v, 4)
                 for k, v in totals.items()}, "elapsed_s": round(time.monotonic() - started)})
    return decoder.eval()


def _print_log(record: dict) -> None:
    print(json.dumps(record), flush=True)


def train_generator(config: GeneratorTrainConfig, log: Log = _print_log) -> Path:
    """The one training entry point: data, prior, decoder, fp16 weights file."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.monotonic()
    encoder = load_encoder(config.encoder_model, config.encoder_pretrained, device="cpu")
    items = read_catalog(config.catalog)[:config.max_items]
    data = build_data(items, encoder, config.nets.image_size, config.holdout_percent)
    train = ~data.heldout
    log({"stage": "data", "items": len(items), "train": int(train.sum()),
         "heldout": int(data.heldout.sum()), "captions": len(data.captions),
         "elapsed_s": round(time.monotonic() - started)})
    prior = train_prior(data, train, config, log)
    decoder = train_decoder(data, train, encoder, config, log)
    seconds = round(time.monotonic() - started)
    metadata = {"encoder_model": config.encoder_model,
                "encoder_pretrained": config.encoder_pretrained or "",
                "encoder_identity": encoder.identity, "train_seconds": str(seconds),
                "temperature": str(config.sample_temperature),
                "train_config": json.dumps(dataclasses.asdict(config), default=str),
                "source": "indexer.house.generator_train"}
    path = save_generator(Path(config.out) / WEIGHTS_FILE, prior, decoder, config.nets, metadata)
    log({"stage": "done", "weights": str(path), "bytes": path.stat().st_size,
         "elapsed_s": seconds})
    return path


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m indexer.house.generator_train",
                                     description="Train the house image generator.")
    parser.add_argument("--out", type=Path, required=True,
                        help=f"directory for {WEIGHTS_FILE} (shipped: search/models/weights)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG,
                        help="JSONL catalog with title + image columns")
    parser.add_argument("--encoder", default=HOUSE_MODEL,
                        help="encoder model (house, or an Encoder.save directory)")
    parser.add_argument("--encoder-pretrained", default=None,
                        help="encoder weights (default: shipped; 'random' for a smoke run)")
    parser.add_argument("--decoder-epochs", type=int, default=GeneratorTrainConfig.decoder_epochs)
    parser.add_argument("--prior-steps", type=int, default=GeneratorTrainConfig.prior_steps)
    parser.add_argument("--clip-weight", type=float, default=GeneratorTrainConfig.clip_weight)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-items", type=int, default=None, help="first N items only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    config = GeneratorTrainConfig(
        out=args.out, catalog=args.catalog, encoder_model=args.encoder,
        encoder_pretrained=args.encoder_pretrained, decoder_epochs=args.decoder_epochs,
        prior_steps=args.prior_steps, clip_weight=args.clip_weight, seed=args.seed,
        threads=args.threads, max_items=args.max_items)
    train_generator(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
