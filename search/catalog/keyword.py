"""Keyword queries over the lexical index (see `search.catalog.lexical`): ranked matches,
the full match set, typo correction of query words and exact identifier lookups."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
    union,
)
from sqlalchemy.orm import Session

from search.catalog import lexical
from search.catalog.facet_sql import facet_counts
from search.catalog.filter_sql import filter_clause
from search.catalog.models import GenerationRow, ItemRow, LexicalIdentifierRow, LexicalWordRow
from search.facets import FacetCounts, FacetRequest
from search.filters import Filter

MAX_TYPO_WORDS = 8

_fts = table(lexical.FTS_TABLE, column("rowid", Integer), column("collection_id", Integer))
_docs = table(lexical.PG_TABLE, column("item_id", Integer), column("collection_id", Integer),
              column("document"))


@dataclass(frozen=True)
class KeywordMatch:
    item_id: int
    score: float  # BM25 (SQLite, higher is better) or ts_rank_cd (PostgreSQL)


@dataclass(frozen=True)
class ItemView:
    """An item as a hit shows it."""

    item_id: int
    external_id: str
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any]
    generated: bool


class KeywordIndex:
    def __init__(self, session: Callable[[], AbstractContextManager[Session]],
                 dialect: str) -> None:
        self._session, self.dialect = session, dialect

    # -- parsing ---------------------------------------------------------------------
    def parse(self, collection_id: int, user_text: str) -> lexical.KeywordQuery:
        """Query words, each with its one-edit corrections when the collection has never
        seen the word itself (`sneeker` -> `sneaker`, `sneakers`)."""
        found = lexical.query_words(user_text)
        if not found:
            return lexical.KeywordQuery(())
        with self._session() as s:
            known = self._known(s, collection_id, found)
            unknown = [w for w in found if w not in known
                       and len(w) >= lexical.MIN_TYPO_LENGTH][:MAX_TYPO_WORDS]
            edits = {w: lexical.one_edit(w) for w in unknown}
            near = self._known(s, collection_id, [e for es in edits.values() for e in es])
        groups = []
        for w in found:
            fixes = sorted(edits.get(w, set()) & near, key=lambda e: (e[0] != w[0], e))
            groups.append((w, *fixes[:lexical.MAX_CORRECTIONS]))
        return lexical.KeywordQuery(tuple(groups))

    @staticmethod
    def _known(s: Session, collection_id: int, candidates: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(candidates), 5000):
            chunk = candidates[start:start + 5000]
            known.update(s.scalars(select(LexicalWordRow.word).where(
                LexicalWordRow.collection_id == collection_id, LexicalWordRow.word.in_(chunk))))
        return known

    # -- matching --------------------------------------------------------------------
    def _matches(self, collection_id: int, query: lexical.KeywordQuery, filters: list[Filter],
                 every_word: bool) -> tuple[Select, ColumnElement, ColumnElement]:
        """(select of matching item ids, id column, score column: higher is better).

        `every_word`: each query word (or one of its corrections) must occur; else any."""
        score: ColumnElement
        if self.dialect == "postgresql":
            tsquery = _pg_tsquery(query, every_word)
            ids, score = _docs.c.item_id, func.ts_rank_cd(_docs.c.document, tsquery)
            stmt = select(ids).where(_docs.c.collection_id == collection_id,
                                     _docs.c.document.op("@@")(tsquery))
        else:
            ids = _fts.c.rowid
            score = -func.bm25(literal_column(lexical.FTS_TABLE), lexical.TEXT_WEIGHT,
                               lexical.ATTRIBUTE_WEIGHT)
            match = text(f"{lexical.FTS_TABLE} MATCH :q").bindparams(
                q=_fts5_match(query, every_word))
            stmt = select(ids).where(match, _fts.c.collection_id == collection_id)
        clause = filter_clause(filters, collection_id, ids)
        if clause is not None:
            stmt = stmt.where(clause)
        return stmt, ids, score

    def search(self, collection_id: int, query: lexical.KeywordQuery, limit: int,
               filters: list[Filter]) -> list[KeywordMatch]:
        """The best `limit` matches, best first (ties by item id, so pages are stable):
        items with every word first, then, if too few, items with any of them. Requiring
        every word first also keeps common words cheap on large collections."""
        if query.empty:
            return []
        found = self._ranked(collection_id, query, limit, filters, every_word=True)
        if len(found) < limit and len(query.alternatives) > 1:
            seen = {m.item_id for m in found}
            more = self._ranked(collection_id, query, limit, filters, every_word=False)
            found += [m for m in more if m.item_id not in seen][:limit - len(found)]
        return found

    def _ranked(self, collection_id: int, query: lexical.KeywordQuery, limit: int,
                filters: list[Filter], every_word: bool) -> list[KeywordMatch]:
        stmt, ids, score = self._matches(collection_id, query, filters, every_word)
        stmt = stmt.add_columns(score.label("score")).order_by(score.desc(), ids).limit(limit)
        with self._session() as s:
            return [KeywordMatch(int(i), float(sc)) for i, sc in s.execute(stmt)]

    def _match_set(self, collection_id: int, query: lexical.KeywordQuery,
                   filters: list[Filter]) -> Select:
        """What facets and counts cover: items with every word, or, if none, any word."""
        stmt, _, _ = self._matches(collection_id, query, filters, every_word=True)
        with self._session() as s:
            if s.execute(stmt.limit(1)).first() is not None:
                return stmt
        return self._matches(collection_id, query, filters, every_word=False)[0]

    def count(self, collection_id: int, query: lexical.KeywordQuery,
              filters: list[Filter]) -> int:
        if query.empty:
            return 0
        stmt = self._match_set(collection_id, query, filters)
        with self._session() as s:
            return int(s.scalar(select(func.count()).select_from(stmt.subquery())) or 0)

    def facets(self, collection_id: int, query: lexical.KeywordQuery, filters: list[Filter],
               requests: list[FacetRequest]) -> tuple[FacetCounts, ...]:
        """Counts over the full match set, in SQL."""
        if query.empty:
            return tuple(FacetCounts(r.field, ()) for r in requests)
        stmt = self._match_set(collection_id, query, filters)
        with self._session() as s:
            return tuple(facet_counts(s, self.dialect, stmt, r) for r in requests)

    # -- exact identifiers --------------------------------------------------------------
    def exact(self, collection_id: int, user_text: str, filters: list[Filter]) -> list[int]:
        """Items whose external id, or a declared identifier attribute, equals the text."""
        raw, value = user_text.strip(), lexical.normalise_identifier(user_text)
        if not raw or len(raw) > 512:
            return []
        by_id = select(ItemRow.id.label("id")).where(ItemRow.collection_id == collection_id,
                                                    ItemRow.external_id == raw)
        by_attribute = select(LexicalIdentifierRow.item_id.label("id")).where(
            LexicalIdentifierRow.collection_id == collection_id,
            LexicalIdentifierRow.value == value)
        found = union(by_id, by_attribute).subquery()
        stmt = select(found.c.id).order_by(found.c.id)
        clause = filter_clause(filters, collection_id, found.c.id)
        if clause is not None:
            stmt = stmt.where(clause)
        with self._session() as s:
            return [int(i) for i in s.scalars(stmt)]

    # -- hits ----------------------------------------------------------------------------
    def items(self, item_ids: list[int]) -> dict[int, ItemView]:
        out: dict[int, ItemView] = {}
        with self._session() as s:
            for start in range(0, len(item_ids), 5000):
                rows = s.execute(select(ItemRow, GenerationRow.image_ref)
                                 .outerjoin(GenerationRow, GenerationRow.item_id == ItemRow.id)
                                 .where(ItemRow.id.in_(item_ids[start:start + 5000])))
                for item, generated_ref in rows:
                    image_ref = item.image_ref or generated_ref  # a real image always wins
                    out[item.id] = ItemView(item.id, item.external_id, item.text, image_ref,
                                            item.attributes or {},
                                            image_ref is not None and not item.image_ref)
        return out




def _fts5_match(query: lexical.KeywordQuery, every_word: bool) -> str:
    # \w+ words hold no quote: each is one quoted FTS5 string, stemmed by the table.
    groups = ["(" + " OR ".join(f'"{w}"' for w in group) + ")" for group in query.alternatives]
    return (" AND " if every_word else " OR ").join(groups)


def _pg_tsquery(query: lexical.KeywordQuery, every_word: bool) -> ColumnElement:
    """Each word through websearch_to_tsquery (bound, never parsed as syntax), combined
    with tsquery || (or) within a word's alternatives and && or || across words."""
    def word(w: str) -> ColumnElement:
        return func.websearch_to_tsquery(literal_column("'english'"), bindparam(None, w))

    groups: list[ColumnElement] = []
    for alternatives in query.alternatives:
        combined = word(alternatives[0])
        for alternative in alternatives[1:]:
            combined = combined.op("||")(word(alternative))
        groups.append(combined)
    result = groups[0]
    for combined in groups[1:]:
        result = result.op("&&" if every_word else "||")(combined)
    return result
