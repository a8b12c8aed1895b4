"""`xmodal-index train` / `eval`: fine-tune on a collection's own pairs, measure, switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.cli import main
from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from indexer.training import collection_pairs, is_heldout
from search.engine import Searcher
from search.models.encoder import WEIGHTS_FILE
from search.query import SearchQuery, Target
from tests.utils.images import SHAPE_COLOURS, SHAPES, shape_image

QUIET = IndexOptions(workers=0, progress=False, batch_size=16)


def _shapes_catalog(root: Path) -> Path:
    """16 pictures captioned "<colour> <shape>", plus two text-only items."""
    root.mkdir(parents=True)
    rows = []
    for colour, rgb in SHAPE_COLOURS.items():
        for shape in SHAPES:
            shape_image(rgb, shape).save(root / f"{colour}-{shape}.png")
            rows.append({"id": f"{colour}-{shape}", "title": f"{colour} {shape}",
                         "image": f"{colour}-{shape}.png"})
    rows += [{"id": "text-1", "title": "no picture here"}, {"id": "text-2", "title": "nor here"}]
    path = root / "catalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def shapes(ws, tmp_path) -> str:
    index_source(ws, "shapes", _shapes_catalog(tmp_path / "src"), options=QUIET)
    return "shapes"


def _cli(ws, capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--collection", "shapes", "--home", str(ws.settings.home)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_eval_and_switch_to_the_fine_tuned_model(ws, shapes, tmp_path, capsys):
    out = tmp_path / "tuned"
    code, printed, _ = _cli(ws, capsys, "train", "--out", str(out), "--epochs", "40",
                            "--batch-size", "8", "--lr", "2e-3", "--no-progress", "--json")
    summary = json.loads(printed)
    assert code == 0 and summary["pairs"] == 16 and (out / WEIGHTS_FILE).is_file()
    assert summary["next"] == f"xmodal-index reindex --collection shapes --model {out}"

    report = tmp_path / "eval.json"
    code, table, _ = _cli(ws, capsys, "eval", "--model", str(out), "--out", str(report))
    result = json.loads(report.read_text())
    before, after = (row["text_to_image"] for row in result["rows"])
    assert code == 0 and result["n"] == 16 and "T→I R@1" in table
    # 16 candidates: chance R@1 is 6 %; the model trained on exactly these pairs knows them
    assert float(after["1"]) >= 0.5 > float(before["1"])

    assert _cli(ws, capsys, "reindex", "--model", str(out), "--no-progress")[0] == 0
    ws.reopen_collection("shapes")  # the CLI ran in its own workspace, as a server's would
    hits = Searcher(ws).search(SearchQuery.text("shapes", "blue triangle", target=Target.IMAGE,
                                                k=3)).hits
    assert ws.collection("shapes").encoder.name == str(out)
    assert "blue-triangle" in [h.external_id for h in hits]


def test_holdout_slice_is_left_out_of_training_and_is_what_eval_measures(ws, shapes,
                                                                          tmp_path, capsys):
    every = {external for external, _, _ in collection_pairs(ws, shapes)}
    held = {e for e, _, _ in collection_pairs(ws, shapes, holdout_percent=30, heldout=True)}
    rest = {e for e, _, _ in collection_pairs(ws, shapes, holdout_percent=30)}
    assert held == {e for e in every if is_heldout(e, 30)} and held.isdisjoint(rest)
    assert held | rest == every and len(every) == 16 and 0 < len(held) < 16

    code, printed, _ = _cli(ws, capsys, "train", "--out", str(tmp_path / "t"), "--epochs", "1",
                            "--batch-size", "4", "--holdout-percent", "30", "--no-progress",
                            "--json")
    assert code == 0 and json.loads(printed)["pairs"] == len(rest)
    code, printed, _ = _cli(ws, capsys, "eval", "--holdout-percent", "30", "--json")
    assert code == 0 and json.loads(printed)["n"] == len(held)


def test_bad_training_requests_are_clear_errors(ws, shapes, tmp_path, capsys):
    code, _, err = _cli(ws, capsys, "train", "--out", str(tmp_path / "t"), "--batch-size", "64")
    assert code == 2 and "16 items with both text and an image" in err
    code, _, err = _cli(ws, capsys, "eval", "--holdout-percent", "100")
    assert code == 2 and "holdout percent must be in [0, 100)" in err
    code, _, err = _cli(ws, capsys, "train", "--out", str(tmp_path / "t2"), "--from",
                        "no-such-architecture", "--batch-size", "4")
    assert code == 2 and "no-such-architecture" in err
