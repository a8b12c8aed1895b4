"""`xmodal-index` commands are thin, documented, and say what went wrong."""

import json
import re
from pathlib import Path

import pytest

from indexer.cli import build_parser, main
from tests.indexer.conftest import write_catalog

COMMANDS = ["add", "delete", "reindex", "status", "settings", "compact", "migrate"]


def test_every_command_has_help_and_is_documented(capsys):
    readme = Path("README.md").read_text()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([command, "--help"])
        assert done.value.code == 0
        assert "usage: xmodal-index " + command in capsys.readouterr().out
        assert re.search(rf"xmodal-index {command}\b", readme), command


def test_add_status_delete_reindex(tmp_path, tiny_model, capsys):
    from search.models.encoder import load_encoder

    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_catalog(tmp_path / "src", 20, broken=True)
    home = ["--home", str(tmp_path / "home"), "--json"]
    assert main(["add", str(source), "-c", "shop", "--model", model, "--workers", "0",
                 "--no-progress", *home]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["indexed"], summary["failed"]) == (20, 7)
    assert Path(summary["report"]).is_file()
    assert main(["add", str(source), "-c", "shop", "--strict", "--workers", "0",
                 "--no-progress", *home]) == 1
    capsys.readouterr()
    assert main(["delete", "-c", "shop", "sku-1", "sku-2", *home]) == 0
    assert json.loads(capsys.readouterr().out)["vectors_removed"] == 4
    assert main(["status", "-c", "shop", *home]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["items"] == 18 and status["recent_failures"]
    assert main(["reindex", "-c", "shop", "--spec", "IVF2,Flat", *home]) == 0
    assert json.loads(capsys.readouterr().out)["text"]["spec"] == "IVF2,Flat"


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    home = ["--home", str(tmp_path / "home")]
    assert main(["status", "-c", "nope", *home]) == 2
    assert "unknown collection 'nope'" in capsys.readouterr().err
    assert main(["add", str(tmp_path / "missing.jsonl"), "-c", "x", "--no-progress",
                 *home]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_add_and_status_print_readable_lines(tmp_path, tiny_model, capsys):
    from search.models.encoder import load_encoder

    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_catalog(tmp_path / "src", 12, broken=True)
    home = ["--home", str(tmp_path / "home")]
    assert main(["add", str(source), "-c", "shop", "--model", model, "--workers", "0",
                 "--no-progress", *home]) == 0
    out = capsys.readouterr().out
    assert "shop: 12 indexed, 0 updated, 0 unchanged, 0 deleted, 7 failed, 0 generated" in out
    assert re.search(r"[\d.]+ items/s, [\d.]+ s elapsed", out)
    assert re.search(r"image +index: Flat, 10 vectors, version v\S+", out)
    assert re.search(r"text +index: Flat, 12 vectors, version v\S+", out)
    report = re.search(r"7 failed; every failure is in (\S+)", out)
    assert report and Path(report.group(1)).is_file()
    assert "bad-truncated [prepare] truncated JPEG" in out  # the first failures, as lines
    assert main(["status", "-c", "shop", *home]) == 0
    status = capsys.readouterr().out
    assert "12 items, 22 vectors (image_original 10, text_original 12)" in status
    assert re.search(r"job 1 add done [\d-]+ [\d:]+: 12 indexed, 7 failed", status)
    assert "recent failures:" in status and "bad-bomb [prepare] decompression" in status
    for text in (out, status):  # no Python reprs, no escape codes when piped
        assert "{'" not in text and "job_id'" not in text and "\x1b[" not in text
    assert main(["delete", "-c", "shop", "sku-1", *home]) == 0
    assert re.search(r"shop: 1 id\(s\) deleted, [12] vector\(s\) removed", capsys.readouterr().out)
    assert main(["reindex", "-c", "shop", "--spec", "IVF2,Flat", *home]) == 0
    assert re.search(r"text +index: IVF2,Flat, 11 vectors", capsys.readouterr().out)


def test_status_json_is_machine_json(tmp_path, tiny_model, capsys):
    from search.models.encoder import load_encoder

    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_catalog(tmp_path / "src", 4)
    home = ["--home", str(tmp_path / "home"), "--json"]
    assert main(["add", str(source), "-c", "shop", "--model", model, "--workers", "0",
                 "--no-progress", *home]) == 0
    assert json.loads(capsys.readouterr().out)["index"]["text"]["vectors"] == 4
    assert main(["status", "-c", "shop", *home]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["indexes"]["image"]["spec"] == "Flat"
    assert status["recent_jobs"][0]["counts"]["indexed"] == 4
    assert status["recent_jobs"][0]["status"] == "done"


def test_other_results_print_as_key_value_lines():
    from indexer.render import render

    text = render({"out": Path("models/été"), "epochs": 2, "metrics": {"t2i_r1": 0.5},
                   "tags": ["🌻", "x"]})
    assert text.splitlines() == ["out: models/été", "epochs: 2", "metrics:",
                                 "  t2i_r1: 0.5", 'tags: ["🌻", "x"]']


def test_settings_shows_and_declares_search_fields(workspace, capsys, monkeypatch):
    from search import NewItem

    shop = workspace.create_collection("shop")
    shop.add_items([NewItem("shoe", text="running shoe", attributes={
        "keywords": ["sneakers"], "brand": "Acme", "mpn": "RS-1"})])
    monkeypatch.setenv("XMODAL_DATABASE_URL", workspace.settings.database_url)
    monkeypatch.setenv("XMODAL_DEVICE", "cpu")
    home = ["-c", "shop", "--home", str(workspace.settings.home), "--json"]
    workspace.close()

    def run(*args):
        code = main(["settings", *home, *args])
        captured = capsys.readouterr()
        return code, (json.loads(captured.out) if code == 0 else captured.err)

    assert run() == (0, {"collection": "shop", "searchable_fields": None,
                         "identifier_fields": ["sku", "gtin"], "reindexed": None})
    assert run("--searchable-fields", "brand, keywords") == (0, {
        "collection": "shop", "searchable_fields": ["brand", "keywords"],
        "identifier_fields": ["sku", "gtin"], "reindexed": 1})
    code, shown = run("--identifier-fields", "mpn")  # searchable keeps its value
    assert shown["searchable_fields"] == ["brand", "keywords"]
    assert shown["identifier_fields"] == ["mpn"]
    code, shown = run("--searchable-fields", "*", "--identifier-fields", "")
    assert (shown["searchable_fields"], shown["identifier_fields"]) == (None, [])
    code, error = run("--searchable-fields", "brand,colour")
    assert code == 2 and "'colour'" in error
    code, error = run("--identifier-fields", "bad name")
    assert code == 2 and "bad name" in error
