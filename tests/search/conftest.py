"""Fixtures of the engine's tests: a catalog on SQLite and PostgreSQL (`database_url` is
parametrised in tests/conftest.py) with one empty collection."""

import pytest

from search.catalog.catalog import open_catalog


@pytest.fixture
def catalog(database_url):
    cat = open_catalog(database_url)
    yield cat
    cat.close()


@pytest.fixture
def collection(catalog):
    return catalog.create_collection("shop", model="m", pretrained=None,
                                     weights_identity="w", dim=4)
