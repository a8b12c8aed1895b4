"""Staged shards of a Ray indexing job: what encoder workers write, what the commit reads.

A shard is one Parquet file of prepared items (text, media reference, attributes, content
hash, float32 vectors) and failures, written under `XMODAL_HOME/staging/<collection>/
<job key>/` with an atomic rename, so a shard on disk is always whole. The ledger
(`committed.log`, one fsynced line per shard) says which shards the catalog and index
already hold: a job killed anywhere and run again commits every shard exactly once, and
the shards a killed run wrote but never committed are committed, not recomputed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from search import ItemFailure, PreparedItem

SHARD_SCHEMA = pa.schema([
    ("seq", pa.int64()),
    ("external_id", pa.string()),
    ("text", pa.string()),
    ("image_ref", pa.string()),
    ("attributes", pa.string()),  # JSON
    ("content_hash", pa.string()),
    ("has_image", pa.bool_()),
    ("skipped_decode", pa.bool_()),
    ("text_vector", pa.binary()),  # float32 bytes, [dim]
    ("image_vector", pa.binary()),
    ("failure_stage", pa.string()),  # set for a failed row: read / prepare
    ("failure_reason", pa.string()),
])
LEDGER = "committed.log"

Entry = tuple[int, PreparedItem | ItemFailure]  # (seq, outcome)


@dataclass(frozen=True)
class StagingArea:
    """One job's staging folder; the key names the job (source, collection, options),
    so a re-run of the same job finds what a killed run left."""

    root: Path

    @classmethod
    def for_job(cls, home: Path, collection: str, key_parts: dict[str, str]) -> StagingArea:
        key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
        return cls(Path(home) / "staging" / collection / key)

    def shard_path(self, run: int, first_seq: int) -> Path:
        return self.root / f"shard-{run:08d}-{first_seq:012d}.parquet"

    def shards(self) -> list[Path]:
        """Whole shards on disk, in (run, source) order."""
        return sorted(self.root.glob("shard-*.parquet")) if self.root.is_dir() else []

    def committed(self) -> set[str]:
        path = self.root / LEDGER
        if not path.exists():
            return set()
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}

    def mark_committed(self, shard: Path) -> None:
        """Durable before it returns: the next run must not commit `shard` again."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LEDGER).open("a", encoding="utf-8") as handle:
            handle.write(shard.name + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def write_shard(path: Path, entries: list[Entry]) -> None:
    """Write atomically: a shard is either whole on disk or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([shard_row(seq, e) for seq, e in entries],
                                 schema=SHARD_SCHEMA)
    partial = path.with_suffix(".partial")
    pq.write_table(table, partial)
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def shard_row(seq: int, entry: PreparedItem | ItemFailure) -> dict:
    if isinstance(entry, ItemFailure):
        return {"seq": seq, "external_id": entry.external_id, "failure_stage": entry.stage,
                "failure_reason": entry.reason}
    return {"seq": seq, "external_id": entry.external_id, "text": entry.text,
            "image_ref": entry.image_ref, "attributes": json.dumps(entry.attributes),
            "content_hash": entry.content_hash, "has_image": entry.has_image,
            "skipped_decode": entry.skipped_decode,
            "text_vector": _vector_bytes(entry.text_vector),
            "image_vector": _vector_bytes(entry.image_vector)}


def _vector_bytes(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def read_shard(path: Path, batch_rows: int) -> Iterator[list[PreparedItem | ItemFailure]]:
    """The shard's entries in source order, `batch_rows` at a time (bounded memory)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_rows):
        yield [shard_entry(row) for row in batch.to_pylist()]


def shard_entry(row: dict) -> PreparedItem | ItemFailure:
    if row["failure_stage"] is not None:
        return ItemFailure(row["external_id"], row["failure_stage"], row["failure_reason"])
    return PreparedItem(row["external_id"], row["text"], row["image_ref"],
                        json.loads(row["attributes"]), row["content_hash"], row["has_image"],
                        skipped_decode=row["skipped_decode"],
                        text_vector=_vector(row["text_vector"]),
                        image_vector=_vector(row["image_vector"]))


def _vector(data: bytes | None) -> np.ndarray | None:
    return None if data is None else np.frombuffer(data, dtype=np.float32).copy()
