import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from indexer.house import train as train_module
from indexer.house.augment import NO_AUGMENT, AugmentConfig, augment
from indexer.house.pairs import Example, examples_from_pairs, pairs_from_jsonl, prepare
from indexer.house.train import (
    LOG_FILE,
    STATE_FILE,
    ResumeMismatchError,
    TrainConfig,
    export_fp16,
    fp32_attention,
    parse_from,
    train_clip,
)
from search.models.encoder import WEIGHTS_FILE, load_encoder
from tests.utils.images import SHAPE_COLOURS as COLOURS
from tests.utils.images import SHAPES
from tests.utils.images import shape_image as _shape


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return [Example((_shape(rgb, shape),), (f"{name} {shape}", f"a {shape} in {name}"))
            for name, rgb in COLOURS.items() for shape in SHAPES]


def _config(tiny_model: str, out: Path, **overrides) -> TrainConfig:
    values = dict(out=out, model=tiny_model, epochs=4, batch_size=8, lr=2e-3,
                  warmup_steps=2, checkpoint_every=3, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / WEIGHTS_FILE))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_loss_decreases_and_output_loads(tiny_model, examples, tmp_path):
    out = train_clip(examples, _config(tiny_model, tmp_path / "run", epochs=12))
    log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert log[-1]["step"] == 12 * 2 and log[-1]["loss"] < log[0]["loss"] - 0.3
    encoder = load_encoder(str(out), device="cpu")
    assert encoder.encode_texts(["red square"]).shape == (1, 32)


def test_resume_after_kill_equals_uninterrupted(tiny_model, examples, tmp_path, monkeypatch):
    # 4 steps per epoch, checkpoints at 3, 4, 6, 8, ...: a kill after step 7 resumes at 6
    whole = train_clip(examples, _config(tiny_model, tmp_path / "whole", batch_size=4))
    real_step, calls = train_module.train_step, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_clip(examples, _config(tiny_model, tmp_path / "killed", batch_size=4))
    monkeypatch.setattr(train_module, "train_step", real_step)
    state = torch.load(tmp_path / "killed" / STATE_FILE, weights_only=True)
    assert state["step"] == 6
    resumed = train_clip(examples, _config(tiny_model, tmp_path / "killed", batch_size=4))
    _assert_same(_weights(whole), _weights(resumed))


def test_max_steps_stops_and_the_rerun_finishes(tiny_model, examples, tmp_path):
    whole = train_clip(examples, _config(tiny_model, tmp_path / "whole"))
    part = _config(tiny_model, tmp_path / "part", max_steps=5)
    assert not (train_clip(examples, part) / WEIGHTS_FILE).exists()
    rest = train_clip(examples, _config(tiny_model, tmp_path / "part"))
    _assert_same(_weights(whole), _weights(rest))


def test_seeded_runs_are_deterministic(tiny_model, examples, tmp_path):
    one = train_clip(examples, _config(tiny_model, tmp_path / "a", epochs=2))
    two = train_clip(examples, _config(tiny_model, tmp_path / "b", epochs=2))
    other = train_clip(examples, _config(tiny_model, tmp_path / "c", epochs=2, seed=1))
    _assert_same(_weights(one), _weights(two))
    key = "visual.proj"
    assert not torch.equal(_weights(one)[key], _weights(other)[key])


def test_a_different_config_refuses_to_resume(tiny_model, examples, tmp_path):
    train_clip(examples, _config(tiny_model, tmp_path / "run", max_steps=2))
    with pytest.raises(ResumeMismatchError):
        train_clip(examples, _config(tiny_model, tmp_path / "run", lr=1e-4))


def test_plain_pairs_from_jsonl(tiny_model, tmp_path):
    rows = []
    for index, (name, rgb) in enumerate(COLOURS.items()):
        for shape in SHAPES:
            path = tmp_path / f"{name}-{shape}.png"
            _shape(rgb, shape).save(path)
            rows.append({"image": path.name, "title": f"{name} {shape}", "id": index})
    rows.append({"image": None, "title": "no image"})
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = pairs_from_jsonl(catalog)
    assert len(pairs) == 16 and len(examples_from_pairs(pairs + pairs[:2])) == 16
    out = train_clip(pairs, _config(tiny_model, tmp_path / "run", epochs=1))
    assert (out / WEIGHTS_FILE).is_file()


def test_fine_tune_from_a_saved_encoder_and_export_fp16(tiny_model, examples, tmp_path):
    first = train_clip(examples, _config(tiny_model, tmp_path / "first", epochs=1))
    again = train_clip(examples, _config(str(first), tmp_path / "second", epochs=1))
    assert not torch.equal(_weights(first)["visual.proj"], _weights(again)["visual.proj"])
    half = export_fp16(again, tmp_path / "w.safetensors")
    assert all(t.dtype == torch.float16 for t in load_file(str(half)).values())
    full = load_encoder(str(again), device="cpu")
    loaded = load_encoder(tiny_model, pretrained=str(half), device="cpu")
    assert next(loaded.model.parameters()).dtype == torch.float32
    np.testing.assert_allclose(loaded.encode_texts(["red bar"]),
                               full.encode_texts(["red bar"]), atol=5e-3)


def test_parse_from(tmp_path):
    assert parse_from("house") == ("house", None)
    assert parse_from("house/random") == ("house", "random")
    assert parse_from("ViT-B-32//m/w.safetensors") == ("ViT-B-32", "/m/w.safetensors")
    assert parse_from(str(tmp_path)) == (str(tmp_path), None)


def test_fp32_attention_matches_plain_attention(tiny_model):
    model = load_encoder(tiny_model, device="cpu").model
    pixels, tokens = torch.randn(3, 3, 32, 32), torch.randint(0, 49000, (3, 24))
    with torch.no_grad():
        plain = model(pixels, tokens)[:2]
        with fp32_attention():
            patched = model(pixels, tokens)[:2]
    for a, b in zip(plain, patched, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_augment_policies(examples, tiny_model):
    encoder = load_encoder(tiny_model, device="cpu")
    data = prepare(examples, 32, encoder.tokenizer)
    pixels = data.pixels[:4]
    gen = torch.Generator().manual_seed(0)
    yes, no = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    plain = augment(pixels, 32, NO_AUGMENT, yes, yes, gen)
    alpha = pixels[:, 3:4].float() / 255
    expected = pixels[:, :3].float() / 255 * alpha + (1 - alpha)  # composited on white
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)
    mirror = AugmentConfig(apply_p=1.0, scale=(1, 1), max_shift=0, max_rotate_deg=0, flip_p=1.0,
                           greyscale_p=0, hue_p=0, jitter=0, background_white_p=1, blur_p=0)
    torch.testing.assert_close(augment(pixels, 32, mirror, no, yes, gen), plain)
    torch.testing.assert_close(augment(pixels, 32, mirror, yes, yes, gen), plain.flip(-1),
                               atol=1e-5, rtol=0)
    recolour = AugmentConfig(apply_p=1.0, scale=(1, 1), max_shift=0, max_rotate_deg=0, flip_p=0,
                             greyscale_p=1.0, hue_p=1.0, jitter=0, background_white_p=1,
                             blur_p=0)
    torch.testing.assert_close(augment(pixels, 32, recolour, yes, no, gen), plain)
    grey = augment(pixels, 32, recolour, yes, yes, gen)
    torch.testing.assert_close(grey[:, 0], grey[:, 1], atol=1e-5, rtol=0)


def test_cli_trains_on_the_emoji_set_and_exports(tiny_model, tmp_path, capsys):
    from indexer.house.data import build
    from tests.indexer.house.fake_packs import write_fake_packs

    build(tmp_path / "sample", tmp_path / "cache", write_fake_packs(tmp_path / "npm"))
    out, weights = tmp_path / "run", tmp_path / "w.safetensors"
    code = train_module.main(["--out", str(out), "--from", f"{tiny_model}/random",
                              "--emoji", str(tmp_path / "cache" / "train"), "--epochs", "1",
                              "--batch-size", "4", "--export", str(weights)])
    assert code == 0 and (out / WEIGHTS_FILE).is_file() and weights.is_file()
    assert "encoder:" in capsys.readouterr().out
