"""`xmodal-search` is a thin wrapper: its output equals the library's answer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search import NewItem
from search.cli import main
from search.engine import Searcher
from search.query import SearchQuery, Target
from search.settings import Settings
from search.workspace import Workspace
from tests.utils.corpus import catalog_items, png_bytes


@pytest.fixture
def home(tmp_path, tiny_model):
    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu")
    ws = Workspace.open(settings)
    ws.create_collection("shop").add_items(catalog_items(30))
    ws.collection("shop").save()
    ws.close()
    return settings


def test_json_output_equals_library(home, capsys):
    assert main(["fruit", "--collection", "shop", "--home", str(home.home), "-k", "4",
                 "--target", "image", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ws = Workspace.open(home)
    expected = Searcher(ws).search(SearchQuery.text("shop", "fruit", target=Target.IMAGE, k=4))
    ws.close()
    assert [h["external_id"] for h in printed["hits"]] == [h.external_id for h in expected.hits]
    assert {"encode_ms", "ann_ms", "sql_ms"} <= set(printed["took_ms"])


def test_image_query_and_filter_table(home, capsys, tmp_path):
    image = tmp_path / "q.png"
    image.write_bytes(png_bytes(4))
    code = main(["--image", str(image), "-c", "shop", "--home", str(home.home),
                 "--filter", '{"category": "fruit"}', "-k", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "3 hits" in out and "fruit" in out


@pytest.mark.parametrize(("args", "message"), [
    (["x", "-c", "nope"], "unknown collection 'nope'"),
    (["x", "-c", "shop", "--filter", "{bad"], "not valid JSON"),
    (["x", "-c", "shop", "--filter", '{"price": {"between": 1}}'], "unknown operator"),
    (["-c", "shop"], "at least one"),
    (["x", "-c", "shop", "-k", "0"], "k must be"),
])
def test_errors_are_clear_and_exit_2(home, capsys, args, message):
    assert main([*args, "--home", str(home.home)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["xmodal-search", "xmodal-index", "xmodal-serve"])
def test_console_scripts_have_help(command):
    exe = Path(sys.prefix) / "bin" / command
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage:" in out.stdout
    assert command in Path("README.md").read_text()


@pytest.fixture
def unicode_home(tmp_path, tiny_model):
    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu")
    ws = Workspace.open(settings)
    ws.create_collection("shop").add_items([
        NewItem("sunflower", text="sunflower 🌻", attributes={
            "emoji": "🌻", "name": "tournesol à l'été", "tags": ["fleur", "été"],
            "markup": "[bold]not markup[/bold] :smile:", "price": 2.5})])
    ws.collection("shop").save()
    ws.close()
    return settings


def test_attributes_print_as_key_value_with_unicode(unicode_home, capsys):
    assert main(["sunflower", "-c", "shop", "--home", str(unicode_home.home)]) == 0
    out = capsys.readouterr().out
    assert "1 hits" in out and "1. sunflower" in out and "text: sunflower 🌻" in out
    for line in ("emoji: 🌻", "name: tournesol à l'été", 'tags: ["fleur", "été"]',
                 "markup: [bold]not markup[/bold] :smile:", "price: 2.5"):
        assert line in out
    assert "\\u" not in out and "{'" not in out and "\x1b[" not in out


def test_terminal_table_shows_unicode_attributes(unicode_home):
    from rich.console import Console

    from search.cli import render

    ws = Workspace.open(unicode_home)
    result = Searcher(ws).search(SearchQuery.text("shop", "sunflower"))
    ws.close()
    console = Console(force_terminal=True, width=200, record=True)
    render(result, console)
    table = console.export_text()
    assert "emoji: 🌻" in table and "name: tournesol à l'été" in table
    assert "[bold]not markup[/bold] :smile:" in table and "\\u" not in table


def test_json_stays_machine_json(unicode_home, capsys):
    assert main(["sunflower", "-c", "shop", "--home", str(unicode_home.home), "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert hit["attributes"]["emoji"] == "🌻" and hit["attributes"]["price"] == 2.5
