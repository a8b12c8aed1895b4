"""Ray ingest: driver peak RSS against rows, and throughput per encoder actor.

    python -m tests.benchmarks.bench_ray_ingest [--rows 2000,20000,100000] [--cpus 2]
        [--out FILE]

Each size runs in a fresh driver process (local Ray with `--cpus` CPUs, the tiny test
model, synthetic text + tiny PNG rows as in tests/indexer/test_ray.py), so each peak RSS
is that run's own. Reports rows, seconds, items/s, items/s per encoder actor and the
driver's peak RSS; the growth of the peak from the smallest size is what streaming bounds.
Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="2000,20000,100000")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one size
    parser.add_argument("--out", type=Path,
                        default=Path("tests/benchmarks/results/bench_ray_ingest.json"))
    return parser.parse_args()


def run_one(rows: int, cpus: int, batch_size: int) -> dict:
    """One indexing run in this process; prints its row as JSON."""
    import open_clip
    import ray

    from indexer.operations import index_source
    from indexer.pipeline import IndexOptions
    from search import Settings, Workspace, load_encoder
    from tests.conftest import TINY_CONFIG, TINY_MODEL
    from tests.indexer.test_ray import write_synthetic_catalog

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "configs").mkdir()
        (root / "configs" / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(root / "configs")
        model = str(load_encoder(TINY_MODEL, device="cpu").save(root / "model"))
        source = write_synthetic_catalog(root / "src", rows)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        before = _peak_mib()
        ws = Workspace.open(Settings(home=root / "home", device="cpu"))
        started = time.perf_counter()
        options = IndexOptions(workers=0, progress=False, batch_size=batch_size)
        summary = index_source(ws, "bench", source, options=options, model=model,
                               engine="ray")
        seconds = time.perf_counter() - started
        ws.close()
        actors = max(1, cpus // 2)
        ray.shutdown()
    return {"rows": rows, "indexed": summary.indexed, "seconds": round(seconds, 1),
            "items_per_s": round(rows / seconds, 1),
            "items_per_s_per_actor": round(rows / seconds / actors, 1), "actors": actors,
            "driver_peak_rss_mib_before": round(before), "driver_peak_rss_mib": round(_peak_mib())}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    args = _parse()
    if args.one:
        print(json.dumps(run_one(args.one, args.cpus, args.batch_size)))
        return
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        child = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_ray_ingest",
                                "--one", str(rows), "--cpus", str(args.cpus),
                                "--batch-size", str(args.batch_size)],
                               capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        _print_row(results[-1], results[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.node(), "cpus": args.cpus,
                                    "results": results}, indent=2))


def _print_row(row: dict, first: dict) -> None:
    if row is first:
        print(f"{'rows':>8} {'s':>7} {'items/s':>8} {'/actor':>7} {'peak MiB':>9} {'growth':>7}")
    growth = row["driver_peak_rss_mib"] - first["driver_peak_rss_mib"]
    print(f"{row['rows']:>8} {row['seconds']:>7} {row['items_per_s']:>8} "
          f"{row['items_per_s_per_actor']:>7} {row['driver_peak_rss_mib']:>9} {growth:>+7}",
          flush=True)


if __name__ == "__main__":
    main()
