"""Catalog queries; every test runs on SQLite and on a real PostgreSQL cluster."""

import pytest
from sqlalchemy import inspect

from search.catalog.catalog import open_catalog
from search.catalog.items import ItemInput, ItemState
from search.errors import CollectionExistsError, UnknownCollectionError
from search.filters import parse_filters

PRODUCTS = [
    ItemInput("apple", "red apple", None, {"category": "fruit", "price": 1.5, "organic": True},
              "h-apple"),
    ItemInput("shoe", "running shoe", "ab/cd.jpg", {"category": "shoes", "price": 80},
              "h-shoe"),
    ItemInput("shirt", "t-shirt", None, {"category": "clothes", "price": "n/a",
                                         "organic": False}, "h-shirt"),
    ItemInput("pear", "green pear", None, {"category": "fruit", "price": 2}, "h-pear"),
]


def _with_vectors(catalog, collection):
    changes = catalog.upsert_items(collection.id, PRODUCTS)
    ids, _ = catalog.replace_vectors(collection.id, [(c.item_id, "text", "original")
                                                     for c in changes])
    return dict(zip([p.external_id for p in PRODUCTS], ids, strict=True))


def test_schema_created_by_migration(catalog):
    tables = set(inspect(catalog.engine).get_table_names())
    assert {"collections", "items", "vectors", "index_versions", "jobs", "failures",
            "alembic_version"} <= tables


def test_migration_is_idempotent(database_url, catalog):
    again = open_catalog(database_url)  # upgrade head on an up-to-date schema
    assert again.list_collections() == []
    again.close()


def test_collections(catalog, collection):
    assert catalog.get_collection("shop") == collection
    assert [c.name for c in catalog.list_collections()] == ["shop"]
    with pytest.raises(CollectionExistsError):
        catalog.create_collection("shop", model="m", pretrained=None, weights_identity="w",
                                  dim=4)
    with pytest.raises(UnknownCollectionError):
        catalog.get_collection("nope")


def test_upsert_states_and_pending_until_active(catalog, collection):
    first = catalog.upsert_items(collection.id, PRODUCTS[:2])
    assert [c.state for c in first] == [ItemState.NEW, ItemState.NEW]
    # Not yet marked active: a re-run must redo them (a killed job resumes).
    again = catalog.upsert_items(collection.id, PRODUCTS[:2])
    assert [c.state for c in again] == [ItemState.CHANGED, ItemState.CHANGED]
    catalog.mark_active([c.item_id for c in again])
    changed = ItemInput("apple", "red apple!", None, {}, "h-apple-2")
    states = catalog.upsert_items(collection.id, [changed, PRODUCTS[1]])
    assert [c.state for c in states] == [ItemState.CHANGED, ItemState.UNCHANGED]
    assert states[0].item_id == first[0].item_id  # same row, updated in place
    assert catalog.get_item(collection.id, "apple").text == "red apple!"


def test_replace_vectors_keeps_one_live_vector(catalog, collection):
    (change,) = catalog.upsert_items(collection.id, PRODUCTS[:1])
    (first,), old = catalog.replace_vectors(collection.id, [(change.item_id, "text", "original")])
    assert old == []
    (second,), old = catalog.replace_vectors(collection.id,
                                             [(change.item_id, "text", "original")])
    assert old == [first] and second != first
    assert catalog.item_vectors([change.item_id]) == {change.item_id: [(second, "text",
                                                                         "original")]}


def test_vector_ids_are_never_reused(catalog, collection):
    (change,) = catalog.upsert_items(collection.id, PRODUCTS[:1])
    seen = set()
    for _ in range(3):  # deleting the newest row must not hand its id out again
        (vid,), _ = catalog.replace_vectors(collection.id, [(change.item_id, "text", "original")])
        assert vid not in seen
        seen.add(vid)


@pytest.mark.parametrize(("spec", "expected"), [
    ({"category": "fruit"}, {"apple", "pear"}),
    ({"category": ["shoes", "clothes"]}, {"shoe", "shirt"}),
    ({"category": {"in": ["fruit"]}, "price": {"gte": 2}}, {"pear"}),
    ({"price": {"lte": 2}}, {"apple", "pear"}),
    ({"price": {"gt": 1.5, "lt": 100}}, {"shoe", "pear"}),
    ({"price": 80}, {"shoe"}),
    ({"organic": True}, {"apple"}),
    ({"organic": False}, {"shirt"}),
    ({"missing": "x"}, set()),
])
def test_filters(catalog, collection, spec, expected):
    ids = _with_vectors(catalog, collection)
    by_vector = {v: k for k, v in ids.items()}
    found = catalog.vector_ids(collection.id, filters=parse_filters(spec))
    assert {by_vector[int(v)] for v in found} == expected
    assert catalog.count_vectors(collection.id, filters=parse_filters(spec)) == len(expected)


def test_filter_within_candidates(catalog, collection):
    ids = _with_vectors(catalog, collection)
    within = [ids["apple"], ids["shoe"]]
    found = catalog.vector_ids(collection.id, filters=parse_filters({"category": "fruit"}),
                               within=within)
    assert found.tolist() == [ids["apple"]]


def test_vector_infos_join_metadata(catalog, collection):
    ids = _with_vectors(catalog, collection)
    infos = catalog.vector_infos([ids["shoe"], 999_999])
    assert list(infos) == [ids["shoe"]]
    info = infos[ids["shoe"]]
    assert (info.external_id, info.text, info.image_ref) == ("shoe", "running shoe", "ab/cd.jpg")
    assert info.attributes == {"category": "shoes", "price": 80}


def test_delete_items_returns_their_vectors(catalog, collection):
    ids = _with_vectors(catalog, collection)
    removed = catalog.delete_items(collection.id, ["apple", "shoe", "never-existed"])
    assert removed == {"text": sorted([ids["apple"], ids["shoe"]])}
    assert sorted(catalog.external_ids(collection.id)) == ["pear", "shirt"]
    assert catalog.collection_counts(collection.id).vectors == 2


def test_jobs_failures_and_index_versions(catalog, collection):
    history = catalog.history
    job = history.start_job(collection.id, "add", {"source": "x.jsonl"})
    history.record_failures(collection.id, job, [("bad", "decode", "truncated JPEG")])
    history.finish_job(job, status="done", counts={"new": 3})
    assert history.recent_jobs(collection.id)[0].counts == {"new": 3}
    assert history.recent_failures(collection.id)[0].reason == "truncated JPEG"
    history.record_index_version(collection.id, version="v1", spec="Flat", vector_count=3,
                                 model_identity="m|w")
    history.record_index_version(collection.id, version="v2", spec="Flat", vector_count=5,
                                 model_identity="m|w")
    assert history.current_index_version(collection.id).version == "v2"


def test_sqlite_uses_wal(tmp_path):
    cat = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with cat.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # reads through a memory map (as large as this SQLite build allows)
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() >= 1 << 30
    cat.close()
