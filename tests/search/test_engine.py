"""The query engine against brute-force ground truth (exact cosine over the encoder)."""

import io

import numpy as np
import pytest
from PIL import Image

from search import candidates as candidates_module
from search.catalog.owners import OwnerMap
from search.collection.collection import NewItem
from search.engine import Searcher
from search.errors import (
    InvalidQueryError,
    UnknownCollectionError,
    UnknownItemError,
)
from search.filters import parse_filters
from search.models.encoder import normalize
from search.query import Fusion, QueryPart, SearchMode, SearchQuery, Target
from search.workspace import Workspace
from tests.utils.corpus import catalog_items, png_bytes


def vector_text(collection: str, text: str, **options) -> SearchQuery:
    """These tests check the vector engine against exact search: vector mode, explicitly
    (a text query's default mode is hybrid)."""
    return SearchQuery.text(collection, text, mode=SearchMode.VECTOR, **options)


ITEMS = catalog_items(60)


@pytest.fixture
def shop(workspace):
    collection = workspace.create_collection("shop")
    report = collection.add_items(ITEMS)
    assert (report.new, report.failed) == (60, 0)
    return collection


DEFAULT_FUSION = Fusion()


def _item_vectors(encoder, items):
    """Brute-force embeddings of items, batched: {external_id: {modality: vector}}."""
    with_text = [i for i in items if i.text]
    with_image = [i for i in items if i.image is not None]
    texts = encoder.encode_texts([i.text for i in with_text])
    images = encoder.encode_images([Image.open(io.BytesIO(i.image)).convert("RGB")
                                    for i in with_image])
    out = {i.external_id: {} for i in items}
    for item, vector in zip(with_text, texts, strict=True):
        out[item.external_id]["text"] = vector
    for item, vector in zip(with_image, images, strict=True):
        out[item.external_id]["image"] = vector
    return out


_CACHE = {}


def _truth(shop, query_vector, target, items=ITEMS, fusion=DEFAULT_FUSION):
    """Expected (external_id, score) ranking computed without the index."""
    key = (id(shop.encoder), tuple((i.external_id, i.text, i.image) for i in items))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _item_vectors(shop.encoder, items)
    wanted = {"image", "text"} if target is Target.ANY else {target.value}
    weights = {"image": fusion.image_weight, "text": fusion.text_weight}
    scores = {}
    for external_id, vectors in _CACHE[key].items():
        per = {m: float(v @ query_vector) for m, v in vectors.items() if m in wanted}
        if per:
            # an item whose only modality has weight 0 scores 0, as the engine does
            scores[external_id] = sum(weights[m] * s for m, s in per.items()) / (sum(
                weights[m] for m in per) or 1.0)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _ids(result):
    return [h.external_id for h in result.hits]


@pytest.mark.parametrize("target", [Target.IMAGE, Target.TEXT, Target.ANY])
def test_text_query_matches_exact_ranking(workspace, shop, target):
    query = vector_text("shop", "fruit number 12", target=target, k=10)
    result = Searcher(workspace).search(query)
    truth = _truth(shop, shop.encoder.encode_texts(["fruit number 12"])[0], target)
    assert _ids(result) == [e for e, _ in truth[:10]]
    np.testing.assert_allclose([h.score for h in result.hits], [s for _, s in truth[:10]],
                               atol=2e-3)  # stored vectors are float16
    if target is not Target.ANY:
        assert {h.modality for h in result.hits} == {target.value}


def test_image_query_image_to_text(workspace, shop):
    image = png_bytes(1000)
    result = Searcher(workspace).search(SearchQuery.image("shop", image, target=Target.TEXT))
    qv = shop.encoder.encode_images([Image.open(io.BytesIO(image)).convert("RGB")])[0]
    assert _ids(result) == [e for e, _ in _truth(shop, qv, Target.TEXT)[:10]]


def test_weighted_multi_query_with_negative_weight(workspace, shop):
    parts = (QueryPart(text="shoes number 5", weight=1.0),
             QueryPart(image=png_bytes(3), weight=-0.5))
    result = Searcher(workspace).search(SearchQuery("shop", parts, target=Target.IMAGE,
                                                    mode=SearchMode.VECTOR))
    enc = shop.encoder
    qv = enc.encode_texts(["shoes number 5"])[0] - 0.5 * enc.encode_images(
        [Image.open(io.BytesIO(png_bytes(3))).convert("RGB")])[0]
    qv = normalize(qv[None])[0]
    assert _ids(result) == [e for e, _ in _truth(shop, qv, Target.IMAGE)[:10]]


def test_vector_and_item_queries(workspace, shop):
    searcher = Searcher(workspace)
    raw = np.random.default_rng(0).normal(size=32)
    by_vector = searcher.search(SearchQuery("shop", (QueryPart(vector=tuple(raw)),)))
    truth = _truth(shop, normalize(raw[None])[0].astype(np.float32), Target.ANY)
    assert _ids(by_vector) == [e for e, _ in truth[:10]]
    by_item = searcher.search(SearchQuery("shop", (QueryPart(item_id="p2"),),
                                          target=Target.IMAGE))
    p2 = ITEMS[2]
    own = [shop.encoder.encode_texts([p2.text])[0],
           shop.encoder.encode_images([Image.open(io.BytesIO(p2.image)).convert("RGB")])[0]]
    item_vector = normalize(np.mean(own, axis=0)[None])[0]
    assert _ids(by_item) == [e for e, _ in _truth(shop, item_vector, Target.IMAGE)[:10]]


@pytest.mark.parametrize("bad", [
    lambda: SearchQuery("shop", (QueryPart(vector=(1.0, 2.0)),)),
    lambda: SearchQuery("shop", (QueryPart(vector=tuple([0.0] * 32)),)),
    lambda: SearchQuery("shop", (QueryPart(text="a"), QueryPart(text="a", weight=-1))),
])
def test_invalid_queries_are_typed_errors(workspace, shop, bad):
    with pytest.raises(InvalidQueryError):
        Searcher(workspace).search(bad())


def test_query_validation():
    with pytest.raises(InvalidQueryError):
        SearchQuery("shop", ())
    with pytest.raises(InvalidQueryError):
        vector_text("shop", "x", k=0)
    with pytest.raises(InvalidQueryError):
        QueryPart(text="x", vector=(1.0,))
    with pytest.raises(InvalidQueryError):
        QueryPart(text="   ")


def test_unknown_collection_and_item(workspace, shop):
    with pytest.raises(UnknownCollectionError):
        Searcher(workspace).search(vector_text("nope", "x"))
    with pytest.raises(UnknownItemError):
        Searcher(workspace).search(SearchQuery("shop", (QueryPart(item_id="zzz"),)))


@pytest.mark.parametrize("selective", [True, False])
def test_filters_equal_exact_search_over_matching_items(workspace, shop, monkeypatch,
                                                        selective):
    if not selective:  # force the post-filter path with over-fetch
        monkeypatch.setattr(candidates_module, "SELECTOR_MIN_IDS", 0)
        monkeypatch.setattr(candidates_module, "SELECTOR_MAX_SHARE", 0.0)
    spec = {"category": ["fruit", "toys"], "price": {"gte": 3}}
    query = vector_text("shop", "product", target=Target.IMAGE, k=5,
                             filters=tuple(parse_filters(spec)))
    result = Searcher(workspace).search(query)
    allowed = [i for i in ITEMS if i.attributes["category"] in ("fruit", "toys")
               and i.attributes["price"] >= 3]
    truth = _truth(shop, shop.encoder.encode_texts(["product"])[0], Target.IMAGE, allowed)
    assert _ids(result) == [e for e, _ in truth[:5]]


def test_pagination_min_score_and_fusion_weights(workspace, shop):
    searcher = Searcher(workspace)
    full = _ids(searcher.search(vector_text("shop", "clothes", k=20)))
    page2 = _ids(searcher.search(vector_text("shop", "clothes", k=10, offset=10)))
    assert page2 == full[10:20]
    scores = [h.score for h in searcher.search(vector_text("shop", "clothes", k=20)).hits]
    cut = scores[5]
    kept = searcher.search(vector_text("shop", "clothes", k=20, min_score=cut)).hits
    assert len(kept) == 6 and all(h.score >= cut for h in kept)
    fusion = Fusion(image_weight=3.0, text_weight=1.0)
    weighted = searcher.search(vector_text("shop", "clothes", fusion=fusion))
    truth = _truth(shop, shop.encoder.encode_texts(["clothes"])[0], Target.ANY, fusion=fusion)
    assert _ids(weighted) == [e for e, _ in truth[:10]]


def test_dedupe_collapses_identical_images(workspace, shop):
    shop.add_items([NewItem("dup-a", image=png_bytes(77)), NewItem("dup-b", image=png_bytes(77))])
    query = SearchQuery.image("shop", png_bytes(77), target=Target.IMAGE, k=3)
    plain = _ids(Searcher(workspace).search(query))
    assert set(plain[:2]) == {"dup-a", "dup-b"}
    deduped = Searcher(workspace).search(SearchQuery.image("shop", png_bytes(77),
                                                           target=Target.IMAGE, k=3,
                                                           dedupe=0.999))
    assert len({"dup-a", "dup-b"} & set(_ids(deduped))) == 1 and len(deduped.hits) == 3


def test_reindexing_same_items_is_a_no_op_and_changes_are_picked_up(workspace, shop):
    report = shop.add_items(ITEMS)
    assert (report.new, report.changed, report.unchanged) == (0, 0, 60)
    stats = shop.stats()
    assert stats.vectors == stats.indexes["text"].vectors + stats.indexes["image"].vectors
    report = shop.add_items([NewItem("p0", text="zebra crossing", image=ITEMS[0].image,
                                     attributes={"category": "new"})])
    assert report.changed == 1
    hit = Searcher(workspace).search(vector_text("shop", "zebra crossing",
                                                      target=Target.TEXT, k=1)).hits[0]
    assert (hit.external_id, hit.text, hit.attributes) == ("p0", "zebra crossing",
                                                           {"category": "new"})
    assert shop.stats().vectors == stats.vectors  # replaced, not doubled


def test_deleted_items_never_returned(workspace, shop):
    removed = shop.delete_items(["p0", "p2", "p4"])
    assert removed == 6  # three items with both modalities
    result = Searcher(workspace).search(vector_text("shop", "product", k=100))
    assert not {"p0", "p2", "p4"} & set(_ids(result))
    assert len(result.hits) == 57


def test_bad_items_are_reported_and_the_rest_go_on(workspace, shop):
    before = Searcher(workspace).search(vector_text("shop", "fruit"))
    good = NewItem("fresh", text="brand new thing", image=png_bytes(500))
    bad = [NewItem("p1", text="overwrite?", image=b"\xff\xd8\xff\xe0 not a jpeg"),
           NewItem("", text="no id"), NewItem("empty"), NewItem("fresh", text="dup")]
    report = shop.add_items([good, *bad])
    assert report.new == 1 and report.failed == 4
    assert {f.external_id for f in report.failures} == {"p1", None, "empty", "fresh"}
    # p1 was not damaged by its corrupt update
    assert workspace.catalog.get_item(shop.info.id, "p1").text == ITEMS[1].text
    assert _ids(Searcher(workspace).search(vector_text("shop", "fruit"))) == _ids(before)
    failures = workspace.catalog.history.recent_failures(shop.info.id)
    assert {f.external_id for f in failures} == {"p1", None, "empty", "fresh"}


def test_persistence_across_reopen_with_and_without_save(settings, shop, workspace):
    expected = _ids(Searcher(workspace).search(vector_text("shop", "toys number 3")))
    shop.save()
    shop.add_items([NewItem("late", text="toys number 3 late arrival")])  # after the save
    expected_late = _ids(Searcher(workspace).search(vector_text("shop", "toys number 3")))
    assert "late" in expected_late and expected != expected_late
    reopened = Workspace.open(settings)
    try:
        again = _ids(Searcher(reopened).search(vector_text("shop", "toys number 3")))
        assert again == expected_late  # the saved version plus replayed embeddings
    finally:
        reopened.close()


def test_switching_model_never_serves_old_vectors(settings, shop, workspace, tmp_path):
    """Each encoder has its own spaces: a collection pointed at another model starts empty
    (until reindexed) instead of answering with vectors from the wrong space."""
    shop.save()
    other = shop.encoder.save(tmp_path / "other-model")
    workspace.catalog.update_collection(shop.info.id, model=str(other), pretrained=None)
    reopened = Workspace.open(settings)
    try:
        assert reopened.collection("shop").stats().indexes["image"].vectors == 0
        assert Searcher(reopened).search(vector_text("shop", "fruit")).hits == []
    finally:
        reopened.close()


def test_rebuild_to_ivf_keeps_exact_results(workspace, shop):
    query = vector_text("shop", "shoes", target=Target.IMAGE, k=5, nprobe=4,
                             rerank_factor=20)
    before = _ids(Searcher(workspace).search(query))
    manifests = shop.rebuild(spec="IVF4,Flat")
    assert all(m.spec == "IVF4,Flat" for m in manifests.values())
    assert _ids(Searcher(workspace).search(query)) == before


# -- fused `target: any`: exact at every depth, one SQL round when deep enough ------------
# The tiny test model has random weights, so an item's image and text scores disagree:
# the fused top needs candidates far below each modality's own top.
@pytest.mark.parametrize("min_fetch", [1, 8, 128])
@pytest.mark.parametrize("k", [1, 7, 25])
def test_fused_top_k_equals_exhaustive_fusion_at_any_depth(workspace, shop, monkeypatch,
                                                           min_fetch, k):
    monkeypatch.setattr(candidates_module, "FUSION_MIN_FETCH", min_fetch)
    monkeypatch.setattr(candidates_module, "FUSION_GROWTH", 2)
    searcher = Searcher(workspace)
    for text in ("fruit number 12", "toys", "product 40 shoes"):
        result = searcher.search(vector_text("shop", text, k=k))
        truth = _truth(shop, shop.encoder.encode_texts([text])[0], Target.ANY)
        assert _ids(result) == [e for e, _ in truth[:k]], text
        np.testing.assert_allclose([h.score for h in result.hits], [s for _, s in truth[:k]],
                                   atol=2e-3)


def test_fused_query_reads_owners_from_memory_and_metadata_for_the_page_only(
        workspace, shop, monkeypatch):
    """Siblings come from the in-memory owner map: read whole once, then only the
    collection's write stamp per search, and only new rows after a write."""
    calls = {"rows": [], "infos": []}
    rows_after, infos = OwnerMap._rows_after, shop.catalog.vector_infos

    def count_rows(self, after):
        rows = rows_after(self, after)
        calls["rows"].append(len(rows))
        return rows

    def count_infos(ids):
        calls["infos"].append(len(ids))
        return infos(ids)

    monkeypatch.setattr(OwnerMap, "_rows_after", count_rows)
    monkeypatch.setattr(shop.catalog, "vector_infos", count_infos)
    monkeypatch.setattr(candidates_module, "FUSION_MIN_FETCH", 1)  # several rounds
    searcher = Searcher(workspace)
    for text in ("clothes", "fruit number 3", "toys"):
        assert len(searcher.search(vector_text("shop", text, k=5)).hits) == 5
    vectors = shop.stats().vectors
    assert calls == {"rows": [vectors], "infos": [5, 5, 5]}
    shop.add_items([NewItem("late", text="late clothes", image=png_bytes(901))])
    searcher.search(vector_text("shop", "clothes", k=5))
    assert calls["rows"] == [vectors, 2]  # the new item's two vectors only


def _both_items(n):
    return [NewItem(f"b{i}", text=f"thing {i} number {i * 13 % 31}", image=png_bytes(300 + i),
                    attributes={"rank": i}) for i in range(n)]


@pytest.mark.parametrize("fusion", [Fusion(), Fusion(3.0, 1.0), Fusion(1.0, 0.0)])
def test_fused_exact_when_every_item_has_both_modalities(workspace, monkeypatch, fusion):
    """With no single-modality item the bound on unmet items is the weighted mean of
    the floors (far tighter than the higher floor); an item that loses its image makes
    the collection hold text-only items again, and the bound must follow."""
    monkeypatch.setattr(candidates_module, "FUSION_MIN_FETCH", 1)
    monkeypatch.setattr(candidates_module, "FUSION_GROWTH", 2)
    items = _both_items(40)
    collection = workspace.create_collection("pairs")
    collection.add_items(items)
    searcher = Searcher(workspace)
    for round_ in ("all both", "some text-only"):
        for text in ("thing 3", "number 7 thing", "other"):
            query = vector_text("pairs", text, k=6, fusion=fusion)
            truth = _truth(collection, collection.encoder.encode_texts([text])[0],
                           Target.ANY, items, fusion)
            assert _ids(searcher.search(query)) == [e for e, _ in truth[:6]], (round_, text)
        # three items keep their text and lose their image (an update without one)
        changed = [NewItem(i.external_id, text=i.text, attributes=i.attributes)
                   for i in items[5:8]]
        collection.add_items(changed)
        items = items[:5] + changed + items[8:]


def test_fused_exact_after_writes_the_map_has_not_seen(workspace, shop, monkeypatch):
    """Items added, re-imaged, stripped of a modality and deleted after the owner map
    was built: the next fused search ranks the collection as it is now."""
    monkeypatch.setattr(candidates_module, "FUSION_MIN_FETCH", 1)
    searcher = Searcher(workspace)
    searcher.search(vector_text("shop", "fruit", k=5))  # builds the map
    added = [NewItem(f"n{i}", text=f"fruit number {i}", image=png_bytes(700 + i),
                     attributes={"category": "fruit", "price": 1.0, "rank": 100 + i})
             for i in range(6)]
    reimaged = NewItem("p0", text=ITEMS[0].text, image=png_bytes(999),
                       attributes=ITEMS[0].attributes)
    text_only = NewItem("p2", text=ITEMS[2].text, attributes=ITEMS[2].attributes)
    shop.add_items([*added, reimaged, text_only])
    shop.delete_items(["p4", "p6"])
    now = [reimaged, ITEMS[1], text_only, ITEMS[3], ITEMS[5], *ITEMS[7:], *added]
    for text in ("fruit number 3", "toys", "product"):
        truth = _truth(shop, shop.encoder.encode_texts([text])[0], Target.ANY, now)
        result = searcher.search(vector_text("shop", text, k=12))
        assert _ids(result) == [e for e, _ in truth[:12]], text


def test_fused_search_meets_vectors_written_after_its_stamp(workspace, shop, monkeypatch):
    """A vector the map does not hold (written between the stamp query and the ANN
    search) makes the search re-read the new rows once instead of dropping its item."""
    monkeypatch.setattr(candidates_module, "FUSION_MIN_FETCH", 1)
    searcher = Searcher(workspace)
    searcher.search(vector_text("shop", "fruit", k=5))
    frozen = OwnerMap._stamp(candidates_module.owner_map(shop))
    monkeypatch.setattr(OwnerMap, "_stamp", lambda self: frozen)
    searcher.search(vector_text("shop", "fruit", k=5))  # the map now holds stamp 0
    added = [NewItem(f"n{i}", text=f"fruit number {i}", image=png_bytes(700 + i))
             for i in range(8)]
    shop.add_items(added)  # the stamp (frozen) does not move
    now = [*ITEMS, *added]
    for text in ("fruit number 3", "fruit number 5"):
        truth = _truth(shop, shop.encoder.encode_texts([text])[0], Target.ANY, now)
        result = searcher.search(vector_text("shop", text, k=20))
        assert _ids(result) == [e for e, _ in truth[:20]], text
        assert {"n3", "n5"} & set(_ids(result))


def test_a_collection_created_again_under_the_same_id_gets_a_fresh_map(workspace, shop,
                                                                       monkeypatch):
    monkeypatch.setattr(candidates_module, "FUSION_MIN_FETCH", 1)
    searcher = Searcher(workspace)
    searcher.warm("shop")
    old_id = shop.info.id
    workspace.drop_collection("shop")
    again = workspace.create_collection("shop")
    items = _both_items(30)
    again.add_items(items)
    for text in ("thing 4", "product"):
        truth = _truth(again, again.encoder.encode_texts([text])[0], Target.ANY, items)
        result = searcher.search(vector_text("shop", text, k=8))
        assert _ids(result) == [e for e, _ in truth[:8]], (text, old_id, again.info.id)


def test_warm_reads_the_owner_map_before_the_first_query(workspace, shop, monkeypatch):
    searcher = Searcher(workspace)
    searcher.warm("shop")
    reads = []
    rows_after = OwnerMap._rows_after
    monkeypatch.setattr(OwnerMap, "_rows_after",
                        lambda self, after: reads.append(after) or rows_after(self, after))
    assert len(searcher.search(vector_text("shop", "toys", k=3)).hits) == 3
    assert reads == []


def test_fusion_weights_must_be_non_negative():
    with pytest.raises(InvalidQueryError):
        Fusion(image_weight=-1.0)
    with pytest.raises(InvalidQueryError):
        Fusion(text_weight=float("nan"))


@pytest.mark.parametrize("selective", [True, False])
def test_fused_query_with_filters_equals_exhaustive_fusion(workspace, shop, monkeypatch,
                                                           selective):
    monkeypatch.setattr(candidates_module, "FUSION_MIN_FETCH", 2)
    if not selective:
        monkeypatch.setattr(candidates_module, "SELECTOR_MIN_IDS", 0)
        monkeypatch.setattr(candidates_module, "SELECTOR_MAX_SHARE", 0.0)
    spec = {"category": ["fruit", "toys", "shoes"], "price": {"gte": 2}}
    query = vector_text("shop", "product", k=8, filters=tuple(parse_filters(spec)))
    result = Searcher(workspace).search(query)
    allowed = [i for i in ITEMS if i.attributes["category"] in ("fruit", "toys", "shoes")
               and i.attributes["price"] >= 2]
    truth = _truth(shop, shop.encoder.encode_texts(["product"])[0], Target.ANY, allowed)
    assert _ids(result) == [e for e, _ in truth[:8]]
