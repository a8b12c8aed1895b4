"""Index versions on disk: `root/<version>/{index.faiss, manifest.json}` is written in a
hidden temp directory, fsynced and renamed into place; `root/CURRENT` names the live
version and is switched atomically, so readers never see a half-written index."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from search.errors import CorruptIndexError, ManifestMismatchError, NoIndexError
from search.vectors.durable import atomic_write_bytes, fsync_dir, storage_error
from search.vectors.index import VectorIndex

INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
METRIC = "inner_product"
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class IndexManifest:
    """What an index version was built from; a loader refuses one that does not match."""

    version: str
    model: str
    pretrained: str | None
    dim: int
    metric: str
    spec: str
    count: int
    store_seq: int
    checksum: str  # sha256 of index.faiss, hex
    created_at: str  # ISO 8601, UTC

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        return cls(**json.loads(text))


def write_version(
    root: Path, index: VectorIndex, *, model: str, pretrained: str | None, store_seq: int
) -> IndexManifest:
    """Write `index` as a new version under `root` and make it CURRENT."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = _new_version_name(root)
    tmp = root / f"{_TEMP_PREFIX}{version}-{uuid.uuid4().hex}"
    try:
        return _write_version(root, tmp, version, index, model=model, pretrained=pretrained,
                              store_seq=store_seq)
    except OSError as exc:  # full or read-only disk: CURRENT still names the old version
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(root / version, exc) from exc


def _write_version(root: Path, tmp: Path, version: str, index: VectorIndex, *, model: str,
                   pretrained: str | None, store_seq: int) -> IndexManifest:
    tmp.mkdir()
    index.write(tmp / INDEX_FILE)
    _fsync_file(tmp / INDEX_FILE)
    manifest = IndexManifest(
        version=version,
        model=model,
        pretrained=pretrained,
        dim=index.dim,
        metric=METRIC,
        spec=index.spec,
        count=index.ntotal,
        store_seq=store_seq,
        checksum=_sha256(tmp / INDEX_FILE),
        created_at=datetime.now(UTC).isoformat(),
    )
    (tmp / MANIFEST_FILE).write_text(manifest.to_json())
    _fsync_file(tmp / MANIFEST_FILE)
    fsync_dir(tmp)
    os.rename(tmp, root / version)
    fsync_dir(root)
    atomic_write_bytes(root / CURRENT_FILE, version.encode())
    fsync_dir(root)
    return manifest


def load_current(
    root: Path, *, model: str, pretrained: str | None, dim: int, mmap: bool = False
) -> tuple[VectorIndex, IndexManifest]:
    """Load the CURRENT version, refusing one built for another model, weights or dim.

    mmap=True maps the inverted lists read-only instead of reading them into RAM
    (several processes then share one page-cache copy); such an index is read-only.
    Only IVF indexes can be mapped (see `can_mmap`); others are read in whatever `mmap`.
    """
    root = Path(root)
    version = current_version(root)
    if version is None:
        raise NoIndexError(f"no current index version under {root}")
    manifest = _read_manifest(root / version)
    _check_manifest(manifest, model=model, pretrained=pretrained, dim=dim)
    path = root / version / INDEX_FILE
    if _sha256(path) != manifest.checksum:
        raise CorruptIndexError(f"index {path} does not match its manifest checksum")
    index = read_version_index(root, manifest, mmap=mmap)
    if index.ntotal != manifest.count or index.dim != manifest.dim:
        raise CorruptIndexError(f"index {path} holds {index.ntotal}x{index.dim}, manifest differs")
    return index, manifest


def can_mmap(spec: str) -> bool:
    """FAISS maps only inverted lists (IO_FLAG_MMAP turns them into read-only
    OnDiskInvertedLists); a Flat or PQ index without IVF would be read in anyway."""
    return "IVF" in spec


def read_version_index(root: Path, manifest: IndexManifest, *, mmap: bool) -> VectorIndex:
    """The index file of one version, mapped where `mmap` and the spec allow it."""
    path = Path(root) / manifest.version / INDEX_FILE
    if not path.is_file():
        raise NoIndexError(f"index version {manifest.version} is gone from {root}")
    return VectorIndex.read(path, manifest.spec, mmap=mmap and can_mmap(manifest.spec))


def current_version(root: Path) -> str | None:
    try:
        name = (Path(root) / CURRENT_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def list_versions(root: Path) -> list[str]:
    """Complete versions, oldest first; hidden temp dirs (unfinished writes) are skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
    )


def prune_versions(root: Path, keep: int = 2, stale_temp_after_s: float = 3600.0) -> list[str]:
    """Delete all but the newest `keep` versions (never CURRENT) and stale temp dirs."""
    root = Path(root)
    current = current_version(root)
    versions = list_versions(root)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for version in doomed:
        shutil.rmtree(root / version, ignore_errors=True)
    cutoff = time.time() - stale_temp_after_s
    for path in root.glob(f"{_TEMP_PREFIX}*"):
        if path.is_dir() and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
    return doomed


def _new_version_name(root: Path) -> str:
    """'vYYYYmmddTHHMMSS.ffffffZ-NNNN', sorting after every existing version."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    name = f"v{stamp}-0000"
    existing = list_versions(root)
    if existing and name <= existing[-1]:
        # same microsecond or a clock that went back: count on from the newest
        base, _, counter = existing[-1].rpartition("-")
        name = f"{base}-{int(counter) + 1:04d}" if counter.isdigit() else f"{existing[-1]}-0001"
    return name


def _read_manifest(version_dir: Path) -> IndexManifest:
    try:
        return IndexManifest.from_json((version_dir / MANIFEST_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, TypeError) as exc:
        raise CorruptIndexError(f"unreadable manifest in {version_dir}: {exc}") from exc


def _check_manifest(
    manifest: IndexManifest, *, model: str, pretrained: str | None, dim: int
) -> None:
    expected = {"model": model, "pretrained": pretrained, "dim": dim, "metric": METRIC}
    found = {key: getattr(manifest, key) for key in expected}
    wrong = [
        f"{key}: expected {expected[key]!r}, found {found[key]!r}"
        for key in expected
        if expected[key] != found[key]
    ]
    if wrong:
        raise ManifestMismatchError(
            f"index version {manifest.version} was built for another encoder ({'; '.join(wrong)})"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
