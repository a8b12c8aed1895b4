"""Query modes around the vector engine: keyword-only, and hybrid (vector and keyword
rankings fused), with exact identifier matches first and facet counts.

The vector side is `Searcher.vector_ranking` (the vector search without its page's
rows); this module asks it for a fixed candidate depth, runs the lexical ranker over the
query's text parts (never the encoder), fuses the two rankings per query (reciprocal rank
fusion, `rrf_k`, or weighted normalised scores, `alpha`) and reads the catalog rows of
the fused page only, whichever side found them. Candidate depths do not depend on the
page while `offset + k <= VECTOR_DEPTH`, so pages within it never overlap or skip.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from search.candidates import RankedItem, Ranking
from search.catalog.keyword import RELAX_BELOW, ItemView, KeywordMatch
from search.catalog.lexical import KeywordQuery
from search.collection.collection import Collection
from search.errors import InvalidQueryError
from search.facets import FacetScope, count_facets
from search.query import (
    FusionMethod,
    Hit,
    Ranked,
    SearchMode,
    SearchQuery,
    SearchResult,
    Target,
)

CANDIDATE_DEPTH = 100  # keyword candidates (cheap: one indexed SQL query)
# Vector candidates: fewer, since each costs exact re-ranking and, for target=any, sibling
# scores (k=100 measured ~6x the time of k=40 on the emoji demo).
VECTOR_DEPTH = 40
# The mode of a text query that names none: hybrid, which the judged set measures 39.5
# R@10 points above vector-only with the house model and level with keyword-only, while
# keeping the vector side for words the catalog lacks (README, "Measured quality").
DEFAULT_TEXT_MODE = SearchMode.HYBRID


class VectorSide(Protocol):
    """What hybrid needs of the vector engine (`search.engine.Searcher`)."""

    def vector_search(self, query: SearchQuery) -> SearchResult: ...

    def vector_ranking(self, query: SearchQuery, collection: Collection) -> Ranking: ...

# The two sides of a hybrid query wait on different things: the vector side on the
# encoder and the ANN (native code), the keyword side on the database (SQLite's engine in
# this process, PostgreSQL's in another); each releases the GIL while it waits. Run at
# once they overlap on a second core instead of adding up; they still contend for the GIL,
# so at 1M items on 2 cores hybrid p50 was 0.62-1.23x (median 0.89x) of one after the
# other (bench_api, README "Measured speed"). Threads start on demand; a request's vector
# side holds one while its keyword side runs.
_VECTOR_SIDES = ThreadPoolExecutor(max_workers=32, thread_name_prefix="xmodal-vector-side")


def keyword_text(query: SearchQuery) -> str:
    """The text the lexical side reads: every positively weighted text part."""
    return " ".join(p.text for p in query.parts if p.text is not None and p.weight > 0)


def resolve_mode(query: SearchQuery) -> SearchMode:
    has_text = bool(keyword_text(query))
    if query.mode is None:
        return DEFAULT_TEXT_MODE if has_text else SearchMode.VECTOR
    if query.mode is SearchMode.KEYWORD and (
            not has_text or any(p.text is None for p in query.parts)):
        raise InvalidQueryError("keyword mode needs a text query and reads text only "
                                "(images, vectors and items are searched by vector: use "
                                "hybrid to mix them with text)")
    return query.mode


@dataclass
class _Ranking:
    """One ranker's ordered candidates."""

    name: str
    item_ids: list[int]
    scores: list[float]


def run(query: SearchQuery, collection: Collection, vectors: VectorSide,
        overlap: bool = True, score_cap: int | None = None) -> SearchResult:
    """`overlap`: run the vector side on another thread while this one runs the keyword
    side (see `_VECTOR_SIDES`); False: one after the other. `score_cap`: matches the
    keyword side's every-word stage scores (`KeywordIndex.search`)."""
    mode = resolve_mode(query)
    if mode is SearchMode.VECTOR and not query.facets:
        result = vectors.vector_search(query)
        hits = [_with_rankers(h, {"vector": Ranked(query.offset + i + 1, h.score)})
                for i, h in enumerate(result.hits)]
        return replace(result, hits=hits, mode=mode)
    vector_side = _vector_side(query, collection, mode, vectors, overlap)
    # the keyword side's statements, the page's rows and the facets in one read
    # transaction: one connection and one snapshot for the query, not one per statement
    # (each cost ~0.2 ms to begin and commit on SQLite, a round trip on PostgreSQL)
    with collection.catalog.transaction():
        return _fused(query, collection, mode, vector_side, score_cap)


def _fused(query: SearchQuery, collection: Collection, mode: SearchMode,
           vector_side: Future[Ranking] | None, score_cap: int | None) -> SearchResult:
    depth = max(CANDIDATE_DEPTH, query.offset + query.k)
    started = time.perf_counter()
    rankings, keyword_query = ([], None) if mode is SearchMode.VECTOR else \
        _keyword_rankings(query, collection, depth, score_cap)
    keyword_ms = _ms_since(started)
    inner = vector_side.result() if vector_side is not None else Ranking([], 0)
    considered, timings = inner.considered, {**inner.timings_ms(), "keyword_ms": keyword_ms}
    vector_items = inner.items[:_vector_depth(query)]
    rankings.append(_Ranking("vector", [r.item_id for r in vector_items],
                             [r.score for r in vector_items]))
    started = time.perf_counter()
    fused = fuse(rankings, query)
    # facets count over every candidate; a page only needs hits down to its end
    needed = None if query.facets else query.offset + query.k
    hits = _hits(fused, rankings, vector_items, collection, query, needed)
    timings["fusion_ms"] = _ms_since(started)
    facets, scope = (), None
    if query.facets:
        started = time.perf_counter()
        facets, scope = _facets(query, collection, mode, keyword_query, hits)
        timings["facets_ms"] = _ms_since(started)
    page = hits[query.offset:query.offset + query.k]
    return SearchResult(page, max(considered, len(hits) if needed is None else len(fused)),
                        timings, facets, scope, mode)


def _vector_depth(query: SearchQuery) -> int:
    return min(max(VECTOR_DEPTH, query.offset + query.k), 1000)


def _vector_side(query: SearchQuery, collection: Collection, mode: SearchMode,
                 vectors: VectorSide, overlap: bool) -> Future[Ranking] | None:
    """The vector side's candidates at a fixed depth (None: keyword mode), started."""
    if mode is SearchMode.KEYWORD:
        return None
    inner = replace(query, k=_vector_depth(query), offset=0, facets=(),
                    mode=SearchMode.VECTOR)
    if overlap:
        return _VECTOR_SIDES.submit(vectors.vector_ranking, inner, collection)
    done: Future[Ranking] = Future()
    done.set_result(vectors.vector_ranking(inner, collection))
    return done


def _keyword_rankings(query: SearchQuery, collection: Collection, depth: int,
                      score_cap: int | None) -> tuple[list[_Ranking], KeywordQuery | None]:
    text = keyword_text(query)
    if not text:
        return [], None
    index, cid, filters = collection.catalog.keyword, collection.info.id, list(query.filters)
    exact = index.exact(cid, text, filters)
    parsed = index.parse(cid, text)
    # relaxed stages while the strict ones fill less than a page (and two default pages)
    matches: list[KeywordMatch] = index.search(cid, parsed, depth, filters, score_cap,
                                               relax_below=max(RELAX_BELOW, query.k))
    rankings = [_Ranking("exact", exact, [1.0] * len(exact)),
                _Ranking("keyword", [m.item_id for m in matches], [m.score for m in matches])]
    return rankings, parsed


def fuse(rankings: list[_Ranking], query: SearchQuery) -> list[tuple[int, float]]:
    """(item id, fused score) best first: exact matches, then by fused score, then id."""
    exact = next((r.item_ids for r in rankings if r.name == "exact"), [])
    scored = [r for r in rankings if r.name != "exact"]
    totals: dict[int, float] = {}
    for ranking in scored:
        if query.fusion_method is FusionMethod.RRF:
            parts = [1.0 / (query.rrf_k + rank) for rank in range(1, len(ranking.item_ids) + 1)]
        else:
            share = query.alpha if ranking.name == "vector" else 1 - query.alpha
            parts = [share * s for s in _normalise(ranking)]
        for item_id, part in zip(ranking.item_ids, parts, strict=True):
            totals[item_id] = totals.get(item_id, 0.0) + part
    first = {item_id: position for position, item_id in enumerate(exact)}
    for item_id in exact:
        totals.setdefault(item_id, 0.0)
    order = sorted(totals, key=lambda i: (first.get(i, len(first)), -totals[i], i))
    return [(i, totals[i]) for i in order]


def _normalise(ranking: _Ranking) -> list[float]:
    """Scores onto [0, 1]: cosines min-max over the candidates; keyword scores (BM25,
    ts_rank: never negative) over their maximum, so the last keyword match keeps a share."""
    scores = ranking.scores
    if not scores:
        return []
    low, high = (0.0 if ranking.name == "keyword" else min(scores)), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def _hits(fused: list[tuple[int, float]], rankings: list[_Ranking],
          vector_items: list[RankedItem], collection: Collection, query: SearchQuery,
          needed: int | None) -> list[Hit]:
    """Hits in fused order; with `needed`, stops once that many are made. The catalog
    rows (each a SQL row with its attributes: reading every candidate's, ~140, for a
    page of 10 was most of the cost) are read in at most two statements: the first
    `2 * needed` candidates', then, only if too few of them show (deleted meanwhile, or
    a keyword match without the modality the query targets), all the rest at once."""
    ranks: dict[int, dict[str, Ranked]] = {}
    for ranking in rankings:
        for rank, (item_id, score) in enumerate(zip(ranking.item_ids, ranking.scores,
                                                    strict=True), 1):
            ranks.setdefault(item_id, {})[ranking.name] = Ranked(rank, score)
    by_id = {r.item_id: r for r in vector_items}
    first = len(fused) if needed is None else max(2 * needed, 20)
    hits: list[Hit] = []
    for part in (fused[:first], fused[first:]):
        views = collection.catalog.keyword.items([i for i, _ in part]) if part else {}
        for item_id, score in part:
            view = views.get(item_id)
            if view is None:
                continue  # deleted meanwhile
            if item_id in by_id:  # found by vector: shown as the vector side shows it
                hit = _vector_hit(view, score, by_id[item_id])
            elif _shows(view, query):
                hit = _keyword_hit(view, score, query.target)
            else:
                continue  # lacks the modality the query targets
            hits.append(_with_rankers(hit, ranks.get(item_id, {})))
        if needed is None or len(hits) >= needed:
            break
    return hits


def _shows(view: ItemView, query: SearchQuery) -> bool:
    """A keyword match is shown for target=image only with a picture (a real one when the
    query leaves generated pictures out), for text with a text: what the vector side of
    the same query could have found."""
    if query.target is Target.IMAGE:
        return view.image_ref is not None and (query.include_generated or not view.generated)
    return query.target is Target.ANY or view.text is not None


def _vector_hit(view: ItemView, score: float, ranked: RankedItem) -> Hit:
    return Hit(view.item_id, view.external_id, score, ranked.modality, view.text,
               view.image_ref, view.attributes, view.generated, ranked.scores)


def _keyword_hit(view: ItemView, score: float, target: Target) -> Hit:
    # Found by its words; the modality shown is the one the query asked for.
    modality = "image" if target is Target.IMAGE or view.text is None else "text"
    return Hit(view.item_id, view.external_id, score, modality, view.text, view.image_ref,
               view.attributes, view.generated, {})


def _with_rankers(hit: Hit, rankers: dict[str, Ranked]) -> Hit:
    return replace(hit, rankers=dict(rankers))


def _facets(query: SearchQuery, collection: Collection, mode: SearchMode,
            keyword_query: KeywordQuery | None,
            hits: list[Hit]) -> tuple[tuple, FacetScope]:
    if mode is SearchMode.KEYWORD and keyword_query is not None:
        counts = collection.catalog.keyword.facets(collection.info.id, keyword_query,
                                                   list(query.filters), list(query.facets))
        return counts, FacetScope.MATCHES
    return count_facets(query.facets, (h.attributes for h in hits)), FacetScope.CANDIDATES


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
