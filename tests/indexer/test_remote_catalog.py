"""Catalogs whose images are URLs: the decode stage fetches them (search/remote.py), one bad
URL is one failure, the rest of the batch is indexed; copy mode stores the bytes, reference
mode the URL and the content hash. Network: a loopback server, allowed explicitly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.cli import main
from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from search import MediaMode, RemotePolicy, is_reference
from search.engine import Searcher
from search.query import QueryPart, SearchQuery, Target
from tests.indexer.conftest import jpeg_bytes
from tests.utils.image_server import BIG, ImageServer, image_server

GOOD = 12  # good URL rows; bad rows below are one failure each
# 2 s: a loaded test machine still fetches 1 KB from loopback in time; /slow takes 5 s
LOOPBACK = RemotePolicy(allow_private=True, timeout_s=2.0, max_bytes=BIG - 1000, threads=4)


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server() as httpd:
        httpd.images.update({f"/p/{i}.jpg": jpeg_bytes(500 + i, size=32) for i in range(GOOD)})
        yield httpd


def write_url_catalog(root: Path, base: str) -> Path:
    rows = [{"id": f"u{i}", "title": f"photo {i}", "image": f"{base}/p/{i}.jpg"}
            for i in range(GOOD)]
    rows += [
        {"id": "missing", "title": "x", "image": f"{base}/p/none.jpg"},        # 404
        {"id": "big", "title": "x", "image": f"{base}/big"},                   # over the limit
        {"id": "slow", "title": "x", "image": f"{base}/slow"},                 # timeout
        {"id": "bounce", "title": "x", "image": f"{base}/redirect-out"},       # to .invalid
        {"id": "nowhere", "title": "x", "image": "https://img.nowhere.invalid/a.jpg"},
        {"id": "ftp", "title": "x", "image": "ftp://files.invalid/a.jpg"},
    ]
    root.mkdir(parents=True, exist_ok=True)
    path = root / "catalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def failures(summary) -> dict[str, tuple[str, str]]:
    lines = Path(summary.report).read_text().splitlines() if summary.report else []
    return {f["external_id"]: (f["stage"], f["reason"]) for f in map(json.loads, lines)}


def refs(ws, name: str) -> dict[str, str]:
    collection = ws.collection(name)
    return {item.external_id: ws.catalog.get_item(collection.info.id,
                                                  item.external_id).image_ref
            for batch in ws.catalog.iter_items(collection.info.id) for item in batch}


@pytest.mark.parametrize("workers", [0, 2])
def test_urls_are_fetched_bad_ones_fail_alone(ws, tmp_path, server, workers):
    source = write_url_catalog(tmp_path / "src", server.base)
    options = IndexOptions(workers=workers, chunk_size=8, progress=False, remote=LOOPBACK)
    summary = index_source(ws, "urls", source, options=options)
    assert (summary.indexed, summary.failed) == (GOOD, 6)
    failed = failures(summary)
    assert {k: v[0] for k, v in failed.items()} == dict.fromkeys(
        ["missing", "big", "slow", "bounce", "nowhere", "ftp"], "fetch")
    assert "404" in failed["missing"][1] and "limit" in failed["big"][1]
    assert "longer than" in failed["slow"][1] and "refused.invalid" in failed["bounce"][1]
    assert "'ftp' is not allowed" in failed["ftp"][1]
    stored = refs(ws, "urls")
    for i in range(GOOD):  # copy mode: the fetched bytes are in the store
        assert not is_reference(stored[f"u{i}"])
        assert ws.media.read(stored[f"u{i}"]) == server.images[f"/p/{i}.jpg"]
    # the fetched image is what was embedded: querying with its bytes finds it first
    searcher = Searcher(ws)
    for i in (0, GOOD - 1):
        query = SearchQuery("urls", (QueryPart(image=server.images[f"/p/{i}.jpg"]),),
                            target=Target.IMAGE, k=1)
        hit = searcher.search(query).hits[0]
        assert hit.external_id == f"u{i}" and hit.score == pytest.approx(1.0, abs=2e-3)


def test_loopback_urls_are_refused_by_default_before_any_request(ws, tmp_path, server):
    source = write_url_catalog(tmp_path / "src", server.base)
    summary = index_source(ws, "urls", source, options=IndexOptions(workers=0,
                                                                    progress=False))
    assert summary.indexed == 0 and summary.failed == GOOD + 6
    reasons = failures(summary)
    assert all("non-public address" in reasons[f"u{i}"][1] for i in range(GOOD))
    assert server.connections == 0 and server.requests == []


def test_reference_mode_stores_the_url_and_catches_changed_bytes(ws, tmp_path, server):
    source = write_url_catalog(tmp_path / "src", server.base)
    options = IndexOptions(workers=0, progress=False, media=MediaMode.REFERENCE,
                           remote=LOOPBACK)
    assert index_source(ws, "r", source, options=options).indexed == GOOD
    stored = refs(ws, "r")
    assert {stored[f"u{i}"] for i in range(GOOD)} == {f"{server.base}/p/{i}.jpg"
                                                      for i in range(GOOD)}
    assert not [p for p in (ws.settings.home / "media").rglob("*.jpg")]  # nothing copied
    server.images["/p/3.jpg"] = jpeg_bytes(999, size=32)  # same URL, new bytes
    again = index_source(ws, "r", source, options=options)
    assert (again.updated, again.unchanged, again.indexed) == (1, GOOD - 1, 0)


def test_cli_fetch_flags(tmp_path, tiny_model, server, capsys):
    from search.models.encoder import load_encoder

    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_url_catalog(tmp_path / "src", server.base)
    argv = ["add", str(source), "--model", model, "--no-progress", "--json", "--home",
            str(tmp_path / "home"), "--workers", "0", "-c", "cli", "--fetch-timeout", "2"]
    assert main([*argv, "--fetch-hosts", "cdn.invalid"]) == 1  # nothing indexable
    assert json.loads(capsys.readouterr().out)["indexed"] == 0
    assert server.requests == []
    assert main([*argv, "--fetch-allow-private", "--fetch-threads", "3",
                 "--media", "reference"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["indexed"] == GOOD
    assert summary["failed"] == 6
