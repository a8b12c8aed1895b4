"""Image-caption training examples, and their in-memory tensors.

Training takes any iterable of `(image, caption)` pairs (a collection's items, a JSONL
catalog) or of `Example`s (several views and phrasings of one concept, as the emoji set
has). Images are decoded once into one uint8 tensor at the model's input size: on 2
cores, decoding per step would cost more than the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from indexer.house.captions import colour_safe, flip_safe
from search import decode_image

ImageLike = Image.Image | str | os.PathLike


@dataclass(frozen=True)
class Example:
    """One concept: views of it (one drawn per epoch) and phrasings (captions[0] first)."""

    images: tuple[ImageLike, ...]
    captions: tuple[str, ...]
    flip_ok: bool | None = None  # None: decided from the captions
    colour_ok: bool | None = None


@dataclass(frozen=True)
class TrainingData:
    pixels: torch.Tensor  # [n_images, 4, S, S] uint8 RGBA
    tokens: torch.Tensor  # [n_captions, context] token ids
    views: list[list[int]]  # example -> rows of pixels
    captions: list[list[int]]  # example -> rows of tokens
    flip_ok: torch.Tensor  # [n_examples] bool
    colour_ok: torch.Tensor  # [n_examples] bool

    def __len__(self) -> int:
        return len(self.views)


def _image_key(image: ImageLike) -> object:
    if isinstance(image, Image.Image):
        return id(image)
    return str(Path(image).expanduser().resolve())


def examples_from_pairs(pairs: Iterable[tuple[ImageLike, str] | Example]) -> list[Example]:
    """Group plain pairs by image (one image, several captions = one example), in order."""
    examples: list[Example] = []
    grouped: dict[object, tuple[ImageLike, list[str]]] = {}
    for pair in pairs:
        if isinstance(pair, Example):
            examples.append(pair)
            continue
        image, caption = pair
        entry = grouped.setdefault(_image_key(image), (image, []))
        if caption and caption not in entry[1]:
            entry[1].append(caption)
    examples.extend(Example((image, ), tuple(caps)) for image, caps in grouped.values() if caps)
    return examples


def pairs_from_jsonl(path: Path, caption_fields: Sequence[str] = ("caption", "title", "text"),
                     ) -> list[tuple[Path, str]]:
    """(image, caption) pairs from a JSONL catalog; image paths relative to the file."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        image = row.get("image")
        caption = next((row[f] for f in caption_fields if row.get(f)), None)
        if image and caption:
            pairs.append((path.parent / image, str(caption)))
    return pairs


def to_square_rgba(image: Image.Image, size: int) -> torch.Tensor:
    """[4, size, size] uint8: shorter side resized to `size`, centre crop (as open_clip)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB").convert("RGBA")
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 4).permute(2, 0, 1).contiguous()


def _load(image: ImageLike, size: int) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return to_square_rgba(image, size)
    # Untrusted files go through the guarded decoder (composited on white, as at search).
    return to_square_rgba(decode_image(Path(image), min_side=size), size)


def prepare(examples: Sequence[Example], image_size: int, tokenizer) -> TrainingData:
    """Decode every image once and tokenize every caption once."""
    pixel_rows: dict[object, int] = {}
    pixels: list[torch.Tensor] = []
    caption_rows: dict[str, int] = {}
    views, captions = [], []
    for example in examples:
        rows = []
        for image in example.images:
            key = _image_key(image)
            if key not in pixel_rows:
                pixel_rows[key] = len(pixels)
                pixels.append(_load(image, image_size))
            rows.append(pixel_rows[key])
        views.append(rows)
        captions.append([caption_rows.setdefault(c, len(caption_rows))
                         for c in example.captions])
    texts = list(caption_rows)
    return TrainingData(
        pixels=torch.stack(pixels), tokens=tokenizer(texts), views=views, captions=captions,
        flip_ok=torch.tensor([_decide(e.flip_ok, flip_safe, e) for e in examples]),
        colour_ok=torch.tensor([_decide(e.colour_ok, colour_safe, e) for e in examples]),
    )


def _decide(explicit: bool | None, rule, example: Example) -> bool:
    return rule(list(example.captions)) if explicit is None else explicit
