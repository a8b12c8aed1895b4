"""`index_source` end to end on real files: idempotent, incremental, failure-tolerant."""

import json

import numpy as np
import pytest
from PIL import Image

from indexer import decode_pool
from indexer.operations import delete_items, index_source
from indexer.pipeline import IndexOptions
from search.engine import Searcher
from search.query import SearchQuery, Target
from tests.indexer.conftest import write_catalog
from tests.utils.snapshots import assert_same_collection, snapshot

QUIET = IndexOptions(workers=0, progress=False, batch_size=16)


def test_workers_and_inline_give_the_same_collection(ws, catalog_file, monkeypatch):
    pools = []

    class CountedPool(decode_pool.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(decode_pool, "ProcessPoolExecutor", CountedPool)
    inline = index_source(ws, "inline", catalog_file, options=QUIET)
    assert not pools
    # chunks of 8: the parent prepares the first, the two workers the other four
    pooled = index_source(ws, "pooled", catalog_file, options=IndexOptions(
        workers=2, progress=False, batch_size=16, chunk_size=8))
    assert len(pools) == 1
    assert inline.indexed == pooled.indexed == 40 and inline.failed == pooled.failed == 0
    assert_same_collection(snapshot(ws, "inline"), snapshot(ws, "pooled"))


def test_rerun_skips_unchanged_and_updates_changed(ws, tmp_path):
    source = write_catalog(tmp_path / "src", 30)
    first = index_source(ws, "shop", source, options=QUIET)
    assert (first.indexed, first.unchanged) == (30, 0)
    again = index_source(ws, "shop", source, options=QUIET)
    assert (again.indexed, again.updated, again.unchanged) == (0, 0, 30)
    # change one text, one image and one attribute-only row
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows[0]["title"] = "completely new title"
    Image.new("RGB", (50, 50), (0, 255, 0)).save(source.parent / rows[1]["image"])
    rows[2]["price"] = 999.0
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    third = index_source(ws, "shop", source, options=QUIET)
    assert (third.indexed, third.updated, third.unchanged) == (0, 2, 28)
    cid = ws.collection("shop").info.id
    assert ws.catalog.get_item(cid, "sku-2").attributes["price"] == 999.0
    hit = Searcher(ws).search(SearchQuery.text("shop", "completely new title",
                                               target=Target.TEXT, k=1)).hits[0]
    assert hit.external_id == "sku-0"
    assert ws.collection("shop").stats().vectors == 30 + 25  # nothing doubled


def test_prune_removes_items_gone_from_source(ws, tmp_path):
    source = write_catalog(tmp_path / "src", 20)
    index_source(ws, "shop", source, options=QUIET)
    rows = source.read_text().splitlines()
    source.write_text("\n".join(rows[:15]) + "\n")
    kept = index_source(ws, "shop", source, options=QUIET)  # without --prune nothing goes
    assert kept.deleted == 0 and len(ws.catalog.external_ids(ws.collection("shop").info.id)) == 20
    pruned = index_source(ws, "shop", source,
                          options=IndexOptions(workers=0, progress=False, prune=True))
    assert pruned.deleted == 5
    hits = Searcher(ws).search(SearchQuery.text("shop", "product", k=100)).hits
    assert {h.external_id for h in hits} == {f"sku-{i}" for i in range(15)}


def test_bad_input_is_reported_and_nothing_stored_is_damaged(ws, tmp_path):
    good = write_catalog(tmp_path / "good", 12)
    index_source(ws, "shop", good, options=QUIET)
    before = snapshot(ws, "shop")
    broken = write_catalog(tmp_path / "good", 12, broken=True)
    report_path = tmp_path / "report.jsonl"
    summary = index_source(ws, "shop", broken, options=IndexOptions(
        workers=2, progress=False, report_path=report_path, chunk_size=5))
    assert (summary.unchanged, summary.failed) == (12, 7)
    assert summary.exit_code(strict=False) == 0 and summary.exit_code(strict=True) == 1
    failures = [json.loads(line) for line in report_path.read_text().splitlines()]
    reasons = {f["external_id"]: f["reason"] for f in failures}
    assert "truncated" in reasons["bad-truncated"]
    assert "no image file at" in reasons["bad-missing"]
    assert "bomb" in reasons["bad-bomb"] or " MP" in reasons["bad-bomb"]
    assert "neither text nor image" in reasons["bad-empty"]
    assert "duplicate id" in reasons["sku-0"]
    assert sum("malformed JSON" in f["reason"] for f in failures) == 1
    assert sum("missing id column" in f["reason"] for f in failures) == 1
    assert snapshot(ws, "shop") == before  # sku-0's duplicate did not overwrite it
    stored = ws.catalog.history.recent_failures(ws.collection("shop").info.id, 50)
    assert {f.external_id for f in stored} >= {"bad-truncated", "bad-missing", "bad-bomb"}


def test_nothing_indexable_exits_non_zero(ws, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "a"}\n{broken\n')
    summary = index_source(ws, "shop", source, options=QUIET)
    assert summary.failed == 2 and summary.exit_code(strict=False) == 1


def test_delete_removes_from_search_at_once(ws, catalog_file):
    index_source(ws, "shop", catalog_file, options=QUIET)
    result = delete_items(ws, "shop", ["sku-1", "sku-2", "missing"])
    assert result.vectors_removed == 4
    hits = Searcher(ws).search(SearchQuery.text("shop", "product", k=100)).hits
    assert not {"sku-1", "sku-2"} & {h.external_id for h in hits} and len(hits) == 38


def test_text_corpus_and_folder_sources(ws, tmp_path):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("a red apple\nrunning shoe\n\nt-shirt\n")
    summary = index_source(ws, "texts", corpus, options=QUIET)
    assert summary.indexed == 3
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (40, 30), (i * 50, 0, 0)).save(folder / f"{i}.png")
    (folder / "0.txt").write_text("dark red square")
    summary = index_source(ws, "photos", folder, options=QUIET)
    assert summary.indexed == 5
    hit = Searcher(ws).search(SearchQuery.text("photos", "dark red square",
                                               target=Target.TEXT)).hits[0]
    assert hit.external_id == "0.png"


def test_outgrown_index_is_retrained(ws, tmp_path, monkeypatch):
    from search.vectors import space as space_module

    # Scale the Flat->IVF threshold down so a small corpus crosses it.
    monkeypatch.setattr(space_module, "choose_spec",
                        lambda n, dim: "Flat" if n < 20 else f"IVF{4 if n < 80 else 8},Flat")
    small = write_catalog(tmp_path / "a", 12)
    first = index_source(ws, "shop", small, options=QUIET)
    assert first.index["text"].spec == "Flat"
    bigger = write_catalog(tmp_path / "b", 90)
    second = index_source(ws, "shop", bigger, options=QUIET)
    assert second.index["text"].spec == "IVF8,Flat"
    query = SearchQuery.text("shop", "toys product", target=Target.TEXT, k=5, nprobe=8)
    hits = Searcher(ws).search(query).hits
    encoder = ws.collection("shop").encoder
    texts = {f"sku-{i}": f"{['fruit', 'shoes', 'clothes', 'toys'][i % 4]} product {i}"
             for i in range(90)}
    vectors = encoder.encode_texts(list(texts.values()))
    scores = vectors @ encoder.encode_texts(["toys product"])[0]
    expected = [list(texts)[i] for i in np.argsort(-scores)[:5]]
    assert [h.external_id for h in hits] == expected


@pytest.mark.parametrize("bad_workers", [0, 2])
def test_strict_mode(ws, tmp_path, bad_workers):
    source = write_catalog(tmp_path / "s", 6, broken=True)
    summary = index_source(ws, "shop", source,
                           options=IndexOptions(workers=bad_workers, progress=False, strict=True,
                                                chunk_size=4))
    assert summary.exit_code(strict=True) == 1 and summary.indexed == 6


def test_texts_are_written_in_batches_of_similar_length(ws, tmp_path, monkeypatch):
    from search import Collection

    rows = [{"id": f"t{i}", "title": " ".join([f"w{i}"] + ["word"] * ((i * 7) % 11))}
            for i in range(40)]
    source = tmp_path / "texts.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    written: list[list[int]] = []
    original = Collection.write

    def recording_write(self, prepared, **kwargs):  # token counts, EOT included
        tokens = self.encoder.tokenizer([p.text for p in prepared])
        written.append(tokens.argmax(dim=-1).add(1).tolist())
        return original(self, prepared, **kwargs)

    monkeypatch.setattr(Collection, "write", recording_write)
    options = IndexOptions(workers=0, progress=False, batch_size=8, sort_window=32)
    assert index_source(ws, "sorted", source, options=options).indexed == 40
    assert [len(b) for b in written] == [8, 8, 8, 8, 8]
    first_window = [n for batch in written[:4] for n in batch]
    assert first_window == sorted(first_window)  # by length within a window of 32
    # the order of writes changes nothing stored or found
    unsorted = IndexOptions(workers=0, progress=False, batch_size=8, sort_window=1)
    assert index_source(ws, "unsorted", source, options=unsorted).indexed == 40
    assert_same_collection(snapshot(ws, "sorted"), snapshot(ws, "unsorted"))


def test_prepare_batch_on_threads_keeps_order_and_results(ws, catalog_file):
    """The inline decode stage's threads: the same items, pixels and failures, in order."""
    from indexer.readers import open_source
    from search import ItemFailure, NewItem, prepare_batch

    collection = ws.create_collection("threads")
    rows = [r.item for r in open_source(catalog_file)]
    rows.insert(3, NewItem("broken", "x", b"not an image"))
    tasks = [(item, None) for item in rows]
    serial = prepare_batch(tasks, collection.prepare_context(), threads=1)
    threaded = prepare_batch(tasks, collection.prepare_context(), threads=3)
    assert [type(r) for r in serial] == [type(r) for r in threaded]
    assert isinstance(threaded[3], ItemFailure) and threaded[3].external_id == "broken"
    for one, other in zip(serial, threaded, strict=True):
        assert one.external_id == other.external_id
        if not isinstance(one, ItemFailure):
            assert one.content_hash == other.content_hash and one.image_ref == other.image_ref
            assert (one.pixels is None) == (other.pixels is None)
            if one.pixels is not None:
                assert np.array_equal(one.pixels, other.pixels)
