"""Vector rows: the ids the FAISS index stores, what item each belongs to, and the
allowed-id sets filters select (cached until the collection's next write)."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Select, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from search.catalog.attributes import IdSetCache, bump_write_version, id_set_key, write_version
from search.catalog.filter_sql import filter_clause
from search.catalog.models import GenerationRow, ItemRow, VectorRow
from search.catalog.records import shown_image
from search.catalog.transactions import Transactional, chunks, core_table
from search.filters import Filter


@dataclass(frozen=True)
class VectorInfo:
    """A vector joined with its item: everything a hit shows."""

    vector_id: int
    item_id: int
    external_id: str
    modality: str
    source: str
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any]
    image_generated: bool = False  # image_ref is a picture generated from the text


class VectorRows(Transactional):
    id_sets: IdSetCache

    def replace_vectors(self, collection_id: int, entries: Sequence[tuple[int, str, str]],
                        *, fresh: Container[int] = ()) -> tuple[list[int], list[int]]:
        """Give each (item_id, modality, source) a fresh vector id, dropping the old one.
        `fresh`: items inserted in this transaction (they have no old vectors to look up).

        Returns (new ids in entry order, replaced old ids)."""
        by_kind: dict[tuple[str, str], list[int]] = {}
        for item_id, modality, source in entries:
            if item_id not in fresh:
                by_kind.setdefault((modality, source), []).append(item_id)
        with self.session() as s:
            old: list[int] = []  # one query per chunk, not per item: bulk loads stay linear
            for (modality, source), item_ids in by_kind.items():
                old += _vector_ids_of(s, item_ids, modality, source)
            _delete_vectors(s, old)
            rows = s.execute(
                insert(_vectors).returning(_vectors.c.id, sort_by_parameter_order=True),
                [{"collection_id": collection_id, "item_id": i, "modality": m, "source": src}
                 for i, m, src in entries]).scalars().all() if entries else []
            bump_write_version(s, collection_id)  # new ids: cached allowed sets are stale
            return list(rows), old

    def remove_vectors(self, item_ids: Sequence[int], modality: str, source: str) -> list[int]:
        with self.session() as s:
            ids = _vector_ids_of(s, item_ids, modality, source)
            _delete_vectors(s, ids)
            return ids

    def vector_ids(self, collection_id: int, *, modalities: Sequence[str] | None = None,
                   filters: list[Filter] | None = None, sources: Sequence[str] | None = None,
                   within: np.ndarray | None = None) -> np.ndarray:
        """Ids of the collection's vectors whose item passes `filters` (int64, sorted)."""
        query = self._vectors_where(select(VectorRow.id), collection_id, modalities, filters,
                                    sources)
        with self.session() as s:
            if within is None:
                ids = list(s.scalars(query))
            else:
                ids = []
                for chunk in chunks([int(i) for i in within]):
                    ids += s.scalars(query.where(VectorRow.id.in_(chunk))).all()
        return np.array(sorted(ids), dtype=np.int64)

    def count_vectors(self, collection_id: int, *, modalities: Sequence[str] | None = None,
                      filters: list[Filter] | None = None,
                      sources: Sequence[str] | None = None) -> int:
        query = self._vectors_where(select(func.count(VectorRow.id)), collection_id,
                                    modalities, filters, sources)
        with self.session() as s:
            return int(s.scalar(query) or 0)

    def _vectors_where(self, query: Select, collection_id: int,
                       modalities: Sequence[str] | None, filters: list[Filter] | None,
                       sources: Sequence[str] | None) -> Select:
        """`query` over VectorRow narrowed to a collection, modalities, sources, filters."""
        query = query.where(VectorRow.collection_id == collection_id)
        if modalities:
            query = query.where(VectorRow.modality.in_(list(modalities)))
        if sources:
            query = query.where(VectorRow.source.in_(list(sources)))
        clause = filter_clause(filters or [], collection_id, VectorRow.item_id)
        return query if clause is None else query.where(clause)

    def allowed_vector_ids(self, collection_id: int, *, modalities: Sequence[str] | None,
                           filters: Sequence[Filter], sources: Sequence[str] | None
                           ) -> np.ndarray:
        """`vector_ids(...)` through a cache valid until the collection's next write:
        a repeated filter costs one tiny stamp query, not a scan (int64, sorted)."""
        key = id_set_key(collection_id, modalities, sources, filters)
        with self.session() as s:
            version = write_version(s, collection_id)
            cached = self.id_sets.get(key, version)
            if cached is not None:
                return cached
            query = self._vectors_where(select(VectorRow.id), collection_id, modalities,
                                        list(filters), sources)
            ids = np.fromiter(s.scalars(query.order_by(VectorRow.id)), dtype=np.int64)
        self.id_sets.put(key, version, ids)
        return ids

    def vector_infos(self, vector_ids: Sequence[int]) -> dict[int, VectorInfo]:
        """Join vectors to their items in one query per chunk (Core: it runs for every
        page of hits, and loading ORM entities cost twice the query)."""
        infos: dict[int, VectorInfo] = {}
        with self.session() as s:
            for chunk in chunks([int(i) for i in vector_ids]):
                for (vid, modality, source, item_id, external_id, text, ref, attributes,
                     generated_ref) in s.execute(_INFOS, {"ids": list(chunk)}):
                    image_ref, generated = shown_image(ref, generated_ref)
                    infos[vid] = VectorInfo(vid, item_id, external_id, modality, source,
                                            text, image_ref, attributes or {}, generated)
        return infos




_vectors = core_table(VectorRow)  # Core statements on the write path: no ORM unit of work


def _vector_ids_of(session: Session, item_ids: Sequence[int], modality: str, source: str
                   ) -> list[int]:
    ids: list[int] = []
    for chunk in chunks([int(i) for i in item_ids]):
        ids += session.scalars(select(_vectors.c.id).where(
            _vectors.c.item_id.in_(chunk), _vectors.c.modality == modality,
            _vectors.c.source == source)).all()
    return ids


def _delete_vectors(session: Session, vector_ids: Sequence[int]) -> None:
    for chunk in chunks(vector_ids):
        session.execute(delete(_vectors).where(_vectors.c.id.in_(chunk)))


_vectors, _items, _generations = (core_table(VectorRow), core_table(ItemRow),
                                  core_table(GenerationRow))
_INFOS = (select(_vectors.c.id, _vectors.c.modality, _vectors.c.source, _items.c.id,
                 _items.c.external_id, _items.c.text, _items.c.image_ref, _items.c.attributes,
                 _generations.c.image_ref)
          .join(_items, _items.c.id == _vectors.c.item_id)
          .outerjoin(_generations, _generations.c.item_id == _items.c.id)
          .where(_vectors.c.id.in_(bindparam("ids", expanding=True))))
