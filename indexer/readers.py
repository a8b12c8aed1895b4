"""Sources of items: image folders, product catalogs (JSONL/CSV/Parquet), text corpora.

Each reader yields `SourceRecord`s, and `RowError`s for rows it cannot use: a bad row is
reported, never fatal."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import InvalidInputError, NewItem

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
TEXT_CANDIDATES = ("text", "title", "caption", "description", "name")
IMAGE_CANDIDATES = ("image", "image_path", "filepath", "file", "path")


@dataclass(frozen=True)
class ColumnMap:
    """Which catalog columns hold the id, the text (joined if several) and the image."""

    id: str = "id"
    text: tuple[str, ...] = ()  # empty: the first of TEXT_CANDIDATES present in a row
    image: str | None = None  # None: the first of IMAGE_CANDIDATES present in a row


@dataclass(frozen=True)
class SourceRecord:
    item: NewItem
    location: str  # "catalog.jsonl:12", "photos/a.jpg"


@dataclass(frozen=True)
class RowError:
    location: str
    external_id: str | None
    reason: str


Row = SourceRecord | RowError


@dataclass
class _RowParser:
    columns: ColumnMap
    base_dir: Path
    seen: set[str] = field(default_factory=set)

    def parse(self, row: dict[str, Any], location: str) -> Row:
        raw_id = row.get(self.columns.id)
        if raw_id is None or str(raw_id).strip() == "":
            return RowError(location, None, f"missing id column {self.columns.id!r}")
        external_id = str(raw_id).strip()
        if external_id in self.seen:
            return RowError(location, external_id, "duplicate id in source")
        self.seen.add(external_id)
        text_cols = self.columns.text or next(([c] for c in TEXT_CANDIDATES if c in row), [])
        texts = [str(row[c]).strip() for c in text_cols if row.get(c) not in (None, "")]
        image_col = self.columns.image or next((c for c in IMAGE_CANDIDATES if c in row), None)
        image_value = row.get(image_col) if image_col else None
        image = self._image_path(image_value) if image_value not in (None, "") else None
        used = {self.columns.id, *text_cols, image_col}
        attributes = {k: _attribute(v) for k, v in row.items()
                      if k not in used and v not in ("", None)}
        item = NewItem(external_id, " ".join(texts) or None, image, attributes)
        return SourceRecord(item, location)

    def _image_path(self, value: Any) -> Path:
        path = Path(str(value))
        return path if path.is_absolute() else self.base_dir / path


def _attribute(value: Any) -> Any:
    """CSV cells are strings: numbers become numbers so range filters work."""
    if not isinstance(value, str):
        return value
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def read_jsonl(path: Path, columns: ColumnMap) -> Iterator[Row]:
    parser = _RowParser(columns, path.parent)
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            location = f"{path.name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RowError(location, None, f"malformed JSON: {exc.msg}")
                continue
            if not isinstance(row, dict):
                yield RowError(location, None, "row is not a JSON object")
                continue
            yield parser.parse(row, location)


def read_csv(path: Path, columns: ColumnMap) -> Iterator[Row]:
    parser = _RowParser(columns, path.parent)
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        for number, row in enumerate(reader, 2):
            location = f"{path.name}:{number}"
            if None in row:  # more cells than header columns
                yield RowError(location, None, "row has more cells than the header")
                continue
            yield parser.parse(row, location)


def read_parquet(path: Path, columns: ColumnMap) -> Iterator[Row]:
    import pyarrow.parquet as pq

    parser = _RowParser(columns, path.parent)
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield parser.parse(row, f"{path.name}:row {number}")


def read_text_corpus(path: Path) -> Iterator[Row]:
    """One text per line; its id is a hash of the text, so edits elsewhere never shift ids."""
    seen: set[str] = set()
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            text = line.strip()
            if not text:
                continue
            external_id = hashlib.sha256(text.encode()).hexdigest()[:16]
            if external_id in seen:
                yield RowError(f"{path.name}:{number}", external_id, "duplicate line")
                continue
            seen.add(external_id)
            yield SourceRecord(NewItem(external_id, text), f"{path.name}:{number}")


def read_folder(root: Path) -> Iterator[Row]:
    """Images below `root` (sorted); id = path relative to root; caption from a sidecar
    `<stem>.txt` or `<stem>.json` (keys caption/text/title; other keys are attributes)."""
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        external_id = path.relative_to(root).as_posix()
        try:
            text, attributes = _sidecar(path)
        except (OSError, ValueError) as exc:
            yield RowError(external_id, external_id, f"unreadable sidecar: {exc}")
            continue
        yield SourceRecord(NewItem(external_id, text, path, attributes), external_id)


def _sidecar(image: Path) -> tuple[str | None, dict[str, Any]]:
    txt, meta = image.with_suffix(".txt"), image.with_suffix(".json")
    if meta.is_file():
        data = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{meta.name} is not a JSON object")
        text = next((str(data.pop(k)) for k in ("caption", "text", "title") if k in data), None)
        return text, data
    if txt.is_file():
        return txt.read_text(encoding="utf-8", errors="replace").strip() or None, {}
    return None, {}


def open_source(source: Path, columns: ColumnMap = ColumnMap()) -> Iterator[Row]:
    """Pick the reader from what `source` is."""
    source = Path(source)
    if source.is_dir():
        return read_folder(source)
    if not source.is_file():
        raise InvalidInputError(f"source {source} does not exist")
    readers = {".jsonl": read_jsonl, ".ndjson": read_jsonl, ".csv": read_csv,
               ".parquet": read_parquet}
    suffix = source.suffix.lower()
    if suffix in readers:
        return readers[suffix](source, columns)
    if suffix == ".txt":
        return read_text_corpus(source)
    raise InvalidInputError(f"unsupported source {source.name}: use a folder, .jsonl, .csv, "
                            ".parquet or .txt")
