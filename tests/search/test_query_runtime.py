"""Query encodes: int8 towers agree with float32, threads follow the load."""

import json
from pathlib import Path

import numpy as np
import torch

from search.media import decode_image
from search.models import query_runtime
from search.models.encoder import load_encoder
from search.models.query_runtime import QueryRuntime, ThreadChooser

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _sample_pairs(n: int) -> tuple[list[str], list]:
    """(titles, images) of the first `n` distinct-titled sample items of one style."""
    titles, paths, seen = [], [], set()
    for line in (SAMPLE / "catalog.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        if row.get("style") == "google" and row["title"] not in seen and row.get("image"):
            seen.add(row["title"])
            titles.append(row["title"])
            paths.append(SAMPLE / row["image"])
        if len(titles) == n:
            break
    return titles, paths


def _recall_at_10(texts: np.ndarray, images: np.ndarray) -> float:
    similarity = texts @ images.T
    rank = (similarity > np.diag(similarity)[:, None]).sum(axis=1)
    return float((rank < 10).mean())


def test_int8_text_tower_agrees_with_float32_on_the_house_model():
    """The acceptance rule for quantised queries: cosine >= 0.99 to the float32 vector,
    and text->image R@10 moves by less than one point."""
    fp32 = load_encoder("house", device="cpu", runtime=QueryRuntime(text_int8=False))
    int8 = load_encoder("house", device="cpu", runtime=QueryRuntime(text_int8=True))
    assert int8.variant == "text-int8" and fp32.variant == "fp32"
    titles, paths = _sample_pairs(300)
    images = fp32.encode_images([decode_image(p, min_side=fp32.image_size) for p in paths])
    exact = fp32.encode_texts(titles)
    quantised = np.stack([int8.encode_query_text(t) for t in titles])
    assert (exact * quantised).sum(axis=1).min() >= 0.99
    assert abs(_recall_at_10(quantised, images) - _recall_at_10(exact, images)) < 0.01
    # stored vectors never come from the int8 tower
    np.testing.assert_allclose(int8.encode_texts(titles[:5]), fp32.encode_texts(titles[:5]),
                               rtol=0, atol=1e-6)


def test_float32_query_encode_equals_the_batch_encode(tiny_model):
    encoder = load_encoder(tiny_model, device="cpu", runtime=QueryRuntime(text_int8=False))
    for text in ("a red shoe", "fruit number 12 with a much longer description"):
        np.testing.assert_allclose(encoder.encode_query_text(text),
                                   encoder.encode_texts([text])[0], rtol=0, atol=1e-6)


def test_int8_image_tower_only_where_quantisable(tiny_model):
    """ViT towers get an int8 transformer; the house ResNet keeps float32 (its attention
    pool reads Linear weights directly) and says so in its variant."""
    house = load_encoder("house", device="cpu", runtime=QueryRuntime(image_int8=True))
    assert "image-int8" not in house.variant
    vit = load_encoder(tiny_model, device="cpu", runtime=QueryRuntime(image_int8=True))
    assert "image-int8" in vit.variant
    image = decode_image(_sample_pairs(1)[1][0], min_side=vit.image_size)
    exact = vit.encode_images([image])[0]
    assert float(exact @ vit.encode_query_image(image)) >= 0.99


def test_threads_follow_the_load(monkeypatch):
    chooser = ThreadChooser(cores=4)
    monkeypatch.setattr(query_runtime, "runnable_elsewhere", lambda: 0)
    assert chooser.choose(in_flight=1) == 4  # alone: every core
    assert chooser.choose(in_flight=2) == 1  # concurrent calls in this process
    monkeypatch.setattr(query_runtime, "runnable_elsewhere", lambda: 2)
    assert chooser.choose(in_flight=1) == 2  # two cores busy elsewhere
    monkeypatch.setattr(query_runtime, "runnable_elsewhere", lambda: 9)
    assert chooser.choose(in_flight=1) == 1
    assert ThreadChooser(fixed=3, cores=4).choose(in_flight=5) == 3


def test_a_call_sets_its_threads_and_counts_itself(monkeypatch):
    monkeypatch.setattr(query_runtime, "runnable_elsewhere", lambda: 0)
    chooser = ThreadChooser(cores=2)
    with chooser.threads() as outer:
        assert outer == 2 and torch.get_num_threads() == 2
        with chooser.threads() as inner:  # a second call in flight
            assert inner == 1 and torch.get_num_threads() == 1


def test_runnable_elsewhere_reads_the_run_queue(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_bytes(b"cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    monkeypatch.setattr(query_runtime, "_PROC_STAT", stat)
    assert query_runtime.runnable_elsewhere() == 2  # the caller itself is one of them
    monkeypatch.setattr(query_runtime, "_PROC_STAT", tmp_path / "missing")
    assert query_runtime.runnable_elsewhere() == 0
