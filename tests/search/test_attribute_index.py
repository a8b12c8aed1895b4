"""The attribute index behind filters: kept in step with every write, typed like the JSON
it mirrors, backfilled by its migration, used by the planner; allowed-id sets cached until
the next write. SQLite and PostgreSQL."""

from datetime import UTC, datetime
from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, column, insert, select, table, text

from search.catalog.catalog import create_catalog_engine, open_catalog
from search.catalog.items import ItemInput
from search.catalog.models import VectorRow
from search.filters import parse_filters


def _add(catalog, collection, items):
    changes = catalog.upsert_items(collection.id, [
        ItemInput(ext, None, None, attrs, f"h-{ext}") for ext, attrs in items])
    ids, _ = catalog.replace_vectors(collection.id, [(c.item_id, "text", "original")
                                                     for c in changes])
    return dict(zip([ext for ext, _ in items], ids, strict=True))


def _allowed(catalog, collection, spec):
    return catalog.allowed_vector_ids(collection.id, modalities=["text"],
                                      filters=parse_filters(spec), sources=None)


def test_types_never_mix(catalog, collection):
    ids = _add(catalog, collection, [
        ("n1", {"size": 1}), ("s1", {"size": "1"}), ("t", {"size": True}),
        ("f", {"size": 1.0}), ("list", {"size": [1]}), ("none", {"size": None})])
    name = {v: k for k, v in ids.items()}
    found = {spec: {name[int(v)] for v in _allowed(catalog, collection, {"size": value})}
             for spec, value in (("num", 1), ("str", "1"), ("bool", True))}
    # a list holding 1 contains the number 1, never the string or the bool
    assert found == {"num": {"n1", "f", "list"}, "str": {"s1"}, "bool": {"t"}}
    mixed = _allowed(catalog, collection, {"size": {"in": [1, "1"]}})
    assert {name[int(v)] for v in mixed} == {"n1", "f", "s1", "list"}
    ranged = _allowed(catalog, collection, {"size": {"gte": 0}})
    assert {name[int(v)] for v in ranged} == {"n1", "f", "list"}


def test_filters_on_a_list_attribute_match_its_elements(catalog, collection):
    ids = _add(catalog, collection, [
        ("apple", {"keywords": ["red", "fruit"], "sizes": [1, 5]}),
        ("sky", {"keywords": ["blue"], "sizes": [7]}),
        ("twice", {"keywords": ["red", "red", 1, True], "sizes": []}),
        ("nested", {"keywords": [["red"], {"red": 1}], "sizes": "5"}),
        ("scalar", {"keywords": "red"})])
    name = {v: k for k, v in ids.items()}

    def found(spec):
        return sorted(name[int(v)] for v in _allowed(catalog, collection, spec))

    assert found({"keywords": "red"}) == ["apple", "scalar", "twice"]  # nested lists: no
    assert found({"keywords": "fruit"}) == ["apple"]
    assert found({"keywords": {"in": ["blue", "fruit"]}}) == ["apple", "sky"]
    assert found({"keywords": 1}) == ["twice"] and found({"keywords": True}) == ["twice"]
    assert found({"keywords": "red", "sizes": {"gte": 5}}) == ["apple"]  # some element
    assert found({"sizes": {"lt": 1}}) == []
    assert found({"sizes": 5}) == ["apple"]  # the string "5" is not the number 5
    # the element rows follow updates: "apple" loses "red"
    catalog.upsert_items(collection.id, [ItemInput("apple", None, None,
                                                   {"keywords": ["fruit"]}, "h-apple")])
    assert found({"keywords": "red"}) == ["scalar", "twice"]


def test_index_follows_upserts_deletes_and_new_vectors(catalog, collection):
    ids = _add(catalog, collection, [("a", {"color": "red"}), ("b", {"color": "blue"})])
    first = _allowed(catalog, collection, {"color": "red"})
    assert first.tolist() == [ids["a"]]
    assert _allowed(catalog, collection, {"color": "red"}) is first  # cached, no scan
    # attributes alone change (same content hash: no re-embedding)
    catalog.upsert_items(collection.id, [ItemInput("b", None, None, {"color": "red"}, "h-b")])
    assert _allowed(catalog, collection, {"color": "red"}).tolist() == sorted(ids.values())
    more = _add(catalog, collection, [("c", {"color": "red"})])  # a new vector id
    assert ids["a"] in _allowed(catalog, collection, {"color": "red"})
    assert more["c"] in _allowed(catalog, collection, {"color": "red"})
    catalog.delete_items(collection.id, ["a"])
    assert ids["a"] not in _allowed(catalog, collection, {"color": "red"})
    assert catalog.vector_ids(collection.id, filters=parse_filters({"color": "red"})
                              ).tolist() == sorted([ids["b"], more["c"]])


def test_cache_sees_writes_made_through_another_catalog(database_url, catalog, collection):
    ids = _add(catalog, collection, [("a", {"tag": "x"})])
    assert _allowed(catalog, collection, {"tag": "x"}).tolist() == [ids["a"]]
    other = open_catalog(database_url)  # another process, as far as caches go
    try:
        other.upsert_items(collection.id, [ItemInput("a", None, None, {"tag": "y"}, "h-a")])
    finally:
        other.close()
    assert len(_allowed(catalog, collection, {"tag": "x"})) == 0


def test_migration_backfills_existing_items(database_url):
    engine = create_catalog_engine(database_url)
    config = Config()
    config.set_main_option("script_location",
                           str(resources.files("search.catalog") / "migrations"))
    now = datetime.now(UTC)
    with engine.begin() as connection:  # a catalog written before the attribute index
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        collections = table("collections", *map(column, (
            "id", "name", "model", "weights_identity", "dim", "created_at")))
        items = table("items", *map(column, ("id", "collection_id", "external_id",
                                             "content_hash", "status", "created_at",
                                             "updated_at")), column("attributes", JSON))
        connection.execute(insert(collections).values(
            id=1, name="old", model="m", weights_identity="w", dim=4, created_at=now))
        connection.execute(insert(items), [
            {"id": i, "collection_id": 1, "external_id": f"e{i}", "content_hash": "h",
             "attributes": {"price": float(i), "kind": f"k{i % 2}"}, "status": "active",
             "created_at": now, "updated_at": now} for i in range(1, 8)])
    engine.dispose()
    catalog = open_catalog(database_url)  # upgrades to head: 0003 backfills
    try:
        vids, _ = catalog.replace_vectors(1, [(i, "text", "original") for i in range(1, 8)])
        found = catalog.vector_ids(1, filters=parse_filters({"kind": "k1",
                                                              "price": {"gte": 3}}))
        assert found.tolist() == [vids[2], vids[4], vids[6]]  # items 3, 5, 7
    finally:
        catalog.close()


def test_migration_indexes_the_elements_of_existing_lists(database_url):
    engine = create_catalog_engine(database_url)
    config = Config()
    config.set_main_option("script_location",
                           str(resources.files("search.catalog") / "migrations"))
    now = datetime.now(UTC)
    with engine.begin() as connection:  # written when lists were not in the index
        config.attributes["connection"] = connection
        command.upgrade(config, "0004_attribute_index")
        collections = table("collections", *map(column, (
            "id", "name", "model", "weights_identity", "dim", "created_at")))
        items = table("items", *map(column, ("id", "collection_id", "external_id",
                                             "content_hash", "status", "created_at",
                                             "updated_at")), column("attributes", JSON))
        connection.execute(insert(collections).values(
            id=1, name="old", model="m", weights_identity="w", dim=4, created_at=now))
        connection.execute(insert(items), [
            {"id": i, "collection_id": 1, "external_id": f"e{i}", "content_hash": "h",
             "attributes": {"tags": [f"t{i % 3}", "all"], "kind": f"k{i % 2}"},
             "status": "active", "created_at": now, "updated_at": now} for i in range(1, 8)])
        scalars = table("item_attributes", *map(column, (
            "collection_id", "item_id", "key", "text_value")))
        connection.execute(insert(scalars), [  # what 0004 wrote: scalars only
            {"collection_id": 1, "item_id": i, "key": "kind", "text_value": f"k{i % 2}"}
            for i in range(1, 8)])
    engine.dispose()
    catalog = open_catalog(database_url)  # upgrades to head: 0005 adds the elements
    try:
        vids, _ = catalog.replace_vectors(1, [(i, "text", "original") for i in range(1, 8)])
        found = catalog.vector_ids(1, filters=parse_filters({"tags": "t1", "kind": "k1"}))
        assert found.tolist() == [vids[0], vids[6]]  # items 1 and 7
        assert len(catalog.vector_ids(1, filters=parse_filters({"tags": "all"}))) == 7
        assert len(catalog.vector_ids(1, filters=parse_filters({"kind": "k0"}))) == 3
    finally:
        catalog.close()


def test_sqlite_filters_use_the_attribute_indexes(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        query = catalog._vectors_where(select(VectorRow.id), 1, ["text"], parse_filters(
            {"brand": "b1", "price": {"gte": 3, "lte": 9}}), None)
        sql = str(query.compile(catalog.engine, compile_kwargs={"literal_binds": True}))
        with catalog.engine.connect() as connection:
            plan = " ".join(str(r[-1]) for r in connection.execute(
                text(f"EXPLAIN QUERY PLAN {sql}")))
        assert "ix_item_attributes_text" in plan and "ix_item_attributes_num" in plan, plan
        assert "SCAN item_attributes" not in plan and "SCAN items" not in plan, plan
    finally:
        catalog.close()
