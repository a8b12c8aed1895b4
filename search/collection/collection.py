"""A collection's write path: items in -> decoded, embedded, catalogued, indexed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.catalog.catalog import Catalog, CollectionInfo, ItemInput, ItemState
from search.catalog.models import Modality, Source
from search.collection.locks import collection_write_lock
from search.collection.preparing import (
    ItemFailure,
    NewItem,
    PrepareContext,
    PreparedItem,
    embed_prepared,
    prepare_items,
)
from search.media import MediaStore
from search.models.encoder import Encoder
from search.vectors.space import VectorSpace
from search.vectors.versions import IndexManifest

__all__ = ["AddReport", "Collection", "ItemFailure", "NewItem"]


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

    def as_dict(self) -> dict[str, int]:
        return {"new": self.new, "changed": self.changed, "unchanged": self.unchanged,
                "failed": self.failed}


@dataclass(frozen=True)
class GeneratedImage:
    item_id: int
    image: Image.Image
    png: bytes
    generator: str
    model: str
    prompt: str
    seed: int


def model_key(identity: str) -> str:
    """Directory name of one encoder's spaces: a reindex to another model writes beside."""
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


class Collection:
    """One collection: its catalog rows, media and one `VectorSpace` per modality."""

    def __init__(self, info: CollectionInfo, catalog: Catalog, encoder: Encoder,
                 root: Path, media: MediaStore, *, mmap: bool = False) -> None:
        self.info, self.catalog, self.encoder, self.media = info, catalog, encoder, media
        self.root = Path(root)
        self.spaces = {
            m: VectorSpace(self.root / model_key(encoder.identity) / m.value, dim=info.dim,
                           model=encoder.name, weights=encoder.weights.identity,
                           spec=info.index_spec, mmap=mmap)
            for m in Modality
        }

    @property
    def name(self) -> str:
        return self.info.name

    def write_lock(self) -> AbstractContextManager[None]:
        """Hold this collection's inter-process write lock (re-entrant in one process)."""
        return collection_write_lock(self.root)

    def prepare_context(self) -> PrepareContext:
        """Everything a (possibly remote) worker needs to prepare items: picklable."""
        return PrepareContext(self.media.root, self.encoder.preprocess, self.encoder.image_size,
                              self.encoder.identity)

    def known_hashes(self, external_ids: Sequence[str]) -> dict[str, str]:
        return self.catalog.active_hashes(self.info.id, external_ids)

    # -- writing -------------------------------------------------------------------
    def add_items(self, items: Sequence[NewItem], *, job_id: int | None = None) -> AddReport:
        """Upsert items: unchanged ones are skipped, new/changed ones (re)embedded."""
        known = self.known_hashes([i.external_id for i in items
                                   if isinstance(i.external_id, str)])
        prepared, failures = prepare_items(items, self.prepare_context(), known)
        report = self.write(prepared, job_id=job_id)
        self.record_failures(failures, job_id)
        report.failures = failures + report.failures
        return report

    def write(self, prepared: Sequence[PreparedItem], *, job_id: int | None = None
              ) -> AddReport:
        """Store one prepared batch; embeds what is new or changed (unless an item already
        carries its vectors, computed elsewhere, e.g. by Ray actors)."""
        with collection_write_lock(self.root):
            self.sync()
            changes = self.catalog.upsert_items(self.info.id, [
                ItemInput(p.external_id, p.text, p.image_ref, p.attributes, p.content_hash)
                for p in prepared])
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
            if todo:
                self._embed([p for p, _ in todo], [c.item_id for _, c in todo])
                self.catalog.mark_active([c.item_id for _, c in todo])
        self.record_failures(report.failures, job_id)
        return report

    def record_failures(self, failures: Sequence[ItemFailure], job_id: int | None) -> None:
        if failures:
            self.catalog.history.record_failures(self.info.id, job_id,
                                         [(f.external_id, f.stage, f.reason) for f in failures])

    def _embed(self, todo: list[PreparedItem], item_ids: list[int]) -> None:
        embed_prepared(self.encoder, todo)
        pairs = list(zip(todo, item_ids, strict=True))
        with_text = [(p, i) for p, i in pairs if p.text_vector is not None]
        with_image = [(p, i) for p, i in pairs if p.image_vector is not None]
        # Old vectors leave the spaces before new ones arrive: ids are never reused.
        self._drop(Modality.TEXT, [i for p, i in pairs if p.text_vector is None])
        self._drop(Modality.IMAGE, [i for p, i in pairs if p.image_vector is None])
        self._drop(Modality.IMAGE, [i for _, i in with_image], Source.GENERATED)  # real wins
        if with_image:
            self.catalog.delete_generations([i for _, i in with_image])
        self._replace(Modality.TEXT, [i for _, i in with_text],
                      np.stack([p.text_vector for p, _ in with_text]) if with_text else None)
        self._replace(Modality.IMAGE, [i for _, i in with_image],
                      np.stack([p.image_vector for p, _ in with_image]) if with_image else None)

    def _replace(self, modality: Modality, item_ids: list[int], vectors: np.ndarray | None,
                 source: Source = Source.ORIGINAL) -> None:
        if not item_ids:
            return
        entries = [(i, modality.value, source.value) for i in item_ids]
        new_ids, old_ids = self.catalog.replace_vectors(self.info.id, entries)
        space = self.spaces[modality]
        space.remove(old_ids)
        space.add(np.asarray(new_ids, dtype=np.int64), np.asarray(vectors, dtype=np.float32))

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

    def delete_items(self, external_ids: Sequence[str]) -> int:
        """Remove items from the catalog and from search at once; returns vectors removed."""
        with collection_write_lock(self.root):
            self.sync()
            removed = self.catalog.delete_items(self.info.id, external_ids)
            for modality, ids in removed.items():
                self.spaces[Modality(modality)].remove(ids)
        return sum(len(ids) for ids in removed.values())

    # -- consistency and index lifecycle ---------------------------------------------------
    def sync(self) -> None:
        """Catch up with writes another process made to this collection's spaces."""
        for space in self.spaces.values():
            space.sync()

    def reconcile(self) -> int:
        """Drop stored embeddings with no catalog row (left by a killed write)."""
        dropped = 0
        with collection_write_lock(self.root):
            self.sync()
            for modality, space in self.spaces.items():
                in_sql = self.catalog.vector_ids(self.info.id, modalities=[modality.value])
                orphans = np.setdiff1d(space.store_ids(), in_sql)
                space.remove(orphans)
                dropped += len(orphans)
        return dropped

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

    def stats(self) -> dict[str, Any]:
        counts = self.catalog.collection_counts(self.info.id)
        for modality, space in self.spaces.items():
            counts[f"{modality.value}_index"] = {
                "spec": space.index.spec, "vectors": space.count,
                "version": space.manifest.version if space.manifest else None}
        return counts
