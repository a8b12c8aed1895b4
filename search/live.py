"""Keeping a long-running process's collections current with what other processes write.

A serving process caches one `Collection` per name (see `Workspace`). Other processes
change what is on disk underneath it:

- the indexer (or another API worker) writes a new index version and switches
  `<collection>/<modality>/index/CURRENT`;
- another writer appends to or deletes from the embedding store
  (`<collection>/<modality>/embeddings/`, sequence-numbered operation files);
- a collection is dropped, or dropped and created again under the same name.

`CollectionRefresher.refresh_all()` compares each cached collection with the disk and
the catalog and catches up: new store operations are replayed onto the loaded index
(cheap, keeps it searchable within a tick), a new index version or a re-created
collection is opened afresh and swapped into the workspace's cache. Queries already
running keep the object they started with, so none of them fails mid-flight.

Checks are lock-free (a directory listing and a small file per space); catching up
happens under the collection's write lock (`search.collection.locks`), so a writer's compaction
and the index version it saves next are seen together, never half.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select

from search.catalog.catalog import Catalog
from search.catalog.models import CollectionRow
from search.collection.collection import Collection
from search.collection.locks import collection_read_lock, collection_write_lock
from search.errors import UnknownCollectionError, XmodalError
from search.lifecycle import MaintenanceReport, maintain
from search.vectors.oplog import COMMIT_RE
from search.vectors.space import VectorSpace
from search.vectors.versions import current_version
from search.workspace import Workspace

log = logging.getLogger(__name__)



class Change(StrEnum):
    UNCHANGED = "unchanged"
    SYNCED = "synced"  # store operations replayed onto the loaded index
    REOPENED = "reopened"  # a fresh Collection object was swapped into the cache
    DROPPED = "dropped"  # the collection no longer exists; evicted from the cache
    FAILED = "failed"  # the disk state could not be loaded; the old object keeps serving


def committed_seq_on_disk(store_dir: Path) -> int:
    """Newest committed operation of an embedding store, from a directory listing only."""
    try:
        names = os.listdir(store_dir)
    except FileNotFoundError:
        return 0
    return max((int(m[1]) for n in names if (m := COMMIT_RE.match(n))), default=0)


def space_is_stale(space: VectorSpace) -> tuple[bool, bool]:
    """(must reopen, has store operations to replay) for one loaded space.

    Reopen when the index version changed, or when the store's sequence went backwards
    (sequences only grow: the store was deleted and created again)."""
    loaded = space.manifest.version if space.manifest else None
    on_disk = committed_seq_on_disk(space.store.path)
    reopen = current_version(space.index_dir) != loaded or on_disk < space.seen_seq
    return reopen, on_disk != space.seen_seq


Identity = tuple[int, str]  # (catalog id, created_at): ids may be reused after a drop


def catalog_identities(catalog: Catalog) -> dict[str, Identity]:
    with catalog.session() as session:
        rows = session.execute(select(CollectionRow.name, CollectionRow.id,
                                      CollectionRow.created_at))
        return {name: (cid, str(created)) for name, cid, created in rows}


@dataclass
class RefreshReport:
    changes: dict[str, Change]
    errors: dict[str, str]


class CollectionRefresher:
    """Brings a workspace's cached collections up to date; call it per tick or per request.

    `on_change(name, change)` is told about every change other than UNCHANGED (metrics).
    A `read_only` refresher (replicas) waits for writers with a shared lock that writes
    nothing, so it works on a read-only volume."""

    def __init__(self, workspace: Workspace,
                 on_change: Callable[[str, Change], None] | None = None, *,
                 maintain_every_s: float | None = None, read_only: bool = False) -> None:
        self.workspace = workspace
        self._catch_up_lock = collection_read_lock if read_only else collection_write_lock
        self.on_change = on_change or (lambda _name, _change: None)
        # storage maintenance (compaction, media collection) on the same thread; None: off
        self.maintain_every_s = maintain_every_s
        self.last_maintenance: MaintenanceReport | None = None
        self._lock = threading.Lock()  # one refresh at a time: reopen is not cheap
        # name -> (the cached object, the catalog identity it was first seen with)
        self._seen: dict[str, tuple[Collection, Identity]] = {}
        self._stop = threading.Event()
        self._state = threading.Lock()  # guards starting and stopping the thread
        self._thread: threading.Thread | None = None

    def refresh_all(self) -> RefreshReport:
        with self._lock:
            report = RefreshReport({}, {})
            identities = catalog_identities(self.workspace.catalog)
            for name, collection in self.workspace.cached_collections().items():
                try:
                    change = self._refresh_one(name, collection, identities.get(name))
                except (XmodalError, OSError) as exc:  # keep serving what is loaded
                    log.warning("reloading collection %r failed: %s", name, exc)
                    change = Change.FAILED
                    report.errors[name] = str(exc)
                report.changes[name] = change
                if change is not Change.UNCHANGED:
                    self.on_change(name, change)
            return report

    def _refresh_one(self, name: str, collection: Collection,
                     identity: Identity | None) -> Change:
        if identity is None:
            return self._forget(name)
        seen_object, seen_identity = self._seen.get(name, (None, identity))
        if seen_object is not collection:  # first sight of this object: remember it
            seen_identity = identity if collection.info.id == identity[0] else (-1, "")
            self._seen[name] = (collection, seen_identity)
        if seen_identity != identity:
            return self._reopen(name, identity)
        if not any(any(space_is_stale(space)) for space in collection.spaces.values()):
            return Change.UNCHANGED  # the common case: no lock, no I/O beyond a listing
        with self._catch_up_lock(collection.root):  # a writer's batch lands whole
            stale = [space_is_stale(space) for space in collection.spaces.values()]
            if any(reopen for reopen, _ in stale):
                return self._reopen(name, identity)
            collection.sync()
        return Change.SYNCED

    def _reopen(self, name: str, identity: Identity) -> Change:
        try:
            fresh = self.workspace.reopen_collection(name)
        except UnknownCollectionError:
            return self._forget(name)
        self._seen[name] = (fresh, identity)
        return Change.REOPENED

    def _forget(self, name: str) -> Change:
        self.workspace.forget_collection(name)
        self._seen.pop(name, None)
        return Change.DROPPED

    # -- background ticking ----------------------------------------------------------
    def start(self, interval_s: float) -> None:
        """Refresh every `interval_s` seconds on a daemon thread until `stop()`.

        After `stop()` it never starts again (a late `start` from another thread, e.g.
        the one that finished loading, must not outlive the app)."""
        with self._state:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, args=(interval_s,),
                                            name="xmodal-refresher", daemon=True)
            self._thread.start()

    def _run(self, interval_s: float) -> None:
        next_maintenance = time.monotonic()  # first pass at start: repairs a killed write
        while not self._stop.wait(interval_s):
            try:
                self.refresh_all()
            except Exception:  # noqa: BLE001 - the catalog may be briefly unreachable
                log.exception("collection refresh failed; retrying next tick")
            if self.maintain_every_s is not None and time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + self.maintain_every_s
                self._maintain()

    def _maintain(self) -> None:
        try:
            self.last_maintenance = maintain(self.workspace)
        except Exception:  # noqa: BLE001 - retried next period; serving goes on
            log.exception("storage maintenance failed; retrying next period")

    def stop(self) -> None:
        with self._state:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
