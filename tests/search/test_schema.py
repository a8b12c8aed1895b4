"""Migrations run once: concurrent `migrate` calls never race, read-only openers refuse an
old schema instead of migrating it (search/catalog/schema.py)."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from sqlalchemy import create_engine, inspect

from indexer.cli import main as index_main
from search.catalog.catalog import migrate_catalog, open_catalog
from search.catalog.schema import schema_revision
from search.errors import CatalogSchemaError


def test_migrate_reports_before_and_after_and_is_idempotent(database_url):
    first = migrate_catalog(database_url)
    assert first.before is None and first.changed
    again = migrate_catalog(database_url)
    assert again.before == again.after == first.after and not again.changed
    engine = create_engine(database_url)
    assert schema_revision(engine).up_to_date
    engine.dispose()


def test_read_only_open_refuses_an_unmigrated_catalog_and_leaves_it_untouched(database_url):
    with pytest.raises(CatalogSchemaError, match="xmodal-index migrate"):
        open_catalog(database_url, migrate_on_open=False)
    engine = create_engine(database_url)
    assert "items" not in inspect(engine).get_table_names()  # it did not migrate
    engine.dispose()
    migrate_catalog(database_url)
    open_catalog(database_url, migrate_on_open=False).close()


def race_migrations(url: str, processes: int) -> tuple[list, list, bool]:
    """(results, errors, any still running) of `processes` migrate calls started at once."""
    start, results, errors = threading.Barrier(processes), [], []

    def run() -> None:
        start.wait()
        try:
            results.append(migrate_catalog(url))
        except Exception as exc:  # noqa: BLE001 - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors, any(thread.is_alive() for thread in threads)


@pytest.mark.postgres
def test_concurrent_migrations_on_postgres_all_succeed(postgres_cluster):
    """Eight processes' worth of migrate calls on one empty database at once: without the
    advisory lock they deadlock or fail on CREATE TABLE (tried: hangs)."""
    for _ in range(3):  # a race may need a few tries to show; the lock makes all pass
        url = postgres_cluster.create_database(f"m_{uuid.uuid4().hex[:12]}")
        results, errors, hung = race_migrations(url, 8)
        assert not hung, "migrations deadlocked"
        assert not errors, errors
        assert sum(result.changed for result in results) == 1  # exactly one migrated
        assert {result.after for result in results} == {results[0].after}


def test_cli_migrate(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("XMODAL_DATABASE_URL", raising=False)
    assert index_main(["migrate", "--home", str(tmp_path), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["before"] is None and first["changed"]
    assert index_main(["migrate", "--home", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
