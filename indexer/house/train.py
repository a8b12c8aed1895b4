"""Contrastive CLIP training and fine-tuning, as a library call and a CLI.

`train_clip(pairs, TrainConfig(out=...))` trains any encoder `load_encoder` can build
(our house config from scratch, the shipped house weights, a hub model, a directory
written by `Encoder.save`) on image-caption pairs, and writes an `Encoder.save`
directory. Symmetric InfoNCE with a learnable temperature (open_clip's `ClipLoss`),
AdamW with warmup + cosine, bf16 autocast on CPU. Every random draw is a function of
(seed, step), so a killed run resumed from its checkpoint ends bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from tqdm import tqdm

from indexer.house.augment import AugmentConfig, augment, normalise_pixels
from indexer.house.pairs import Example, ImageLike, TrainingData, examples_from_pairs, prepare
from search import XmodalError
from search.models import HOUSE_MODEL, Encoder, load_encoder

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp on the learnable temperature


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    model: str = HOUSE_MODEL  # architecture, or a directory written by Encoder.save
    pretrained: str | None = None  # None: load_encoder's default; "random": from scratch
    epochs: int = 10
    batch_size: int = 64  # 64 beat 128 per minute on 2 cores (more updates per epoch)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    seed: int = 0
    bf16: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    primary_caption_p: float = 0.5  # how often captions[0] (the plain name) is drawn
    primary_view_p: float = 0.5  # how often images[0] (e.g. the default skin tone)
    # Augmentation fades out linearly: invariance early, the clean images (what search
    # sees) at the end; constant augmentation cost 4x in-style recall in short runs.
    anneal_augment: bool = True
    checkpoint_every: int = 200  # steps; also at every epoch end
    max_steps: int | None = None  # stop (and checkpoint) early; the schedule is unchanged
    device: str = "cpu"
    progress: bool = True

    def fingerprint(self) -> str:
        """What must match for a checkpoint to be resumed."""
        keep = dataclasses.asdict(self)
        for key in ("out", "checkpoint_every", "max_steps", "progress", "device"):
            keep.pop(key)
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()
                              ).hexdigest()[:16]


class ResumeMismatchError(XmodalError, RuntimeError):
    """The output directory holds a checkpoint of a different run."""


@contextlib.contextmanager
def fp32_attention() -> Iterator[None]:
    """Run scaled-dot-product attention in fp32 inside bf16 autocast.

    On CPU, bf16 SDPA backward for these short sequences is ~7x slower than fp32 (measured
    on our 2-core machines: 163 ms vs 24 ms per layer at batch 128); the linear layers,
    where bf16 pays off, stay in bf16. nn.MultiheadAttention looks the function up on
    torch.nn.functional at call time, so swapping it there reaches open_clip's blocks.
    """
    original = F.scaled_dot_product_attention

    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.float()
        with torch.autocast(q.device.type, enabled=False):
            out = original(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                           dropout_p=dropout_p, is_causal=is_causal, **kwargs)
        return out.to(q.dtype)

    F.scaled_dot_product_attention = attention  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to zero."""
    warmup = min(config.warmup_steps, max(1, total // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * config.lr * (1 + math.cos(math.pi * progress))


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    # As open_clip's trainer: no weight decay on gains, biases and the temperature.
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def _generator(seed: int, *parts: int) -> torch.Generator:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _pick(counts: torch.Tensor, primary_p: float, gen: torch.Generator) -> torch.Tensor:
    """Per example: index 0 with probability primary_p, else uniform over all options."""
    uniform = (torch.rand(len(counts), generator=gen) * counts).long()
    primary = torch.rand(len(counts), generator=gen) < primary_p
    return torch.where(primary, torch.zeros_like(uniform), uniform)


def make_batch(data: TrainingData, step: int, steps_per_epoch: int, config: TrainConfig,
               encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels [B, 3, S, S] normalised, tokens [B, context]) for a global step."""
    epoch, index = divmod(step, steps_per_epoch)
    order = torch.randperm(len(data), generator=_generator(config.seed, epoch))
    rows = order[index * config.batch_size:(index + 1) * config.batch_size]
    gen = _generator(config.seed, epoch, index)
    view_counts = torch.tensor([len(data.views[r]) for r in rows])
    caption_counts = torch.tensor([len(data.captions[r]) for r in rows])
    views = _pick(view_counts, config.primary_view_p, gen)
    captions = _pick(caption_counts, config.primary_caption_p, gen)
    pixel_rows = torch.tensor([data.views[r][v] for r, v in zip(rows.tolist(), views.tolist(),
                                                                strict=True)])
    token_rows = torch.tensor([data.captions[r][c] for r, c in zip(rows.tolist(),
                                                                   captions.tolist(),
                                                                   strict=True)])
    augment_config = config.augment
    if config.anneal_augment:
        remaining = 1 - step / (steps_per_epoch * config.epochs)
        augment_config = dataclasses.replace(augment_config,
                                             apply_p=augment_config.apply_p * remaining)
    rgb = augment(data.pixels[pixel_rows], encoder.image_size, augment_config,
                  data.flip_ok[rows], data.colour_ok[rows], gen)
    mean, std = _normalisation(encoder)
    return normalise_pixels(rgb, mean, std), data.tokens[token_rows]


def _normalisation(encoder: Encoder) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(encoder.model.visual, "preprocess_cfg", None) or {}
    mean = cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN
    std = cfg.get("std") or open_clip.OPENAI_DATASET_STD
    return tuple(mean), tuple(std)


def train_step(model, loss_fn: ClipLoss, optimizer, pixels: torch.Tensor,
               tokens: torch.Tensor, config: TrainConfig) -> float:
    device_type = pixels.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.bf16):
        image_features, text_features, logit_scale = model(pixels, tokens)[:3]
    # The loss (a [B, B] softmax) in fp32: bf16 logits lose the ranking signal.
    loss = loss_fn(image_features.float(), text_features.float(), logit_scale.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return float(loss.detach())


def _save_state(out: Path, step: int, model, optimizer, fingerprint: str) -> None:
    state = {"step": step, "fingerprint": fingerprint, "model": model.state_dict(),
             "optimizer": optimizer.state_dict()}
    temporary = out / f"{STATE_FILE}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, out / STATE_FILE)  # atomic: a kill never leaves half a checkpoint


def _load_state(out: Path, model, optimizer, fingerprint: str) -> int:
    path = out / STATE_FILE
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise ResumeMismatchError(
            f"{path} belongs to a different training run (config or data changed); "
            "use another --out or delete it to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def _log(out: Path, record: dict) -> None:
    with (out / LOG_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _data_fingerprint(data: TrainingData) -> str:
    digest = hashlib.sha256()
    for tensor in (data.pixels, data.tokens):
        digest.update(tensor.numpy().tobytes())
    digest.update(json.dumps([data.views, data.captions]).encode())
    return digest.hexdigest()[:16]


def train_clip(pairs: Iterable[tuple[ImageLike, str] | Example], config: TrainConfig) -> Path:
    """Train on pairs; returns `config.out`, an `Encoder.save` directory once finished.

    Re-running with the same config and data resumes from `out/train_state.pt`."""
    encoder = load_encoder(config.model, config.pretrained, device=config.device)
    data = prepare(examples_from_pairs(pairs), encoder.image_size, encoder.tokenizer)
    steps_per_epoch = len(data) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data)} examples is less than one batch ({config.batch_size})")
    config.out.mkdir(parents=True, exist_ok=True)
    model = encoder.model.train()
    optimizer = _optimizer(model, config)
    fingerprint = f"{config.fingerprint()}-{_data_fingerprint(data)}"
    start = _load_state(config.out, model, optimizer, fingerprint)
    total = steps_per_epoch * config.epochs
    stop = total if config.max_steps is None else min(total, config.max_steps)
    _run_steps(encoder, data, config, optimizer, range(start, stop), total, fingerprint)
    if stop < total:
        return config.out
    model.eval()
    encoder.save(config.out)
    return config.out


def _run_steps(encoder: Encoder, data: TrainingData, config: TrainConfig, optimizer,
               steps: range, total: int, fingerprint: str) -> None:
    model, loss_fn = encoder.model, ClipLoss()
    steps_per_epoch = len(data) // config.batch_size
    bar = tqdm(steps, total=total, initial=steps.start, disable=not config.progress,
               unit="step", dynamic_ncols=True, mininterval=2.0)
    started, losses = time.monotonic(), []
    with fp32_attention():
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, config)
            pixels, tokens = make_batch(data, step, steps_per_epoch, config, encoder)
            losses.append(train_step(model, loss_fn, optimizer, pixels.to(encoder.device),
                                     tokens.to(encoder.device), config))
            done = step + 1
            rate = config.batch_size * (done - steps.start) / (time.monotonic() - started)
            bar.set_postfix(epoch=f"{done / steps_per_epoch:.1f}", loss=f"{losses[-1]:.3f}",
                            img_s=f"{rate:.0f}", refresh=False)
            if done % steps_per_epoch == 0 or done % config.checkpoint_every == 0 \
                    or done == steps.stop:
                _save_state(config.out, done, model, optimizer, fingerprint)
                _log(config.out, {"step": done, "epoch": done / steps_per_epoch,
                                  "loss": sum(losses) / len(losses), "lr": optimizer
                                  .param_groups[0]["lr"], "img_per_s": rate,
                                  "elapsed_s": time.monotonic() - started})
                losses = []
    bar.close()


def parse_from(spec: str) -> tuple[str, str | None]:
    """`--from` as MODEL[/PRETRAINED]: house, house/random, ViT-B-32/laion2b_s34b_b79k,
    ViT-B-32//models/w.safetensors, or an Encoder.save directory."""
    if Path(spec).expanduser().is_dir():
        return spec, None
    model, _, pretrained = spec.partition("/")
    return model, pretrained or None


def export_fp16(encoder_dir: Path, destination: Path) -> Path:
    """The trained weights as fp16 safetensors (half the size; loads into fp32 models)."""
    from safetensors.torch import load_file, save_file

    from search.models import ENCODER_WEIGHTS_FILE as WEIGHTS_FILE

    tensors = load_file(str(Path(encoder_dir) / WEIGHTS_FILE))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous()
            for k, v in tensors.items()}
    destination.parent.mkdir(parents=True, exist_ok=True)
    save_file(half, str(destination), metadata={"format": "pt", "source": "indexer.house.train"})
    destination.chmod(0o644)  # shipped as package data: readable by everyone
    return destination


def _arguments(argv: list[str] | None):
    import argparse

    from indexer.house.data import DEFAULT_CACHE

    parser = argparse.ArgumentParser(prog="python -m indexer.house.train",
                                     description="Train or fine-tune a CLIP encoder.")
    parser.add_argument("--out", type=Path, required=True, help="Encoder.save directory")
    parser.add_argument("--from", dest="source", default=f"{HOUSE_MODEL}/random",
                        help="MODEL[/PRETRAINED] to start from (default: house/random)")
    parser.add_argument("--epochs", type=int, default=10)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--emoji", type=Path, default=DEFAULT_CACHE / "train",
                        help="emoji training set built by `indexer.house.data build`")
    source.add_argument("--pairs", type=Path, help="JSONL with image + caption/title/text")
    parser.add_argument("--styles", default="google,twitter", help="emoji styles to use")
    parser.add_argument("--holdout", choices=("include", "exclude"), default="include",
                        help="exclude: leave out the unseen-concepts slice")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps)
    parser.add_argument("--caption-p", type=float, default=TrainConfig.primary_caption_p,
                        help="how often the first caption (the name) is drawn")
    parser.add_argument("--augment-p", type=float, default=AugmentConfig.apply_p,
                        help="share of images augmented at the start (fades to 0)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--export", type=Path, help="also write fp16 weights to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from indexer.house.data import emoji_examples
    from indexer.house.pairs import pairs_from_jsonl

    args = _arguments(argv)
    model, pretrained = parse_from(args.source)
    config = TrainConfig(out=args.out, model=model, pretrained=pretrained, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         bf16=not args.fp32, warmup_steps=args.warmup_steps,
                         primary_caption_p=args.caption_p,
                         augment=AugmentConfig(apply_p=args.augment_p))
    if args.pairs is not None:
        pairs: list = pairs_from_jsonl(args.pairs)
    else:
        pairs = emoji_examples(args.emoji.expanduser(), tuple(args.styles.split(",")),
                               exclude_holdout=args.holdout == "exclude")
    out = train_clip(pairs, config)
    if args.export is not None:
        print(f"fp16 weights: {export_fp16(out, args.export)}")
    print(f"encoder: {out}  (load_encoder({str(out)!r}))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
