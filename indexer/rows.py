"""One source row -> one item or one `RowError`: explicit limits, checked before parsing.

The readers (indexer/readers.py) hand every raw line or row here. Nothing a row contains
may end the job: each limit below gives a reason naming the row, and any exception while
parsing a row becomes that row's failure."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from search import NewItem, is_remote_reference

TEXT_CANDIDATES = ("text", "title", "caption", "description", "name")
IMAGE_CANDIDATES = ("image", "image_path", "filepath", "file", "path")
KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class RowLimits:
    """What one row may cost. Each is a guard against a hostile or broken source, set well
    above any real catalog row; the parser is never trusted to fail gracefully on its own.

    max_line_bytes: one JSONL/CSV/text line (read in bounded pieces, never whole).
    max_json_depth: nesting of one JSON row, checked by a bracket scan before json.loads
        (whose recursion a 100,000-level row would exhaust).
    max_field_chars: one CSV cell (Python's csv default, 131,072, is raised to this).
    max_text_chars: an item's text (the API's hard cap).
    max_id_chars: an external id (items.external_id is VARCHAR(512)).
    max_attributes / max_attribute_bytes: count of attributes, JSON size of each value.
    max_sidecar_bytes: a folder image's .txt/.json caption file.
    """

    max_line_bytes: int = 8 * MiB
    max_json_depth: int = 20
    max_field_chars: int = 1 * MiB
    max_text_chars: int = 100_000
    max_id_chars: int = 512
    max_attributes: int = 256
    max_attribute_bytes: int = 64 * KiB
    max_sidecar_bytes: int = 1 * MiB


@dataclass(frozen=True)
class SourceOptions:
    limits: RowLimits = RowLimits()
    # Symlinks whose target lies outside the source's root are refused unless this is set.
    follow_external_symlinks: bool = False


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


class RowRejected(ValueError):
    """A row breaks a limit; the message is the reason reported for it."""


# ---------------------------------------------------------------------------------------
# Lines and JSON, bounded

def bounded_lines(handle: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; None for a line over max_bytes, which is skipped in
    pieces so that memory stays bounded whatever the file holds."""
    number = 0
    while line := handle.readline(max_bytes + 1):
        number += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := handle.readline(64 * KiB)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, line


def decode_line(line: bytes | None, limits: RowLimits) -> str:
    if line is None:
        raise RowRejected(f"line is longer than {limits.max_line_bytes:,} bytes")
    if b"\0" in line:
        raise RowRejected("line contains a NUL byte")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowRejected(f"invalid UTF-8 at byte {exc.start}") from None


_JSON_SYNTAX = re.compile(r'[\[\]{}"\\]')


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets nest deeper than `limit`, outside strings; iterative, O(len)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot nest deeper than it has brackets: the common, cheap case
    depth, in_string, skip_to = 0, False, -1
    for match in _JSON_SYNTAX.finditer(text):
        char, at = match.group(), match.start()
        if at < skip_to:
            continue  # the character after a backslash inside a string
        if in_string:
            if char == "\\":
                skip_to = at + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise RowRejected(f"non-finite number {name} (JSON has no NaN or Infinity)")


def load_json(text: str, limits: RowLimits) -> Any:
    if json_depth_exceeds(text, limits.max_json_depth):
        raise RowRejected(f"JSON nested deeper than {limits.max_json_depth} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RowRejected(f"malformed JSON: {exc.msg} (column {exc.colno})") from None


# ---------------------------------------------------------------------------------------
# Paths named by a row

def contained_path(path: Path, root: Path, options: SourceOptions) -> Path:
    """`path` with links resolved; refused if a link leads outside `root` (unless allowed)
    or loops. A path that does not exist is returned as is: preparing reports it."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        return path
    except OSError as exc:  # ELOOP: a link loop; EACCES...
        raise RowRejected(f"cannot resolve {path}: {exc.strerror or exc}") from None
    linked = real != Path(os.path.abspath(path))
    real_root = Path(os.path.realpath(root))
    if linked and not real.is_relative_to(real_root) and not options.follow_external_symlinks:
        raise RowRejected(f"symlink {path} leads outside the source root to {real} "
                          "(allow with --follow-external-symlinks)")
    return real


# ---------------------------------------------------------------------------------------
# Rows -> items

@dataclass
class RowParser:
    columns: ColumnMap
    base_dir: Path
    options: SourceOptions = SourceOptions()
    seen: set[str] = field(default_factory=set)

    def parse(self, row: dict[str, Any], location: str) -> Row:
        """Never raises: a row that cannot become an item is a RowError naming why."""
        try:
            return self._parse(row, location)
        except RowRejected as exc:
            return RowError(location, _safe_id(row, self.columns.id), str(exc))
        except Exception as exc:  # noqa: BLE001 - one odd row is one failure, never the job's
            return RowError(location, _safe_id(row, self.columns.id),
                            f"unreadable row: {type(exc).__name__}: {exc}")

    def _parse(self, row: dict[str, Any], location: str) -> Row:
        limits = self.options.limits
        external_id = self._external_id(row)
        if external_id in self.seen:
            return RowError(location, external_id, "duplicate id in source")
        text_cols = self.columns.text or next(([c] for c in TEXT_CANDIDATES if c in row), [])
        text = " ".join(str(row[c]).strip() for c in text_cols
                        if row.get(c) not in (None, "")) or None
        if text is not None:
            _check_string("text", text, limits.max_text_chars)
        image_col = self.columns.image or next((c for c in IMAGE_CANDIDATES if c in row), None)
        image_value = row.get(image_col) if image_col else None
        image = self._image_path(image_value) if image_value not in (None, "") else None
        used = {self.columns.id, *text_cols, image_col}
        attributes = clean_attributes({k: v for k, v in row.items() if k not in used}, limits)
        self.seen.add(external_id)
        return SourceRecord(NewItem(external_id, text, image, attributes), location)

    def _external_id(self, row: dict[str, Any]) -> str:
        raw_id = row.get(self.columns.id)
        if raw_id is None or str(raw_id).strip() == "":
            raise RowRejected(f"missing id column {self.columns.id!r}")
        if isinstance(raw_id, dict | list | bytes | float) and not _integral(raw_id):
            raise RowRejected(f"id must be a string or an integer, not {type(raw_id).__name__}")
        external_id = str(int(raw_id) if isinstance(raw_id, float) else raw_id).strip()
        check_id(external_id, self.options.limits)
        return external_id

    def _image_path(self, value: Any) -> Path | str:
        """A file path (relative to the catalog's folder), or a URL kept as a string: the
        decode stage fetches it (search.remote: allowed schemes, public hosts only)."""
        if not isinstance(value, str):
            raise RowRejected(f"image path must be a string, not {type(value).__name__}")
        _check_string("image path", value, 4096)
        if is_remote_reference(value.strip()):
            return value.strip()
        path = Path(value)
        path = path if path.is_absolute() else self.base_dir / path
        return contained_path(path, self.base_dir, self.options)


def check_id(external_id: str, limits: RowLimits) -> None:
    _check_string("id", external_id, limits.max_id_chars)


def _integral(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer()


def _safe_id(row: Any, column: str) -> str | None:
    value = row.get(column) if isinstance(row, dict) else None
    if not isinstance(value, str) or "\0" in value or not value.strip():
        return None
    return value[:512].encode("utf-8", "backslashreplace").decode("utf-8")


def _check_string(what: str, value: str, max_chars: int) -> None:
    if len(value) > max_chars:
        raise RowRejected(f"{what} is {len(value):,} characters, limit {max_chars:,}")
    if "\0" in value:
        raise RowRejected(f"{what} contains a NUL character")
    _check_unicode(what, value)


def _check_unicode(what: str, value: str) -> None:
    """JSON's "\\ud800" escapes and undecodable file names give lone surrogates, which no
    database driver can store: refused here rather than failing a whole batch's write."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowRejected(f"{what} is not valid Unicode (lone surrogate at {exc.start})"
                          ) from None


def clean_attributes(raw: dict[str, Any], limits: RowLimits) -> dict[str, Any]:
    """Attributes as the JSON column can hold them: numbers from CSV strings, dates as ISO
    text, no NUL, no NaN, bounded count and size. Raises RowRejected naming the key."""
    attributes = {str(k): _attribute(v) for k, v in raw.items() if v not in ("", None)}
    if len(attributes) > limits.max_attributes:
        raise RowRejected(f"{len(attributes):,} attributes, limit {limits.max_attributes}")
    for key, value in attributes.items():
        _check_string("attribute name", key[:257], 256)
        _check_json_value(key, value, limits.max_json_depth)
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > limits.max_attribute_bytes:
            raise RowRejected(f"attribute {key!r} is {size:,} bytes as JSON, limit "
                              f"{limits.max_attribute_bytes:,}")
    return attributes


def _attribute(value: Any) -> Any:
    """CSV cells are strings: numbers become numbers so range filters work; Parquet's dates
    and decimals become what JSON can hold."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if not isinstance(value, str):
        return value
    for cast in (int, float):
        try:
            number = cast(value)
        except ValueError:
            continue
        return number if math.isfinite(number) else value  # "nan" stays text
    return value


def _check_json_value(key: str, value: Any, max_depth: int) -> None:
    """Iterative walk (a recursive one is what a hostile row would exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise RowRejected(f"attribute {key!r} is nested deeper than {max_depth} levels")
        if isinstance(node, str):
            if "\0" in node:
                raise RowRejected(f"attribute {key!r} contains a NUL character")
            _check_unicode(f"attribute {key!r}", node)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if abs(node) >= 2**63:
                raise RowRejected(f"attribute {key!r}: integer does not fit in 64 bits")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise RowRejected(f"attribute {key!r}: non-finite number {node}")
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str) or "\0" in k:
                    raise RowRejected(f"attribute {key!r} has a key that is not plain text")
                _check_unicode(f"attribute {key!r}", k)
                stack.append((v, depth + 1))
        else:
            raise RowRejected(f"attribute {key!r} holds a {type(node).__name__}, not JSON")
