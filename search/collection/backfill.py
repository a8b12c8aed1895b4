"""Fill the gap of items with a text but no picture: generate one, mark it generated.

Idempotent: an item is generated for once per (text, generator, model); a new text
regenerates it; an item with a real image is never generated for."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

from search.collection.collection import Collection, GeneratedImage
from search.collection.preparing import ItemFailure

SEED_SPACE = 2**31


@dataclass
class GenerationReport:
    generated: int = 0
    failures: list[ItemFailure] = field(default_factory=list)


def item_seed(external_id: str) -> int:
    """Per-item seed: the same item gets the same picture however the run is batched."""
    return int.from_bytes(hashlib.sha256(external_id.encode()).digest()[:8], "big") % SEED_SPACE


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def generate_missing(collection: Collection, generator, *, batch_size: int = 16,
                     job_id: int | None = None) -> GenerationReport:
    """`generator` is a `search.models.generator.ImageGenerator`; a failure for one item is
    recorded and the run goes on."""
    report = GenerationReport()
    after = 0
    while todo := collection.catalog.items_needing_generation(
            collection.info.id, generator=generator.name, model=generator.model_id,
            limit=batch_size, after=after):
        after = todo[-1][0]
        done = []
        for item_id, external_id, text in todo:
            seed = item_seed(external_id)
            try:
                image = generator.generate([text], seed=seed)[0]
            except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the run
                report.failures.append(ItemFailure(external_id, "generate", str(exc)))
                continue
            done.append(GeneratedImage(item_id, image, _png(image), generator.name,
                                       generator.model_id, text, seed))
        collection.add_generated(done)
        report.generated += len(done)
    collection.record_failures(report.failures, job_id)
    return report
