"""Corpus builders for indexer tests: real files on disk, some of them broken."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.utils.corpus import CATEGORIES, png_bytes
from tests.utils.images import png_header_only


def jpeg_bytes(seed: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def write_catalog(root: Path, n: int, *, broken: bool = False, seed: int = 0) -> Path:
    """A JSONL product catalog with images beside it; `broken` adds bad rows and files."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        row = {"id": f"sku-{i}", "title": f"{CATEGORIES[i % 4]} product {i}",
               "category": CATEGORIES[i % 4], "price": float(i % 17)}
        if i % 6 != 5:  # every sixth item is text-only
            name = f"{i}.{'jpg' if i % 2 else 'png'}"
            data = jpeg_bytes(i + seed) if i % 2 else png_bytes(i + seed)
            (images / name).write_bytes(data)
            row["image"] = f"images/{name}"
        rows.append(row)
    if broken:
        (images / "truncated.jpg").write_bytes(jpeg_bytes(999)[:300])
        (images / "bomb.png").write_bytes(png_header_only(40000, 40000))
        rows += [
            {"id": "bad-truncated", "title": "x", "image": "images/truncated.jpg"},
            {"id": "bad-missing", "title": "x", "image": "images/nope.jpg"},
            {"id": "bad-bomb", "image": "images/bomb.png"},
            {"id": "bad-empty", "title": "   "},
            {"title": "no id at all"},
            {"id": "sku-0", "title": "duplicate of sku-0"},
        ]
    lines = [json.dumps(r) for r in rows]
    if broken:
        lines.append("{not json")
    path = root / "catalog.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    return write_catalog(tmp_path / "source", 40)


@pytest.fixture
def sqlite_settings(tmp_path: Path, tiny_model: str):
    from search.settings import Settings

    return Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True)


@pytest.fixture
def ws(sqlite_settings):
    from search.workspace import Workspace

    workspace = Workspace.open(sqlite_settings)
    yield workspace
    workspace.close()
