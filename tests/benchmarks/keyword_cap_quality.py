"""How much of BM25 a capped every-word stage keeps (`search.catalog.keyword.SCORE_CAP`).

For shop queries over the bench_api catalogue (`python -m tests.benchmarks.bench_api`
builds it), every match of the every-word stage is scored (BM25, as the engine scores
them); then, for each cap, the top 10 among the newest `cap` matches (what the engine
scores) is compared with the top 10 over all of them: the share of their summed BM25
kept, and how often the two sets are identical. Queries with 100 matches or fewer are
left out (every cap sees them whole). Prints a table and writes JSON.

    python -m tests.benchmarks.keyword_cap_quality [--caps 100,300,1000] [--queries 150]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from sqlalchemy import text

from search.catalog import keyword
from search.catalog.catalog import open_catalog
from tests.benchmarks.shop_corpus import shopper_queries

COLLECTION_ID = 1


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    home = Path(tempfile.gettempdir()) / "xmodal-bench-api-house-1000000"
    parser.add_argument("--home", type=Path, default=home, help="a bench_api build (SQLite)")
    parser.add_argument("--caps", default="100,300,500,1000")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--out", type=Path, default=Path("keyword_cap_quality.json"))
    return parser.parse_args()


def main() -> None:
    args = _parse()
    caps = [int(c) for c in args.caps.split(",")]
    catalog = open_catalog(f"sqlite:///{args.home / 'catalog.db'}", migrate_on_open=False)
    index, kept, same, sizes = catalog.keyword, {c: [] for c in caps}, dict.fromkeys(caps, 0), []
    with catalog.session() as s:
        for query_text in shopper_queries(args.queries, args.seed):
            query = index.parse(COLLECTION_ID, query_text)
            rows = [] if query.empty else s.execute(text(
                f"SELECT rowid, text, attrs FROM {keyword.lexical.FTS_TABLE} "
                f"WHERE {keyword.lexical.FTS_TABLE} MATCH :q ORDER BY rowid DESC"),
                {"q": keyword._fts5_match(query, keyword.Stage.ALL)}).all()
            if len(rows) <= 100:
                continue
            sizes.append(len(rows))
            scores = index._bm25.score(s, query.terms(), [(r[1], r[2]) for r in rows])
            best = sorted(range(len(rows)), key=lambda i: -scores[i])[:10]
            for cap in caps:  # rows are newest first: the engine scores the first `cap`
                top = sorted(range(min(cap, len(rows))), key=lambda i: -scores[i])[:10]
                kept[cap].append(sum(scores[i] for i in top) / sum(scores[i] for i in best))
                same[cap] += {rows[i][0] for i in top} == {rows[i][0] for i in best}
    catalog.close()
    print(f"{len(sizes)} queries with over 100 every-word matches "
          f"(median {statistics.median(sizes):.0f})")
    print(f"{'cap':>6} {'BM25 kept (mean)':>17} {'(min)':>7} {'same top 10':>12}")
    table = []
    for cap in caps:
        row = {"cap": cap, "kept_mean": statistics.mean(kept[cap]), "kept_min": min(kept[cap]),
               "same_top10": same[cap], "queries": len(sizes)}
        table.append(row)
        print(f"{cap:>6} {row['kept_mean']:>17.3f} {row['kept_min']:>7.3f} "
              f"{same[cap]:>7}/{len(sizes)}")
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                    "median_matches": statistics.median(sizes),
                                    "caps": table}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
