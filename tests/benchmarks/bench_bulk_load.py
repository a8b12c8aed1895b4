"""Catalog rows of new items: the bulk loader against the row-at-a-time write path, side by
side on SQLite and PostgreSQL.

    python -m tests.benchmarks.bench_bulk_load [--n 100000] [--database sqlite,postgres]

Both paths write the same shop items (`shop_corpus`: title, six attributes, about nine
attribute rows, a sku identifier), each with a text and an image vector row, `--batch`
items per call, into a fresh catalog each: "rows" is what `Collection.write` does to the
catalog (`upsert_items`, `replace_vectors`, `mark_active`: ORM inserts, multi-row INSERT
... RETURNING), "bulk" is what `Collection.write_bulk` does (`insert_new_items`: COPY on
PostgreSQL, executemany on SQLite, then `mark_active`). The items are made before the
clock starts. Reports items/s and catalog rows/s (items, attribute rows, vector rows,
lexical entries and identifiers), the ratio, and this process's CPU share; PostgreSQL runs
in a throwaway cluster of the test harness. Not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from search.catalog.bulk import NewVector
from search.catalog.catalog import Catalog, open_catalog
from search.catalog.items import ItemInput
from search.catalog.lexical import LexicalSettings
from tests.benchmarks.api_corpus import SEARCHABLE
from tests.benchmarks.shop_corpus import attributes_of, title_of

RESULTS = Path("tests/benchmarks/results")
ROW_TABLES = ("items", "item_attributes", "vectors", "lexical_identifiers")


def shop_items(n: int) -> list[ItemInput]:
    return [ItemInput(f"item-{i}", title_of(i), f"media/{i}.jpg", attributes_of(i), f"h{i}")
            for i in range(1, n + 1)]


def write_rows(catalog: Catalog, cid: int, batch: list[ItemInput]) -> None:
    ids = [c.item_id for c in catalog.upsert_items(cid, batch)]
    catalog.replace_vectors(cid, [(i, m, "original") for i in ids for m in ("text", "image")])
    catalog.mark_active(ids)


def write_bulk(catalog: Catalog, cid: int, batch: list[ItemInput]) -> None:
    vectors = [NewVector(p, m) for p in range(len(batch)) for m in ("text", "image")]
    catalog.mark_active(catalog.insert_new_items(cid, batch, vectors).item_ids)


PATHS: dict[str, Callable[[Catalog, int, list[ItemInput]], None]] = {
    "rows": write_rows, "bulk": write_bulk}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load(url: str, items: list[ItemInput], batch: int, path: str) -> dict:
    catalog = open_catalog(url)
    cid = catalog.create_collection("bench", model="m", pretrained=None, weights_identity="w",
                                    dim=4).id
    catalog.set_lexical_settings(cid, LexicalSettings(searchable=SEARCHABLE))
    started, cpu = time.perf_counter(), _cpu_s()
    for start in range(0, len(items), batch):
        PATHS[path](catalog, cid, items[start:start + batch])
    wall, cpu = time.perf_counter() - started, _cpu_s() - cpu
    with catalog.engine.connect() as connection:
        rows = sum(int(connection.scalar(text(f"SELECT count(*) FROM {t}")) or 0)
                   for t in ROW_TABLES) + len(items)  # + one lexical entry per item
    catalog.close()
    return {"path": path, "items": len(items), "rows": rows, "wall_s": round(wall, 2),
            "items_per_s": round(len(items) / wall), "rows_per_s": round(rows / wall),
            "client_cpu_share": round(cpu / wall, 2)}


@contextmanager
def databases(kind: str, workdir: Path) -> Iterator[Callable[[str], str]]:
    """A factory of fresh, empty catalog URLs of one kind."""
    if kind == "sqlite":
        yield lambda name: f"sqlite:///{workdir / f'{name}.db'}"
        return
    from tests.utils.postgres import start_cluster

    with start_cluster() as cluster:
        yield cluster.create_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="items per path")
    parser.add_argument("--batch", type=int, default=8192, help="items per call")
    parser.add_argument("--database", default="sqlite,postgres")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_bulk_load.json")
    args = parser.parse_args()
    items = shop_items(args.n)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.database.split(","):
            with databases(kind, Path(tmp)) as fresh:
                for path in PATHS:
                    result = {"database": kind, **load(fresh(f"load_{path}"), items,
                                                       args.batch, path)}
                    print(json.dumps(result), flush=True)
                    results.append(result)
    print(f"{'database':10}{'path':6}{'items':>9}{'rows':>10}{'wall s':>9}{'items/s':>9}"
          f"{'rows/s':>9}{'client cpu':>11}{'speed-up':>9}")
    for r in results:
        base = next(b for b in results if b["database"] == r["database"] and b["path"] == "rows")
        print(f"{r['database']:10}{r['path']:6}{r['items']:>9}{r['rows']:>10}{r['wall_s']:>9}"
              f"{r['items_per_s']:>9}{r['rows_per_s']:>9}{r['client_cpu_share']:>11}"
              f"{base['wall_s'] / r['wall_s']:>8.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                    "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
