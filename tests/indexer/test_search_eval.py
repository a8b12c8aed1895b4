"""The judged query set (built from data) and `xmodal-index eval --queries`: metrics
checked against hand-computed values, relevance against the catalog rows."""

import json
import math
import random

import numpy as np
import pytest
from PIL import Image

from indexer import image_colours, judged_queries, search_eval
from indexer.cli import main
from search.collection.collection import NewItem

ROWS = [
    {"id": f"{style}-{code}", "title": title, "keywords": keywords, "subcategory": sub,
     "style": style}
    for style in ("google", "twitter")
    for code, title, keywords, sub in [
        ("1f45f", "running shoe", ["sneakers", "running", "sport"], "clothing"),
        ("1f462", "womans boot", ["boots", "winter", "sport"], "clothing"),
        ("1f34e", "red apple", ["fruit", "apple", "red"], "food fruit"),
        ("1f350", "pear", ["fruit", "green"], "food fruit"),
    ]]


def test_metrics_match_hand_computed_values():
    relevant = frozenset({"a", "b", "c"})
    recall, mrr, ndcg = search_eval.query_scores(["x", "a", "y", "b"], relevant)
    assert recall == pytest.approx(2 / 3)
    assert mrr == pytest.approx(1 / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg == pytest.approx(dcg / idcg)
    many = frozenset(f"r{i}" for i in range(30))  # recall is over min(10, relevant)
    assert search_eval.query_scores([f"r{i}" for i in range(10)], many) == (1.0, 1.0, 1.0)
    assert search_eval.query_scores([], relevant) == (0.0, 0.0, 0.0)


def test_relevance_comes_from_the_data():
    queries = judged_queries.build(ROWS, per_type=2, seed=0)
    assert queries == judged_queries.build(ROWS, per_type=2, seed=0)  # reproducible
    by_type = {}
    for q in queries:
        by_type.setdefault(q["type"], []).append(q)
    assert set(by_type) == {"title", "keyword", "subcategory", "phrase", "misspelling",
                            "synonym"}
    for q in by_type["keyword"]:  # every item carrying the keyword, in both styles
        assert q["relevant"] == sorted(r["id"] for r in ROWS if q["query"] in r["keywords"])
    for q in by_type["subcategory"]:
        assert q["relevant"] == sorted(r["id"] for r in ROWS if r["subcategory"] == q["query"])
    for q in by_type["title"]:
        assert q["relevant"] == sorted(r["id"] for r in ROWS if r["title"] == q["query"])


def _picture(path, colours):
    """A 32x32 RGBA picture: transparent border, the inside striped with `colours`."""
    pixels = np.zeros((32, 32, 4), dtype=np.uint8)
    rows = np.array_split(np.arange(4, 28), len(colours))
    for rgb, band in zip(colours, rows, strict=True):
        pixels[band[0]:band[-1] + 1, 4:28] = (*rgb, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def test_dominant_colour_is_read_from_the_opaque_pixels(tmp_path):
    cases = {"red": [(220, 20, 30)], "yellow": [(250, 210, 40)], "blue": [(30, 90, 230)],
             "green": [(40, 180, 60)], "white": [(250, 250, 250)], "black": [(10, 10, 10)],
             "brown": [(120, 60, 20)], None: [(220, 20, 30), (30, 90, 230), (40, 180, 60)]}
    for expected, colours in cases.items():
        path = _picture(tmp_path / f"{expected}.png", colours)
        assert image_colours.dominant_colour(path) == expected, expected
    empty = tmp_path / "empty.png"
    Image.new("RGBA", (8, 8)).save(empty)  # fully transparent: no colour at all
    assert image_colours.dominant_colour(empty) is None


def test_colour_queries_take_relevance_from_the_pixels(tmp_path):
    # Names say nothing of colour; the pictures decide which items are relevant.
    paint = {"google-a": (220, 20, 30), "twitter-a": (30, 90, 230), "google-b": (220, 20, 30),
             "twitter-b": (225, 25, 35), "google-c": (30, 90, 230), "twitter-c": (40, 180, 60)}
    rows = []
    for item_id, rgb in paint.items():
        _picture(tmp_path / "images" / f"{item_id}.png", [rgb])
        rows.append({"id": item_id, "title": f"thing {item_id[-1]}", "keywords": ["thing", "stuff"],
                     "subcategory": "food fruit", "image": f"images/{item_id}.png"})
    queries = judged_queries.build(rows, per_type=2, seed=0, image_root=tmp_path)
    colour = {q["query"]: q["relevant"] for q in queries if q["type"] == "colour"}
    # green has one item only (< 2): no query
    assert colour == {"red fruit": ["google-a", "google-b", "twitter-b"],
                      "blue fruit": ["google-c", "twitter-a"]}
    assert not any(q["type"] == "colour" for q in judged_queries.build(rows, per_type=2))


def test_synonyms_are_words_the_catalog_never_uses():
    queries = judged_queries.build(ROWS, per_type=50, seed=0)
    synonyms = {q["query"]: q["relevant"] for q in queries if q["type"] == "synonym"}
    shoe = ["google-1f45f", "twitter-1f45f"]  # "trainers" -> names holding "shoe"
    red = ["google-1f34e", "twitter-1f34e"]  # "crimson", "scarlet" -> "red apple"
    assert synonyms == {"trainers": shoe, "crimson": red, "scarlet": red}
    # once the catalog uses a word (here as a keyword), it is no synonym query any more
    rows = [{**r, "keywords": [*r["keywords"], "scarlet"]} for r in ROWS]
    kept = {q["query"] for q in judged_queries.build(rows, per_type=50) if q["type"] == "synonym"}
    assert kept == {"trainers", "crimson"}


def test_misspelling_is_one_edit_of_the_longest_word():
    rng = random.Random(3)
    for _ in range(50):
        typo = judged_queries.misspell("red running shoe", rng)
        words = typo.split()
        assert words[0] == "red" and words[2] == "shoe" and words[1] != "running"
        assert words[1][0] == "r" and abs(len(words[1]) - len("running")) <= 1


def test_cli_eval_prints_every_mode_and_type(workspace, tmp_path, capsys, monkeypatch):
    collection = workspace.create_collection("emoji")
    collection.add_items([NewItem(r["id"], text=r["title"], attributes=r) for r in ROWS])
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps(q) + "\n"
                            for q in judged_queries.build(ROWS, per_type=2, seed=0)))
    home = str(workspace.settings.home)
    monkeypatch.setenv("XMODAL_DATABASE_URL", workspace.settings.database_url)
    monkeypatch.setenv("XMODAL_DEVICE", "cpu")
    workspace.close()
    code = main(["eval", "-c", "emoji", "--queries", str(path), "--home", home,
                 "--mode", "keyword", "--mode", "hybrid", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"keyword", "hybrid"}  # no best-per-query without vector
    assert set(result["keyword"]["by_type"]) == {"title", "keyword", "subcategory", "phrase",
                                                 "misspelling", "synonym"}
    # every keyword query's words are in the items' keywords: keyword mode finds them all
    assert result["keyword"]["by_type"]["keyword"]["recall"] == 100.0
    # hybrid's fusion is an option of the run; with alpha 0 it ranks as keyword does
    code = main(["eval", "-c", "emoji", "--queries", str(path), "--home", home,
                 "--mode", "keyword", "--mode", "hybrid", "--fusion", "weighted",
                 "--alpha", "0", "--json"])
    pure = json.loads(capsys.readouterr().out)
    assert code == 0 and pure["hybrid"]["by_type"]["keyword"] == pure["keyword"]["by_type"][
        "keyword"]
    code = main(["eval", "-c", "emoji", "--queries", str(path), "--home", home,
                 "--mode", "hybrid", "--alpha", "2"])
    assert code == 2 and "alpha" in capsys.readouterr().err


def test_bad_query_file_is_a_clear_error(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "x"}\n')
    with pytest.raises(Exception, match="q.jsonl:1: not a judged query"):
        search_eval.load_queries(path)


def test_best_per_query_is_the_better_ranker_of_each_query(workspace):
    collection = workspace.create_collection("emoji")
    collection.add_items([NewItem(r["id"], text=r["title"], attributes=r) for r in ROWS])
    queries = [search_eval.JudgedQuery(q["query"], q["type"], frozenset(q["relevant"]))
               for q in judged_queries.build(ROWS, per_type=2, seed=0)]
    result = search_eval.evaluate_modes(workspace, "emoji", queries,
                                        [search_eval.SearchMode.VECTOR,
                                         search_eval.SearchMode.KEYWORD])
    best = result[search_eval.BEST_PER_QUERY]
    for kind, scores in best["by_type"].items():
        for mode in ("vector", "keyword"):
            assert scores["recall"] >= result[mode]["by_type"][kind]["recall"]
    assert best["overall"]["queries"] == len(queries)
