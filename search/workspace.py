"""The open engine state of one XMODAL_HOME: catalog, media store, encoders, collections."""

from __future__ import annotations

import re
import shutil
import threading

from search.catalog.catalog import Catalog, CollectionInfo, open_catalog
from search.collection.collection import Collection
from search.collection.locks import collection_write_lock
from search.errors import InvalidInputError
from search.lifecycle import StoragePolicy
from search.media import MediaStore
from search.models.encoder import Encoder, load_encoder
from search.settings import Settings

COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"  # also api/schemas.py's
_NAME = re.compile(COLLECTION_NAME_PATTERN)


def validate_collection_name(name: str) -> str:
    if not _NAME.match(name or "") or ".." in name:
        raise InvalidInputError(
            f"invalid collection name {name!r}: letters, digits, '_', '-', '.' (max 128)")
    return name


class Workspace:
    """Heavy objects are built once here and shared: one per process is the norm."""

    def __init__(self, settings: Settings, catalog: Catalog, media: MediaStore) -> None:
        self.settings, self.catalog, self.media = settings, catalog, media
        self._encoders: dict[tuple[str, str | None], Encoder] = {}
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        settings = settings or Settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        catalog = open_catalog(settings.resolved_database_url(),
                               migrate_on_open=settings.migrate_on_open)
        return cls(settings, catalog, MediaStore(settings.media_dir, settings.media_roots))

    def encoder(self, model: str | None = None, pretrained: str | None = None) -> Encoder:
        key = (model or self.settings.model, pretrained if model else self.settings.pretrained)
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = load_encoder(key[0], key[1], device=self.settings.device,
                                                   offline=self.settings.offline,
                                                   runtime=self.settings.query_runtime())
            return self._encoders[key]

    def create_collection(self, name: str, *, model: str | None = None,
                          pretrained: str | None = None,
                          index_spec: str | None = None) -> Collection:
        validate_collection_name(name)
        encoder = self.encoder(model, pretrained)
        self.catalog.create_collection(
            name, model=encoder.name, pretrained=encoder.pretrained,
            weights_identity=encoder.weights.identity, dim=encoder.dim, index_spec=index_spec)
        return self.collection(name)

    def collection(self, name: str) -> Collection:
        with self._lock:
            if name not in self._collections:
                info = self.catalog.get_collection(name)
                self._collections[name] = self._open_collection(info)
            return self._collections[name]

    def _open_collection(self, info: CollectionInfo) -> Collection:
        encoder = self.encoder(info.model, info.pretrained)
        return Collection(info, self.catalog, encoder, self.settings.collection_dir(info.name),
                          self.media, StoragePolicy.from_settings(self.settings),
                          mmap=self.settings.mmap_index)

    def cached_collections(self) -> dict[str, Collection]:
        """The collections this process has open (a snapshot; see search/live.py)."""
        with self._lock:
            return dict(self._collections)

    def reopen_collection(self, name: str) -> Collection:
        """Open `name` afresh from the catalog and disk, then swap it into the cache.

        Opening happens outside the lock, so other collections stay available; callers
        still holding the old object (queries in flight) keep using it safely."""
        fresh = self._open_collection(self.catalog.get_collection(name))
        with self._lock:
            old = self._collections.get(name)
            self._collections[name] = fresh
        if old is not None:
            old.successor = fresh  # writes still holding the old object follow (see write)
        return fresh

    def forget_collection(self, name: str) -> None:
        """Drop `name` from the cache (e.g. dropped by another process)."""
        with self._lock:
            self._collections.pop(name, None)

    def list_collections(self) -> list[CollectionInfo]:
        return self.catalog.list_collections()

    def drop_collection(self, name: str) -> None:
        info = self.catalog.get_collection(name)
        # the write lock: a writer in another process finishes before the files go
        with collection_write_lock(self.settings.collection_dir(name)), self._lock:
            self._collections.pop(name, None)
            self.catalog.drop_collection(info.id)
            shutil.rmtree(self.settings.collection_dir(name), ignore_errors=True)

    def close(self) -> None:
        self.catalog.close()
