"""Training and evaluation data of the house generator: a catalog's pictured items, split by
text, with their house-CLIP embeddings.

Items that share a text (the same emoji in two art styles) are one concept and land on the
same side of the split, so held-out items are concepts the generator never saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from indexer.house.pairs import to_square_rgba
from search import Encoder, decode_image

DEFAULT_CATALOG = Path("data/sample/catalog.jsonl")
HOLDOUT_PERCENT = 10
HOLDOUT_SALT = "generator-holdout"
MAX_KEYWORDS = 3


@dataclass(frozen=True)
class CatalogItem:
    external_id: str
    text: str  # the prompt the indexer would generate from (title)
    keywords: tuple[str, ...]
    image: Path


@dataclass(frozen=True)
class GeneratorData:
    items: list[CatalogItem]
    pixels: torch.Tensor  # [n, 3, S, S] float in [0, 1], RGB on white
    image_embeddings: torch.Tensor  # [n, D] unit, house CLIP of the real images
    captions: list[str]  # phrasings for the prior: several per item
    caption_item: torch.Tensor  # [n_captions] long: which item each caption describes
    caption_embeddings: torch.Tensor  # [n_captions, D] unit
    heldout: torch.Tensor  # [n] bool

    def __len__(self) -> int:
        return len(self.items)


def is_heldout(text: str, percent: int = HOLDOUT_PERCENT) -> bool:
    """A stable, text-keyed slice: the same concept is held out in every style and run."""
    digest = hashlib.sha256(f"{HOLDOUT_SALT}:{text.strip().lower()}".encode()).hexdigest()
    return int(digest[:12], 16) % 100 < percent


def read_catalog(path: Path) -> list[CatalogItem]:
    """Pictured, titled rows of a JSONL catalog (image paths relative to the file)."""
    items = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        text = row.get("title") or row.get("text") or row.get("caption")
        if row.get("image") and text:
            keywords = tuple(str(k) for k in row.get("keywords", ()))
            items.append(CatalogItem(str(row["id"]), str(text), keywords,
                                     Path(path).parent / row["image"]))
    return items


def item_captions(item: CatalogItem) -> list[str]:
    """The title first (what the indexer prompts with), then keyword phrasings."""
    extra = [k for k in item.keywords if k not in item.text.split()][:MAX_KEYWORDS]
    phrasings = [item.text, f"{item.text}, {', '.join(extra[:2])}" if extra else "",
                 ", ".join(extra) if len(extra) >= 2 else ""]
    return list(dict.fromkeys(p for p in phrasings if p))


def load_image(path: Path, size: int) -> Image.Image:
    """As search decodes it (guarded, composited on white), centre-cropped to size."""
    rgba = to_square_rgba(decode_image(path, min_side=size), size)  # [4, S, S] uint8
    return Image.fromarray(rgba[:3].permute(1, 2, 0).numpy(), mode="RGB")


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB images -> [n, 3, S, S] float in [0, 1]."""
    arrays = np.stack([np.asarray(image, dtype=np.uint8) for image in images])  # [n, S, S, 3]
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255.0


def build_data(items: list[CatalogItem], encoder: Encoder, size: int,
               holdout_percent: int = HOLDOUT_PERCENT) -> GeneratorData:
    """Decode every image once and embed images and captions once (the slow part)."""
    images = [load_image(item.image, size) for item in items]
    captions, owners = [], []
    for index, item in enumerate(items):
        for caption in item_captions(item):
            captions.append(caption)
            owners.append(index)
    return GeneratorData(
        items=items, pixels=to_tensor(images),
        image_embeddings=torch.from_numpy(encoder.encode_images(images)),
        captions=captions, caption_item=torch.tensor(owners),
        caption_embeddings=torch.from_numpy(encoder.encode_texts(captions)),
        heldout=torch.tensor([is_heldout(item.text, holdout_percent) for item in items]),
    )


def clip_normalisation(encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) [1, 3, 1, 1] of the encoder's preprocessing, for differentiable encoding."""
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = getattr(encoder.model.visual, "preprocess_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean") or OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std") or OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return mean, std
