"""The Ray path's reading, without Ray: an object-store-like filesystem (pyarrow's
SubTreeFileSystem, whose paths are relative like s3's "bucket/key") gives exactly the
local readers' rows and failures, and images named by such a catalog are read from it."""

import csv
import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from indexer.distributed import _fetch_remote_image
from indexer.ray_source import (
    ROW_SCHEMA,
    SourceSpec,
    read_blocks,
    read_rows,
    resolve_source,
    table_rows,
)
from indexer.readers import ColumnMap, RowError, SourceOptions, open_source
from search import InvalidInputError, ItemFailure, NewItem
from tests.indexer.conftest import write_catalog


def _remote(root: Path, name: str) -> SourceSpec:
    fs = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())
    return SourceSpec(fs, name, ColumnMap(), SourceOptions())


def _as_csv(jsonl: Path) -> Path:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()
            if line.startswith("{\"")]
    path = jsonl.with_suffix(".csv")
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, ["id", "title", "image", "category", "price"])
        writer.writeheader()
        writer.writerows(rows)
    with path.open("a") as out:
        out.write('"unclosed,quote\n')
    return path


def _summary(rows):
    return [(type(r).__name__, r.location, getattr(r, "reason", None),
             getattr(r, "item", None) and (r.item.external_id, r.item.text,
                                           r.item.attributes)) for r in rows]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_object_store_rows_equal_local_rows(tmp_path, suffix):
    jsonl = write_catalog(tmp_path, 12, broken=True)
    source = jsonl if suffix == ".jsonl" else _as_csv(jsonl)
    local = list(open_source(source))
    remote = list(read_rows(_remote(tmp_path, source.name)))
    assert _summary(remote) == _summary(local)
    assert any(isinstance(r, RowError) for r in remote)
    # relative image paths stay relative to the store: read from it at prepare
    images = [r.item.image for r in remote if not isinstance(r, RowError) and r.item.image]
    assert images and all(not p.is_absolute() for p in images)


def test_blocks_round_trip_rows(tmp_path):
    source = write_catalog(tmp_path, 10, broken=True)
    spec = resolve_source(source.as_uri(), ColumnMap(), SourceOptions())
    blocks = list(read_blocks(spec, rows_per_block=4))
    assert all(b.schema == ROW_SCHEMA and b.num_rows <= 4 for b in blocks)
    back = [row for block in blocks for _, row in table_rows(block)]
    assert _summary(back) == _summary(open_source(source))


def test_remote_image_is_read_from_the_store_and_referenced(tmp_path):
    write_catalog(tmp_path, 3)
    spec = _remote(tmp_path, "catalog.jsonl")
    fetched = _fetch_remote_image(NewItem("a", "t", Path("images/0.png")), spec)
    assert fetched.image == (tmp_path / "images" / "0.png").read_bytes()
    assert fetched.image_source == "subtree://images/0.png"
    missing = _fetch_remote_image(NewItem("b", "t", Path("images/nope.png")), spec)
    assert isinstance(missing, ItemFailure) and missing.external_id == "b"


def test_unknown_source_is_a_typed_error(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        resolve_source(tmp_path / "nope.jsonl", ColumnMap(), SourceOptions())
    with pytest.raises(InvalidInputError, match="cannot open source"):
        resolve_source("nosuchscheme://bucket/x.jsonl", ColumnMap(), SourceOptions())
