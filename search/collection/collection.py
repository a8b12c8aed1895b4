"""A collection's write path: items in -> decoded, embedded, catalogued, indexed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import delete, select

from search.catalog.catalog import Catalog, CollectionInfo
from search.catalog.items import ItemChange, ItemInput, ItemState
from search.catalog.lexical import DEFAULT_IDENTIFIERS, LexicalSettings
from search.catalog.models import ItemRow, Modality, Source, VectorRow
from search.collection import bulk, search_fields
from search.collection.locks import collection_write_lock
from search.collection.preparing import (
    ItemFailure,
    MediaMode,
    NewItem,
    PrepareContext,
    PreparedItem,
    embed_prepared,
    prepare_items,
)
from search.collection.updates import SpaceUpdate, in_parallel
from search.errors import IndexError_
from search.lifecycle import StoragePolicy
from search.media import MediaStore
from search.models.encoder import Encoder
from search.remote import RemotePolicy
from search.vectors.space import VectorSpace
from search.vectors.versions import IndexManifest

__all__ = ["AddReport", "Collection", "CollectionStats", "IndexStats", "ItemFailure", "NewItem",
           "index_stats"]


@dataclass
class AddReport:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    failures: list[ItemFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def merge(self, other: AddReport) -> None:
        self.new += other.new
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.failures.extend(other.failures)


@dataclass(frozen=True)
class IndexStats:
    """One modality's index: its FAISS spec, size, and version on disk (None: unsaved)."""

    spec: str
    vectors: int
    version: str | None

    @classmethod
    def of(cls, manifest: IndexManifest) -> IndexStats:
        return cls(manifest.spec, manifest.count, manifest.version)


def index_stats(manifests: dict[Modality, IndexManifest]) -> dict[str, IndexStats]:
    """What `Collection.save`/`rebuild` wrote, by modality name."""
    return {m.value: IndexStats.of(man) for m, man in manifests.items()}


@dataclass(frozen=True)
class CollectionStats:
    items: int
    vectors: int
    vectors_by_kind: dict[str, int]  # "image_original": 12, "image_generated": 3, ...
    indexes: dict[str, IndexStats]  # by modality name


@dataclass(frozen=True)
class GeneratedImage:
    item_id: int
    image: Image.Image
    png: bytes
    generator: str
    model: str
    prompt: str
    seed: int


def _sort_changes(prepared: Sequence[PreparedItem], changes: Sequence[ItemChange]
                  ) -> tuple[AddReport, list[tuple[PreparedItem, ItemChange]]]:
    """Count each item's state; the new and changed ones are to be (re)embedded."""
    report = AddReport()
    todo = []
    for p, change in zip(prepared, changes, strict=True):
        if change.state is not ItemState.UNCHANGED and p.skipped_decode:
            # changed between our hash check and the write: redo on the next run
            report.failures.append(ItemFailure(p.external_id, "write",
                                               "item changed during the run"))
            continue
        setattr(report, change.state.value, getattr(report, change.state.value) + 1)
        if change.state is not ItemState.UNCHANGED:
            todo.append((p, change))
    return report, todo


def model_key(identity: str) -> str:
    """Directory name of one encoder's spaces: a reindex to another model writes beside."""
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


class Collection:
    """One collection: its catalog rows, media and one `VectorSpace` per modality."""

    def __init__(self, info: CollectionInfo, catalog: Catalog, encoder: Encoder,
                 root: Path, media: MediaStore, policy: StoragePolicy | None = None, *,
                 mmap: bool = False) -> None:
        self.info, self.catalog, self.encoder, self.media = info, catalog, encoder, media
        self.root = Path(root)
        self.policy = policy or StoragePolicy()
        # set when a refresher reopens this collection (a new index version elsewhere):
        # writes that were waiting for the lock then go to the object now serving
        self.successor: Collection | None = None
        self.spaces = {
            m: VectorSpace(self.root / model_key(encoder.identity) / m.value, dim=info.dim,
                           model=encoder.name, weights=encoder.weights.identity,
                           spec=info.index_spec, keep_versions=self.policy.keep_versions,
                           mmap=mmap)
            for m in Modality
        }

    @property
    def name(self) -> str:
        return self.info.name

    def write_lock(self) -> AbstractContextManager[None]:
        """Hold this collection's inter-process write lock (re-entrant in one process)."""
        return collection_write_lock(self.root)

    def search_fields(self) -> LexicalSettings:
        """The attributes keyword search reads and the identifier attributes."""
        return self.catalog.lexical_settings(self.info.id)

    def set_search_fields(self, searchable: Sequence[str] | None,
                          identifiers: Sequence[str] = DEFAULT_IDENTIFIERS) -> int:
        """Declare them (see search.collection.search_fields); returns the items re-indexed.
        Under the write lock, so no writer commits entries made with the old fields after
        the rebuild."""
        with collection_write_lock(self.root):
            return search_fields.declare(self.catalog, self.info.id, self.name, searchable,
                                         identifiers)

    def prepare_context(self, media: MediaMode = MediaMode.COPY,
                        remote: RemotePolicy | None = None) -> PrepareContext:
        """Everything a (possibly remote) worker needs to prepare items: picklable.
        remote: what image URLs may be fetched (default: public http(s)/s3/gs hosts)."""
        return PrepareContext(self.media.root, self.encoder.preprocess, self.encoder.image_size,
                              self.encoder.identity, MediaMode(media),
                              remote or RemotePolicy())

    def known_hashes(self, external_ids: Sequence[str]) -> dict[str, str]:
        return self.catalog.active_hashes(self.info.id, external_ids)

    # -- writing -------------------------------------------------------------------
    def add_items(self, items: Sequence[NewItem], *, job_id: int | None = None,
                  media: MediaMode = MediaMode.COPY, remote: RemotePolicy | None = None
                  ) -> AddReport:
        """Upsert items: unchanged ones are skipped, new/changed ones (re)embedded.
        media: copy images into the store, or keep a reference to where they are.
        remote: the policy image URLs are fetched under (search.remote)."""
        known = self.known_hashes([i.external_id for i in items
                                   if isinstance(i.external_id, str)])
        prepared, failures = prepare_items(items, self.prepare_context(media, remote), known)
        # Encode what looks new or changed before taking the write lock: the model is the
        # slow part, and holding the lock through it would stall other writers and the
        # refreshers of other processes. `write` encodes whatever changed meanwhile.
        embed_prepared(self.encoder, [p for p in prepared
                                      if known.get(p.external_id) != p.content_hash])
        report = self.write(prepared, job_id=job_id)
        self.record_failures(failures, job_id)
        report.failures = failures + report.failures
        return report

    def write(self, prepared: Sequence[PreparedItem], *, job_id: int | None = None
              ) -> AddReport:
        """Store one prepared batch; embeds what is new or changed (unless an item already
        carries its vectors, computed elsewhere, e.g. by Ray actors)."""
        with collection_write_lock(self.root):
            target = self._serving()
            if target is not self:
                if target.encoder.identity != self.encoder.identity:
                    raise IndexError_(f"collection {self.name!r} switched to another model "
                                      "during the write; retry it")
                return target.write(prepared, job_id=job_id)
            self.sync()
            # Commit 1: item rows (changed ones `pending`), lexical and attribute entries,
            # and the vector rows, in one transaction.
            with self.catalog.transaction():
                changes = self.catalog.upsert_items(self.info.id, [
                    ItemInput(p.external_id, p.text, p.image_ref, p.attributes,
                              p.content_hash) for p in prepared])
                report, todo = _sort_changes(prepared, changes)
                updates = self._stage_vectors(todo)
            # Then the embedding log, one operation per space (its fsyncs): only after the
            # commit, so its vector ids are never handed out again, and a write killed from
            # here on leaves its items `pending`, which repair (`reconcile`) rolls back.
            self._apply(updates)
            if todo:
                self.catalog.mark_active([c.item_id for _, c in todo])  # commit 2
                self.compact()
        self.record_failures(report.failures, job_id)
        return report

    def write_bulk(self, prepared: Sequence[PreparedItem], *, job_id: int | None = None
                   ) -> AddReport:
        """`write` for large batches of items that carry their vectors (a Ray job's staged
        shards): the ones new to the collection go in by one bulk load (COPY on
        PostgreSQL; see search.collection.bulk), the others through `write`."""
        with collection_write_lock(self.root):
            target = self._serving()
            if target is not self:
                return target.write_bulk(prepared, job_id=job_id) \
                    if target.encoder.identity == self.encoder.identity \
                    else self.write(prepared, job_id=job_id)  # raises: model switched
            self.sync()
            fresh, rest = bulk.split_new(self, prepared)
            report = self.write(rest, job_id=job_id) if rest else AddReport()
            if fresh:
                bulk.load_new(self, fresh)
                report.new += len(fresh)
                self.compact()
        return report

    def _serving(self) -> Collection:
        """The newest object of this collection (self unless it was reopened): a write
        through a replaced object would reach the disk but not the index being served."""
        current = self
        while current.successor is not None:
            current = current.successor
        return current

    def record_failures(self, failures: Sequence[ItemFailure], job_id: int | None) -> None:
        if failures:
            self.catalog.history.record_failures(self.info.id, job_id,
                                         [(f.external_id, f.stage, f.reason) for f in failures])

    def _stage_vectors(self, todo: list[tuple[PreparedItem, ItemChange]]
                       ) -> dict[Modality, SpaceUpdate]:
        """Give the changed items' embeddings fresh vector rows (in the caller's
        transaction) and say what each space's log must drop and store."""
        if not todo:
            return {}
        embed_prepared(self.encoder, [p for p, _ in todo])  # what changed since the check
        pairs = [(p, c.item_id) for p, c in todo]
        fresh = {c.item_id for _, c in todo if c.state is ItemState.NEW}  # no vectors yet
        with_text = [(p, i) for p, i in pairs if p.text_vector is not None]
        with_image = [(p, i) for p, i in pairs if p.image_vector is not None]
        image_ids = [i for _, i in with_image if i not in fresh]
        if image_ids:
            self.catalog.delete_generations(image_ids)  # a real image wins
        return {
            Modality.TEXT: self._stage(
                Modality.TEXT, [i for p, i in pairs if p.text_vector is None and i not in fresh],
                [], with_text, lambda p: p.text_vector, fresh),
            Modality.IMAGE: self._stage(
                Modality.IMAGE,
                [i for p, i in pairs if p.image_vector is None and i not in fresh], image_ids,
                with_image, lambda p: p.image_vector, fresh),
        }

    def _stage(self, modality: Modality, without: list[int], generated: list[int],
               kept: list[tuple[PreparedItem, int]],
               vector_of: Callable[[PreparedItem], np.ndarray | None],
               fresh: set[int]) -> SpaceUpdate:
        """One space's share: original vectors of items that lost this modality and
        generated ones of items that now have a real image go; kept ones get new ids."""
        removed = self.catalog.remove_vectors(without, modality.value, Source.ORIGINAL.value)
        removed += self.catalog.remove_vectors(generated, modality.value,
                                               Source.GENERATED.value)
        if not kept:
            return SpaceUpdate(removed, np.empty(0, np.int64),
                               np.zeros((0, self.info.dim), np.float32))
        new_ids, old_ids = self.catalog.replace_vectors(
            self.info.id, [(i, modality.value, Source.ORIGINAL.value) for _, i in kept],
            fresh=fresh)
        vectors = [v for v in (vector_of(p) for p, _ in kept) if v is not None]  # all are
        return SpaceUpdate(removed + old_ids, np.asarray(new_ids, dtype=np.int64),
                           np.stack(vectors).astype(np.float32, copy=False))

    def _apply(self, updates: dict[Modality, SpaceUpdate]) -> None:
        in_parallel([partial(self.spaces[m].replace, u.removed, u.ids, u.vectors)
                     for m, u in updates.items() if len(u.ids) or u.removed])

    def _replace(self, modality: Modality, item_ids: list[int], vectors: np.ndarray | None,
                 source: Source = Source.ORIGINAL) -> None:
        if not item_ids:
            return
        entries = [(i, modality.value, source.value) for i in item_ids]
        new_ids, old_ids = self.catalog.replace_vectors(self.info.id, entries)
        self.spaces[modality].replace(old_ids, np.asarray(new_ids, dtype=np.int64),
                                      np.asarray(vectors, dtype=np.float32))

    def _drop(self, modality: Modality, item_ids: list[int],
              source: Source = Source.ORIGINAL) -> None:
        if item_ids:
            self.spaces[modality].remove(
                self.catalog.remove_vectors(item_ids, modality.value, source.value))

    def add_generated(self, generated: Sequence[GeneratedImage]) -> None:
        """Store generated images as `source=generated` image vectors, with provenance."""
        if not generated:
            return
        vectors = self.encoder.encode_images([g.image for g in generated])
        with collection_write_lock(self.root):
            self.sync()
            self._replace(Modality.IMAGE, [g.item_id for g in generated], vectors,
                          Source.GENERATED)
            for g in generated:
                ref = self.media.put(g.png, suffix=".png")
                self.catalog.record_generation(self.info.id, g.item_id, generator=g.generator,
                                               model=g.model, prompt=g.prompt, seed=g.seed,
                                               image_ref=ref)
            self.compact()

    def delete_items(self, external_ids: Sequence[str]) -> int:
        """Remove items from the catalog and from search at once; returns vectors removed."""
        with collection_write_lock(self.root):
            target = self._serving()
            if target is not self:
                return target.delete_items(external_ids)
            self.sync()
            removed = self.catalog.delete_items(self.info.id, external_ids)
            in_parallel([partial(self.spaces[Modality(m)].remove, ids)
                         for m, ids in removed.items() if ids])
            self.compact()
        return sum(len(ids) for ids in removed.values())

    # -- consistency and index lifecycle ---------------------------------------------------
    def sync(self) -> None:
        """Catch up with writes another process made to this collection's spaces."""
        for space in self.spaces.values():
            space.sync()

    def reconcile(self) -> int:
        """Repair what a write killed midway leaves (its item stays `pending`, so the next
        write or indexing run redoes it): stored embeddings with no catalog row are
        dropped, and catalog vector rows whose embedding never landed are deleted."""
        dropped = 0
        with collection_write_lock(self.root):  # no write of ours is between its steps
            self.sync()
            dropped += self._hide_pending()
            for modality, space in self.spaces.items():
                in_sql = self.catalog.vector_ids(self.info.id, modalities=[modality.value])
                in_store = space.store_ids()
                orphans = np.setdiff1d(in_store, in_sql)
                space.remove(orphans)
                dangling = np.setdiff1d(in_sql, in_store)
                self._delete_vector_rows(dangling)
                dropped += len(orphans) + len(dangling)
        return dropped

    def _hide_pending(self) -> int:
        """Vectors of items a killed write left `pending` leave search: a half-applied
        write is never served (the next write or indexing run of the item redoes it)."""
        with self.catalog.session() as session:
            pending = list(session.scalars(select(ItemRow.id).where(
                ItemRow.collection_id == self.info.id, ItemRow.status == "pending")))
        vectors = self.catalog.item_vectors(pending) if pending else {}
        by_modality: dict[str, list[int]] = {}
        for rows in vectors.values():
            for vector_id, modality, _source in rows:
                by_modality.setdefault(modality, []).append(vector_id)
        for modality, ids in by_modality.items():
            self.spaces[Modality(modality)].remove(ids)
            self._delete_vector_rows(np.asarray(ids, dtype=np.int64))
        return sum(len(ids) for ids in by_modality.values())

    def _delete_vector_rows(self, vector_ids: np.ndarray) -> None:
        ids = [int(i) for i in vector_ids]
        with self.catalog.session() as session:
            for start in range(0, len(ids), 500):
                session.execute(delete(VectorRow).where(VectorRow.id.in_(ids[start:start + 500])))

    def compact(self, *, force: bool = False) -> list[Modality]:
        """Compact the spaces whose embedding log is due (all, when forced); returns
        the modalities compacted. Writers call this after each write."""
        done = []
        with collection_write_lock(self.root):
            for modality, space in self.spaces.items():
                if force:
                    space.sync()
                    space.compact()
                    done.append(modality)
                elif space.compact_if_due(self.policy.compaction):
                    done.append(modality)
        return done

    def save(self, retrain: bool | None = None) -> dict[Modality, IndexManifest]:
        """Write a new index version per modality and record it in the catalog."""
        with collection_write_lock(self.root):
            self.sync()
            manifests = {m: space.save(retrain) for m, space in self.spaces.items()}
        self._record(manifests)
        return manifests

    def rebuild(self, spec: str | None = None) -> dict[Modality, IndexManifest]:
        with collection_write_lock(self.root):
            self.sync()
            manifests = {m: space.rebuild(spec) for m, space in self.spaces.items()}
        self._record(manifests)
        return manifests

    def _record(self, manifests: dict[Modality, IndexManifest]) -> None:
        for modality, manifest in manifests.items():
            self.catalog.history.record_index_version(
                self.info.id, version=f"{modality.value}/{manifest.version}",
                spec=manifest.spec, vector_count=manifest.count,
                model_identity=self.encoder.identity)

    def stats(self) -> CollectionStats:
        counts = self.catalog.collection_counts(self.info.id)
        indexes = {m.value: IndexStats(space.index.spec, space.count,
                                       space.manifest.version if space.manifest else None)
                   for m, space in self.spaces.items()}
        return CollectionStats(counts.items, counts.vectors, counts.vectors_by_kind, indexes)
