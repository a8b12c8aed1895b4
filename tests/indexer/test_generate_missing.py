"""`--generate-missing`: text-only items get a generated picture, marked and idempotent."""

import json

from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from search.engine import Searcher
from search.query import SearchMode, SearchQuery, Target
from tests.indexer.conftest import write_catalog
from tests.utils.generators import tiny_generator_weights


def _generator_weights(tmp_path, tiny_model):
    return tiny_generator_weights(tmp_path / "gen.safetensors", tiny_model)


def test_generate_missing_end_to_end(ws, tmp_path, tiny_model):
    weights = _generator_weights(tmp_path, tiny_model)
    source = write_catalog(tmp_path / "src", 18)  # sku-5, sku-11, sku-17 are text-only
    options = IndexOptions(workers=0, progress=False, generate_missing=True,
                           generator="house", generator_model=str(weights))
    first = index_source(ws, "shop", source, options=options)
    assert first.generated == 3
    cid = ws.collection("shop").info.id
    item = ws.catalog.get_item(cid, "sku-5")
    assert item.image_ref is None and item.generated
    assert item.generation.prompt == item.text and item.generation.generator == "house"
    assert {(v.modality, v.source) for v in item.vectors} == {
        ("text", "original"), ("image", "generated")}
    hits = Searcher(ws).search(SearchQuery.text("shop", "product", target=Target.IMAGE,
                                                k=100)).hits
    generated = {h.external_id for h in hits if h.generated}
    assert generated == {"sku-5", "sku-11", "sku-17"}
    assert all(h.image_ref for h in hits)
    _check_real_pictures_only(ws)
    assert index_source(ws, "shop", source, options=options).generated == 0  # idempotent
    # a new text regenerates; a real image replaces the generated one
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows[5]["title"] = "a brand new title"
    rows[11]["image"] = rows[0]["image"]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    third = index_source(ws, "shop", source, options=options)
    assert third.generated == 1
    replaced = ws.catalog.get_item(cid, "sku-11")
    assert replaced.generation is None and not replaced.generated
    assert {(v.modality, v.source) for v in replaced.vectors} == {
        ("text", "original"), ("image", "original")}


def _check_real_pictures_only(ws):
    """include_generated=False: the exact (vector) ranking with generated pictures taken out."""
    searcher = Searcher(ws)
    every = searcher.search(SearchQuery.text("shop", "product", target=Target.IMAGE, k=100,
                                             mode=SearchMode.VECTOR))
    real = searcher.search(SearchQuery.text("shop", "product", target=Target.IMAGE, k=100,
                                            include_generated=False, mode=SearchMode.VECTOR))
    expected = [(h.external_id, h.score) for h in every.hits if not h.generated]
    assert [(h.external_id, h.score) for h in real.hits] == expected and len(expected) == 15
    fused = searcher.search(SearchQuery.text("shop", "product", k=100,
                                             include_generated=False, mode=SearchMode.VECTOR)).hits
    text_only = {h.external_id: h for h in fused if h.generated}
    assert set(text_only) == {"sku-5", "sku-11", "sku-17"}  # still found, by their text
    assert all(set(h.scores) == {"text"} and h.image_ref for h in text_only.values())
    assert all(set(h.scores) == {"image", "text"} for h in fused if not h.generated)


def test_bad_generator_fails_before_any_item_is_indexed(ws, tmp_path, capsys):
    from indexer.cli import main

    source = write_catalog(tmp_path / "src", 6)
    home = str(ws.settings.home)
    code = main(["add", str(source), "-c", "gen", "--home", home, "--workers", "0",
                 "--generate-missing", "--generator", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and "house" in err  # names it and the known ones
    missing = str(tmp_path / "absent.safetensors")
    code = main(["add", str(source), "-c", "gen", "--home", home, "--workers", "0",
                 "--generate-missing", "--generator-model", missing])
    assert code == 2 and missing in capsys.readouterr().err
    assert "gen" not in [c.name for c in ws.list_collections()]
