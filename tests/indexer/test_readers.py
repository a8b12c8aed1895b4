import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.readers import ColumnMap, RowError, RowLimits, SourceOptions, SourceRecord, open_source
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


# ---------------------------------------------------------------------------------------
# Dirty rows: each one is its own failure, every good row around it is read

SMALL = SourceOptions(RowLimits(max_line_bytes=64 * 1024, max_field_chars=2000,
                                max_text_chars=1000, max_attributes=8,
                                max_attribute_bytes=500, max_id_chars=40))


def _good(i):
    return {"id": f"good-{i}", "title": f"product {i}", "price": i}


def test_jsonl_hostile_rows_fail_alone(tmp_path):
    deep = '{"a": ' * 5_000 + "1" + "}" * 5_000
    bad = [
        ('{"id": "deep", "title": "x", "attrs": ' + deep + "}", "JSON nested deeper than 20"),
        (json.dumps({"id": "long", "title": "y" * 70_000}), "line is longer than 65,536"),
        (b'{"id": "utf", "title": "\xff\xfe"}', "invalid UTF-8 at byte"),
        (b'{"id": "nul", "title": "a\x00b"}', "NUL byte"),
        ('{"id": "nan", "price": NaN}', "non-finite number NaN"),
        ('{"id": "esc", "title": "a\\u0000b"}', "text contains a NUL"),
        ("[1, 2]", "row is not a JSON object"),
        ("42", "row is not a JSON object"),
        (json.dumps({"id": "x" * 41}), "id is 41 characters, limit 40"),
        (json.dumps({"id": "t", "title": "z" * 1001}), "text is 1,001 characters"),
        (json.dumps({"id": "many", **{f"k{i}": i for i in range(9)}}), "9 attributes, limit 8"),
        (json.dumps({"id": "big", "blob": "b" * 600}), "attribute 'blob' is 602 bytes"),
        (json.dumps({"id": {"nested": 1}}), "id must be a string or an integer"),
        (json.dumps({"id": "img", "image": ["a.jpg"]}), "image path must be a string"),
        (json.dumps({"id": "huge", "n": 2**70}), "does not fit in 64 bits"),
        ('{"id": "deepattr", "a": ' + "[" * 25 + "]" * 25 + "}", "nested deeper than 20"),
        ('{"id": "str", "t": "' + "[" * 50 + '"}', None),  # brackets in a string are text
    ]
    lines: list[bytes] = []
    for i, (line, _) in enumerate(bad):
        lines.append(json.dumps(_good(i)).encode())
        lines.append(line if isinstance(line, bytes) else line.encode())
    lines.append(json.dumps(_good(len(bad))).encode())
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    records, errors = _split(open_source(path, options=SMALL))
    assert [r.item.external_id for r in records if r.item.external_id.startswith("good")] == [
        f"good-{i}" for i in range(len(bad) + 1)]
    expected = [(f"c.jsonl:{2 * i + 2}", reason) for i, (_, reason) in enumerate(bad) if reason]
    assert len(errors) == len(expected)
    for error, (location, reason) in zip(errors, expected, strict=True):
        assert error.location == location and reason in error.reason, (error, reason)
    assert {r.item.external_id for r in records} - {f"good-{i}" for i in range(30)} == {"str"}


def test_jsonl_default_limits_take_the_issue_rows(tmp_path):
    """The issue's rows with default limits: 100k-level nesting between 453 good rows."""
    rows = [json.dumps(_good(i)) for i in range(453)]
    rows.insert(200, '{"id": "deep", "attributes": ' + '{"a": ' * 100_000 + "1"
                + "}" * 100_000 + "}")
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(rows) + "\n")
    records, errors = _split(open_source(path))
    assert len(records) == 453
    assert [(e.location, e.reason) for e in errors] == [
        ("c.jsonl:201", "JSON nested deeper than 20 levels")]


def test_csv_hostile_rows_fail_alone(tmp_path):
    header = "id,title,price\n"
    good = [f"good-{i},product {i},{i}\n" for i in range(8)]
    bad = [
        # over csv's own default limit (131,072): now a failure of its own, at our limit
        ("big," + "x" * 200_000 + ",1\n", "a field is longer than 2,000 characters"),
        ('q,"unclosed quote' + "y" * 3000 + "\n", "longer than 2,000 characters (unclosed quote?)"),
        ("nul,a\x00b,1\n", "NUL"),
        ("extra,a,1,2,3\n", "row has more cells than the header"),
        (",no id,1\n", "missing id column 'id'"),
    ]
    body = header + "".join(g + b for g, (b, _) in zip(good, bad, strict=False)) + "".join(
        good[len(bad):])
    path = tmp_path / "c.csv"
    path.write_bytes(body.encode() + b"utf,\xff\xfe,1\n" + b"last,product last,9\n")
    big = SourceOptions(RowLimits(max_field_chars=2000, max_line_bytes=1024 * 1024))
    records, errors = _split(open_source(path, options=big))
    ids = [r.item.external_id for r in records]
    assert ids == [f"good-{i}" for i in range(8)] + ["last"]
    reasons = [e.reason for e in errors]
    for (_, reason), got in zip(bad, reasons, strict=False):
        assert reason in got, (reason, got)
    assert "invalid UTF-8" in reasons[-1] and errors[-1].location == "c.csv:15"
    assert errors[0].location == "c.csv:3"


def test_csv_field_over_pythons_default_limit_with_default_limits(tmp_path):
    rows = [f"r{i},title {i}\n" for i in range(84)]
    rows.insert(40, "long," + "d" * 131_073 + "\n")
    path = tmp_path / "c.csv"
    path.write_text("id,title\n" + "".join(rows))
    records, errors = _split(open_source(path))
    assert len(records) == 84
    assert len(errors) == 1 and "text is 131,073 characters, limit 100,000" in errors[0].reason


def test_parquet_bad_types_and_a_corrupt_row_group(tmp_path):
    good = pa.table({"id": [f"g{i}" for i in range(6)], "caption": ["c"] * 6,
                     "blob": pa.array([None] * 6, type=pa.binary())})
    bad = pa.table({"id": ["b0", "b1"], "caption": ["c", "c"],
                    "blob": pa.array([b"\x00\x01", None], type=pa.binary())})
    path = tmp_path / "c.parquet"
    with pq.ParquetWriter(path, good.schema) as writer:
        writer.write_table(good.slice(0, 3))
        writer.write_table(bad)
        writer.write_table(good.slice(3, 3))
    records, errors = _split(open_source(path))
    assert [r.item.external_id for r in records] == ["g0", "g1", "g2", "b1", "g3", "g4", "g5"]
    assert [(e.location, e.reason) for e in errors] == [
        ("c.parquet:row 4", "attribute 'blob' holds a bytes, not JSON")]

    # Damage the middle row group's data pages: its rows fail together, the others read.
    meta = pq.ParquetFile(path).metadata.row_group(1)
    chunks = [meta.column(c) for c in range(meta.num_columns)]
    start = min(c.dictionary_page_offset or c.data_page_offset for c in chunks)
    length = sum(c.total_compressed_size for c in chunks)
    raw = bytearray(path.read_bytes())
    raw[start:start + length] = b"\xff" * length
    path.write_bytes(bytes(raw))
    records, errors = _split(open_source(path))
    assert [r.item.external_id for r in records] == ["g0", "g1", "g2", "g3", "g4", "g5"]
    assert [e.location for e in errors] == ["c.parquet:rows 4-5"]
    assert "unreadable row group 1" in errors[0].reason

    path.write_bytes(b"PAR1 not really")
    records, errors = _split(open_source(path))
    assert records == [] and "unreadable Parquet file" in errors[0].reason


def test_parquet_timestamp_out_of_pythons_range_fails_its_row(tmp_path):
    stamps = pa.array([0, 2**62, 86_400_000_000], type=pa.timestamp("us"))
    pq.write_table(pa.table({"id": ["a", "b", "c"], "when": stamps}), tmp_path / "t.parquet")
    records, errors = _split(open_source(tmp_path / "t.parquet"))
    assert [(r.item.external_id, r.item.attributes) for r in records] == [
        ("a", {"when": "1970-01-01T00:00:00"}), ("c", {"when": "1970-01-02T00:00:00"})]
    assert [e.location for e in errors] == ["t.parquet:row 2"]


def test_text_corpus_bad_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"good one\n\xff\xfe\nnul\x00here\n" + b"x" * 70_000 + b"\ngood two\n")
    records, errors = _split(open_source(path, options=SMALL))
    assert [r.item.text for r in records] == ["good one", "good two"]
    assert [(e.location, e.reason.split(" at")[0]) for e in errors] == [
        ("t.txt:2", "invalid UTF-8"), ("t.txt:3", "line contains a NUL byte"),
        ("t.txt:4", "line is longer than 65,536 bytes")]


# ---------------------------------------------------------------------------------------
# Special files in a folder source: clean per-item failures, never a hang or a huge read

def _special_folder(tmp_path):
    """A folder with one good image and one of every kind of trap, images and sidecars."""
    import socket

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"\x89PNG outside")
    (root / "good.png").write_bytes(b"\x89PNG inside")
    (root / "good.txt").write_text("a good caption")
    os.mkfifo(root / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.jpg"))
    (root / "zero.jpg").symlink_to("/dev/zero")
    (root / "loop-a.jpg").symlink_to(root / "loop-b.jpg")
    (root / "loop-b.jpg").symlink_to(root / "loop-a.jpg")
    (root / "out.png").symlink_to(outside / "secret.png")
    (root / "dir.jpg").mkdir()
    (root / "in.png").symlink_to(root / "good.png")  # a link inside the root is fine
    for stem, trap in (("capfifo", "fifo"), ("capzero", "zero"), ("capout", "out")):
        (root / f"{stem}.png").write_bytes(b"\x89PNG")
        if trap == "fifo":
            os.mkfifo(root / f"{stem}.txt")
        elif trap == "zero":
            (root / f"{stem}.json").symlink_to("/dev/zero")
        else:
            (outside / "cap.txt").write_text("outside caption")
            (root / f"{stem}.txt").symlink_to(outside / "cap.txt")
    return root, sock


@pytest.mark.timeout(60)
def test_folder_special_files_are_per_item_failures(tmp_path):
    root, sock = _special_folder(tmp_path)
    try:
        records, errors = _split(open_source(root))
    finally:
        sock.close()
    by_id = {r.item.external_id: r.item for r in records}
    assert by_id["good.png"].text == "a good caption"
    assert by_id["in.png"].image == root / "good.png"
    reasons = {e.external_id: e.reason for e in errors}
    assert "leads outside the source root" in reasons["out.png"]
    assert "symlink" in reasons["capout.png"] and "sidecar capout.txt" in reasons["capout.png"]
    assert "not a regular file (FIFO)" in reasons["capfifo.png"]
    assert "leads outside the source root to /dev/zero" in reasons["capzero.png"]
    assert "leads outside the source root to /dev/zero" in reasons["zero.jpg"]
    assert "Too many levels of symbolic links" in reasons["loop-a.jpg"]
    assert "Too many levels of symbolic links" in reasons["loop-b.jpg"]
    # FIFOs, sockets and directories behind image names reach the preparer, which
    # refuses them without blocking (tests/search/test_media.py, tests/reliability).
    assert set(by_id) == {"good.png", "in.png", "fifo.jpg", "sock.jpg", "dir.jpg"}


def test_follow_external_symlinks_allows_links_out(tmp_path):
    root, sock = _special_folder(tmp_path)
    sock.close()
    followed = SourceOptions(follow_external_symlinks=True)
    records, errors = _split(open_source(root, options=followed))

    by_id = {r.item.external_id: r.item for r in records}
    assert by_id["out.png"].image == tmp_path / "outside" / "secret.png"
    assert by_id["capout.png"].text == "outside caption"
    assert by_id["zero.jpg"].image == Path("/dev/zero")  # the preparer refuses the device
    assert "not a regular file (character device)" in {e.external_id: e.reason for e in errors}[
        "capzero.png"]


def test_catalog_rows_name_special_files(tmp_path):
    (tmp_path / "outside.png").write_bytes(b"x")
    root = tmp_path / "cat"
    root.mkdir()
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "out.png").symlink_to(tmp_path / "outside.png")
    rows = [{"id": "zero", "image": "zero.png"}, {"id": "out", "image": "out.png"},
            {"id": "abs", "image": str(tmp_path / "outside.png")}, {"id": "ok", "title": "t"},
            {"id": "dev", "image": "/dev/zero"}]
    (root / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records, errors = _split(open_source(root / "c.jsonl"))
    # absolute paths are the catalog's explicit choice; links out of its folder are not
    assert [(r.item.external_id, r.item.image) for r in records] == [
        ("abs", tmp_path / "outside.png"), ("ok", None), ("dev", Path("/dev/zero"))]
    assert [(e.location, e.external_id) for e in errors] == [("c.jsonl:1", "zero"),
                                                            ("c.jsonl:2", "out")]
    assert all("leads outside the source root" in e.reason for e in errors)


def test_lone_surrogates_and_undecodable_names_fail_their_row(tmp_path):
    rows = ['{"id": "a", "title": "ok"}', '{"id": "b", "title": "x\\ud800y"}',
            '{"id": "c\\udfff", "title": "t"}', '{"id": "d", "title": "t", "k": ["\\ud83d"]}',
            '{"id": "e", "title": "ok"}']
    (tmp_path / "c.jsonl").write_text("\n".join(rows) + "\n")
    records, errors = _split(open_source(tmp_path / "c.jsonl"))
    assert [r.item.external_id for r in records] == ["a", "e"]
    assert [e.location for e in errors] == ["c.jsonl:2", "c.jsonl:3", "c.jsonl:4"]
    assert all("not valid Unicode" in e.reason for e in errors)
    assert all(e.external_id is None or e.external_id.encode() for e in errors)

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "good.png").write_bytes(b"x")
    bad_name = os.fsdecode(b"bad-\xff.png")
    (folder / bad_name).write_bytes(b"x")
    records, errors = _split(open_source(folder))
    assert [r.item.external_id for r in records] == ["good.png"]
    assert [(e.external_id, e.location) for e in errors] == [("bad-\\udcff.png",) * 2]
