"""The judged query set (built from data) and `xmodal-index eval --queries`: metrics
checked against hand-computed values, relevance against the catalog rows."""

import json
import math
import random

import pytest

from indexer import judged_queries, search_eval
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
    assert set(by_type) == {"title", "keyword", "subcategory", "phrase", "misspelling"}
    for q in by_type["keyword"]:  # every item carrying the keyword, in both styles
        assert q["relevant"] == sorted(r["id"] for r in ROWS if q["query"] in r["keywords"])
    for q in by_type["subcategory"]:
        assert q["relevant"] == sorted(r["id"] for r in ROWS if r["subcategory"] == q["query"])
    for q in by_type["title"]:
        assert q["relevant"] == sorted(r["id"] for r in ROWS if r["title"] == q["query"])


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
    assert set(result) == {"keyword", "hybrid"}
    assert set(result["keyword"]["by_type"]) == {"title", "keyword", "subcategory", "phrase",
                                                 "misspelling"}
    # every keyword query's words are in the items' keywords: keyword mode finds them all
    assert result["keyword"]["by_type"]["keyword"]["recall"] == 100.0


def test_bad_query_file_is_a_clear_error(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "x"}\n')
    with pytest.raises(Exception, match="q.jsonl:1: not a judged query"):
        search_eval.load_queries(path)
