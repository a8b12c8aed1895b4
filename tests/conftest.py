"""Shared fixtures: a tiny CLIP config (no weights), workspaces, and the catalog databases."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import open_clip
import pytest

from search.settings import Settings

# Engine tests compare results with float32 encodes (exact ground truth), so queries use
# the float32 text tower here; the int8 one is held to float32 in test_query_runtime.py.
os.environ.setdefault("XMODAL_QUERY_TEXT_INT8", "false")
# Likewise torch runs the query towers (ONNX Runtime is held to it in test_onnx_towers.py).
os.environ.setdefault("XMODAL_QUERY_BACKEND", "torch")

TINY_MODEL = "xmodal-tiny-test"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                   "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Registers a tiny open_clip architecture (random weights, built without download)."""
    config_dir = tmp_path_factory.mktemp("model_configs")
    (config_dir / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config_dir)
    return TINY_MODEL


@pytest.fixture(scope="session")
def postgres_cluster():
    from tests.utils.postgres import start_cluster

    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The catalog database: each test using it runs on SQLite and on real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def settings(tmp_path: Path, tiny_model: str, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", model=tiny_model, database_url=database_url,
                    device="cpu", offline=True)


@pytest.fixture
def workspace(settings: Settings) -> Iterator:
    from search.workspace import Workspace

    ws = Workspace.open(settings)
    yield ws
    ws.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every outgoing TCP connection attempt from this process (SSRF tests assert that a
    refusal happens before any)."""
    calls: list = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        calls.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return calls
