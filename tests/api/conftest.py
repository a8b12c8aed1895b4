"""API fixtures: a shared SQLite home with a "shop" collection, and in-process clients.

Tests that write use collections of their own, so the shared "shop" stays as built.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ApiConfig
from search.settings import Settings
from search.workspace import Workspace
from tests.utils.corpus import catalog_items

API_KEY = "test-key"
WRITE = {"X-API-Key": API_KEY}
SHOP_ITEMS = catalog_items(40)


def build_home(settings: Settings, name: str = "shop", items=SHOP_ITEMS) -> None:
    workspace = Workspace.open(settings)
    collection = workspace.create_collection(name)
    collection.add_items(items)
    collection.save()
    workspace.close()


@contextmanager
def open_client(settings: Settings, config: ApiConfig | None = None) -> Iterator[TestClient]:
    """An in-process client whose app has finished loading its collections."""
    app = create_app(settings, config or ApiConfig(reload_interval_s=0.1))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "app never became ready"
            time.sleep(0.02)
        yield client


@pytest.fixture(scope="session")
def shop_settings(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Settings:
    home = tmp_path_factory.mktemp("api-home")
    settings = Settings(home=home, model=tiny_model, device="cpu", offline=True,
                        api_key=API_KEY)
    build_home(settings)
    return settings


@pytest.fixture(scope="module")
def client(shop_settings: Settings) -> Iterator[TestClient]:
    with open_client(shop_settings) as test_client:
        yield test_client


@pytest.fixture
def fresh_settings(tmp_path: Path, tiny_model: str) -> Settings:
    """An empty SQLite home of one test's own."""
    return Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True,
                    api_key=API_KEY)
