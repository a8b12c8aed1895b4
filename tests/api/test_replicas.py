"""Read-only replicas in production shape: two `xmodal-serve --read-only` processes and one
writer on loopback over a real PostgreSQL, sharing one XMODAL_HOME. An item written
through the writer and an index version switched by the indexer reach both replicas
within the reload interval; replicas refuse writes. Runs with index versions mapped and
read in, and prints each replica's RSS for both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from indexer.reindex import rebuild_index
from search import Workspace
from search.models.encoder import load_encoder
from search.settings import Settings
from search.vectors.versions import current_version
from tests.api.conftest import API_KEY, WRITE
from tests.utils.corpus import catalog_items
from tests.utils.servers import free_port, wait_ready

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
RELOAD_S = 0.5
# A replica notices within RELOAD_S; the rest is its own work (a query encode, a reopen)
# on 2 shared cores while three servers run: generous, yet far below "never".
SEEN_WITHIN_S = RELOAD_S + 8


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def serve(port: int, env: dict[str, str], *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", *flags], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)


def wait_for(check, what: str) -> float:
    """Seconds until `check()` is true on every replica, failing past SEEN_WITHIN_S."""
    start = time.monotonic()
    while time.monotonic() - start < SEEN_WITHIN_S:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not seen within {SEEN_WITHIN_S} s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model, postgres_cluster):
    """A migrated PostgreSQL catalog and a home with an IVF collection (mappable)."""
    root = tmp_path_factory.mktemp("replicas")
    model_dir = load_encoder(tiny_model, device="cpu").save(root / "model")
    url = postgres_cluster.create_database(f"r_{uuid.uuid4().hex[:12]}")
    settings = Settings(home=root / "home", model=str(model_dir), database_url=url,
                        device="cpu", offline=True)
    workspace = Workspace.open(settings)  # the indexer's process: it migrates
    workspace.create_collection("shop").add_items(catalog_items(80))
    workspace.collection("shop").rebuild("IVF4,Flat")  # an IVF cannot start empty
    workspace.close()
    env = {**os.environ, "XMODAL_MODEL": str(model_dir), "XMODAL_DEVICE": "cpu",
           "XMODAL_OFFLINE": "true", "XMODAL_API_KEY": API_KEY, "XMODAL_DATABASE_URL": url,
           "XMODAL_HOME": str(settings.home), "XMODAL_API_RELOAD_INTERVAL_S": str(RELOAD_S)}
    return settings, env


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "in-memory"])
def test_replicas_see_writes_and_index_switches(stack, mmap):
    settings, env = stack
    env = {**env, "XMODAL_MMAP_INDEX": str(mmap).lower()}
    ports = [free_port() for _ in range(3)]
    writer = serve(ports[0], env)
    replicas = [serve(port, env, "--read-only") for port in ports[1:]]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base, process in zip(bases, [writer, *replicas], strict=True):
            wait_ready(base, process, timeout_s=300)  # three servers start at once
        rss = {f"replica {n}": rss_mib(p.pid) for n, p in enumerate(replicas, 1)}
        report = exercise(settings, bases[0], bases[1:])
        rss_after = {f"replica {n}": rss_mib(p.pid) for n, p in enumerate(replicas, 1)}
        print(json.dumps({"mmap": mmap, "rss_mib_ready": rss, "rss_mib_after": rss_after,
                          **report}))
    finally:
        for process in (writer, *replicas):
            process.terminate()
            process.wait(20)


def exercise(settings: Settings, writer: str, replicas: list[str]) -> dict[str, float]:
    clients = [httpx.Client(base_url=base, timeout=20) for base in replicas]
    text = f"replica probe {uuid.uuid4().hex[:6]} zebra"
    external_id = f"probe-{uuid.uuid4().hex[:6]}"
    for client in clients:  # replicas never write
        refused = client.put(f"/v1/collections/shop/items/{external_id}", headers=WRITE,
                             json={"text": text})
        assert refused.status_code == 403, refused.text
    put = httpx.put(f"{writer}/v1/collections/shop/items/{external_id}", headers=WRITE,
                    json={"text": text}, timeout=20)
    assert put.status_code == 201, put.text

    def item_found() -> bool:
        body = {"collection": "shop", "text": text, "k": 3, "target": "text"}
        return all(external_id in [h["external_id"] for h in
                                   c.post("/v1/search", json=body).json()["hits"]]
                   for c in clients)

    item_s = wait_for(item_found, "an item written through the writer")
    rebuild_index(Workspace.open(settings), "shop", "IVF8,Flat")  # the indexer switches
    versions = {current_version(p / "index") for p in (settings.home / "collections" /
                                                        "shop").glob("*/*")}

    def version_loaded() -> bool:
        loaded = [{i["version"] for i in c.get("/v1/collections/shop").json()["indexes"]}
                  for c in clients]
        return all(seen == versions for seen in loaded)

    version_s = wait_for(version_loaded, "an index version switched by the indexer")
    for client in clients:
        specs = {i["spec"] for i in client.get("/v1/collections/shop").json()["indexes"]}
        assert specs == {"IVF8,Flat"}
        client.close()
    return {"item_seen_s": round(item_s, 2), "version_seen_s": round(version_s, 2)}
