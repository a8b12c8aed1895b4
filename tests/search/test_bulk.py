"""Bulk loads of new items (COPY on PostgreSQL, executemany on SQLite) write the same
catalog as the row-at-a-time path: same rows, same lexical index, same search answers.
Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from search.catalog.bulk import NewVector
from search.catalog.catalog import open_catalog
from search.catalog.items import ItemInput
from search.catalog.lexical import LexicalSettings
from search.filters import parse_filters

ITEMS = [
    ItemInput("shoe-1", "Running shoe, light", "media/a.jpg",
              {"keywords": ["sneakers", "sport", "sport"], "brand": "Acme", "price": 80,
               "sku": "AC-100", "in_stock": True, "ratio": 0.25}, "h1"),
    ItemInput("shoe-2", "leather boot", None,
              {"keywords": ["boots", "winter"], "brand": "Bolt", "price": 120.5,
               "in_stock": False, "nested": {"a": [1, 2]}, "bad key!": "x"}, "h2"),
    ItemInput("mug-1", "coffee mug – ceramic ☕", None,
              {"keywords": ["kitchen"], "brand": "Acme", "price": 9.5, "gtin": "0123456789012",
               "note": None, "long": "y" * 2000, "mixed": [1, "two", True, None]}, "h3"),
    ItemInput("empty", "", None, {}, "h4"),
    ItemInput("no-text", None, "media/b.png", {"brand": "Lumo", "sku": ["L-1", "l-1 "]}, "h5"),
]
# text vectors for items with text, image vectors for items with an image
VECTORS = [NewVector(i, "text") for i, item in enumerate(ITEMS) if item.text] + [
    NewVector(i, "image") for i, item in enumerate(ITEMS) if item.image_ref]
QUERIES = ["sneaker", "acme coffee", "boots winter", "ac-100", "0123456789012", "leathr",
           "ceramic mug", "lumo"]
FILTERS = [{"brand": "Acme"}, {"price": {"gte": 50}}, {"in_stock": True},
           {"keywords": "sport"}, {"mixed": 1}, {"sku": "L-1"}]


def _row_at_a_time(catalog, cid: int) -> None:
    changes = catalog.upsert_items(cid, ITEMS)
    ids = [c.item_id for c in changes]
    catalog.replace_vectors(cid, [(ids[v.item], v.modality, v.source) for v in VECTORS])
    catalog.mark_active(ids)


def _bulk(catalog, cid: int) -> None:
    loaded = catalog.insert_new_items(cid, ITEMS, VECTORS)
    assert len(loaded.item_ids) == len(ITEMS) and len(loaded.vector_ids) == len(VECTORS)
    catalog.mark_active(loaded.item_ids)


def _contents(catalog, cid: int) -> dict:
    """Every row either path writes, minus timestamps and surrogate attribute ids."""
    postgres = catalog.engine.dialect.name == "postgresql"
    lexical = ("SELECT item_id, collection_id, document::text FROM lexical_docs" if postgres
               else "SELECT rowid, text, attrs, collection_id FROM lexical_fts")
    attributes = "CAST(attributes AS TEXT)" if postgres else "attributes"
    queries = {
        "items": f"SELECT id, collection_id, external_id, text, image_ref, {attributes}, "
                 "content_hash, status FROM items",
        "attributes": "SELECT collection_id, item_id, key, text_value, num_value, bool_value "
                      "FROM item_attributes",
        "vectors": "SELECT id, collection_id, item_id, modality, source FROM vectors",
        "lexical": lexical,
        "identifiers": "SELECT collection_id, value, item_id FROM lexical_identifiers",
        "words": "SELECT collection_id, word FROM lexical_words",
        "write_version": "SELECT write_version > 0 FROM collections",
    }
    with catalog.engine.connect() as connection:
        return {name: sorted((tuple(r) for r in connection.execute(text(sql))), key=repr)
                for name, sql in queries.items()}


def _answers(catalog, cid: int) -> dict:
    keyword = catalog.keyword
    found = {q: [(m.item_id, round(m.score, 5))
                 for m in keyword.search(cid, keyword.parse(cid, q), 10, [])]
             for q in QUERIES}
    found.update({f"exact {q}": keyword.exact(cid, q, []) for q in QUERIES})
    found.update({repr(f): catalog.vector_ids(cid, filters=parse_filters(f)).tolist()
                  for f in FILTERS})
    return found


@pytest.fixture
def two_catalogs(database_url, tmp_path, request):
    """The test's database and a second, fresh one of the same dialect."""
    if database_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'other.db'}"
    else:
        other = request.getfixturevalue("postgres_cluster").create_database(
            f"{database_url.rsplit('/', 1)[-1]}_b")
    catalogs = [open_catalog(database_url), open_catalog(other)]
    yield catalogs
    for catalog in catalogs:
        catalog.close()


@pytest.mark.parametrize("searchable", [None, ("keywords", "brand")])
def test_bulk_load_writes_what_the_row_at_a_time_path_writes(two_catalogs, searchable):
    contents, answers = [], []
    for catalog, write in zip(two_catalogs, (_row_at_a_time, _bulk), strict=True):
        cid = catalog.create_collection("shop", model="m", pretrained=None,
                                        weights_identity="w", dim=4).id
        catalog.set_lexical_settings(cid, LexicalSettings(searchable=searchable))
        write(catalog, cid)
        contents.append(_contents(catalog, cid))
        answers.append(_answers(catalog, cid))
    assert contents[0] == contents[1]
    assert answers[0] == answers[1]
    assert len(contents[1]["attributes"]) >= 12 and contents[1]["identifiers"]
    assert answers[1]["sneaker"] and answers[1]["exact ac-100"]  # the index answers


def test_ids_after_a_bulk_load_continue_and_are_never_reused(catalog, collection):
    cid = collection.id
    first = catalog.insert_new_items(cid, ITEMS[:2], [NewVector(0, "text"), NewVector(1, "text")])
    catalog.mark_active(first.item_ids)
    catalog.delete_items(cid, ["shoe-2"])  # its vector id must not come back
    later = catalog.upsert_items(cid, [ITEMS[2]])  # the row-at-a-time path after a bulk load
    new_ids, _ = catalog.replace_vectors(cid, [(later[0].item_id, "text", "original")])
    assert later[0].item_id != first.item_ids[0]  # (SQLite may reuse a deleted item's id)
    assert new_ids[0] > max(first.vector_ids)
    again = catalog.insert_new_items(cid, ITEMS[3:], [NewVector(1, "image")])
    assert min(again.vector_ids) > new_ids[0]
    assert not {*again.item_ids} & {first.item_ids[0], later[0].item_id}


def test_a_bulk_load_is_one_transaction(catalog, collection):
    cid = collection.id
    catalog.upsert_items(cid, [ITEMS[2]])
    before = _contents(catalog, cid)
    with pytest.raises(IntegrityError):  # mug-1 exists: the whole batch is refused
        catalog.insert_new_items(cid, ITEMS, VECTORS)
    assert _contents(catalog, cid) == before


def test_duplicates_and_bad_positions_are_refused_by_name(catalog, collection):
    with pytest.raises(ValueError, match="shoe-1"):
        catalog.insert_new_items(collection.id, [ITEMS[0], ITEMS[0]])
    with pytest.raises(ValueError, match="position 5"):
        catalog.insert_new_items(collection.id, ITEMS[:2], [NewVector(5, "text")])


def test_existing_external_ids_counts_pending_items(catalog, collection):
    catalog.upsert_items(collection.id, ITEMS[:2])  # pending: no vectors yet
    assert catalog.existing_external_ids(collection.id, ["shoe-1", "mug-1", "shoe-2"]) == {
        "shoe-1", "shoe-2"}


def _prepared(collection, items):
    from search.collection.preparing import embed_prepared, prepare_items

    ctx = collection.prepare_context()
    prepared, failures = prepare_items(items, ctx, collection.known_hashes(
        [i.external_id for i in items]))
    assert not failures
    embed_prepared(collection.encoder, prepared)  # vectors computed "elsewhere"
    return prepared


def _served(collection):
    """Every vector the spaces serve, as (external id, modality, exact vector bytes)."""
    out = set()
    for modality, space in collection.spaces.items():
        ids = space.store_ids()
        vectors, found = space.vectors(ids)
        assert found.all()
        infos = collection.catalog.vector_infos(ids)
        out |= {(infos[int(i)].external_id, modality.value, v.tobytes())
                for i, v in zip(ids, vectors, strict=True)}
    return out


def test_write_bulk_serves_what_write_serves(workspace, monkeypatch):
    from tests.utils.corpus import catalog_items

    loads: list[int] = []
    insert = workspace.catalog.insert_new_items
    monkeypatch.setattr(workspace.catalog, "insert_new_items", lambda cid, items, *a, **k: (
        loads.append(len(items)), insert(cid, items, *a, **k))[1])
    items = catalog_items(30)
    changed = [replace(i, text=f"{i.text} again") for i in items[:5]]
    results = []
    for name, bulk in (("rows", False), ("bulk", True)):
        collection = workspace.create_collection(name)
        write = collection.write_bulk if bulk else collection.write
        first = write(_prepared(collection, items[:20]))
        # a mixed batch: 5 changed, 15 unchanged, 10 new (only these load in bulk)
        second = write(_prepared(collection, changed + items[5:]))
        results.append(((first.new, first.failed),
                        (second.new, second.changed, second.unchanged, second.failed),
                        _served(collection), collection.catalog.collection_counts(
                            collection.info.id)))
        rows = workspace.catalog.iter_items(collection.info.id)
        assert all(workspace.catalog.get_item(collection.info.id, s.external_id).status
                   == "active" for batch in rows for s in batch)
    assert results[0] == results[1]
    assert results[1][1] == (10, 5, 15, 0)
    assert loads == [20, 10]  # the new items, and only they, went in by bulk loads


def test_a_write_bulk_killed_before_its_embeddings_is_redone_by_the_next(workspace,
                                                                         monkeypatch):
    from search.catalog.models import Modality
    from tests.utils.corpus import catalog_items

    collection = workspace.create_collection("shop")
    prepared = _prepared(collection, catalog_items(12))
    space = collection.spaces[Modality.TEXT]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the rows committed

    with monkeypatch.context() as patch:
        patch.setattr(space, "add", killed)
        with pytest.raises(KeyboardInterrupt):
            collection.write_bulk(prepared)
    cid = collection.info.id
    assert {s.external_id for b in workspace.catalog.iter_items(cid) for s in b} == {
        p.external_id for p in prepared}  # rows are there, pending
    collection.reconcile()  # what the next run does first: pending items leave search
    assert collection.catalog.active_hashes(cid, [p.external_id for p in prepared]) == {}
    report = collection.write_bulk(_prepared(collection, catalog_items(12)))
    assert (report.new, report.changed, report.unchanged) == (0, 12, 0)
    assert len(_served(collection)) == sum(
        (p.text_vector is not None) + (p.image_vector is not None) for p in prepared)
    assert collection.catalog.collection_counts(cid).items == 12
