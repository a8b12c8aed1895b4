"""The house generator: a tiny random prior/decoder behind the interface, its weights file,
its training command and its eval, plus the shipped weights' quality when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from indexer.house.generator_eval import contact_sheet, evaluate_generator, top_k_share
from indexer.house.generator_train import GeneratorTrainConfig, train_generator
from search.errors import GeneratorUnavailableError
from search.models.encoder import RANDOM_INIT, Encoder, load_encoder
from search.models.generator import load_generator
from search.models.generators.house import HouseGenerator
from search.models.generators.house_nets import (
    Decoder,
    Prior,
    read_generator,
    save_generator,
)
from tests.utils.corpus import png_bytes
from tests.utils.generators import TINY_NETS, tiny_generator_weights

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["apple", "shoe", "car", "hat"]


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model: str) -> Encoder:
    return load_encoder(tiny_model, RANDOM_INIT, device="cpu")


@pytest.fixture
def weights(tmp_path: Path, tiny_model: str) -> Path:
    return tiny_generator_weights(tmp_path / "house-generator.safetensors", tiny_model)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """24 pictured items, titles like 'red apple', one random-colour PNG each."""
    rows = []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / f"{i}.png").write_bytes(png_bytes(i, size=32))
        rows.append({"id": f"item-{i}", "title": f"{colour} {shape}", "keywords": [shape],
                     "image": f"images/{i}.png"})
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_tiny_house_generator_loads_by_name_and_draws(weights: Path) -> None:
    generator = load_generator("house", model=str(weights), device="cpu")
    assert isinstance(generator, HouseGenerator)
    assert generator.model_id.startswith("house-generator|sha256:")
    images = generator.generate(["red apple", "blue shoe"], seed=1)
    assert [(image.size, image.mode) for image in images] == [((32, 32), "RGB")] * 2
    assert generator.generate(["red apple"], size=48)[0].size == (48, 48)


def test_same_seed_same_picture_whatever_the_batch(weights: Path) -> None:
    generator = load_generator("house", model=str(weights), device="cpu")
    alone = np.asarray(generator.generate(["blue shoe"], seed=7)[0], dtype=int)
    batched = np.asarray(generator.generate(["red apple", "blue shoe"], seed=7)[1], dtype=int)
    again = np.asarray(generator.generate(["blue shoe"], seed=7)[0], dtype=int)
    other = np.asarray(generator.generate(["blue shoe"], seed=8)[0], dtype=int)
    assert (alone == again).all()
    assert np.abs(alone - batched).max() <= 1  # batched matmuls may round differently
    assert np.abs(alone - other).max() > 1


def test_weights_file_is_fp16_and_round_trips(weights: Path) -> None:
    assert {tensor.dtype for tensor in load_file(str(weights)).values()} == {torch.float16}
    prior, decoder, config, metadata = read_generator(weights)
    assert config == TINY_NETS
    assert metadata["encoder_pretrained"] == RANDOM_INIT
    z, embedding = torch.zeros(1, 8), torch.nn.functional.normalize(torch.ones(1, 32), dim=-1)
    assert decoder(z, embedding).shape == (1, 3, 32, 32)
    assert prior(embedding).norm(dim=-1).item() == pytest.approx(1.0, abs=1e-5)


def test_weights_for_another_encoder_are_refused(tmp_path: Path, tiny_model: str) -> None:
    metadata = {"encoder_model": tiny_model, "encoder_pretrained": RANDOM_INIT,
                "encoder_identity": f"{tiny_model}|sha256:0123456789abcdef"}
    path = save_generator(tmp_path / "g.safetensors", Prior(TINY_NETS), Decoder(TINY_NETS),
                          TINY_NETS, metadata)
    with pytest.raises(GeneratorUnavailableError, match="trained against encoder .*retrain"):
        load_generator("house", model=str(path), device="cpu")


def test_a_file_that_is_not_house_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "house-generator.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(GeneratorUnavailableError, match="cannot read house generator"):
        load_generator("house", model=str(tmp_path), device="cpu")  # a directory works too


def _train(catalog: Path, out: Path, tiny_model: str) -> Path:
    config = GeneratorTrainConfig(
        out=out, catalog=catalog, encoder_model=tiny_model, encoder_pretrained=RANDOM_INIT,
        nets=TINY_NETS, holdout_percent=25, threads=1, prior_steps=4, prior_batch=8,
        decoder_epochs=1, decoder_batch=4)
    return train_generator(config, log=lambda record: None)


def test_training_is_one_call_seeded_and_reproducible(catalog: Path, tmp_path: Path,
                                                      tiny_model: str) -> None:
    first = _train(catalog, tmp_path / "a", tiny_model)
    second = _train(catalog, tmp_path / "b", tiny_model)
    a, b = load_file(str(first)), load_file(str(second))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    generator = load_generator("house", model=str(first), device="cpu")
    assert generator.generate(["green hat"])[0].size == (32, 32)


def test_eval_reports_every_score(catalog: Path, weights: Path, tiny_encoder: Encoder) -> None:
    from indexer.house.generator_data import read_catalog

    generator = load_generator("house", model=str(weights), device="cpu")
    items = read_catalog(catalog)
    heldout = np.arange(len(items)) % 4 == 0
    report, images = evaluate_generator(generator, tiny_encoder, items, heldout)
    assert report.items == len(images) == 6 and report.collection == 24
    for share in (report.top10_generated, report.top10_real, report.top10_random):
        assert 0.0 <= share <= 1.0
    assert -1.0 <= report.clip_generated <= 1.0 and report.seconds_per_image > 0
    sheet = contact_sheet([("real", images), ("generated", images)], ["x"] * len(images))
    assert sheet.size[0] > 6 * 64 and sheet.size[1] > 2 * 64


def test_top_k_share_counts_strictly_better_competitors() -> None:
    texts = np.eye(3, dtype=np.float32)[:2]  # queries along axes 0 and 1
    collection = np.array([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0]], dtype=np.float32)
    own = np.array([0, 1])
    weak = np.array([[0.5, 0, 0], [0, 0.95, 0]], dtype=np.float32)
    # query 0: competitor row 2 (0.9) beats 0.5 -> rank 1; query 1: nothing beats 0.95.
    assert top_k_share(texts, weak, collection, own, k=1) == 0.5
    assert top_k_share(texts, weak, collection, own, k=2) == 1.0


def _pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray((array.transpose(1, 2, 0) * 255).astype(np.uint8), "RGB")
