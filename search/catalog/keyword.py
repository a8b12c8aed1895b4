"""Keyword queries over the lexical index (see `search.catalog.lexical`): ranked matches,
the full match set, typo correction of query words and exact identifier lookups.

Ranking cost is bounded: BM25 (SQLite) and ts_rank (PostgreSQL) score each row they
see, so a common word at 1M items (a third of the catalogue says "black") would cost a
second per query if every match were scored. Matches are therefore relaxed in stages,
strictest first: every word, then all but one word, then any word; each stage scores at
most `SCORE_CAP` of its matches (SQLite: the newest, by item id; PostgreSQL: the first
the GIN scan yields) and the search stops as soon as the stages have found enough.
Within a stage larger than the cap, the matches left unscored carry the same query
words as the scored ones: what is lost is BM25's length and frequency nuance among
near-ties, not a better kind of match. Facets and counts still cover every match.
The relaxed stages only run while the stricter ones have found fewer than `RELAX_BELOW`
matches: they exist for queries whose words rarely meet, not to pad a list that already
fills the first pages, and they are the dearest stages (each walks the union of its word
sets' posting lists).

Filters on SQLite: FTS5 cannot seek to a set of ids cheaply (it re-runs the query per id),
and an `IN (subquery)` is built anew by every statement (seconds for a set of 800k ids),
so a filtered ranked search reads the filter's allowed item ids from the catalog's
cache of allowed sets (the one the vector side uses, valid until the collection's next
write) and checks each match against it in memory: one cheap test per match, whatever
the filter's shape or size; the scan stops once the stage has its cap of allowed matches.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Select,
    String,
    any_,
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
from search.catalog.allowed_items import ALLOWED_FUNCTION, AllowedItems, AllowedTests, use
from search.catalog.attributes import IdSetCache, allowed_item_ids
from search.catalog.bm25 import Bm25
from search.catalog.facet_sql import facet_counts
from search.catalog.filter_sql import filter_clause
from search.catalog.models import GenerationRow, ItemRow, LexicalIdentifierRow, LexicalWordRow
from search.catalog.records import shown_image
from search.catalog.transactions import core_table
from search.facets import FacetCounts, FacetRequest
from search.filters import Filter

MAX_TYPO_WORDS = 8
# Rows the every-word stage scores at most, unless a call says otherwise (the service:
# `Settings.keyword_score_cap`). Each scored row costs FTS5's walk to it, its content and
# its BM25 (~10-16 us at 1M items on SQLite). Its matches all hold every query word, so
# a smaller sample loses BM25's length nuance only: at 1M items (99 shop queries with
# over 100 such matches, median 1,236; tests/benchmarks/keyword_cap_quality.py) the top
# 10 kept 98.5 % of the BM25 of the top 10 over every match at 300, 99.3 % at 1,000, and
# hybrid p50 in process was 0.71-0.75x at 300 (README, "Measured speed").
SCORE_CAP = 300
# Relaxed stages score more: their matches differ in which words they hold (a rare word's
# matches can be older than a common word's newest), so a small sample loses kinds of
# match, not nuance (the judged set's `phrase` type lost 0.9 R@10 points at 300).
RELAXED_SCORE_CAP = 1000
# Relaxed stages run only while the stricter ones found fewer matches than this (or than
# the page size, if larger): two pages of every-word matches are answer enough. At 1M
# items (400 shop queries) this skipped a relaxed stage for a quarter of those that ran
# one and cut the keyword side's p99 by ~25 %; on the judged set R@10 did not drop on
# any query type (README, "Measured quality").
RELAX_BELOW = 20
# PostgreSQL ranks with ts_rank (word frequencies, text words weighing more than
# attribute words: 'A' and 'B' in `lexical`), divided by 1 + the log of the document's
# length (normalisation 1), as BM25 discounts long documents. ts_rank_cd, used before,
# ranks by cover density: on the judged set it put keyword R@10 at 47.0 on PostgreSQL
# against 71.1 for SQLite's BM25 (titles 45 vs 100); ts_rank with this normalisation
# gave 69.9, and 69.1 (from 46.4) on a second set not used for the choice. It is also
# ~10x cheaper per row on a relaxed stage's OR of ANDs (README, "Measured quality").
PG_RANK_NORMALISATION = 1
# Queries up to this many words get the all-but-one stage: n phrases of n - 1 words, each
# phrase scanned in full for its document frequency (5 words: ~4x the every-word stage).
MAX_RELAXED_WORDS = 4


class Stage(Enum):
    """How many of the query's words a match must contain."""

    ALL = "all"
    ALL_BUT_ONE = "all_but_one"
    ANY = "any"


def stages(query: lexical.KeywordQuery) -> list[Stage]:
    words = len(query.alternatives)
    if words <= 1:
        return [Stage.ALL]
    if words == 2 or words > MAX_RELAXED_WORDS:
        return [Stage.ALL, Stage.ANY]
    return [Stage.ALL, Stage.ALL_BUT_ONE, Stage.ANY]

_fts = table(lexical.FTS_TABLE, column("rowid", Integer), column("collection_id", Integer),
             column("text"), column("attrs"))
_docs = table(lexical.PG_TABLE, column("item_id", Integer), column("collection_id", Integer),
              column("document"))


@dataclass(frozen=True)
class KeywordMatch:
    item_id: int
    score: float  # BM25 (SQLite) or ts_rank (PostgreSQL); higher is better


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
                 dialect: str, id_sets: IdSetCache | None = None) -> None:
        self._session, self.dialect = session, dialect
        self._id_sets = id_sets if id_sets is not None else IdSetCache()
        self._tests = AllowedTests()
        self._bm25 = Bm25()

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

    def _known(self, s: Session, collection_id: int, candidates: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(candidates), 5000):
            known.update(s.scalars(_KNOWN[self.dialect], {
                "cid": collection_id, "words": candidates[start:start + 5000]}))
        return known

    # -- matching --------------------------------------------------------------------
    def _matches(self, collection_id: int, query: lexical.KeywordQuery, filters: list[Filter],
                 stage: Stage, allowed: AllowedItems | None = None
                 ) -> tuple[Select, ColumnElement, ColumnElement]:
        """(select of matching item ids, id column, score column: higher is better).
        SQLite with `allowed`: the filters are checked through it (see the module's
        docstring; the caller registers it with `use`), else in SQL."""
        score: ColumnElement
        if self.dialect == "postgresql":
            tsquery = _pg_tsquery(query, stage)
            ids = _docs.c.item_id
            score = func.ts_rank(_docs.c.document, tsquery, PG_RANK_NORMALISATION)
            stmt = select(ids).where(_docs.c.collection_id == collection_id,
                                     _docs.c.document.op("@@")(tsquery))
        else:
            ids = _fts.c.rowid
            score = -func.bm25(literal_column(lexical.FTS_TABLE), lexical.TEXT_WEIGHT,
                               lexical.ATTRIBUTE_WEIGHT)
            match = text(f"{lexical.FTS_TABLE} MATCH :q").bindparams(
                q=_fts5_match(query, stage))
            stmt = select(ids).where(match)
            if allowed is not None:
                # the span lets FTS5 skip the doclists outside it; the set implies the
                # collection, so no match reads its stored collection_id
                test = getattr(func, ALLOWED_FUNCTION)(ids - allowed.offset)
                return stmt.where(ids.between(allowed.low, allowed.high), test), ids, score
            # `+rowid`: checked per match. A plain `rowid IN (...)` would let SQLite run
            # the FTS5 query once per filtered id, recomputing BM25's document
            # frequencies each time (seconds for a common word and a 1 % filter).
            clause = filter_clause(filters, collection_id,
                                   literal_column(f"+{lexical.FTS_TABLE}.rowid"))
            # filters select the collection's items already; without them the stored
            # collection_id is read per match (one row lookup each)
            return stmt.where(clause if clause is not None else
                              _fts.c.collection_id == collection_id), ids, score
        clause = filter_clause(filters, collection_id, ids)
        if clause is not None:
            stmt = stmt.where(clause)
        return stmt, ids, score

    def search(self, collection_id: int, query: lexical.KeywordQuery, limit: int,
               filters: list[Filter], score_cap: int | None = None,
               relax_below: int = RELAX_BELOW) -> list[KeywordMatch]:
        """The best `limit` matches, best first (ties by item id, so pages are stable):
        items with every word first, then with all but one, then with any of them; each
        relaxed stage only runs while the earlier ones found fewer than `relax_below` (and
        than `limit`). The every-word stage scores at most `score_cap` (default
        `SCORE_CAP`) matches, a relaxed stage at most the larger of that and
        `RELAXED_SCORE_CAP`, more than the earlier stages'."""
        cap = SCORE_CAP if score_cap is None else score_cap
        enough = min(limit, relax_below)
        if query.empty:
            return []
        allowed = None
        if filters and self.dialect != "postgresql":
            allowed = self._allowed(collection_id, filters)
            if allowed is None:
                return []  # no item passes the filters
        found: list[KeywordMatch] = []
        seen: set[int] = set()
        for stage in stages(query):
            # the stage's matches include the earlier stages': score that many more
            stage_cap = cap if stage is Stage.ALL else max(cap, RELAXED_SCORE_CAP)
            more = self._ranked(collection_id, query, limit + len(seen), filters, stage,
                                stage_cap + len(seen), allowed)
            found += [m for m in more if m.item_id not in seen][:limit - len(found)]
            seen.update(m.item_id for m in more)
            if len(found) >= enough:
                break
        return found

    def _allowed(self, collection_id: int, filters: list[Filter]) -> AllowedItems | None:
        """The filters' allowed items (None: none), from the catalog's cached sets."""
        with self._session() as s:
            ids = allowed_item_ids(s, self._id_sets, collection_id, filters)
        return self._tests.of(ids) if len(ids) else None

    def _ranked(self, collection_id: int, query: lexical.KeywordQuery, limit: int,
                filters: list[Filter], stage: Stage, cap: int,
                allowed: AllowedItems | None) -> list[KeywordMatch]:
        """The stage's best `limit` among at most `cap` of its matches."""
        stmt, ids, score = self._matches(collection_id, query, filters, stage, allowed)
        if self.dialect != "postgresql":
            stmt = stmt.order_by(ids.desc())  # FTS5 walks its doclists newest first
            if not self._fts5_is_cheaper(query, stage, cap):
                return self._scored(stmt, ids, query, limit, cap, allowed)
        bounded = stmt.add_columns(score.label("score")).limit(cap).subquery()
        ranked = (select(bounded.c[0], bounded.c.score)
                  .order_by(bounded.c.score.desc(), bounded.c[0]).limit(limit))
        with self._session() as s:
            if allowed is not None:
                use(s, allowed)
            return [KeywordMatch(int(i), float(sc)) for i, sc in s.execute(ranked)]

    def _fts5_is_cheaper(self, query: lexical.KeywordQuery, stage: Stage, cap: int) -> bool:
        """SQLite: rank in SQL with bm25() (scans) or here (`Bm25`), whichever costs
        less; both give the same scores."""
        sets = _word_sets(query, stage)
        phrases = [w for words in sets for i in words for w in query.alternatives[i]]
        groups = query.alternatives if stage is Stage.ALL else None
        with self._session() as s:
            return self._bm25.fts5_is_cheaper(s, phrases, groups, cap)

    def _scored(self, stmt: Select, ids: ColumnElement, query: lexical.KeywordQuery,
                limit: int, cap: int, allowed: AllowedItems | None) -> list[KeywordMatch]:
        """SQLite: the newest `cap` matches (FTS5 walks its doclists newest first) with
        their words, scored by `Bm25` here rather than by FTS5's per-statement scans."""
        stmt = stmt.add_columns(_fts.c.text, _fts.c.attrs).limit(cap)
        with self._session() as s:
            if allowed is not None:
                use(s, allowed)
            rows = s.execute(stmt).all()
            scores = self._bm25.score(s, query.terms(), [(t, a) for _, t, a in rows])
        best = sorted(zip((int(r[0]) for r in rows), scores, strict=True),
                      key=lambda pair: (-pair[1], pair[0]))
        return [KeywordMatch(i, score) for i, score in best[:limit]]

    def _match_set(self, collection_id: int, query: lexical.KeywordQuery,
                   filters: list[Filter]) -> Select:
        """What facets and counts cover: items with every word, or, if none, any word."""
        stmt, _, _ = self._matches(collection_id, query, filters, Stage.ALL)
        with self._session() as s:
            if s.execute(stmt.limit(1)).first() is not None:
                return stmt
        return self._matches(collection_id, query, filters, Stage.ANY)[0]

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
        stmt = _EXACT
        clause = filter_clause(filters, collection_id, _EXACT_IDS.c.id)
        if clause is not None:
            stmt = stmt.where(clause)
        with self._session() as s:
            return [int(i) for i in s.scalars(stmt, {"cid": collection_id, "raw": raw,
                                                      "value": value})]

    # -- hits ----------------------------------------------------------------------------
    def items(self, item_ids: list[int]) -> dict[int, ItemView]:
        """Catalog rows of hybrid and keyword candidates, whichever side found them (Core:
        loading ORM entities cost twice the query; a page reads ~20, facets ~140)."""
        out: dict[int, ItemView] = {}
        with self._session() as s:
            for start in range(0, len(item_ids), 5000):
                rows = s.execute(_ITEM_VIEWS[self.dialect], {"ids": item_ids[start:start + 5000]})
                for item_id, external_id, text, ref, attributes, generated_ref in rows:
                    image_ref, generated = shown_image(ref, generated_ref)
                    out[item_id] = ItemView(item_id, external_id, text, image_ref,
                                            attributes or {}, generated)
        return out




def _word_sets(query: lexical.KeywordQuery, stage: Stage) -> list[list[int]]:
    """Which query words (by position) each alternative of the stage requires together."""
    n = len(query.alternatives)
    if stage is Stage.ALL:
        return [list(range(n))]
    if stage is Stage.ANY:
        return [[i] for i in range(n)]
    return [[j for j in range(n) if j != left_out] for left_out in range(n)]


def _fts5_match(query: lexical.KeywordQuery, stage: Stage) -> str:
    # \w+ words hold no quote: each is one quoted FTS5 string, stemmed by the table.
    groups = ["(" + " OR ".join(f'"{w}"' for w in group) + ")" for group in query.alternatives]
    return " OR ".join("(" + " AND ".join(groups[i] for i in words) + ")"
                       for words in _word_sets(query, stage))


def _pg_tsquery(query: lexical.KeywordQuery, stage: Stage) -> ColumnElement:
    """Each word through websearch_to_tsquery (bound, never parsed as syntax), combined
    with tsquery || (or) within a word's alternatives, && within a stage's word set and
    || across its sets."""
    def word(w: str) -> ColumnElement:
        return func.websearch_to_tsquery(literal_column("'english'"), bindparam(None, w))

    groups: list[ColumnElement] = []
    for alternatives in query.alternatives:
        combined = word(alternatives[0])
        for alternative in alternatives[1:]:
            combined = combined.op("||")(word(alternative))
        groups.append(combined)
    result: ColumnElement | None = None
    for words in _word_sets(query, stage):
        required = groups[words[0]]
        for i in words[1:]:
            required = required.op("&&")(groups[i])
        result = required if result is None else result.op("||")(required)
    assert result is not None
    return result


# Statements of every keyword query, built once (building and keying one costs more than
# running it: `exact` took 0.29 ms through the ORM, 0.006 ms as its SQL).
_items, _generations = core_table(ItemRow), core_table(GenerationRow)
_words, _identifiers = core_table(LexicalWordRow), core_table(LexicalIdentifierRow)


def _in_list(column: ColumnElement, name: str, item_type: Any) -> dict[str, ColumnElement]:
    """`column` in a bound list, per dialect. PostgreSQL: one array parameter, so every
    list length is one statement that psycopg prepares once (an expanding IN is a new
    statement, parsed and planned, per length; at 1M items, 60-100 ids: p50 2.49 ->
    1.80 ms)."""
    return {"postgresql": column == any_(bindparam(name, type_=ARRAY(item_type))),
            "sqlite": column.in_(bindparam(name, expanding=True))}


_KNOWN = {dialect: select(_words.c.word).where(_words.c.collection_id == bindparam("cid"),
                                               inside)
          for dialect, inside in _in_list(_words.c.word, "words", String).items()}
_EXACT_IDS = union(
    select(_items.c.id.label("id")).where(_items.c.collection_id == bindparam("cid"),
                                          _items.c.external_id == bindparam("raw")),
    select(_identifiers.c.item_id.label("id")).where(
        _identifiers.c.collection_id == bindparam("cid"),
        _identifiers.c.value == bindparam("value"))).subquery()
_EXACT = select(_EXACT_IDS.c.id).order_by(_EXACT_IDS.c.id)
_VIEWS = (select(_items.c.id, _items.c.external_id, _items.c.text, _items.c.image_ref,
                 _items.c.attributes, _generations.c.image_ref)
          .outerjoin(_generations, _generations.c.item_id == _items.c.id))
_ITEM_VIEWS = {dialect: _VIEWS.where(inside)
               for dialect, inside in _in_list(_items.c.id, "ids", Integer).items()}
