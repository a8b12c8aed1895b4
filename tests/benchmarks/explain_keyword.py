"""Where a keyword query's time goes in PostgreSQL: `EXPLAIN (ANALYZE, BUFFERS)` of the
ranked statement each relaxation stage runs (`KeywordIndex._ranked`, at the hybrid
candidate depth), unfiltered and with each of the benchmark's filters.

    python -m tests.benchmarks.explain_keyword [--home /tmp/xmodal-bench-api-house-1000000-postgres]
        ["black boot" "white wool maxi dress for gift" ...]

Starts the kept harness cluster of a `bench_api --database postgres` build (or of a
`bench_keyword` build: `--home /tmp/xmodal-bench-keyword-<n>-postgres`), prints each
statement's execution time and the top of its plan, and stops the cluster. Every stage
runs, also those a search would skip because an earlier stage found enough. Not a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import select, text

from search.catalog import keyword
from search.catalog.catalog import Catalog, open_catalog
from search.filters import parse_filters
from search.hybrid import CANDIDATE_DEPTH
from tests.benchmarks.api_corpus import FILTERS
from tests.utils.postgres import start_kept_cluster

PLAN_LINES = 18


def explain(catalog: Catalog, label: str, statement) -> None:
    sql = str(statement.compile(catalog.engine, compile_kwargs={"literal_binds": True}))
    with catalog.engine.connect() as connection:
        plan = [row[0] for row in connection.execute(
            text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"))]
    took = next((line for line in plan if line.startswith("Execution Time")), "?")
    print(f"== {label}: {took}")
    for line in plan[:PLAN_LINES]:
        print("   ", line)


def explain_query(catalog: Catalog, collection_id: int, user_text: str) -> None:
    index = catalog.keyword
    parsed = index.parse(collection_id, user_text)
    for name, spec in {"unfiltered": None, **FILTERS}.items():
        filters = parse_filters(spec) if spec else []
        for stage in keyword.stages(parsed):
            stmt, _, score = index._matches(collection_id, parsed, filters, stage)
            bounded = stmt.add_columns(score.label("score")).limit(keyword.SCORE_CAP).subquery()
            ranked = (select(bounded.c[0], bounded.c.score)
                      .order_by(bounded.c.score.desc(), bounded.c[0]).limit(CANDIDATE_DEPTH))
            explain(catalog, f"{user_text!r}, {name}, {stage.value} stage", ranked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("queries", nargs="*",
                        default=["black boot", "white wool maxi dress for gift",
                                 "kakabel sneaker"])
    parser.add_argument("--home", type=Path,
                        default=Path("/tmp/xmodal-bench-api-house-1000000-postgres"))
    parser.add_argument("--database", default="bench", help="the build's database name")
    args = parser.parse_args()
    cluster = start_kept_cluster(args.home / "postgres")
    try:
        catalog = open_catalog(f"{cluster.url.rsplit('/', 1)[0]}/{args.database}",
                               migrate_on_open=False)
        collection_id = catalog.get_collection("bench").id
        for query in args.queries:
            explain_query(catalog, collection_id, query)
        catalog.close()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
