"""Retrieval quality of an encoder on the emoji set: recall@k both ways.

    python -m indexer.house.evaluate --out results.json [--model house]
        [--cross-style DIR --cross-from google] [--unseen DIR]

Every query is a distinct caption (the emoji's CLDR name) with exactly one right image,
and every image has exactly one right caption, so chance R@k is k / n. Each setting is
reported next to a random-init baseline of the same architecture.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.house.data import DEFAULT_CACHE, TRAIN_MANIFEST
from indexer.house.emoji import STYLE_PACKS
from search import decode_image
from search.models import HOUSE_MODEL, RANDOM_INIT, Encoder, load_encoder

TEXT_TO_IMAGE_KS = (1, 5, 10)
IMAGE_TO_TEXT_KS = (1, 5)


@dataclass(frozen=True)
class EvalSet:
    name: str
    images: list[Image.Image]
    captions: list[str]  # captions[i] describes images[i]; all distinct


@dataclass(frozen=True)
class EvalRow:
    setting: str  # in-style / cross-style / unseen concepts
    style: str  # the style evaluated on
    model: str
    n: int
    text_to_image: dict[int, float]
    image_to_text: dict[int, float]


def recall_at_k(similarity: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """similarity [n, n]: row i's right answer is column i. Recall = share ranked < k."""
    n = similarity.shape[0]
    correct = similarity[np.arange(n), np.arange(n)][:, None]
    rank = (similarity > correct).sum(axis=1)  # 0 = first; ties resolved in its favour
    return {k: float((rank < k).mean()) for k in ks}


def evaluate(encoder: Encoder, eval_set: EvalSet) -> tuple[dict, dict]:
    """(text->image recall, image->text recall) of one encoder on one set."""
    texts = encoder.encode_texts(eval_set.captions)  # [n, dim], normalised
    images = encoder.encode_images(eval_set.images)  # [n, dim]
    similarity = texts @ images.T  # [n captions, n images]
    return (recall_at_k(similarity, TEXT_TO_IMAGE_KS),
            recall_at_k(similarity.T, IMAGE_TO_TEXT_KS))


def emoji_eval_set(train_dir: Path, style: str, holdout_only: bool = False) -> EvalSet:
    """Base (default skin tone) art of one style on white, as `search.media` decodes it."""
    images, captions, seen = [], [], set()
    for line in (train_dir / TRAIN_MANIFEST).open(encoding="utf-8"):
        row = json.loads(line)
        if style not in row["images"] or row["name"] in seen:
            continue
        if holdout_only and not row["holdout"]:
            continue
        seen.add(row["name"])
        images.append(decode_image(train_dir / row["images"][style][0]))
        captions.append(row["name"])
    suffix = "/held-out" if holdout_only else ""
    return EvalSet(f"{style}{suffix}", images, captions)


def _row(setting: str, label: str, encoder: Encoder, eval_set: EvalSet) -> EvalRow:
    t2i, i2t = evaluate(encoder, eval_set)
    return EvalRow(setting, eval_set.name, label, len(eval_set.captions), t2i, i2t)


def _pair(setting: str, label: str, encoder: Encoder, baseline: Encoder,
          eval_set: EvalSet) -> list[EvalRow]:
    return [_row(setting, label, encoder, eval_set),
            _row(setting, "random init", baseline, eval_set)]


@dataclass(frozen=True)
class SuiteConfig:
    train_dir: Path
    model: str = HOUSE_MODEL  # the model under test (all styles, all concepts)
    cross_style: str | None = None  # a variant trained on `cross_from` only
    cross_from: str = "google"
    unseen: str | None = None  # a variant trained without the held-out slice
    styles: tuple[str, ...] = tuple(STYLE_PACKS)


def run_suite(config: SuiteConfig) -> list[EvalRow]:
    baseline = load_encoder(HOUSE_MODEL, RANDOM_INIT, device="cpu")
    main = load_encoder(config.model, device="cpu")
    rows: list[EvalRow] = []
    for style in config.styles:
        eval_set = emoji_eval_set(config.train_dir, style)
        rows += _pair("in-style", config.model, main, baseline, eval_set)
    if config.cross_style:
        variant = load_encoder(config.cross_style, device="cpu")
        for style in (s for s in config.styles if s != config.cross_from):
            eval_set = emoji_eval_set(config.train_dir, style)
            label = f"trained on {config.cross_from} only"
            rows += _pair("cross-style", label, variant, baseline, eval_set)
    if config.unseen:
        variant = load_encoder(config.unseen, device="cpu")
        for style in config.styles:
            eval_set = emoji_eval_set(config.train_dir, style, holdout_only=True)
            rows += _pair("unseen concepts", "trained without held-out", variant, baseline,
                          eval_set)
    return rows


def format_table(rows: list[EvalRow]) -> str:
    header = (f"{'setting':<16} {'eval on':<18} {'model':<26} {'n':>5}  "
              f"{'T→I R@1':>7} {'R@5':>6} {'R@10':>6}  {'I→T R@1':>7} {'R@5':>6}")
    lines = [header, "-" * len(header)]
    for row in rows:
        t2i, i2t = row.text_to_image, row.image_to_text
        lines.append(
            f"{row.setting:<16} {row.style:<18} {row.model[:26]:<26} {row.n:>5}  "
            f"{t2i[1]:>7.1%} {t2i[5]:>6.1%} {t2i[10]:>6.1%}  {i2t[1]:>7.1%} {i2t[5]:>6.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer.house.evaluate",
                                     description="Recall@k of encoders on the emoji set.")
    parser.add_argument("--emoji", type=Path, default=DEFAULT_CACHE / "train",
                        help="training set built by `indexer.house.data build`")
    parser.add_argument("--model", default=HOUSE_MODEL, help="model under test")
    parser.add_argument("--cross-style", help="Encoder.save dir trained on one style only")
    parser.add_argument("--cross-from", default="google", help="the style it was trained on")
    parser.add_argument("--unseen", help="Encoder.save dir trained without the held-out slice")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    config = SuiteConfig(args.emoji.expanduser(), args.model, args.cross_style,
                         args.cross_from, args.unseen)
    rows = run_suite(config)
    print(format_table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
