"""The diffusers backend, offline: a tiny Stable Diffusion pipeline with random weights is
built from configs, saved to tmp, and loaded back by path. No download."""

from __future__ import annotations

import json
from pathlib import Path

# diffusers and transformers come with the [generate] extra, which `make test` installs.
import diffusers  # noqa: E402,F401
import numpy as np
import pytest
import torch
import transformers  # noqa: E402,F401

from search.errors import GeneratorUnavailableError, InvalidInputError
from search.models.generator import load_generator

LATENT_SIDE = 16  # UNet sample_size; two VAE blocks halve once -> 32 px images


def _tiny_tokenizer(directory: Path):
    """A CLIP BPE tokenizer over single bytes only (no merges): valid, tiny, offline."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    symbols = list(bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate([*symbols, *(s + "</w>" for s in symbols),
                                                 "<|startoftext|>", "<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                              model_max_length=16)
    return tokenizer, vocab


def build_tiny_pipeline(directory: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab = _tiny_tokenizer(directory)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIDE, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        norm_num_groups=4, sample_size=2 * LATENT_SIDE,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    end = vocab["<|endoftext|>"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=16,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=end, pad_token_id=end))
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(directory / "pipeline")
    return directory / "pipeline"


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-diffusers"))


@pytest.fixture(scope="module")
def generator(pipeline_dir: Path):
    generated = load_generator("diffusers", model=str(pipeline_dir), device="cpu")
    generated.steps = 4  # the interface keeps pipeline defaults; 4 steps keep the test fast
    return generated


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_loads_a_local_pipeline_by_path(generator, pipeline_dir: Path) -> None:
    assert generator.name == "diffusers"
    assert generator.model_id == str(pipeline_dir.resolve())
    assert generator.native_size == 2 * LATENT_SIDE
    images = generator.generate(["red apple", "running shoe"], seed=0)
    assert [(image.size, image.mode) for image in images] == [((32, 32), "RGB")] * 2


def test_seeded_and_deterministic(generator) -> None:
    first = _pixels(generator.generate(["red apple"], seed=11)[0])
    again = _pixels(generator.generate(["red apple"], seed=11)[0])
    other = _pixels(generator.generate(["red apple"], seed=12)[0])
    assert (first == again).all()
    assert np.abs(first - other).max() > 0
    batched = _pixels(generator.generate(["running shoe", "red apple"], seed=11)[1])
    assert np.abs(first - batched).max() <= 2  # same noise per prompt; batched math rounds


def test_size_is_a_multiple_of_the_latent_scale(generator) -> None:
    assert generator.generate(["red apple"], size=64)[0].size == (64, 64)
    with pytest.raises(InvalidInputError, match="multiple of 4"):
        generator.generate(["red apple"], size=42)


def test_a_directory_that_is_not_a_pipeline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GeneratorUnavailableError, match="model_index.json"):
        load_generator("diffusers", model=str(tmp_path), device="cpu")


def test_uncached_hub_id_offline_fails_fast_naming_the_model() -> None:
    with pytest.raises(GeneratorUnavailableError, match="xmodal-test/not-a-model.*offline"):
        load_generator("diffusers", model="xmodal-test/not-a-model", device="cpu",
                       offline=True)
