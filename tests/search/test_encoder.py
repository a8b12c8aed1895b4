import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from search.errors import UnknownModelError, WeightsUnavailableError
from search.models.encoder import load_encoder, normalize
from search.models.text_prefix import encode_text_prefix


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return load_encoder(tiny_model, device="cpu")


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(n)]


def test_outputs_are_normalised_float32(encoder):
    texts = encoder.encode_texts(["a red apple", "running shoe"])
    images = encoder.encode_images(_images(3))
    assert texts.shape == (2, 32) and images.shape == (3, 32)
    assert texts.dtype == np.float32 and images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)


def test_empty_inputs_give_empty_arrays(encoder):
    assert encoder.encode_texts([]).shape == (0, 32)
    assert encoder.encode_images([]).shape == (0, 32)


def test_deterministic_across_loads(tiny_model, encoder):
    again = load_encoder(tiny_model, device="cpu")
    np.testing.assert_allclose(encoder.encode_texts(["hello"]), again.encode_texts(["hello"]),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_images(_images(2)), again.encode_images(_images(2)),
                               rtol=0, atol=1e-6)


def test_long_text_is_truncated_not_crashed(encoder):
    long = " ".join(["word"] * 500)
    out = encoder.encode_texts([long, long + " different tail"])
    assert out.shape == (2, 32)
    # Everything past the context is cut, so both texts embed identically.
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


def test_prefix_text_tower_equals_full_context(encoder):
    texts = ["a", "a red apple on a table", "shoe", "grinning face with big eyes"]
    tokens = encoder.tokenizer(texts)
    with torch.inference_mode():
        full = encoder.model.encode_text(tokens)
        prefix = encode_text_prefix(encoder.model, tokens)
    torch.testing.assert_close(prefix, full, atol=1e-5, rtol=1e-5)
    # and the public path (length-sorted batches) matches the plain one
    np.testing.assert_allclose(encoder.encode_texts(texts), normalize(full.numpy()), atol=1e-5)


def test_batching_does_not_change_results(tiny_model):
    small = load_encoder(tiny_model, device="cpu", batch_size=2)
    big = load_encoder(tiny_model, device="cpu", batch_size=64)
    texts = [f"item number {i} " + "x " * i for i in range(7)]
    np.testing.assert_allclose(small.encode_texts(texts), big.encode_texts(texts), atol=1e-5)
    np.testing.assert_allclose(small.encode_images(_images(5)), big.encode_images(_images(5)),
                               atol=1e-5)


def test_preprocessed_tensor_input(encoder):
    images = _images(2)
    from_pil = encoder.encode_images(images)
    from_tensor = encoder.encode_images(encoder.preprocess_images(images))
    np.testing.assert_allclose(from_pil, from_tensor, atol=1e-6)


def test_save_and_load_local_checkpoint_dir(encoder, tmp_path):
    # perturb weights so a fresh random init could not pass by accident
    with torch.no_grad():
        for p in encoder.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    try:
        path = encoder.save(tmp_path / "ckpt")
        loaded = load_encoder(str(path), device="cpu")
        np.testing.assert_allclose(loaded.encode_texts(["red apple"]),
                                   encoder.encode_texts(["red apple"]), atol=1e-6)
        np.testing.assert_allclose(loaded.encode_images(_images(2)),
                                   encoder.encode_images(_images(2)), atol=1e-6)
        assert loaded.weights.identity.startswith("sha256:")
    finally:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            fresh = open_clip.create_model(encoder.name)
        encoder.model.load_state_dict(fresh.state_dict())


def test_architecture_with_local_weights_file(tiny_model, tmp_path):
    torch.manual_seed(5)
    model = open_clip.create_model(tiny_model)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "weights.pt")
    loaded = load_encoder(tiny_model, pretrained=str(tmp_path / "weights.pt"), device="cpu")
    tokens = open_clip.get_tokenizer(tiny_model)(["red apple"])
    with torch.inference_mode():
        expected = normalize(model.encode_text(tokens).numpy())
    np.testing.assert_allclose(loaded.encode_texts(["red apple"]), expected, atol=1e-5)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownModelError, match="no-such-arch"):
        load_encoder("no-such-arch")


def test_unknown_tag_lists_known_tags(tiny_model):
    with pytest.raises(WeightsUnavailableError, match="neither a local file"):
        load_encoder(tiny_model, pretrained="laion-nonexistent")


def test_hub_tag_offline_fails_fast_with_hint():
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        load_encoder("RN50", pretrained="openai", offline=True)
    message = str(caught.value)
    assert "'openai'" in message and "pretrained='/path/to/file'" in message
    assert time.monotonic() - started < 20  # no 25 s hub retry loop


def test_hub_tag_with_unreachable_hub_fails_fast(monkeypatch):
    from huggingface_hub import constants

    # .invalid never resolves: nothing leaves the machine, and we must not retry.
    monkeypatch.setattr(constants, "ENDPOINT", "http://hub.invalid")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        load_encoder("RN50", pretrained="openai")
    assert time.monotonic() - started < 20


def test_house_model_is_registered_and_sized():
    house = load_encoder("house", device="cpu")
    assert house.dim == 256 and house.image_size == 64 and house.context_length == 16
