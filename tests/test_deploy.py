"""Deployment files stay in step with the code: extras exist, commands parse."""

import re
import shlex
import tomllib
from pathlib import Path

import yaml

from indexer.cli import build_parser

DEPLOY = Path("deploy")


def test_yaml_files_parse():
    for path in DEPLOY.rglob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text())), path
    assert "services" in yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_dockerfile_extras_exist():
    extras = tomllib.loads(Path("pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    named = re.findall(r"EXTRAS=([\w,]+)", (DEPLOY / "Dockerfile").read_text())
    assert named
    for group in named:
        assert set(group.split(",")) <= set(extras), group


def test_ray_job_entrypoint_is_a_valid_indexer_command():
    job = yaml.safe_load((DEPLOY / "ray" / "index-job.yaml").read_text())
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "xmodal-index"
    args = build_parser().parse_args(argv[1:])
    assert args.engine == "ray" and args.command == "add"
