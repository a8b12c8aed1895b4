"""Hostile inputs through `index_source`: a folder, JSONL, CSV and Parquet catalogs.

Required of every run: no exception out of the job (crash), no hang, every input either
indexed or reported with a reason (nothing vanishes), every VALID input indexed and no
INVALID one."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import resource
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from tests.reliability.hostile import (
    Expect,
    RowCase,
    csv_trap_lines,
    image_cases,
    json_line,
    jsonl_raw_cases,
    make_special_files,
    row_cases,
)

HANG_S = 240  # one source's whole job; a hang is a job that outlives this
MAX_GROWTH_MIB = 1024


def _run_job(ws, name: str, source: Path, workers: int) -> tuple[object, str | None, bool]:
    """(summary, crash message, hung) - the job runs in a thread so a hang is measured."""
    outcome: dict = {}

    def job() -> None:
        try:
            outcome["summary"] = index_source(ws, name, source, options=IndexOptions(
                workers=workers, progress=False, batch_size=32))
        except BaseException as exc:  # noqa: BLE001 - a crash is what we count
            outcome["crash"] = f"{type(exc).__name__}: {exc}"

    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    thread.join(HANG_S)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    # bounded reads: /dev/zero, 9 MiB lines and 2 MB cells must not raise the peak much
    assert grown_mib < MAX_GROWTH_MIB, f"{name}: peak memory grew by {grown_mib:,.0f} MiB"
    return outcome.get("summary"), outcome.get("crash"), thread.is_alive()


def _failures(summary) -> list[dict]:
    if not summary.report:
        return []
    return [json.loads(line) for line in Path(summary.report).read_text().splitlines()]


def _check(ws, name: str, summary, crash, hung, expected: dict[str, tuple[Expect, str]],
           report, check: str) -> None:
    """expected: key -> (expectation, location). A key is the item id, or the location
    for rows without a usable id."""
    report.add("inputs", check, tried=len(expected), crashed=int(bool(crash)),
               hung=int(hung), **({} if summary is None else {
                   "rejected": summary.failed,
                   "accepted": summary.indexed + summary.updated + summary.unchanged}))
    assert not hung, f"{check}: the job hung"
    assert crash is None, f"{check}: the job crashed: {crash}"
    collection = ws.collection(name)
    indexed = set(ws.catalog.external_ids(collection.info.id))
    failures = _failures(summary)
    failed_ids = {f["external_id"] for f in failures if f["external_id"]}
    failed_at = {f["reason"].split(": ")[0] for f in failures}
    assert all(f["reason"] for f in failures)
    lost, wrong = [], []
    for key, (expect, location) in expected.items():
        was_indexed = key in indexed
        was_reported = location in failed_at or key in failed_ids
        if expect is Expect.VALID and not was_indexed:
            wrong.append((key[:60], "valid but not indexed"))
        if expect is Expect.INVALID and not was_reported:
            wrong.append((key[:60], "invalid but not reported"))
        if not (was_indexed or was_reported):
            lost.append(key[:60])
    assert not lost, f"{check}: inputs neither indexed nor reported: {lost}"
    assert not wrong, f"{check}: {wrong}"


@pytest.fixture
def hostile_tree(tmp_path: Path):
    """tmp/src/images/ holds every image case and the special files."""
    root = tmp_path / "src"
    images = root / "images"
    images.mkdir(parents=True)
    sockets: list = []

    def build(scale: int) -> dict[str, Expect]:
        names: dict[str, Expect] = {}
        for case in image_cases(seed=scale, scale=scale):
            (images / case.name).write_bytes(case.data)
            names[case.name] = case.expect
        special, opened = make_special_files(images, tmp_path / "outside")
        sockets.extend(opened)
        names.update(dict.fromkeys(special, Expect.INVALID))
        return names

    yield root, build
    for sock in sockets:
        sock.close()


def _write_jsonl(path: Path, cases: list[RowCase]) -> dict[str, tuple[Expect, str]]:
    expected = {}
    with path.open("wb") as out:
        for number, case in enumerate(cases, 1):
            out.write(json_line(case) + b"\n")
            location = f"{path.name}:{number}"
            expected[_key(case, location, expected)] = (case.expect, location)
    return expected


def _key(case: RowCase, location: str, expected: dict) -> str:
    """Duplicate ids and rows without one are known by their location."""
    if case.external_id is None or case.external_id in expected:
        return location
    return case.external_id


COLUMNS = ["id", "title", "price", "category", "image"]


def _write_csv(path: Path, cases: list[RowCase], traps: list[RowCase]
               ) -> dict[str, tuple[Expect, str]]:
    expected, line = {}, 2
    with path.open("wb") as out:
        out.write(b",".join(c.encode() for c in COLUMNS) + b"\n")
        for case in [*cases, *traps]:
            data = case.raw if case.row is None else _csv_line(case.row)
            out.write(data)
            location = f"{path.name}:{line}"
            expected[_key(case, location, expected)] = (case.expect, location)
            line += data.count(b"\n")
    return expected


def _csv_line(row: dict) -> bytes:
    buffer = io.StringIO()
    extra = [str(v) for k, v in row.items() if k not in COLUMNS]  # spill: too many cells
    csv.writer(buffer).writerow([row.get(c, "") for c in COLUMNS] + extra)
    return buffer.getvalue().replace("\r\n", "\n").encode()


def _write_parquet(path: Path, cases: list[RowCase]) -> dict[str, tuple[Expect, str]]:
    rows = [dict(c.row) for c in cases]
    rows.append({"id": "pq-binary", "title": "t", "raw": b"\x00\x01"})
    cases = [*cases, RowCase("pq-binary", rows[-1], expect=Expect.INVALID)]
    names = sorted({k for r in rows for k in r})
    table = pa.table({n: [r.get(n) for r in rows] for n in names})
    pq.write_table(table, path, row_group_size=16)
    expected = {}
    for number, case in enumerate(cases, 1):
        location = f"{path.name}:row {number}"
        expected[_key(case, location, expected)] = (case.expect, location)
    return expected


def _run_all(ws, hostile_tree, report, scale: int, workers: int, label: str) -> int:
    root, build = hostile_tree
    names = build(scale)
    rng = random.Random(scale)
    folder = {name: (expect, name) for name, expect in names.items()}
    # a catalog row names the image alone: the sidecar traps next to it are not read
    names.update({n: Expect.VALID for n in names if n.startswith("caption-")})
    undecodable = os.fsdecode(b"undecodable-\xff.png")  # a name no database can store
    (root / "images" / undecodable).write_bytes(image_cases()[0].data)
    printable = "undecodable-\\udcff.png"
    folder[printable] = (Expect.INVALID, printable)
    jsonl_cases = row_cases(rng, scale, names, "j-")
    for raw in jsonl_raw_cases("j-"):
        jsonl_cases.insert(rng.randrange(1, len(jsonl_cases)), raw)
    sources = {
        "folder": (root / "images", folder),
        "jsonl": (root / "catalog.jsonl", None),
        "csv": (root / "catalog.csv", None),
        "parquet": (root / "catalog.parquet", None),
    }
    expected = {
        "folder": folder,
        "jsonl": _write_jsonl(root / "catalog.jsonl", jsonl_cases),
        "csv": _write_csv(root / "catalog.csv", row_cases(rng, scale, names, "c-"),
                          csv_trap_lines("c-")),
        "parquet": _write_parquet(root / "catalog.parquet",
                                  row_cases(rng, scale, names, "p-")),
    }
    tried = 0
    for kind, (source, _) in sources.items():
        summary, crash, hung = _run_job(ws, f"hostile-{kind}", source, workers)
        _check(ws, f"hostile-{kind}", summary, crash, hung, expected[kind], report,
               f"indexer {kind} ({label})")
        tried += len(expected[kind])
    return tried


@pytest.mark.timeout(1200)
def test_hostile_sources_short(ws, hostile_tree, reliability_report):
    tried = _run_all(ws, hostile_tree, reliability_report, scale=1, workers=0, label="short")
    assert tried >= 150


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_hostile_sources_full(ws, hostile_tree, reliability_report):
    tried = _run_all(ws, hostile_tree, reliability_report, scale=8, workers=2, label="full")
    assert tried >= 650  # with the API's ~730, well over 1,000 inputs in all


@pytest.mark.timeout(600)
def test_cli_refuses_links_out_of_the_folder_unless_asked(tmp_path, tiny_model, capsys):
    from indexer.cli import main
    from search.models.encoder import load_encoder
    from tests.reliability.hostile import valid_images

    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    photos, outside = tmp_path / "photos", tmp_path / "elsewhere"
    photos.mkdir()
    outside.mkdir()
    inside, external = valid_images(1)[:2]
    (photos / inside.name).write_bytes(inside.data)
    (outside / external.name).write_bytes(external.data)
    (photos / "linked.jpg").symlink_to(outside / external.name)
    (photos / "zero.jpg").symlink_to("/dev/zero")
    common = ["--model", model, "--workers", "0", "--no-progress", "--json",
              "--home", str(tmp_path / "home")]
    assert main(["add", str(photos), "-c", "p", *common]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["indexed"], first["failed"]) == (1, 2)
    lines = Path(first["report"]).read_text().splitlines()
    reasons = [json.loads(line)["reason"] for line in lines]
    assert all("leads outside the source root" in r for r in reasons), reasons
    assert main(["add", str(photos), "-c", "p", "--follow-external-symlinks", *common]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["indexed"], second["unchanged"], second["failed"]) == (1, 1, 1)
    report = Path(second["report"]).read_text()
    assert "not a regular file (character device): /dev/zero" in report
