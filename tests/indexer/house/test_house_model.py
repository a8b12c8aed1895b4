"""The shipped house weights must actually work: known queries find their emoji.

These fail with random weights (see the last test), so a missing, corrupt or untrained
checkpoint cannot pass unnoticed.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from search.media import decode_image
from search.models.encoder import RANDOM_INIT, house_weights_path, load_encoder

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
# query -> emoji code (either style's image counts)
QUERIES = {
    "running shoe": "1f45f", "red apple": "1f34e", "t-shirt": "1f455", "pizza": "1f355",
    "rocket": "1f680", "banana": "1f34c", "guitar": "1f3b8", "snowman": "2603-fe0f",
}
MAX_BYTES = 40 * 1000 * 1000


@pytest.fixture(scope="module")
def catalog() -> tuple[list[str], list]:
    rows = [json.loads(line) for line in (SAMPLE / "catalog.jsonl").open(encoding="utf-8")]
    rows = [row for row in rows if row["image"]]
    codes = [row["id"].split("-", 1)[1] for row in rows]
    return codes, [decode_image(SAMPLE / row["image"]) for row in rows]


def _top5_hits(encoder, catalog) -> dict[str, bool]:
    codes, images = catalog
    image_vectors = encoder.encode_images(images)  # [n, dim], normalised
    text_vectors = encoder.encode_texts(list(QUERIES))  # [q, dim]
    top = np.argsort(-(text_vectors @ image_vectors.T), axis=1)[:, :5]
    return {query: QUERIES[query] in {codes[i] for i in row}
            for query, row in zip(QUERIES, top, strict=True)}


def test_shipped_checkpoint_is_fp16_and_small():
    path = house_weights_path()
    assert path is not None, "search/models/weights/house.safetensors is missing"
    assert path.stat().st_size <= MAX_BYTES
    with safe_open(str(path), framework="pt") as weights:
        tensors = [weights.get_tensor(name) for name in weights.keys()]  # noqa: SIM118
    floating = [t for t in tensors if t.is_floating_point()]
    assert len(floating) > 100 and all(t.dtype == torch.float16 for t in floating)


def test_every_query_is_in_the_sample_with_an_image(catalog):
    codes, _ = catalog
    assert set(QUERIES.values()) <= set(codes)


def test_known_queries_find_their_emoji_in_the_top_5(catalog):
    encoder = load_encoder("house", device="cpu")
    assert encoder.weights.kind == "file"
    # fp16 on disk, fp32 in memory (CPU matmuls in fp16 would be slow and lossy)
    assert {p.dtype for p in encoder.model.parameters()} == {torch.float32}
    hits = _top5_hits(encoder, catalog)
    assert all(hits.values()), f"missed: {[q for q, hit in hits.items() if not hit]}"


def test_random_weights_would_fail(catalog):
    random = load_encoder("house", RANDOM_INIT, device="cpu")
    assert random.weights.kind == "random"
    hits = _top5_hits(random, catalog)
    assert sum(hits.values()) <= 1
