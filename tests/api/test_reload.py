"""A running API picks up what other processes write — new index versions from the
indexer, items put through another worker — without restart and without failing a
query that is in flight."""

from __future__ import annotations

import threading
import time

from search.collection.collection import NewItem
from search.workspace import Workspace
from tests.api.conftest import WRITE, build_home, open_client
from tests.utils.corpus import catalog_items


def hit_ids(client, text, collection="live"):
    response = client.post("/v1/search", json={"collection": collection, "text": text, "k": 5})
    assert response.status_code == 200, response.text
    return [h["external_id"] for h in response.json()["hits"]]


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not picked up in time"
        time.sleep(0.05)


def test_new_index_version_is_picked_up_while_a_query_is_in_flight(fresh_settings):
    build_home(fresh_settings, "live", catalog_items(12))
    with open_client(fresh_settings) as client:
        services = client.app.state.services
        services.refresher.stop()  # this test drives the refresh itself
        encoder = services.workspace.collection("live").encoder
        entered, release = threading.Event(), threading.Event()
        original = encoder.encode_query_text  # queries encode through this

        def blocking(text):
            if text == "in flight":
                entered.set()
                release.wait(10)
            return original(text)

        encoder.encode_query_text = blocking
        in_flight: list = []
        query = threading.Thread(target=lambda: in_flight.append(client.post(
            "/v1/search", json={"collection": "live", "text": "in flight"})))
        query.start()
        assert entered.wait(10)
        indexer = Workspace.open(fresh_settings)  # stands for the indexer process
        indexer.collection("live").add_items([NewItem("late", text="a late arrival")])
        indexer.collection("live").save()
        indexer.close()
        before = services.workspace.collection("live")
        assert services.refresher.refresh_all().changes == {"live": "reopened"}
        assert services.workspace.collection("live") is not before
        release.set()
        query.join(10)
        assert in_flight[0].status_code == 200 and in_flight[0].json()["hits"]
        assert hit_ids(client, "a late arrival")[0] == "late"
        metrics = client.get("/metrics").text
        assert 'xmodal_collection_reloads_total{change="reopened",collection="live"} 1.0' in metrics


def test_writes_through_one_worker_reach_another(fresh_settings):
    build_home(fresh_settings, "live", catalog_items(12))
    with open_client(fresh_settings) as worker_a, open_client(fresh_settings) as worker_b:
        put = worker_a.put("/v1/collections/live/items/new", headers=WRITE,
                           json={"text": "only written through worker a"})
        assert put.status_code == 201
        wait_for(lambda: hit_ids(worker_b, "only written through worker a")[:1] == ["new"])
        # and back: b's store knows a's commit before b appends, so nothing collides
        worker_b.put("/v1/collections/live/items/new2", headers=WRITE,
                     json={"text": "written through worker b"})
        worker_a.delete("/v1/collections/live/items/new", headers=WRITE)
        wait_for(lambda: hit_ids(worker_a, "written through worker b")[:1] == ["new2"])
        wait_for(lambda: "new" not in hit_ids(worker_b, "only written through worker a"))
