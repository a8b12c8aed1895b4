"""`xmodal-index` commands are thin, documented, and say what went wrong."""

import json
import re
from pathlib import Path

import pytest

from indexer.cli import build_parser, main
from tests.indexer.conftest import write_catalog

COMMANDS = ["add", "delete", "reindex", "status", "migrate"]


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
