"""The keyword side of a query, in process: what keyword mode costs, and what hybrid adds
to a vector query, on a large shop-like catalogue (SQLite FTS5 or PostgreSQL).

    python -m tests.benchmarks.bench_keyword [--n 1000000] [--database sqlite|postgres]
        [--queries 300] [--filters] [--catalog URL] [--home DIR]

Builds (once; cached under --home, PostgreSQL in a kept harness cluster there) a catalog of
`n` shop items (`shop_corpus`: titles, category, brand, price, keywords; no vectors) with
its lexical index, or reads an existing one (`--catalog`, e.g. a `bench_api` build's
`sqlite:////tmp/xmodal-bench-api-house-1000000/catalog.db`), then runs distinct shopper
queries through exactly what `search.hybrid` runs per text query: the exact-identifier
lookup, parsing with typo correction, and the staged ranked search at the hybrid
candidate depth. With `--filters`, also the benchmark's filters (1 %, 30 %, price range).
Prints p50/p95/p99 per stream and writes JSON. Not a test.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from search.catalog.catalog import Catalog, open_catalog  # noqa: E402
from search.filters import parse_filters  # noqa: E402
from search.hybrid import CANDIDATE_DEPTH  # noqa: E402
from tests.benchmarks.shop_corpus import shopper_queries  # noqa: E402

COLLECTION = "bench"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--queries", type=int, default=300, help="per stream")
    parser.add_argument("--filters", action="store_true")
    parser.add_argument("--catalog", default=None,
                        help="an existing catalog URL with a 'bench' collection (no build)")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path,
                        default=Path("tests/benchmarks/results/bench_keyword.json"))
    return parser.parse_args()


@contextmanager
def catalog_for(args: argparse.Namespace) -> Iterator[tuple[Catalog, dict]]:
    if args.catalog:
        catalog = open_catalog(args.catalog)
        try:
            yield catalog, {"catalog": args.catalog}
        finally:
            catalog.close()
        return
    from tests.benchmarks.api_corpus import ensure_catalog
    from tests.benchmarks.bench_api import bench_database

    home = args.home or Path(tempfile.gettempdir()) / f"xmodal-bench-keyword-{args.n}-" \
        f"{args.database}"
    with bench_database(home, args.database) as url:
        url = url or f"sqlite:///{(home / 'catalog.db').resolve()}"
        build = ensure_catalog(home, COLLECTION, args.n, url)
        catalog = open_catalog(url)
        try:
            yield catalog, build
        finally:
            catalog.close()


def measure(catalog: Catalog, texts: list[str], filters: list) -> dict:
    """Per query: exact lookup + parse + staged search, as `search.hybrid` runs them."""
    keyword, cid = catalog.keyword, catalog.get_collection(COLLECTION).id
    totals, searches, found, cpu = [], [], [], []
    for text in texts:
        started, cpu_started = time.perf_counter(), time.process_time()
        keyword.exact(cid, text, filters)
        parsed = keyword.parse(cid, text)
        began = time.perf_counter()
        matches = keyword.search(cid, parsed, CANDIDATE_DEPTH, filters)
        ended = time.perf_counter()
        cpu.append((time.process_time() - cpu_started) * 1000)
        totals.append((ended - started) * 1000)
        searches.append((ended - began) * 1000)
        found.append(len(matches))
    p50, p95, p99 = np.percentile(totals, [50, 95, 99])
    return {"queries": len(texts), "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99), "search_p50_ms": float(np.percentile(searches, 50)),
            # this process's CPU (SQLite runs in it; PostgreSQL's server CPU is not here):
            # steadier than wall time on a shared machine
            "cpu_p50_ms": float(np.percentile(cpu, 50)),
            "cpu_p99_ms": float(np.percentile(cpu, 99)),
            "mean_matches": float(np.mean(found))}


def main() -> int:
    args = _parse()
    from tests.benchmarks.api_corpus import FILTERS

    streams = {"no filter": {}, **(FILTERS if args.filters else {})}
    texts = shopper_queries(args.queries * (len(streams) + 1), args.seed)
    results: dict[str, dict] = {}
    with catalog_for(args) as (catalog, build):
        print(f"catalog: {json.dumps(build)}", flush=True)
        measure(catalog, texts[-args.queries:][:20], [])  # warm-up: caches, statements
        for i, (name, spec) in enumerate(streams.items()):
            chunk = texts[i * args.queries:(i + 1) * args.queries]
            results[name] = measure(catalog, chunk, parse_filters(spec))
            print(f"  {name}: {json.dumps(results[name])}", flush=True)
    print(f"{'stream':<14} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'search p50':>10} "
          f"{'matches':>7} {'CPU p50':>7} {'CPU p99':>7}")
    for name, r in results.items():
        print(f"{name:<14} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} "
              f"{r['search_p50_ms']:>10.1f} {r['mean_matches']:>7.1f} "
              f"{r['cpu_p50_ms']:>7.1f} {r['cpu_p99_ms']:>7.1f}")
    out = {"config": {k: str(v) for k, v in vars(args).items()}, "build": build,
           "load_avg": os.getloadavg(), "streams": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
