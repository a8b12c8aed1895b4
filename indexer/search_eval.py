"""Ranking quality of the query modes on a judged query set: R@10, MRR@10, nDCG@10.

A query file is JSONL, one `{"query": ..., "type": ..., "relevant": [external ids]}` per
line (data/eval/queries.jsonl is built by `python -m indexer.judged_queries`). Gains are
binary. R@10 counts relevant items in the top 10 over min(10, relevant), so a query with
30 relevant items scores 1.0 when its top 10 are all relevant.

When both `vector` and `keyword` are evaluated, a `best-per-query` row is added: for each
query, the better of the two rankings (an oracle that knows the answers). It bounds what
any fusion that trusts one ranker per query can reach, so it tells whether a goal such as
"hybrid beats the better single mode by 5 points" is reachable on the set at all.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from search import Searcher, SearchMode, SearchQuery, Workspace, XmodalError

CUTOFF = 10
BEST_PER_QUERY = "best-per-query"


@dataclass(frozen=True)
class JudgedQuery:
    text: str
    kind: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class Scores:
    queries: int
    recall: float
    mrr: float
    ndcg: float


def load_queries(path: Path) -> list[JudgedQuery]:
    queries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            queries.append(JudgedQuery(row["query"], row.get("type", "all"),
                                       frozenset(row["relevant"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise XmodalError(f"{path}:{number}: not a judged query ({exc})") from None
    return queries


def query_scores(ranked: list[str], relevant: frozenset[str]) -> tuple[float, float, float]:
    top = ranked[:CUTOFF]
    gains = [1.0 if r in relevant else 0.0 for r in top]
    ideal = min(len(relevant), CUTOFF)
    recall = sum(gains) / ideal if ideal else 0.0
    mrr = next((1.0 / rank for rank, g in enumerate(gains, 1) if g), 0.0)
    dcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, 1))
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, ideal + 1))
    return recall, mrr, dcg / idcg if idcg else 0.0


def _mean(rows: list[tuple[float, float, float]]) -> Scores:
    n = len(rows) or 1
    return Scores(len(rows), *(round(100 * sum(r[i] for r in rows) / n, 1) for i in range(3)))


def evaluate_modes(workspace: Workspace, collection: str, queries: list[JudgedQuery],
                   modes: list[SearchMode], **options: Any) -> dict[str, Any]:
    """{mode: {"overall": Scores, "by_type": {type: Scores}, "ms_per_query": float}}.
    `options`: SearchQuery fields for every query (fusion_method, alpha, rrf_k, ...)."""
    searcher = Searcher(workspace)
    out: dict[str, Any] = {}
    per_mode: dict[str, list[tuple[float, float, float]]] = {}
    for mode in modes:
        rows, started = [], time.perf_counter()
        for query in queries:
            result = searcher.search(SearchQuery.text(collection, query.text, k=CUTOFF,
                                                      mode=mode, **options))
            rows.append(query_scores([h.external_id for h in result.hits], query.relevant))
        elapsed = (time.perf_counter() - started) * 1000 / max(1, len(queries))
        per_mode[mode.value] = rows
        out[mode.value] = {**_summary(queries, rows), "ms_per_query": round(elapsed, 2)}
    if {"vector", "keyword"} <= set(per_mode):
        best = [max(pair) for pair in zip(per_mode["vector"], per_mode["keyword"],
                                          strict=True)]  # by R@10, then MRR, nDCG
        out[BEST_PER_QUERY] = {**_summary(queries, best), "ms_per_query": 0.0}
    return out


def _summary(queries: list[JudgedQuery], rows: list[tuple[float, float, float]]
             ) -> dict[str, Any]:
    kinds = sorted({q.kind for q in queries})
    return {"overall": asdict(_mean(rows)),
            "by_type": {k: asdict(_mean([r for q, r in zip(queries, rows, strict=True)
                                         if q.kind == k])) for k in kinds}}


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one row per (type, mode), overall first."""
    lines = ["| query type | n | mode | R@10 | MRR@10 | nDCG@10 |", "|---|---|---|---|---|---|"]
    modes = list(result)
    kinds = ["overall"] + sorted(result[modes[0]]["by_type"]) if modes else []
    for kind in kinds:
        for mode in modes:
            s = result[mode]["overall"] if kind == "overall" else result[mode]["by_type"][kind]
            lines.append(f"| {kind} | {s['queries']} | {mode} | {s['recall']:.1f} | "
                         f"{s['mrr']:.1f} | {s['ndcg']:.1f} |")
    return "\n".join(lines)
