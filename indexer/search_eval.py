"""Ranking quality of the query modes on a judged query set: R@10, MRR@10, nDCG@10.

A query file is JSONL, one `{"query": ..., "type": ..., "relevant": [external ids]}` per
line (data/eval/queries.jsonl is built by `python -m indexer.judged_queries`). Gains are
binary. R@10 counts relevant items in the top 10 over min(10, relevant), so a query with
30 relevant items scores 1.0 when its top 10 are all relevant.
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
                   modes: list[SearchMode]) -> dict[str, Any]:
    """{mode: {"overall": Scores, "by_type": {type: Scores}, "ms_per_query": float}}."""
    searcher = Searcher(workspace)
    out: dict[str, Any] = {}
    for mode in modes:
        per_query, started = [], time.perf_counter()
        for query in queries:
            result = searcher.search(SearchQuery.text(collection, query.text, k=CUTOFF,
                                                      mode=mode))
            ranked = [h.external_id for h in result.hits]
            per_query.append((query.kind, query_scores(ranked, query.relevant)))
        elapsed = (time.perf_counter() - started) * 1000 / max(1, len(queries))
        kinds = sorted({k for k, _ in per_query})
        out[mode.value] = {
            "overall": asdict(_mean([s for _, s in per_query])),
            "by_type": {k: asdict(_mean([s for kk, s in per_query if kk == k])) for k in kinds},
            "ms_per_query": round(elapsed, 2)}
    return out


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
