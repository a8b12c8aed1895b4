"""A collection's write path: items in -> decoded, embedded, catalogued, indexed."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.catalog import Catalog, CollectionInfo, ItemChange, ItemInput, ItemState
from search.catalog_models import Modality, Source
from search.encoder import Encoder
from search.errors import InvalidInputError, XmodalError
from search.media import MediaStore, decode_image
from search.space import VectorSpace
from search.vectors import IndexManifest

ImageInput = bytes | str | Path | Image.Image


@dataclass(frozen=True)
class NewItem:
    """An item as a caller hands it in; `image` is bytes, a file path or a PIL image."""

    external_id: str
    text: str | None = None
    image: ImageInput | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemFailure:
    external_id: str | None
    stage: str
    reason: str


@dataclass
class AddReport:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    failures: list[ItemFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def as_dict(self) -> dict[str, int]:
        return {"new": self.new, "changed": self.changed, "unchanged": self.unchanged,
                "failed": self.failed}


@dataclass
class _Prepared:
    external_id: str
    text: str | None
    image: Image.Image | None
    image_ref: str | None
    attributes: dict[str, Any]
    content_hash: str


def _image_bytes(image: ImageInput) -> tuple[bytes, str]:
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), ".png"
    if isinstance(image, bytes):
        return image, ""
    path = Path(image)
    try:
        return path.read_bytes(), path.suffix.lower()
    except OSError as exc:
        raise InvalidInputError(f"cannot read image file {path}: {exc.strerror}") from None


def _suffix_for(image: Image.Image, hint: str) -> str:
    fmt = (image.format or "").lower()
    return {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif"}.get(fmt, hint or ".img")


class Collection:
    """One collection: its catalog rows, media and one `VectorSpace` per modality."""

    def __init__(self, info: CollectionInfo, catalog: Catalog, encoder: Encoder,
                 root: Path, media: MediaStore) -> None:
        self.info, self.catalog, self.encoder, self.media = info, catalog, encoder, media
        self.root = Path(root)
        self.spaces = {
            m: VectorSpace(self.root / m.value, dim=info.dim, model=encoder.name,
                           weights=encoder.weights.identity, spec=info.index_spec)
            for m in Modality
        }

    @property
    def name(self) -> str:
        return self.info.name

    # -- preparing input -----------------------------------------------------------
    def _content_hash(self, text: str | None, image_digest: str) -> str:
        parts = [self.encoder.identity, text or "", image_digest]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def _prepare_one(self, item: NewItem) -> _Prepared:
        if not isinstance(item.external_id, str) or not item.external_id.strip():
            raise InvalidInputError("missing external id")
        text = item.text.strip() if isinstance(item.text, str) else None
        if not text and item.image is None:
            raise InvalidInputError("item has neither text nor image")
        image = ref = None
        digest = ""
        if item.image is not None:
            data, hint = _image_bytes(item.image)
            image = decode_image(data, min_side=self.encoder.image_size)
            digest = hashlib.sha256(data).hexdigest()
            ref = self.media.put(data, suffix=_suffix_for(Image.open(io.BytesIO(data)), hint))
        return _Prepared(item.external_id, text or None, image, ref, dict(item.attributes),
                         self._content_hash(text, digest))

    def prepare(self, items: Sequence[NewItem]) -> tuple[list[_Prepared], list[ItemFailure]]:
        """Validate and decode; a bad item becomes a failure, the rest go on."""
        prepared: list[_Prepared] = []
        failures: list[ItemFailure] = []
        seen: set[str] = set()
        for item in items:
            try:
                if item.external_id in seen:
                    raise InvalidInputError("duplicate external id in the same batch")
                prepared.append(self._prepare_one(item))
                seen.add(item.external_id)
            except XmodalError as exc:
                failures.append(ItemFailure(str(item.external_id or "") or None,
                                            "prepare", str(exc)))
        return prepared, failures

    # -- writing -------------------------------------------------------------------
    def add_items(self, items: Sequence[NewItem], *, job_id: int | None = None) -> AddReport:
        """Upsert items: unchanged ones are skipped, new/changed ones (re)embedded."""
        prepared, failures = self.prepare(items)
        report = AddReport(failures=failures)
        changes = self.catalog.upsert_items(self.info.id, [
            ItemInput(p.external_id, p.text, p.image_ref, p.attributes, p.content_hash)
            for p in prepared])
        todo = [(p, c) for p, c in zip(prepared, changes, strict=True)
                if c.state is not ItemState.UNCHANGED]
        for change in changes:
            setattr(report, change.state.value, getattr(report, change.state.value) + 1)
        if todo:
            self._embed(todo)
            self.catalog.mark_active([c.item_id for _, c in todo])
        if failures:
            self.catalog.record_failures(self.info.id, job_id,
                                         [(f.external_id, f.stage, f.reason) for f in failures])
        return report

    def _embed(self, todo: list[tuple[_Prepared, ItemChange]]) -> None:
        with_text = [(p, c) for p, c in todo if p.text]
        with_image = [(p, c) for p, c in todo if p.image is not None]
        text_vectors = self.encoder.encode_texts([p.text for p, _ in with_text])
        image_vectors = self.encoder.encode_images([p.image for p, _ in with_image])
        self._replace(Modality.TEXT, [c.item_id for _, c in with_text], text_vectors)
        self._replace(Modality.IMAGE, [c.item_id for _, c in with_image], image_vectors)
        self._drop(Modality.TEXT, [c.item_id for p, c in todo if not p.text])
        self._drop(Modality.IMAGE, [c.item_id for p, c in todo if p.image is None])
        # A real image supersedes a generated one.
        self._drop(Modality.IMAGE, [c.item_id for _, c in with_image], Source.GENERATED)

    def _replace(self, modality: Modality, item_ids: list[int], vectors: np.ndarray,
                 source: Source = Source.ORIGINAL) -> None:
        if not item_ids:
            return
        entries = [(i, modality.value, source.value) for i in item_ids]
        new_ids, old_ids = self.catalog.replace_vectors(self.info.id, entries)
        space = self.spaces[modality]
        space.remove(old_ids)
        space.add(np.asarray(new_ids, dtype=np.int64), vectors)

    def _drop(self, modality: Modality, item_ids: list[int],
              source: Source = Source.ORIGINAL) -> None:
        if item_ids:
            self.spaces[modality].remove(
                self.catalog.remove_vectors(item_ids, modality.value, source.value))

    def delete_items(self, external_ids: Sequence[str]) -> int:
        """Remove items from the catalog and from search at once; returns vectors removed."""
        removed = self.catalog.delete_items(self.info.id, external_ids)
        for space in self.spaces.values():
            space.remove(removed)  # ids of the other modality are simply absent
        return len(removed)

    # -- index lifecycle -----------------------------------------------------------------
    def save(self, retrain: bool | None = None) -> dict[Modality, IndexManifest]:
        """Write a new index version per modality and record it in the catalog."""
        manifests = {m: space.save(retrain) for m, space in self.spaces.items()}
        self._record(manifests)
        return manifests

    def rebuild(self, spec: str | None = None) -> dict[Modality, IndexManifest]:
        manifests = {m: space.rebuild(spec) for m, space in self.spaces.items()}
        self._record(manifests)
        return manifests

    def _record(self, manifests: dict[Modality, IndexManifest]) -> None:
        for modality, manifest in manifests.items():
            self.catalog.record_index_version(
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
