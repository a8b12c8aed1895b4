"""`xmodal-serve` as users run it: a real uvicorn process on loopback, real sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import requests

from api.cli import is_loopback, main, refusal
from search.models.encoder import load_encoder
from search.settings import Settings
from tests.api.conftest import API_KEY, WRITE, build_home
from tests.utils.corpus import catalog_items
from tests.utils.servers import free_port, wait_ready


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    """A home whose model is a checkpoint directory (the child process cannot see the
    tiny config this process registered), served by `python -m api.cli`."""
    root = tmp_path_factory.mktemp("served")
    model_dir = load_encoder(tiny_model, device="cpu").save(root / "model")
    settings = Settings(home=root / "home", model=str(model_dir), device="cpu", offline=True)
    build_home(settings, "shop", catalog_items(16))
    (root / "home" / "secret.txt").write_text("top secret")
    port = free_port()
    env = {**os.environ, "XMODAL_MODEL": str(model_dir), "XMODAL_DEVICE": "cpu",
           "XMODAL_OFFLINE": "true", "XMODAL_API_KEY": API_KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--host", "127.0.0.1", "--port", str(port),
         "--home", str(root / "home"), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield base
    finally:
        process.terminate()
        process.wait(20)


def test_search_write_and_clip_client_over_real_sockets(server):
    with httpx.Client(base_url=server, timeout=10) as client:
        hits = client.post("/v1/search", json={"collection": "shop", "text": "fruit",
                                                "k": 3}).json()["hits"]
        assert len(hits) == 3
        put = client.put("/v1/collections/shop/items/served", headers=WRITE,
                         json={"text": "served over loopback"})
        assert put.status_code == 201
        assert client.put("/v1/collections/shop/items/x", json={"text": "x"}).status_code == 401
        assert client.get("/").status_code == 200
    # exactly as ClipClient sends it: requests, data=json.dumps(...), no Content-Type
    body = {"text": "served over loopback", "image": None, "image_url": None,
            "embedding_input": None, "deduplicate": True, "use_safety_model": True,
            "use_violence_detector": True, "indice_name": "shop", "use_mclip": False,
            "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "text",
            "num_images": 2, "num_result_ids": 2}
    results = requests.post(f"{server}/knn-service", data=json.dumps(body), timeout=10).json()
    assert results[0]["caption"] == "served over loopback"


@pytest.mark.parametrize("target", ["/v1/media/../secret.txt", "/v1/media/../../secret.txt",
                                    "/v1/media/%2e%2e/secret.txt", "/v1/media/..%2Fsecret.txt"])
def test_raw_traversal_requests(server, target):
    """Sent byte for byte: no client-side normalisation of the path."""
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 404, 422) and b"top secret" not in reply


def test_refusal_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    assert refusal("0.0.0.0", read_only=False, has_key=False, insecure=False)
    for ok in ({"read_only": True}, {"has_key": True}, {"insecure": True}):
        assert refusal("0.0.0.0", **{"read_only": False, "has_key": False, "insecure": False,
                                     **ok}) is None
    assert refusal("127.0.0.1", read_only=False, has_key=False, insecure=False) is None


def test_cli_refuses_public_writes_without_key(monkeypatch, capsys, tmp_path: Path):
    monkeypatch.delenv("XMODAL_API_KEY", raising=False)
    monkeypatch.delenv("XMODAL_API_READ_ONLY", raising=False)
    monkeypatch.delenv("XMODAL_HOME", raising=False)  # main() sets these: restored after
    monkeypatch.delenv("XMODAL_API_COMPUTE_THREADS", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    assert main(["--host", "0.0.0.0", "--home", str(tmp_path)]) == 2
    assert "refusing to serve writes on 0.0.0.0" in capsys.readouterr().err
    assert main(["--workers", "0"]) == 2
