"""Generated-image rows: which items still need a picture, and what was generated."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from search.catalog.models import GenerationRow, ItemRow
from search.catalog.transactions import Transactional, chunks, core_table


class GenerationRows(Transactional):
    def items_needing_generation(self, collection_id: int, *, generator: str, model: str,
                                 limit: int = 1000, after: int = 0) -> list[tuple[int, str, str]]:
        """(item_id, external_id, text) of active items with text, no real image, and no
        generated image for their current text from this generator."""
        current = select(GenerationRow.id).where(
            GenerationRow.item_id == ItemRow.id, GenerationRow.prompt == ItemRow.text,
            GenerationRow.generator == generator, GenerationRow.model == model)
        query = (select(ItemRow.id, ItemRow.external_id, ItemRow.text)
                 .where(ItemRow.collection_id == collection_id, ItemRow.status == "active",
                        ItemRow.text.is_not(None), ItemRow.image_ref.is_(None),
                        ItemRow.id > after, ~current.exists())
                 .order_by(ItemRow.id).limit(limit))
        with self.session() as s:
            return [(i, e, t) for i, e, t in s.execute(query)]

    def record_generation(self, collection_id: int, item_id: int, *, generator: str,
                          model: str, prompt: str, seed: int, image_ref: str) -> None:
        with self.session() as s:
            s.execute(delete(GenerationRow).where(GenerationRow.item_id == item_id))
            s.add(GenerationRow(collection_id=collection_id, item_id=item_id,
                                generator=generator, model=model, prompt=prompt, seed=seed,
                                image_ref=image_ref))

    def delete_generations(self, item_ids: Sequence[int]) -> None:
        table = core_table(GenerationRow)  # Core: it runs on every write of an image
        with self.session() as s:
            for chunk in chunks([int(i) for i in item_ids]):
                s.execute(delete(table).where(table.c.item_id.in_(chunk)))

