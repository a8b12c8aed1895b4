"""search/lookup.py: items by internal id, scoped to one collection."""

from search.catalog.lookup import items_by_id
from search.collection.collection import NewItem


def test_items_by_id_is_scoped_and_complete(workspace):
    shop = workspace.create_collection("shop")
    shop.add_items([NewItem("a", text="apple", attributes={"price": 1}),
                    NewItem("b", text="banana")])
    other = workspace.create_collection("other")
    other.add_items([NewItem("c", text="cherry")])
    ids = {e: workspace.catalog.item_id(shop.info.id, e) for e in ("a", "b")}
    foreign = workspace.catalog.item_id(other.info.id, "c")
    found = items_by_id(workspace.catalog, shop.info.id, [ids["a"], ids["b"], foreign, 10**9])
    assert set(found) == {ids["a"], ids["b"]}
    record = found[ids["a"]]
    assert (record.external_id, record.text, record.attributes) == ("a", "apple", {"price": 1})
    assert items_by_id(workspace.catalog, shop.info.id, []) == {}
