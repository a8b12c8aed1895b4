"""Small synthetic catalogs for engine tests: images are random-colour PNGs."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from search.collection.collection import NewItem

CATEGORIES = ["fruit", "shoes", "clothes", "toys"]


def png_bytes(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def catalog_items(n: int = 60) -> list[NewItem]:
    """Every 5th item is text-only, every 7th image-only; the rest have both."""
    items = []
    for i in range(n):
        text = None if i % 7 == 3 else f"product {i} {CATEGORIES[i % 4]} number {i * 37 % 101}"
        image = None if i % 5 == 1 and text else png_bytes(i)
        attributes = {"category": CATEGORIES[i % 4], "price": float(i % 13), "rank": i}
        items.append(NewItem(f"p{i}", text=text, image=image, attributes=attributes))
    return items
