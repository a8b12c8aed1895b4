"""What the catalog hands out: frozen records, never ORM rows or dicts.

These cross into `api/` and `indexer/` (exported by `search`), so they carry plain values
only: a caller can keep one after its session has ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class VectorRef:
    """One stored vector of an item: its id (= its FAISS id), modality and source."""

    vector_id: int
    modality: str
    source: str


@dataclass(frozen=True)
class Generation:
    """Provenance of an item's generated image."""

    generator: str
    model: str
    prompt: str
    seed: int
    image_ref: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class StoredItem:
    """An item with its vector ids: what a reindex or a training run walks over."""

    item_id: int
    external_id: str
    text: str | None
    image_ref: str | None
    vectors: tuple[VectorRef, ...] = ()


def shown_image(ref: str | None, generated_ref: str | None) -> tuple[str | None, bool]:
    """(the image a hit shows, whether it is generated): a real image always wins."""
    shown = ref or generated_ref
    return shown, shown is not None and not ref


@dataclass(frozen=True)
class ItemDetail:
    """Everything the catalog knows about one item."""

    item_id: int
    external_id: str
    text: str | None
    image_ref: str | None  # the item's own image; None when it has none
    attributes: dict[str, Any]
    status: str
    content_hash: str
    created_at: datetime | None
    updated_at: datetime | None
    vectors: tuple[VectorRef, ...] = ()
    generation: Generation | None = None

    @property
    def generated(self) -> bool:
        """The image shown is a generated one: a real image always wins."""
        return self.image_ref is None and self.generation is not None

    @property
    def shown_image_ref(self) -> str | None:
        return self.generation.image_ref if self.generated and self.generation else \
            self.image_ref


@dataclass(frozen=True)
class CollectionCounts:
    items: int
    vectors: int
    # "image_original": 12, "text_original": 12, "image_generated": 3, ...
    vectors_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str  # add, ...
    status: str  # running, done, failed
    counts: dict[str, Any]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class FailureRecord:
    external_id: str | None
    stage: str  # read, decode, write, generate, ...
    reason: str
    job_id: int | None
    created_at: datetime | None


@dataclass(frozen=True)
class IndexVersionRecord:
    version: str  # "<modality>/<version on disk>"
    spec: str
    vector_count: int
    model_identity: str
    created_at: datetime | None
