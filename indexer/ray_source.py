"""The source of a Ray indexing job, read by Ray Data on a worker, never by the driver.

A source is a local path or a URI that pyarrow names a filesystem for (`file://`, `s3://`,
`gs://`, `hdfs://`...). The read task runs the local engine's own readers
(indexer/readers.py) over it, so per-row limits, failures (location, id, reason) and
duplicate detection are exactly the local engine's; only the file handle differs.
A catalog is one file, read by one task (its line numbers and duplicate ids span the
whole file); the work that costs (decode, encode) fans out in the later stages."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from indexer.readers import (
    IMAGE_SUFFIXES,
    ColumnMap,
    Row,
    RowError,
    SourceOptions,
    SourceRecord,
    open_source,
)
from search import InvalidInputError, NewItem

ROW_SCHEMA = pa.schema([
    ("seq", pa.int64()),  # the row's place in the source: commit order, shard names
    ("location", pa.string()),
    ("external_id", pa.string()),
    ("text", pa.string()),
    ("image", pa.string()),  # a local path, or a path on the source's filesystem
    ("attributes", pa.string()),  # JSON; rows.clean_attributes made the values JSON-safe
    ("error", pa.string()),  # set for a row the reader refused (a RowError)
])


@dataclass(frozen=True)
class SourceSpec:
    """Where the source is and how to read it: picklable, sent to the read task."""

    filesystem: pafs.FileSystem
    path: str
    columns: ColumnMap
    options: SourceOptions

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def label(self) -> str:
        return self.path if self.is_local else f"{self.filesystem.type_name}://{self.path}"


def resolve_source(source: str | Path, columns: ColumnMap, options: SourceOptions
                   ) -> SourceSpec:
    """A local path, or any URI pyarrow has a filesystem for; checked to exist."""
    text = str(source)
    try:
        if "://" in text:
            filesystem, path = pafs.FileSystem.from_uri(text)
        else:
            filesystem, path = pafs.LocalFileSystem(), os.path.abspath(text)
        info = filesystem.get_file_info(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot open source {text}: {exc}") from None
    if info.type == pafs.FileType.NotFound:
        raise InvalidInputError(f"source {text} does not exist")
    return SourceSpec(filesystem, path, columns, options)


class _FsFile:
    """Enough of a `Path` for the readers, over a file of a pyarrow filesystem: they
    call open("rb"), name, suffix and parent (the base of relative image paths)."""

    def __init__(self, filesystem: pafs.FileSystem, path: str) -> None:
        self.filesystem, self.path = filesystem, path
        pure = PurePosixPath(path)
        self.name, self.suffix, self.parent = pure.name, pure.suffix, Path(str(pure.parent))

    def open(self, mode: str = "rb") -> Any:
        if mode != "rb":
            raise ValueError("read only")
        # buffered: the readers read bounded lines; seekable: Parquet reads its footer
        return io.BufferedReader(self.filesystem.open_input_file(self.path), 1 << 20)


def read_rows(spec: SourceSpec) -> Iterator[Row]:
    """The local engine's rows for `spec`, whatever filesystem it is on."""
    if spec.is_local:
        yield from open_source(Path(spec.path), spec.columns, spec.options)
        return
    info = spec.filesystem.get_file_info(spec.path)
    if info.type == pafs.FileType.Directory:
        yield from _read_fs_folder(spec)
        return
    from indexer import readers

    handle: Any = _FsFile(spec.filesystem, spec.path)
    by_suffix = {".jsonl": readers.read_jsonl, ".ndjson": readers.read_jsonl,
                 ".csv": readers.read_csv, ".parquet": readers.read_parquet}
    suffix = handle.suffix.lower()
    if suffix in by_suffix:
        yield from by_suffix[suffix](handle, spec.columns, spec.options)
    elif suffix == ".txt":
        yield from readers.read_text_corpus(handle, spec.options)
    else:
        raise InvalidInputError(f"unsupported source {handle.name}: use a folder, .jsonl, "
                                ".csv, .parquet or .txt")


def _read_fs_folder(spec: SourceSpec) -> Iterator[Row]:
    """Images below a folder of an object store: id = relative path, no sidecars (a
    listing is all an object store gives cheaply; captions belong in a catalog file)."""
    selector = pafs.FileSelector(spec.path, recursive=True)
    root = spec.path.rstrip("/")
    paths = sorted(i.path for i in spec.filesystem.get_file_info(selector)
                   if i.type == pafs.FileType.File
                   and PurePosixPath(i.path).suffix.lower() in IMAGE_SUFFIXES)
    for path in paths:
        external_id = path[len(root):].lstrip("/")
        yield SourceRecord(NewItem(external_id, None, Path(path)), external_id)


def rows_to_table(rows: list[tuple[int, Row]]) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in ROW_SCHEMA.names}
    for seq, row in rows:
        columns["seq"].append(seq)
        columns["location"].append(row.location)
        if isinstance(row, RowError):
            values = (row.external_id, None, None, None, row.reason)
        else:
            item = row.item
            image = None if item.image is None else os.fspath(item.image)
            values = (item.external_id, item.text, image, json.dumps(item.attributes), None)
        for name, value in zip(("external_id", "text", "image", "attributes", "error"),
                               values, strict=True):
            columns[name].append(value)
    return pa.table(columns, schema=ROW_SCHEMA)


def table_rows(table: pa.Table) -> Iterator[tuple[int, Row]]:
    for r in table.to_pylist():
        if r["error"] is not None:
            yield r["seq"], RowError(r["location"], r["external_id"], r["error"])
        else:
            image = Path(r["image"]) if r["image"] is not None else None
            item = NewItem(r["external_id"], r["text"], image, json.loads(r["attributes"]))
            yield r["seq"], SourceRecord(item, r["location"])


def read_blocks(spec: SourceSpec, rows_per_block: int) -> Iterator[pa.Table]:
    """The source as Arrow blocks of `rows_per_block` rows (the read task's body)."""
    block: list[tuple[int, Row]] = []
    for seq, row in enumerate(read_rows(spec)):
        block.append((seq, row))
        if len(block) >= rows_per_block:
            yield rows_to_table(block)
            block = []
    if block:
        yield rows_to_table(block)


def source_datasource(spec: SourceSpec, rows_per_block: int) -> Any:
    """A Ray Data datasource of one read task that streams `read_blocks`."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class SourceDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                                     input_files=(spec.label,))
            return [ReadTask(lambda: read_blocks(spec, rows_per_block), metadata,
                             schema=ROW_SCHEMA)]

    return SourceDatasource()
