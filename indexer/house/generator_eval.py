"""How good are generated images? Measured with the house encoder on held-out catalog items.

    python -m indexer.house.generator_eval [--generator house] [--model PATH]
        [--catalog data/sample/catalog.jsonl] [--out results.json]
        [--sheet docs/generated-vs-real.png]

For every held-out item (a concept the house generator never trained on) its title is the
prompt, as the indexer's `--generate-missing` would use it. Reported:

- CLIP score: cosine between the title's house text embedding and the house image
  embedding of (a) the generated image, (b) the item's real image, (c) another held-out
  item's real image (random), (d) uniform noise.
- top-10 self-retrieval: the item's real image is replaced by the candidate; does a text
  query with its title rank it in the top 10 of all catalog images? Same for real and
  random candidates.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from indexer.house.generator_data import (
    DEFAULT_CATALOG,
    HOLDOUT_PERCENT,
    CatalogItem,
    is_heldout,
    load_image,
    read_catalog,
)
from search import ImageGenerator, item_seed, load_generator
from search.models import HOUSE_MODEL, Encoder, load_encoder

TOP_K = 10


@dataclass(frozen=True)
class GenerationEval:
    generator: str
    model_id: str
    items: int  # held-out items evaluated
    collection: int  # catalog images the queries search
    clip_generated: float
    clip_real: float
    clip_random: float
    clip_noise: float
    top10_generated: float
    top10_real: float
    top10_random: float
    clip_ratio: float  # generated / real CLIP score
    seconds_per_image: float  # one prompt per call, as the indexer calls it


def top_k_share(texts: np.ndarray, candidates: np.ndarray, collection: np.ndarray,
                own_rows: np.ndarray, k: int = TOP_K) -> float:
    """Share of queries whose candidate beats all but k-1 collection images.

    texts, candidates [n, D]; collection [N, D]; own_rows [n]: each query's own real image,
    which the candidate replaces (so it is not a competitor). Ties count for the candidate.
    """
    scores = texts @ collection.T  # [n, N]
    scores[np.arange(len(texts)), own_rows] = -np.inf
    candidate = (texts * candidates).sum(axis=1, keepdims=True)  # [n, 1]
    return float(((scores > candidate).sum(axis=1) < k).mean())


def generate_each(generator: ImageGenerator, items: list[CatalogItem]
                  ) -> tuple[list[Image.Image], float]:
    """One call per item with the indexer's per-item seed; (images, seconds per image)."""
    started = time.perf_counter()
    images = [generator.generate([item.text], seed=item_seed(item.external_id))[0]
              for item in items]
    return images, (time.perf_counter() - started) / max(1, len(items))


def _noise_images(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
            for _ in range(count)]


def evaluate_generator(generator: ImageGenerator, encoder: Encoder, items: list[CatalogItem],
                       heldout: np.ndarray) -> tuple[GenerationEval, list[Image.Image]]:
    """Scores for the held-out items; also returns their generated images."""
    real = [load_image(item.image, encoder.image_size) for item in items]
    collection = encoder.encode_images(real)  # [N, D]
    rows = np.flatnonzero(heldout)
    held = [items[i] for i in rows]
    texts = encoder.encode_texts([item.text for item in held])  # [n, D]
    generated, seconds = generate_each(generator, held)
    gen_vectors = encoder.encode_images(generated)
    random_rows = np.roll(rows, 1)  # another held-out item's picture
    noise = encoder.encode_images(_noise_images(len(rows), encoder.image_size))
    clip = {name: float((texts * vectors).sum(axis=1).mean()) for name, vectors in
            (("generated", gen_vectors), ("real", collection[rows]),
             ("random", collection[random_rows]), ("noise", noise))}
    top = {name: top_k_share(texts, vectors, collection, rows) for name, vectors in
           (("generated", gen_vectors), ("real", collection[rows]),
            ("random", collection[random_rows]))}
    report = GenerationEval(
        generator.name, generator.model_id, len(rows), len(items), clip["generated"],
        clip["real"], clip["random"], clip["noise"], top["generated"], top["real"],
        top["random"], clip["generated"] / clip["real"], seconds)
    return report, generated


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], captions: list[str],
                  cell: int = 64, pad: int = 4, label_width: int = 72) -> Image.Image:
    """A grid: one labelled row per image kind, one column per item, captions under it."""
    columns = len(captions)
    caption_height = 24
    width = label_width + columns * (cell + pad) + pad
    height = len(rows) * (cell + pad) + pad + caption_height
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        top = pad + r * (cell + pad)
        draw.text((4, top + cell // 2 - 6), label, fill="black")
        for c, image in enumerate(images):
            sheet.paste(image.convert("RGB").resize((cell, cell)),
                        (label_width + c * (cell + pad), top))
    for c, caption in enumerate(captions):
        left, top = label_width + c * (cell + pad), len(rows) * (cell + pad) + pad
        for line, text in enumerate(_wrap(caption, cell)):
            draw.text((left, top + 10 * line), text, fill="black")
    return sheet


def _wrap(text: str, width_px: int, max_lines: int = 2) -> list[str]:
    per_line = max(4, width_px // 6)  # Pillow's default bitmap font is ~6 px per character
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > per_line and line:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    lines.append(line)
    return [entry[:per_line] for entry in lines[:max_lines]]


def sheet_for(generator: ImageGenerator, encoder: Encoder, items: list[CatalogItem],
              count: int = 12) -> Image.Image:
    """Real vs generated (two seeds) for `count` held-out items spread over the slice."""
    picks = [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]
    real = [load_image(item.image, encoder.image_size) for item in picks]
    seed_a = [generator.generate([item.text], seed=0)[0] for item in picks]
    seed_b = [generator.generate([item.text], seed=1)[0] for item in picks]
    return contact_sheet([("real", real), ("seed 0", seed_a), ("seed 1", seed_b)],
                         [item.text for item in picks])


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m indexer.house.generator_eval",
                                     description="CLIP score and self-retrieval of generated "
                                                 "images on held-out catalog items.")
    parser.add_argument("--generator", default="house", help="registered generator backend")
    parser.add_argument("--model", default=None, help="generator weights / model")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--encoder", default=HOUSE_MODEL, help="the encoder that scores")
    parser.add_argument("--holdout-percent", type=int, default=HOLDOUT_PERCENT)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--sheet", type=Path, help="write a generated-vs-real PNG here")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    torch.set_num_threads(args.threads)
    encoder = load_encoder(args.encoder, device="cpu")
    generator = load_generator(args.generator, args.model, device="cpu")
    items = read_catalog(args.catalog)
    heldout = np.array([is_heldout(item.text, args.holdout_percent) for item in items])
    report, _ = evaluate_generator(generator, encoder, items, heldout)
    print(json.dumps(asdict(report), indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(report), indent=2) + "\n")
    if args.sheet is not None:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        held = [item for item, flag in zip(items, heldout, strict=True) if flag]
        sheet_for(generator, encoder, held).save(args.sheet, optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
