"""Storage lifecycle: what keeps a home that takes writes for months as small and fast
as on day one.

- the embedding log of each space is compacted when its `CompactionPolicy` says so
  (writers check after each write; `maintain` checks every collection);
- index versions beyond the newest `keep_versions` are pruned when one is saved;
- stored media no item or generated image references any more are collected, after a
  grace period (a writer may have just stored bytes it has not yet catalogued);
- the thumbnail cache is trimmed to a byte budget, least recently used first;
- the lexical index's segments are merged once there are too many (SQLite), its GIN
  pending list moved into the index (PostgreSQL): `search.catalog.lexical.tidy`;
- the embeddings and indexes of a model a collection no longer serves (what
  `reindex --model` leaves behind) are removed, under the collection's write lock (an
  in-flight reindex holds it throughout) and after a grace period (a killed reindex
  resumes from them).

Media collection is safe against concurrent writers without a shared lock: a writer
that stores bytes already present touches the file (`search.media.touch`), and the
collector moves a candidate aside, re-checks its mtime and puts it back if it was
touched meanwhile; a writer that finds it moved aside simply writes it again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from search.catalog.lexical import tidy
from search.catalog.models import GenerationRow, ItemRow
from search.vectors.durable import fsync_dir
from search.vectors.store import CompactionPolicy

if TYPE_CHECKING:
    from search.catalog.catalog import Catalog
    from search.collection.collection import Collection
    from search.media import MediaStore
    from search.settings import Settings
    from search.workspace import Workspace

log = logging.getLogger(__name__)

# Only content-addressed files `ab/cd/<sha256>.<ext>` are ever collected: anything else
# under the media root (staging, thumbnails, files a person put there) is not ours.
_STORED_REF = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{2})/\1\2[0-9a-f]{60}\.[a-z0-9]{1,5}$")
_TOMBSTONE = ".gc-"
_MODEL_DIR = re.compile(r"^[0-9a-f]{12}$")  # search.collection.collection.model_key


def is_stored_ref(ref: str) -> bool:
    """Whether a reference names a content-addressed file of the store (not a URL, not a
    file referenced in place)."""
    return bool(_STORED_REF.match(ref))


@dataclass(frozen=True)
class StoragePolicy:
    compaction: CompactionPolicy = field(default_factory=CompactionPolicy)
    keep_versions: int = 2  # index versions per space (CURRENT always among them)
    media_grace_s: float = 3600.0  # unreferenced media younger than this are spared
    thumbnail_cache_bytes: int = 256 << 20
    model_grace_s: float = 3600.0  # a model no longer served is kept this long untouched

    @classmethod
    def from_settings(cls, settings: Settings) -> StoragePolicy:
        return cls(CompactionPolicy(settings.compact_max_ops, settings.compact_min_ops,
                                    settings.compact_dead_ratio),
                   settings.keep_index_versions, settings.media_gc_grace_s,
                   settings.thumbnail_cache_mb << 20, settings.model_gc_grace_s)


@dataclass
class MaintenanceReport:
    compacted: list[str] = field(default_factory=list)  # "<collection>/<modality>"
    repaired: int = 0  # vectors a killed write left half-stored (see Collection.reconcile)
    media_removed: int = 0
    media_bytes_freed: int = 0
    thumbnails_removed: int = 0
    models_removed: list[str] = field(default_factory=list)  # "<collection>/<model key>"
    # the lexical index's upkeep (search.catalog.lexical.tidy): SQLite merge steps,
    # PostgreSQL pending-list pages moved; 0 when it was already tidy
    lexical_tidied: int = 0
    errors: dict[str, str] = field(default_factory=dict)


# -- media ----------------------------------------------------------------------------


def referenced_media(catalog: Catalog) -> set[str]:
    """Every media reference an item or a generated image holds, in every collection."""
    with catalog.session() as session:
        refs = set(session.scalars(select(ItemRow.image_ref).where(
            ItemRow.image_ref.is_not(None))))
        refs.update(session.scalars(select(GenerationRow.image_ref)))
    return refs


def stored_media(media: MediaStore) -> Iterator[tuple[str, os.stat_result]]:
    """(ref, stat) of every content-addressed file in the store."""
    for top in _subdirs(media.root):
        for mid in _subdirs(media.root / top):
            for entry in os.scandir(media.root / top / mid):
                ref = f"{top}/{mid}/{entry.name}"
                if is_stored_ref(ref):
                    try:
                        yield ref, entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue


def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path)
                      if len(e.name) == 2 and e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def collect_media(catalog: Catalog, media: MediaStore, grace_s: float) -> tuple[int, int]:
    """Remove stored media no row references and nobody touched for `grace_s`;
    returns (files removed, bytes freed). Candidates are listed before the catalog is
    read, so a file catalogued meanwhile is either referenced or recently touched."""
    cutoff = time.time() - grace_s
    candidates = [(ref, st) for ref, st in stored_media(media) if st.st_mtime < cutoff]
    if not candidates:
        return 0, 0
    referenced = referenced_media(catalog)
    removed = freed = 0
    for ref, st in candidates:
        if ref not in referenced and _remove_if_untouched(media.root / ref, cutoff):
            removed, freed = removed + 1, freed + st.st_size
    return removed, freed


def _remove_if_untouched(path: Path, cutoff: float) -> bool:
    aside = path.with_name(f"{_TOMBSTONE}{path.name}")
    try:
        os.rename(path, aside)  # from here on, a writer looking for it writes it anew
    except FileNotFoundError:
        return False
    try:
        if aside.stat().st_mtime >= cutoff:  # touched between listing and move: keep it
            os.replace(aside, path)  # same bytes as any copy a writer just made
            return False
        aside.unlink()
    except FileNotFoundError:  # another collector took it first
        return False
    return True


def remove_stale_tombstones(media: MediaStore, min_age_s: float = 60.0) -> None:
    """Moved-aside files whose collector was killed before it decided (kill -9); ones
    younger than `min_age_s` may belong to a collector still running elsewhere."""
    for top in _subdirs(media.root):
        for mid in _subdirs(media.root / top):
            for entry in os.scandir(media.root / top / mid):
                if entry.name.startswith(_TOMBSTONE) and _older_than(entry, min_age_s):
                    path = media.root / top / mid / entry.name
                    target = path.with_name(entry.name.removeprefix(_TOMBSTONE))
                    # put back, never delete: the next pass decides again with fresh facts
                    with suppress(FileNotFoundError):
                        if not target.exists():
                            os.replace(path, target)
                        else:
                            path.unlink()


def _older_than(entry: os.DirEntry[str], seconds: float) -> bool:
    try:  # a rename sets ctime: how long ago a collector moved it aside
        return entry.stat(follow_symlinks=False).st_ctime < time.time() - seconds
    except FileNotFoundError:
        return False


def trim_thumbnails(media: MediaStore, max_bytes: int) -> int:
    """Delete least recently used thumbnails until the cache fits `max_bytes`."""
    root = media.root / "thumbs"
    files: list[tuple[float, int, str]] = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = 0
    for _, size, path in sorted(files):  # oldest first
        if total <= max_bytes:
            break
        Path(path).unlink(missing_ok=True)
        total, removed = total - size, removed + 1
    return removed


# -- models no longer served ------------------------------------------------------------


def collect_unserved_models(collection: Collection, grace_s: float) -> list[str]:
    """Remove the per-model directories of `collection` (embeddings + index versions,
    `<root>/<model key>/`) other than the one its catalog row serves now; returns the
    keys removed.

    Under the collection's write lock: `reindex --model` holds it from its first
    embedding to the switch, so nothing in flight is touched, and the model read
    from the catalog here is the one serving. A directory written within `grace_s`
    is spared: a killed reindex resumes from it, and a process that has not reopened
    the collection since the switch may still be using it. Removal is a rename to a
    tombstone, then a delete: a kill -9 in between leaves only the tombstone, which
    the next pass deletes; a reader that still maps the files keeps its pages."""
    from search.collection.collection import model_key  # it imports this module

    removed: list[str] = []
    root = collection.root
    with collection.write_lock():
        info = collection.catalog.get_collection(collection.name)
        serving = model_key(f"{info.model}|{info.weights_identity}")
        cutoff = time.time() - grace_s
        for entry in _entries(root):
            if entry.name.startswith(_TOMBSTONE) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)  # a killed earlier pass
            elif (_MODEL_DIR.match(entry.name) and entry.name != serving
                  and entry.is_dir(follow_symlinks=False)
                  and _newest_mtime(Path(entry.path)) < cutoff):
                aside = root / f"{_TOMBSTONE}{entry.name}-{uuid.uuid4().hex[:8]}"
                os.rename(entry.path, aside)
                fsync_dir(root)
                shutil.rmtree(aside, ignore_errors=True)
                removed.append(entry.name)
    return removed


def _entries(root: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(root))
    except FileNotFoundError:
        return []


def _newest_mtime(path: Path) -> float:
    """Latest modification below `path` (the directory itself included)."""
    newest = path.stat().st_mtime
    for dirpath, dirs, names in os.walk(path):
        for name in dirs + names:
            with suppress(FileNotFoundError):
                newest = max(newest, os.stat(os.path.join(dirpath, name),
                                             follow_symlinks=False).st_mtime)
    return newest


# -- the whole home -----------------------------------------------------------------------


def tidy_lexical(owner: Workspace | Collection) -> int:
    """The lexical index's upkeep alone, as `maintain` runs it (merge steps or pending-list
    pages done, 0: it was tidy; `search.catalog.lexical.tidy`). Index jobs end with it."""
    catalog = owner.catalog
    return tidy(catalog.session, catalog.engine.dialect.name)


def maintain(workspace: Workspace, policy: StoragePolicy | None = None, *,
             collections: list[str] | None = None, force_compaction: bool = False,
             media: bool = True) -> MaintenanceReport:
    """Compact the embedding logs that are due (all, when forced) of every collection (or
    of `collections`), remove the files of models they no longer serve, tidy the lexical
    index (shared by all collections), then collect unreferenced media and trim
    thumbnails (the media store is shared too). Safe to run while others read and
    write."""
    policy = policy or StoragePolicy.from_settings(workspace.settings)
    report = MaintenanceReport()
    for info in workspace.list_collections():
        if collections is not None and info.name not in collections:
            continue
        try:
            collection = workspace.collection(info.name)
            report.repaired += collection.reconcile()
            for modality in collection.compact(force=force_compaction):
                report.compacted.append(f"{info.name}/{modality.value}")
            report.models_removed += [f"{info.name}/{key}" for key in
                                      collect_unserved_models(collection, policy.model_grace_s)]
        except Exception as exc:  # noqa: BLE001 - one collection's failure spares the rest
            log.warning("maintenance of collection %r failed: %s", info.name, exc)
            report.errors[info.name] = str(exc)
    try:
        report.lexical_tidied = tidy_lexical(workspace)
    except Exception as exc:  # noqa: BLE001 - the rest of maintenance still runs
        log.warning("upkeep of the lexical index failed: %s", exc)
        report.errors["lexical index"] = str(exc)
    if media:
        store = workspace.media
        remove_stale_tombstones(store)
        report.media_removed, report.media_bytes_freed = collect_media(
            workspace.catalog, store, policy.media_grace_s)
        report.thumbnails_removed = trim_thumbnails(store, policy.thumbnail_cache_bytes)
    return report
