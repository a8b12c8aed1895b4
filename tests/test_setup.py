"""`.ci/setup-system`, which `make test` runs first: what pip cannot install, or one line.

Without root (and no passwordless sudo) it must stop at once, naming the command to run,
instead of letting the suite fail test by test. As root these tests run the script as
`nobody`, for real; as another user they point its sudo at one that always refuses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "setup-system"
_MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


@pytest.fixture
def script() -> Iterator[Path]:
    """A copy that `nobody` can read: the clone may sit under a private /root."""
    folder = Path(tempfile.mkdtemp(prefix="xmodal-setup-", dir="/tmp"))
    folder.chmod(0o755)
    copy = folder / SCRIPT.name
    shutil.copy(SCRIPT, copy)
    copy.chmod(0o755)
    yield copy
    shutil.rmtree(folder)


def _run_without_root(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    command = ["bash", str(script)]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "nobody", "--", *command]
    else:  # a developer's sudo may well work: make it refuse, as on a machine without it
        environment["XMODAL_SETUP_SUDO"] = "false"
    return subprocess.run(
        command, env=environment, cwd="/", capture_output=True, text=True, timeout=60
    )


def test_missing_chromium_without_root_stops_with_one_line(script: Path) -> None:
    result = _run_without_root(script, XMODAL_SETUP_CHROMIUM="/nonexistent/chromium")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "xmodal: chromium missing; run: sudo apt-get install -y chromium"
    ]


def test_every_missing_package_is_named_in_the_one_line(script: Path) -> None:
    result = _run_without_root(
        script, XMODAL_SETUP_CHROMIUM="/nonexistent/chromium", PYTHON="/nonexistent/python3"
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "xmodal: chromium python3-venv missing; "
        "run: sudo apt-get install -y chromium python3-venv"
    ]


def test_nothing_missing_needs_no_root_and_says_nothing(script: Path) -> None:
    present = shutil.which("sh")
    assert present is not None
    result = _run_without_root(script, XMODAL_SETUP_CHROMIUM=present, PYTHON="python3")

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_make_test_runs_the_setup_before_installing_and_testing() -> None:
    # not our caller's make: under `make test` MAKEFLAGS would carry its variables in
    environment = {k: v for k, v in os.environ.items() if k not in _MAKE_VARIABLES}
    command = ["make", "--no-print-directory", "-n", "test"]
    result = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    setup = next(i for i, line in enumerate(lines) if ".ci/setup-system" in line)
    pytest_run = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert setup < pytest_run
    assert setup == 0  # before the venv install: a missing package fails in seconds


def test_ci_runs_exactly_make_test() -> None:
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "exec make test"
    assert not any("apt-get" in line for line in commands)
