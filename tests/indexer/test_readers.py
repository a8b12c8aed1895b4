import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.readers import ColumnMap, RowError, SourceRecord, open_source
from search.errors import InvalidInputError


def _split(rows):
    rows = list(rows)
    return ([r for r in rows if isinstance(r, SourceRecord)],
            [r for r in rows if isinstance(r, RowError)])


def test_folder_with_sidecars(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.jpg").write_bytes(b"x")
    (tmp_path / "a" / "one.txt").write_text("a red apple\n")
    (tmp_path / "a" / "b" / "two.PNG").write_bytes(b"x")
    (tmp_path / "a" / "b" / "two.json").write_text(json.dumps({"caption": "shoe", "size": 42}))
    (tmp_path / "three.webp").write_bytes(b"x")
    (tmp_path / "notes.md").write_text("not an image")
    records, errors = _split(open_source(tmp_path))
    assert errors == []
    by_id = {r.item.external_id: r.item for r in records}
    assert sorted(by_id) == ["a/b/two.PNG", "a/one.jpg", "three.webp"]
    assert by_id["a/one.jpg"].text == "a red apple"
    assert (by_id["a/b/two.PNG"].text, by_id["a/b/two.PNG"].attributes) == ("shoe", {"size": 42})
    assert by_id["three.webp"].text is None
    assert by_id["three.webp"].image == tmp_path / "three.webp"


def test_jsonl_catalog_columns_and_bad_rows(tmp_path):
    lines = [
        json.dumps({"sku": "1", "name": "Shoe", "desc": "running", "pic": "i/1.jpg", "price": 5}),
        "{broken",
        json.dumps({"name": "no id"}),
        json.dumps({"sku": "1", "name": "again"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"sku": 2, "name": "Apple", "pic": "/abs/2.png"}),
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    columns = ColumnMap(id="sku", text=("name", "desc"), image="pic")
    records, errors = _split(open_source(path, columns))
    assert [r.item.external_id for r in records] == ["1", "2"]
    first = records[0].item
    assert (first.text, first.image, first.attributes) == ("Shoe running", tmp_path / "i/1.jpg",
                                                           {"price": 5})
    assert str(records[1].item.image) == "/abs/2.png"
    reasons = [(e.location, e.reason.split(":")[0]) for e in errors]
    assert reasons == [("c.jsonl:2", "malformed JSON"), ("c.jsonl:3", "missing id column 'sku'"),
                       ("c.jsonl:4", "duplicate id in source"),
                       ("c.jsonl:5", "row is not a JSON object")]


def test_csv_numbers_become_numbers(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,title,image,price,stock,color\n1,Shoe,a.jpg,9.5,3,red\n2,Hat,,x,,blue\n"
                    "3,Bad,,1,2,3,4\n")
    records, errors = _split(open_source(path))
    assert records[0].item.attributes == {"price": 9.5, "stock": 3, "color": "red"}
    assert records[1].item.image is None and records[1].item.attributes == {"price": "x",
                                                                           "color": "blue"}
    assert [e.reason for e in errors] == ["row has more cells than the header"]


def test_parquet_catalog(tmp_path):
    table = pa.table({"id": ["a", "b"], "caption": ["red apple", None], "year": [2010, 2015]})
    pq.write_table(table, tmp_path / "c.parquet")
    records, errors = _split(open_source(tmp_path / "c.parquet"))
    assert errors == []
    assert [(r.item.external_id, r.item.text, r.item.attributes) for r in records] == [
        ("a", "red apple", {"year": 2010}), ("b", None, {"year": 2015})]


def test_text_corpus_ids_are_stable(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first line\n\nsecond line\nfirst line\n")
    records, errors = _split(open_source(path))
    path.write_text("inserted above\nfirst line\nsecond line\n")
    again, _ = _split(open_source(path))
    assert [r.item.text for r in records] == ["first line", "second line"]
    assert len(errors) == 1 and errors[0].reason == "duplicate line"
    ids = {r.item.text: r.item.external_id for r in again}
    assert all(ids[r.item.text] == r.item.external_id for r in records)


def test_unsupported_and_missing_sources(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_source(tmp_path / "nope.jsonl")
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(InvalidInputError, match="unsupported source"):
        open_source(tmp_path / "x.xml")
