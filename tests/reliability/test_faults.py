"""Faults: kill -9 at random points (indexing, reindex to another model, embedding-log
writes and compaction, media collection, the API under a stream of writes) and a full
disk during a build. After a re-run, everything must equal an uninterrupted run; the
serving index is never half-written; acknowledged writes are never lost.

The normal suite kills at a few points; the `slow` variants at 20."""

from __future__ import annotations

import base64
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from search.errors import StorageError
from search.lifecycle import maintain, stored_media
from search.media import MediaStore
from search.models.encoder import load_encoder
from search.settings import Settings
from search.vectors.store import EmbeddingStore
from search.vectors.versions import current_version, list_versions
from search.workspace import Workspace
from tests.api.conftest import API_KEY, WRITE, build_home
from tests.indexer.conftest import write_catalog
from tests.reliability import fault_child
from tests.reliability._records import record
from tests.reliability.storage_checks import assert_consistent, png
from tests.utils.corpus import catalog_items
from tests.utils.servers import free_port, wait_ready
from tests.utils.snapshots import assert_same_collection, snapshot


def _spawn(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd)


def _kill_after(process: subprocess.Popen, delay_s: float) -> bool:
    """SIGKILL after `delay_s`; False if it had already finished."""
    deadline = time.monotonic() + delay_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return True


def _kill_after_ready(process: subprocess.Popen, delay_s: float) -> bool:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == b"ready", process.stderr.read().decode()[-2000:] if \
        process.stderr else line
    return _kill_after(process, delay_s)


# -- the embedding log: writes and compaction ------------------------------------------


def _store_kills(tmp_path: Path, kills: int, seed: int) -> int:
    rng = random.Random(seed)
    total, killed = 600, 0
    root = tmp_path / "killed"
    root.mkdir()
    for _ in range(kills):
        child = _spawn(["-m", "tests.reliability.fault_child", "store", str(root), str(total)])
        killed += _kill_after_ready(child, rng.uniform(0.0, 0.6))
        done = len((root / "progress").read_text().split()) if (root / "progress").exists() \
            else 0
        store = EmbeddingStore.open(root / "emb", fault_child.DIM)
        # the operation in flight may or may not have committed; nothing else may differ
        live = set(store.live_ids().tolist())
        assert live in ({*fault_child.expected_live(done)},
                        {*fault_child.expected_live(done + 1)}), f"torn log after op {done}"
    child = _spawn(["-m", "tests.reliability.fault_child", "store", str(root), str(total)])
    assert child.wait(600) == 0, child.stderr.read().decode()[-2000:]
    store = EmbeddingStore.open(root / "emb", fault_child.DIM)
    expected = fault_child.expected_live(total)
    ids = np.array(sorted(expected), np.int64)
    assert np.array_equal(store.live_ids(), ids)
    vectors, found = store.get(ids)
    assert found.all()
    assert np.allclose(vectors, np.concatenate([expected[i] for i in ids]), atol=1e-3)
    # the last operation is a compaction: it clears whatever a killed write left behind
    assert fault_child.operation(total - 1)[0] == "compact"
    names = sorted(os.listdir(root / "emb"))
    snap = f"{store.latest_seq:08d}.snap"
    assert names == [f"{snap}.ids.npy", f"{snap}.vec.npy", "store.json"], names
    return killed


def test_kill_during_log_writes_and_compaction(tmp_path):
    killed = _store_kills(tmp_path, kills=2, seed=1)
    record("faults", "kill -9 during log writes/compaction: injected", 2)
    record("faults", "kill -9 during log writes/compaction: survived", killed)


# -- media collection -------------------------------------------------------------------


def _gc_kills(tmp_path: Path, kills: int, seed: int) -> int:
    media = MediaStore(tmp_path / "media")
    refs = [media.put(png(i, 8), suffix=".png") for i in range(1500)]
    keep = set(refs[::3])
    refs_file = tmp_path / "refs.json"
    refs_file.write_text(json.dumps(sorted(keep)))
    rng, killed = random.Random(seed), 0
    for _ in range(kills):
        child = _spawn(["-m", "tests.reliability.fault_child", "gc", str(media.root),
                        str(refs_file)])
        killed += _kill_after_ready(child, rng.uniform(0.0, 0.3))
        stored = {ref for ref, _ in stored_media(media)}
        assert keep <= stored, "a referenced file was collected"
    child = _spawn(["-m", "tests.reliability.fault_child", "gc", str(media.root),
                    str(refs_file)])
    assert child.wait(300) == 0, child.stderr.read().decode()[-2000:]
    assert {ref for ref, _ in stored_media(media)} == keep
    leftovers = [n for _, _, names in os.walk(media.root) for n in names if n.startswith(".")]
    assert leftovers == []
    return killed


def test_kill_during_media_collection(tmp_path):
    killed = _gc_kills(tmp_path, kills=1, seed=2)
    record("faults", "kill -9 during media GC: injected", 1)
    record("faults", "kill -9 during media GC: survived", killed)


# -- indexing and reindexing to another model -------------------------------------------


def _cli(home: Path, *args: str) -> list[str]:
    return ["-m", "indexer.cli", *args, "--collection", "shop", "--home", str(home),
            "--no-progress", "--json"]


def _add(source: Path, home: Path, model: Path) -> list[str]:
    return _cli(home, "add", str(source), "--model", str(model), "--workers", "0",
                "--batch-size", "4")


def _reindex(home: Path, model: Path) -> list[str]:
    return _cli(home, "reindex", "--model", str(model), "--batch-size", "4")


def _timed_run(args: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.monotonic() - started


def _serving_is_whole(home: Path) -> None:
    """Whatever CURRENT names loads (checksum verified) and answers a query."""
    ws = Workspace.open(Settings(home=home, device="cpu"))
    try:
        collection = ws.collection("shop")
        for space in collection.spaces.values():
            if current_version(space.index_dir) is not None:
                assert current_version(space.index_dir) in list_versions(space.index_dir)
        assert collection.stats().items >= 0
    finally:
        ws.close()


def _index_kills(tmp_path: Path, kills_per_stage: int, seed: int) -> int:
    model_a = load_encoder("xmodal-tiny-test", device="cpu").save(tmp_path / "model-a")
    model_b = load_encoder("xmodal-tiny-test", device="cpu").save(tmp_path / "model-b")
    source = write_catalog(tmp_path / "src", 120)
    clean, killed_home = tmp_path / "clean", tmp_path / "killed"
    add_s = _timed_run(_add(source, clean, model_a))
    reindex_s = _timed_run(_reindex(clean, model_b))
    rng, killed = random.Random(seed), 0
    for args, duration in ((_add(source, killed_home, model_a), add_s),
                           (_reindex(killed_home, model_b), reindex_s)):
        for _ in range(kills_per_stage):
            killed += _kill_after(_spawn(args), rng.uniform(0.3, 1.0) * duration)
            if (killed_home / "catalog.db").exists():
                _serving_is_whole(killed_home)
        _timed_run(args)  # the re-run finishes the job
    snapshots = []
    for home in (killed_home, clean):
        ws = Workspace.open(Settings(home=home, device="cpu"))
        snapshots.append(snapshot(ws, "shop"))
        assert_consistent(ws, "shop")
        ws.close()
    assert_same_collection(*snapshots)
    return killed


def test_kill_during_add_and_reindex_model(tmp_path, tiny_model):
    killed = _index_kills(tmp_path, kills_per_stage=1, seed=3)
    record("faults", "kill -9 during add / reindex --model: injected", 2)
    record("faults", "kill -9 during add / reindex --model: survived", killed)


@pytest.mark.slow
def test_twenty_kills(tmp_path, tiny_model):
    """20 kill points: 5 each in the log, media collection, add and reindex --model."""
    (tmp_path / "store").mkdir()
    survived = _store_kills(tmp_path / "store", kills=5, seed=11)
    survived += _gc_kills(tmp_path, kills=5, seed=12)
    survived += _index_kills(tmp_path, kills_per_stage=5, seed=13)
    record("faults", "kill -9 (slow): injected", 20)
    record("faults", "kill -9 (slow): survived", survived)


# -- the API killed under a stream of writes --------------------------------------------


def _serve(home: Path, model: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "XMODAL_MODEL": str(model), "XMODAL_DEVICE": "cpu",
           "XMODAL_OFFLINE": "true", "XMODAL_API_KEY": API_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--host", "127.0.0.1", "--port", str(port),
         "--home", str(home), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _write_stream(base: str, acked: list[str], sent: list[str], stop: threading.Event,
                  start: int) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        i = start
        while not stop.is_set():
            item = f"s{i}"
            sent.append(item)
            try:
                body = {"text": f"stream item {i}"}
                if i % 3 == 0:
                    body["image"] = base64.b64encode(png(i, 16)).decode()
                response = client.put(f"/v1/collections/shop/items/{item}", headers=WRITE,
                                      json=body)
            except httpx.HTTPError:
                return  # the server died mid-request: this one is unacknowledged
            if response.status_code in (200, 201):
                acked.append(item)
            i += 1


def test_api_killed_during_writes_keeps_every_acknowledged_write(tmp_path, tiny_model):
    model = load_encoder(tiny_model, device="cpu").save(tmp_path / "model")
    settings = Settings(home=tmp_path / "home", model=str(model), device="cpu", offline=True)
    build_home(settings, "shop", catalog_items(8))
    acked: list[str] = []
    sent: list[str] = []
    rng = random.Random(4)
    for round_ in range(2):
        port = free_port()
        server = _serve(settings.home, model, port)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server)
        stop = threading.Event()
        writer = threading.Thread(target=_write_stream,
                                  args=(base, acked, sent, stop, round_ * 100_000))
        writer.start()
        deadline, floor = time.monotonic() + 120, len(acked) + 3
        while len(acked) < floor and time.monotonic() < deadline:  # past the warm-up
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))  # then a random point in the stream
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        stop.set()
        writer.join(60)
    assert len(acked) > 5, "too few writes before the kill to mean anything"
    port = free_port()
    server = _serve(settings.home, model, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=30) as client:
            for item in acked:
                response = client.get(f"/v1/collections/shop/items/{item}")
                assert response.status_code == 200, f"acknowledged write {item} lost"
                body = response.json()
                assert body["status"] == "active" and body["vectors"], body
            hits = client.post("/v1/search", json={"collection": "shop", "text": "stream item",
                                                   "k": 100}).json()["hits"]
            known = set(acked) | set(sent) | {i.external_id for i in catalog_items(8)}
            assert {h["external_id"] for h in hits} <= known
    finally:
        server.terminate()
        server.wait(20)
    ws = Workspace.open(settings)
    try:
        maintain(ws)  # repairs the write in flight at the kill, as the server does
        assert_consistent(ws, "shop")
    finally:
        ws.close()
    record("faults", "API kill -9 under writes: acknowledged writes", len(acked))
    record("faults", "API kill -9 under writes: lost", 0)


# -- a full disk during a build ---------------------------------------------------------


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def _fill(path: Path) -> None:
    """Write until the filesystem is full."""
    with open(path, "wb", buffering=0) as out:  # unbuffered: close() has nothing to flush
        try:
            while True:
                out.write(b"\0" * (1 << 16))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("disk", ["injected", "tmpfs"])
def test_full_disk_during_a_build_keeps_the_previous_version_serving(
        tmp_path, tiny_model, monkeypatch, disk):
    home = tmp_path / "home"
    if disk == "tmpfs" and not _tmpfs(home, "24m"):
        pytest.skip("cannot mount a tmpfs here (not root); the injected variant covers it")
    try:
        settings = Settings(home=home, model=tiny_model, device="cpu", offline=True)
        build_home(settings, "shop", catalog_items(30))
        ws = Workspace.open(settings)
        collection = ws.collection("shop")
        before = {m: current_version(s.index_dir) for m, s in collection.spaces.items()}
        if disk == "tmpfs":
            _fill(home / "filler")
        else:
            def full(*_args, **_kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr("search.vectors.index.faiss.write_index", full)
        with pytest.raises(StorageError) as caught:
            collection.rebuild()
        assert "No space left on device" in str(caught.value) or "could not write" in str(
            caught.value)
        for modality, space in collection.spaces.items():
            assert current_version(space.index_dir) == before[modality]
            assert not [p for p in space.index_dir.iterdir() if p.name.startswith(".tmp-")]
        answer = ws.collection("shop").stats()
        assert answer.items == 30
        ws.close()
        monkeypatch.undo()
        (home / "filler").unlink(missing_ok=True)
        ws = Workspace.open(settings)  # a fresh process serves the previous version
        assert_consistent(ws, "shop")
        ws.collection("shop").rebuild()  # and with space again, the build goes through
        ws.close()
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", "-l", str(home)], capture_output=True)
    record("faults", f"full disk during a build ({disk}): survived", 1)


def test_full_disk_during_api_writes_is_a_clear_507(tmp_path, tiny_model, monkeypatch):
    from tests.api.conftest import open_client

    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True,
                        api_key=API_KEY)
    build_home(settings, "shop", catalog_items(5))
    with open_client(settings) as client:
        def full(*_args, **_kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("search.vectors.store.np.savez", full)
        response = client.put("/v1/collections/shop/items/new", headers=WRITE,
                              json={"text": "does not fit"})
        assert response.status_code == 507, response.text
        assert "No space left on device" in response.json()["detail"]
        monkeypatch.undo()
        assert client.put("/v1/collections/shop/items/new", headers=WRITE,
                          json={"text": "fits now"}).status_code in (200, 201)
    ws = Workspace.open(settings)
    try:
        maintain(ws)
        assert_consistent(ws, "shop")
    finally:
        ws.close()
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


# -- PostgreSQL stopped and restarted under the API -------------------------------------


def _pg_ctl(cluster, action: str) -> None:
    from sqlalchemy.engine import make_url

    from tests.utils.postgres import _run_as_server_user

    port = make_url(cluster.url).port
    command = [str(cluster.bin_dir / "pg_ctl"), action, "-D", str(cluster.data_dir), "-w",
               "-m", "fast"]
    if action == "start":
        command = [str(cluster.bin_dir / "pg_ctl"), "start", "-D", str(cluster.data_dir),
                   "-w", "-l", str(cluster.workdir / "server.log"), "-o",
                   f"-c port={port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={cluster.workdir}"]
    _run_as_server_user(command, cwd=cluster.workdir)


@pytest.mark.postgres
def test_postgres_restarted_under_the_api_is_a_503_then_recovers(tmp_path, tiny_model):
    from tests.api.conftest import open_client
    from tests.utils.postgres import start_cluster

    with start_cluster() as cluster:
        if cluster.workdir is None:
            pytest.skip("an external server (XMODAL_TEST_POSTGRES_URL) is not ours to stop")
        url = cluster.create_database("reliability_outage")
        settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu",
                            offline=True, api_key=API_KEY, database_url=url)
        build_home(settings, "shop", catalog_items(10))
        query = {"collection": "shop", "text": "red fruit", "k": 3}
        with open_client(settings) as client:
            assert client.post("/v1/search", json=query).status_code == 200
            _pg_ctl(cluster, "stop")
            down = [client.post("/v1/search", json=query),
                    client.put("/v1/collections/shop/items/x", headers=WRITE,
                               json={"text": "while down"}),
                    client.get("/v1/collections/shop/items/p1")]
            for response in down:
                assert response.status_code == 503, response.text
                assert "catalog database is unavailable" in response.json()["detail"]
            _pg_ctl(cluster, "start")
            deadline = time.monotonic() + 30
            while client.post("/v1/search", json=query).status_code != 200:
                assert time.monotonic() < deadline, "no recovery after the restart"
                time.sleep(0.2)
            assert client.put("/v1/collections/shop/items/x", headers=WRITE,
                              json={"text": "after"}).status_code in (200, 201)
    record("faults", "PostgreSQL restart under the API: 503 while down, recovered", 1)
