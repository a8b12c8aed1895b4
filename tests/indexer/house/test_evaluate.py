import json
from pathlib import Path

import numpy as np
import pytest

from indexer.house import evaluate
from indexer.house.data import build
from indexer.house.evaluate import EvalRow, EvalSet, emoji_eval_set, format_table, recall_at_k
from search.models.encoder import load_encoder
from tests.indexer.house.fake_packs import FAKE_EMOJI, write_fake_packs


def test_recall_at_k_counts_the_rank_of_the_right_answer():
    similarity = np.array([[0.9, 0.1, 0.0],   # right answer first
                           [0.8, 0.5, 0.9],   # right answer third
                           [0.1, 0.9, 0.2]])  # right answer second
    assert recall_at_k(similarity, (1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_perfect_and_reversed_rankings():
    assert recall_at_k(np.eye(5), (1,)) == {1: 1.0}
    assert recall_at_k(-np.eye(5), (1, 4)) == {1: 0.0, 4: 0.0}


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("emoji")
    build(root / "sample", root / "cache", write_fake_packs(root / "npm"))
    return root / "cache" / "train"


def test_eval_set_has_distinct_captions_on_white(train_dir):
    eval_set = emoji_eval_set(train_dir, "twitter")
    assert eval_set.name == "twitter" and len(eval_set.captions) == len(FAKE_EMOJI)
    assert len(set(eval_set.captions)) == len(eval_set.captions)
    assert eval_set.images[0].mode == "RGB" and eval_set.images[0].getpixel((0, 0)) == (
        255, 255, 255)


def test_evaluate_returns_recalls(tiny_model, train_dir):
    encoder = load_encoder(tiny_model, device="cpu")
    t2i, i2t = evaluate.evaluate(encoder, emoji_eval_set(train_dir, "google"))
    assert set(t2i) == {1, 5, 10} and set(i2t) == {1, 5}
    assert t2i[10] == 1.0  # fewer than 10 candidates: every answer is in the top 10


def test_suite_cli_writes_json_and_prints_a_table(tiny_model, train_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate.main(["--emoji", str(train_dir), "--model", tiny_model, "--out", str(out)]
                         ) == 0
    rows = json.loads(out.read_text())
    assert [(r["setting"], r["style"]) for r in rows][:2] == [("in-style", "google")] * 2
    assert rows[1]["model"] == "random init"
    assert "T→I R@1" in capsys.readouterr().out


def test_format_table():
    row = EvalRow("in-style", "google", "house", 3, {1: 0.5, 5: 0.75, 10: 1.0},
                  {1: 0.25, 5: 1.0})
    table = format_table([row])
    assert "50.0%" in table and "25.0%" in table
    assert EvalSet("x", [], []).name == "x"
