"""Sources of items: image folders, product catalogs (JSONL/CSV/Parquet), text corpora.

Each reader yields `SourceRecord`s, and `RowError`s for rows it cannot use: a bad row is
reported (location, id when known, reason), never fatal. Lines are read in bounded pieces
and every limit is explicit (indexer/rows.py); a source that breaks off midway (an I/O
error, a corrupt Parquet footer) ends with one RowError saying where."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indexer.rows import (
    ColumnMap,
    Row,
    RowError,
    RowLimits,
    RowParser,
    RowRejected,
    SourceOptions,
    SourceRecord,
    bounded_lines,
    check_id,
    clean_attributes,
    contained_path,
    decode_line,
    load_json,
)
from search import InvalidInputError, NewItem, XmodalError, read_regular_file

__all__ = ["IMAGE_SUFFIXES", "ColumnMap", "Row", "RowError", "RowLimits", "SourceOptions",
           "SourceRecord", "open_source", "read_csv", "read_folder", "read_jsonl",
           "read_parquet", "read_text_corpus"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
_PARQUET_BATCH = 1024
DEFAULT_OPTIONS, DEFAULT_COLUMNS = SourceOptions(), ColumnMap()


def read_jsonl(path: Path, columns: ColumnMap, options: SourceOptions = DEFAULT_OPTIONS
               ) -> Iterator[Row]:
    parser = RowParser(columns, path.parent, options)
    with _source_errors(path) as guard, path.open("rb") as handle:
        for number, line in bounded_lines(handle, options.limits.max_line_bytes):
            guard.at = number
            location = f"{path.name}:{number}"
            try:
                text = decode_line(line, options.limits)
                if not text.strip():
                    continue
                row = load_json(text, options.limits)
            except RowRejected as exc:
                yield RowError(location, None, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - whatever the parser hits, one row
                yield RowError(location, None, f"unreadable row: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(row, dict):
                yield RowError(location, None, "row is not a JSON object")
                continue
            yield parser.parse(row, location)
    yield from guard.errors


def read_csv(path: Path, columns: ColumnMap, options: SourceOptions = DEFAULT_OPTIONS
             ) -> Iterator[Row]:
    limits = options.limits
    parser = RowParser(columns, path.parent, options)
    with _source_errors(path) as guard, path.open("rb") as handle:
        lines = _CsvLines(handle, limits)
        reader = csv.DictReader(lines)
        header_error = _read_header(reader, limits.max_field_chars)
        yield from lines.drain(path.name)
        if header_error:
            yield RowError(f"{path.name}:1", None, f"unreadable header: {header_error}")
            return
        while True:
            lines.record_start = None
            guard.at = lines.consumed + 1
            row, error = _next_csv_row(reader, limits.max_field_chars)
            start = lines.record_start or lines.consumed  # csv skips blank lines silently
            yield from lines.drain(path.name)
            if error is not None:
                yield RowError(f"{path.name}:{start}", None, error)
            elif row is None:
                break
            else:
                yield _csv_row(parser, row, f"{path.name}:{start}", limits)
    yield from guard.errors


def _read_header(reader: csv.DictReader, max_field: int) -> str | None:
    previous = csv.field_size_limit(max_field + 1)
    try:
        reader.fieldnames  # noqa: B018 - reads the header line now, not at the first row
    except csv.Error as exc:
        return str(exc)
    finally:
        csv.field_size_limit(previous)
    return None


def _next_csv_row(reader: csv.DictReader, max_field: int) -> tuple[dict | None, str | None]:
    """(row, None), (None, reason) or (None, None) at the end. csv's field limit (a global,
    131,072 by default) is ours while it parses, so a field runs over it at our limit, not
    csv's (and an unclosed quote stops there); csv then resynchronises on the next line,
    so one bad record costs one failure."""
    previous = csv.field_size_limit(max_field + 1)
    try:
        return next(reader), None
    except StopIteration:
        return None, None
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            return None, f"a field is longer than {max_field:,} characters (unclosed quote?)"
        return None, f"malformed CSV: {exc}"
    finally:
        csv.field_size_limit(previous)


class _CsvLines:
    """Text lines for csv, from bounded binary lines; a line that is too long or not
    UTF-8 becomes an empty line (csv skips it) and a RowError of its own."""

    def __init__(self, handle: Any, limits: RowLimits) -> None:
        self.lines = bounded_lines(handle, limits.max_line_bytes)
        self.limits, self.pending = limits, []
        self.consumed = 0  # physical lines handed to csv so far
        self.record_start: int | None = None  # first non-blank line of the current record

    def __iter__(self) -> Iterator[str]:
        for number, line in self.lines:
            self.consumed = number
            try:
                text = decode_line(line, self.limits)
            except RowRejected as exc:
                self.pending.append((number, str(exc)))
                yield "\n"
                continue
            if self.record_start is None and text.strip("\r\n"):
                self.record_start = number
            yield text

    def drain(self, name: str) -> Iterator[RowError]:
        while self.pending:
            number, reason = self.pending.pop(0)
            yield RowError(f"{name}:{number}", None, reason)


def _csv_row(parser: RowParser, row: dict[str | None, Any], location: str,
             limits: RowLimits) -> Row:
    if None in row:  # more cells than header columns
        return RowError(location, None, "row has more cells than the header")
    for key, value in row.items():
        if isinstance(value, str) and len(value) > limits.max_field_chars:
            return RowError(location, None, f"field {str(key)[:64]!r} is {len(value):,} "
                                            f"characters, limit {limits.max_field_chars:,}")
    return parser.parse(row, location)


def read_parquet(path: Path, columns: ColumnMap, options: SourceOptions = DEFAULT_OPTIONS
                 ) -> Iterator[Row]:
    import pyarrow.parquet as pq

    parser = RowParser(columns, path.parent, options)
    try:
        # a Path, or a file of another filesystem (indexer/ray_source.py) opened as a handle
        file = pq.ParquetFile(path if isinstance(path, Path) else path.open("rb"))
        groups = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types on a bad footer
        yield RowError(path.name, None, f"unreadable Parquet file: {exc}")
        return
    first = 1
    for group, size in enumerate(groups):
        done = 0
        try:
            for batch in file.iter_batches(_PARQUET_BATCH, row_groups=[group]):
                for offset, row in enumerate(_batch_rows(batch)):
                    location = f"{path.name}:row {first + done + offset}"
                    yield (RowError(location, None, row.reason) if isinstance(row, RowError)
                           else parser.parse(row, location))
                done += batch.num_rows
        except Exception as exc:  # noqa: BLE001 - a corrupt page loses its group, not the file
            span = f"rows {first + done}-{first + size - 1}"
            yield RowError(f"{path.name}:{span}", None,
                           f"unreadable row group {group}: {type(exc).__name__}: {exc}")
        first += size


def _batch_rows(batch: Any) -> list[dict[str, Any] | RowError]:
    """Rows of a record batch; when the batch as a whole will not convert (a timestamp
    out of Python's range...), each row on its own, so only the bad ones fail."""
    try:
        return batch.to_pylist()
    except Exception:  # noqa: BLE001 - fall back to the slow, per-cell path
        pass
    rows: list[dict[str, Any] | RowError] = []
    names = batch.schema.names
    for index in range(batch.num_rows):
        try:
            rows.append({n: batch.column(i)[index].as_py() for i, n in enumerate(names)})
        except Exception as exc:  # noqa: BLE001
            rows.append(RowError("", None, f"unreadable value: {type(exc).__name__}: {exc}"))
    return rows


def read_text_corpus(path: Path, options: SourceOptions = DEFAULT_OPTIONS) -> Iterator[Row]:
    """One text per line; its id is a hash of the text, so edits elsewhere never shift ids."""
    seen: set[str] = set()
    limits = options.limits
    with _source_errors(path) as guard, path.open("rb") as handle:
        for number, line in bounded_lines(handle, limits.max_line_bytes):
            guard.at, location = number, f"{path.name}:{number}"
            try:
                text = decode_line(line, limits).strip()
                if len(text) > limits.max_text_chars:
                    raise RowRejected(f"text is {len(text):,} characters, limit "
                                      f"{limits.max_text_chars:,}")
            except RowRejected as exc:
                yield RowError(location, None, str(exc))
                continue
            if not text:
                continue
            external_id = hashlib.sha256(text.encode()).hexdigest()[:16]
            if external_id in seen:
                yield RowError(location, external_id, "duplicate line")
                continue
            seen.add(external_id)
            yield SourceRecord(NewItem(external_id, text), location)
    yield from guard.errors


def read_folder(root: Path, options: SourceOptions = DEFAULT_OPTIONS) -> Iterator[Row]:
    """Images below `root` (sorted); id = path relative to root; caption from a sidecar
    `<stem>.txt` or `<stem>.json` (keys caption/text/title; other keys are attributes)."""
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        external_id = path.relative_to(root).as_posix()
        try:
            check_id(external_id, options.limits)
            image = contained_path(path, root, options)
            text, attributes = _sidecar(path, root, options)
        except (RowRejected, XmodalError, OSError) as exc:
            label = _printable(external_id)
            yield RowError(label, label, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - one odd file is one failure
            label = _printable(external_id)
            yield RowError(label, label, f"unreadable sidecar: {type(exc).__name__}: {exc}")
            continue
        yield SourceRecord(NewItem(external_id, text, image, attributes), external_id)


def _printable(external_id: str) -> str:
    """An id for the failure report, which must itself be storable."""
    return external_id.encode("utf-8", "backslashreplace").decode("utf-8")


def _sidecar(image: Path, root: Path, options: SourceOptions
             ) -> tuple[str | None, dict[str, Any]]:
    """Caption and attributes; a sidecar obeys the image's rules (regular file, inside the
    root, bounded read) and a row's limits."""
    limits = options.limits
    for sidecar in (image.with_suffix(".json"), image.with_suffix(".txt")):
        if not sidecar.is_symlink() and not sidecar.exists():
            continue
        try:
            raw = read_regular_file(contained_path(sidecar, root, options),
                                    limits.max_sidecar_bytes)
        except (XmodalError, RowRejected) as exc:
            raise RowRejected(f"sidecar {sidecar.name}: {exc}") from None
        text = decode_line(raw, limits)
        if sidecar.suffix == ".txt":
            if len(text.strip()) > limits.max_text_chars:
                raise RowRejected(f"sidecar {sidecar.name}: text is {len(text.strip()):,} "
                                  f"characters, limit {limits.max_text_chars:,}")
            return text.strip() or None, {}
        data = load_json(text, limits)
        if not isinstance(data, dict):
            raise RowRejected(f"sidecar {sidecar.name} is not a JSON object")
        caption = next((str(data.pop(k)) for k in ("caption", "text", "title") if k in data),
                       None)
        return caption, clean_attributes(data, limits)
    return None, {}


class _SourceGuard:
    """Where a reader is, so that an I/O error midway is reported, not raised."""

    def __init__(self) -> None:
        self.at: int = 0
        self.errors: list[RowError] = []


class _source_errors:  # noqa: N801 - used as a context manager, reads like one
    def __init__(self, path: Path) -> None:
        self.path, self.guard = path, _SourceGuard()

    def __enter__(self) -> _SourceGuard:
        return self.guard

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, OSError):
            self.guard.errors.append(RowError(
                f"{self.path.name}:{self.guard.at}", None,
                f"source unreadable from here on: {exc.strerror or exc}"))
            return True
        return False


def open_source(source: Path, columns: ColumnMap = DEFAULT_COLUMNS,
                options: SourceOptions = DEFAULT_OPTIONS) -> Iterator[Row]:
    """Pick the reader from what `source` is."""
    source = Path(source)
    if source.is_dir():
        return read_folder(source, options)
    if not source.is_file():
        raise InvalidInputError(f"source {source} does not exist or is not a regular file")
    readers = {".jsonl": read_jsonl, ".ndjson": read_jsonl, ".csv": read_csv,
               ".parquet": read_parquet}
    suffix = source.suffix.lower()
    if suffix in readers:
        return readers[suffix](source, columns, options)
    if suffix == ".txt":
        return read_text_corpus(source, options)
    raise InvalidInputError(f"unsupported source {source.name}: use a folder, .jsonl, .csv, "
                            ".parquet or .txt")

