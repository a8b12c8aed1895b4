"""Flat vs the automatic IVF-PQ index (+ exact re-rank) on clustered synthetic vectors.

    python -m tests.benchmarks.bench_vectors [--n 1000000] [--dim 256] [--out FILE]
        [--ondisk] [--shards 4] [--memory-budget-gb 8]

Reports build time (train + add), resident index bytes per vector (the serialized
index, which is what a loaded index holds in RAM), the re-rank store's float16
bytes per vector on disk (memory-mapped: only the pages of candidates are touched),
single-query and batched QPS, and recall@1/@10 against exact Flat search.
Serving as replicas do: the IVF version is also loaded memory-mapped (IO_FLAG_MMAP) and
its resident bytes per vector are measured after the single-query runs (anonymous RSS
growth + the mapped pages actually touched, from /proc/self/smaps), next to the bytes
on disk. `--ondisk` (or an index over `--memory-budget-gb`) builds the way an index
bigger than memory must be built: train on a sample, add `--shards` shards into separate
block indexes, merge their lists into one on-disk file with faiss.contrib.ondisk.
Nothing holds the whole base in RAM (10M x 256-d is 10 GB of float32): it is generated
in chunks into a memory-mapped file (tests/benchmarks/vector_base.py), the index and the
float16 store are filled chunk by chunk, and above `--flat-max` vectors the exact
baseline is a chunked scan of that file instead of a Flat index (its batch QPS is the
ground-truth pass, its 1-query QPS the same scan for one query).
Not a test: run it by hand; `--n 100000` gives a quick run.
"""

from __future__ import annotations

import os

# Set before faiss loads its OpenMP runtime: on shared cores, threads that spin at
# barriers waiting for a descheduled sibling make faiss several times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from search.vectors.index import (  # noqa: E402
    SearchParams,
    VectorIndex,
    choose_spec,
    default_nprobe,
    search_reranked,
    training_sample_size,
)
from search.vectors.store import EmbeddingStore  # noqa: E402
from search.vectors.versions import load_current, write_version  # noqa: E402
from tests.benchmarks.vector_base import (  # noqa: E402
    exact_search,
    row_chunks,
    synthetic_base,
    timed_exact_search,
)
from tests.utils.synthetic import recall_at  # noqa: E402

K = 10
MODEL = {"model": "bench", "pretrained": None}
GOAL_RECALL, GOAL_SPEEDUP, GOAL_BYTES = 0.95, 10.0, 80.0
ADD_ROWS = 250_000  # vectors per add call: bounded copies out of the memory-mapped base
_T0 = time.perf_counter()
LOAD_SAMPLES: list[tuple[float, float]] = []  # (seconds since start, 1-min load average)


@dataclass(frozen=True)
class Row:
    """One measured configuration (one line of the table)."""

    index: str
    nprobe: int | None
    rerank_factor: int | None
    build_s: float
    index_bytes_per_vector: float
    store_bytes_per_vector: float  # on disk, memory-mapped; 0 when not used
    single_qps: float
    batch_qps: float
    recall_at_1: float
    recall_at_10: float
    pq_only_recall_at_10: float | None = None  # same candidates before re-ranking


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="base vectors")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000, help="batch size; recall set")
    parser.add_argument("--single", type=int, default=300, help="one-query-per-call runs")
    parser.add_argument("--flat-single", type=int, default=50, help="same, for slow Flat")
    parser.add_argument("--nprobe", default="8,16,32,64", help="comma-separated")
    parser.add_argument("--rerank-factors", default="4,8", help="comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the run's index and store go (in a fresh temp dir "
                             "under it, removed at the end); default: the system temp dir")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the generated base is kept and reused by later runs "
                             "of the same --n/--queries/--dim/--seed; default: the run's dir")
    parser.add_argument("--flat-max", type=int, default=2_000_000,
                        help="above this many vectors, exact search is a chunked scan of "
                             "the base file instead of a Flat index")
    parser.add_argument("--ondisk", action="store_true",
                        help="build from shards and merge into on-disk inverted lists")
    parser.add_argument("--shards", type=int, default=4, help="shards for --ondisk")
    parser.add_argument("--memory-budget-gb", type=float, default=8.0,
                        help="build on disk when the index's codes + ids exceed this")
    parser.add_argument(
        "--out", type=Path, default=Path("tests/benchmarks/results/bench_vectors.json")
    )
    return parser.parse_args()


def _log(message: str) -> None:
    # the load average rides along: build times are absolute, and the cores are shared
    elapsed, load = time.perf_counter() - _T0, os.getloadavg()[0]
    LOAD_SAMPLES.append((round(elapsed), load))
    print(f"[{elapsed:6.0f} s, load {load:4.1f}] {message}", file=sys.stderr, flush=True)


def _single_qps(search, queries: np.ndarray, single: int, passes: int = 2) -> float:
    """Queries per second, one query per call over the first `single` queries.

    One faiss thread, as a server answering concurrent requests would run (and on
    shared cores a second thread slows a lone Flat query down). Best of `passes`: the
    faster pass is the one less disturbed by other tenants. A warm-up query first:
    first-touch page faults of the memory-mapped store are not steady state.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        search(queries[:1])
        elapsed = []
        for _ in range(passes):
            start = time.perf_counter()
            for row in range(single):
                search(queries[row : row + 1])
            elapsed.append(time.perf_counter() - start)
    finally:
        faiss.omp_set_num_threads(threads)
    return single / min(elapsed)


def _timed(search, queries: np.ndarray, passes: int = 2) -> tuple[np.ndarray, float]:
    """(ids found for the whole batch, batched QPS with all threads, best of `passes`)."""
    elapsed = []
    for _ in range(passes):
        start = time.perf_counter()
        _, found = search(queries)
        elapsed.append(time.perf_counter() - start)
    return found, len(queries) / min(elapsed)


def _recalls(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(np.mean(found[:, 0] == truth[:, 0])), recall_at(found, truth, K)


def bench_flat(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, single: int):
    """The exact baseline; also returns the ground-truth ids [q, K]."""
    start = time.perf_counter()
    flat = VectorIndex.create("Flat", base.shape[1])
    for part in row_chunks(len(base)):
        flat.add(ids[part], base[part])
    build_s = time.perf_counter() - start
    truth, batch_qps = _timed(lambda q: flat.search(q, K), queries, passes=1)  # slow
    single_qps = _single_qps(lambda q: flat.search(q, K), queries, single)
    size = len(faiss.serialize_index(flat._index)) / len(base)  # benchmark may peek
    row = Row("Flat", None, None, build_s, size, 0.0, single_qps, batch_qps, 1.0, 1.0)
    return row, truth


def bench_flat_scan(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, single: int):
    """The exact baseline without a Flat index: chunked scans of the memory-mapped base.

    Same work per query as Flat (every vector scored); batch QPS is the ground-truth
    pass over all queries, 1-query QPS the same scan for one query at a time. Nothing
    is built, and the bytes per vector are the float32 rows a Flat index would hold.
    """
    rows, seconds = timed_exact_search(base, queries, K)
    _log(f"exact ground truth by chunked scan: {len(queries)} queries in {seconds:.0f} s")
    single_qps = _single_qps(lambda q: exact_search(base, q, K), queries, single)
    size = float(base.shape[1] * base.itemsize)
    row = Row("Flat (chunked scan)", None, None, 0.0, size, 0.0, single_qps,
              len(queries) / seconds, 1.0, 1.0)
    return row, np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)


def _trained(spec: str, base: np.ndarray, seed: int = 0) -> VectorIndex:
    """`spec` trained on the rows `VectorIndex.train(base)` would sample, read from the
    memory-mapped base alone (train would copy the whole base to sample it)."""
    index = VectorIndex.create(spec, base.shape[1])
    nlist = int(spec.split(",")[0].removeprefix("IVF")) if spec.startswith("IVF") else 1
    size = training_sample_size(len(base), nlist)
    rows = np.sort(np.random.default_rng(seed).choice(len(base), size, replace=False))
    index.train(base[rows], seed=seed)
    return index


def _add_chunks(add, base: np.ndarray, ids: np.ndarray, label: str) -> None:
    """add(ids, vectors) over `base` in ADD_ROWS chunks, logging progress now and then."""
    start, step = time.perf_counter(), max(1, len(base) // ADD_ROWS // 10)
    for number, part in enumerate(row_chunks(len(base), ADD_ROWS), start=1):
        add(ids[part], np.ascontiguousarray(base[part]))
        if number % step == 0 and part.stop < len(base):
            elapsed = time.perf_counter() - start
            eta = elapsed * (len(base) - part.stop) / part.stop
            _log(f"{label}: added {part.stop:,} in {elapsed:.0f} s (~{eta:.0f} s to go)")


def build_ivf(base: np.ndarray, ids: np.ndarray, workdir: Path) -> tuple[VectorIndex, float]:
    """Train + add the automatic spec, save it as a version and load it back (as served)."""
    spec = choose_spec(len(base), base.shape[1])
    start = time.perf_counter()
    index = _trained(spec, base)
    _log(f"{spec}: trained in {time.perf_counter() - start:.0f} s")
    _add_chunks(index.add, base, ids, spec)
    build_s = time.perf_counter() - start
    _log(f"{spec}: built (train + add) in {build_s:.0f} s")
    write_version(workdir / "index", index, **MODEL, store_seq=0)
    loaded, _ = load_current(workdir / "index", **MODEL, dim=base.shape[1])
    return loaded, build_s


def build_ondisk(base: np.ndarray, ids: np.ndarray, workdir: Path, shards: int
                 ) -> tuple[Path, str, float]:
    """Train on a sample, add each shard to its own copy of the trained index (a worker's
    job on a cluster), merge the shards' lists into one .ivfdata file; returns the
    populated index file (it names the .ivfdata), its spec, and train + add seconds."""
    from faiss.contrib.ondisk import merge_ondisk

    spec = choose_spec(len(base), base.shape[1])
    start = time.perf_counter()
    template = workdir / "trained.index"
    _trained(spec, base).write(template)
    _log(f"{spec}: trained in {time.perf_counter() - start:.0f} s")
    blocks = []
    for number, rows in enumerate(np.array_split(np.arange(len(base)), shards)):
        block = faiss.read_index(str(template))
        part = slice(int(rows[0]), int(rows[-1]) + 1) if len(rows) else slice(0, 0)
        _add_chunks(lambda i, x, b=block: b.add_with_ids(x, i), base[part], ids[part],
                    f"shard {number}")
        blocks.append(str(workdir / f"block{number}.index"))
        faiss.write_index(block, blocks[-1])
        del block
    merged = faiss.read_index(str(template))
    merge_ondisk(merged, blocks, str(workdir / "lists.ivfdata"))
    populated = workdir / "populated.index"
    faiss.write_index(merged, str(populated))
    for block in blocks:
        Path(block).unlink()
    build_s = time.perf_counter() - start
    _log(f"{spec}: on-disk build (train + {shards} shards + merge) in {build_s:.0f} s")
    return populated, spec, build_s


def _smaps_rss(paths: list[Path]) -> int:
    """Resident bytes of the file mappings of `paths` in this process."""
    names, total, current = {str(p.resolve()) for p in paths}, 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
            current = len(head) >= 6 and head[-1] in names
        elif current and line.startswith("Rss:"):
            total += int(head[1]) * 1024
    return total


def _anon_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_mmap(path: Path, spec: str, files: list[Path], store, queries, truth, args
               ) -> dict[str, float]:
    """Serve the index memory-mapped: resident and disk bytes per vector, recall, QPS."""
    before = _anon_rss()
    index = VectorIndex.read(path, spec, mmap=len(files) == 1)  # see main() for on-disk
    params = SearchParams()
    search = functools.partial(_reranked, index, store, params)
    single_qps = _single_qps(search, queries, args.single)
    found, batch_qps = _timed(search, queries)
    n = index.ntotal
    mapped, anon = _smaps_rss(files), max(0, _anon_rss() - before)
    result = {
        "spec": spec, "nprobe": _default_nprobe(spec), "rerank_factor": params.rerank_factor,
        "anon_bytes_per_vector": anon / n, "mapped_resident_bytes_per_vector": mapped / n,
        "resident_bytes_per_vector": (anon + mapped) / n,
        "disk_bytes_per_vector": sum(f.stat().st_size for f in files) / n,
        "store_disk_bytes_per_vector": _dir_bytes(store.path) / n,
        "recall_at_10": recall_at(found, truth, K), "single_qps": single_qps,
        "single_latency_ms": 1000 / single_qps, "batch_qps": batch_qps,
    }
    _log(f"mmap: {result}")
    return result


def bench_ivf(index, store, build_s, queries, truth, args, files: list[Path]) -> list[Row]:
    index_bytes = sum(f.stat().st_size for f in files) / index.ntotal
    store_bytes = _dir_bytes(store.path) / index.ntotal
    rows = []
    for nprobe, factor in itertools.product(_ints(args.nprobe), _ints(args.rerank_factors)):
        params = SearchParams(nprobe=nprobe, rerank_factor=factor)
        search = functools.partial(_reranked, index, store, params)
        found, batch_qps = _timed(search, queries)
        single_qps = _single_qps(search, queries, args.single)
        _, raw = index.search(queries, K, params)
        r1, r10 = _recalls(found, truth)
        _log(f"nprobe={nprobe} rerank x{factor}: R@10 {r10:.3f}, {single_qps:.0f} QPS")
        rows.append(
            Row(
                f"{index.spec} +rerank x{factor}",
                nprobe,
                factor,
                build_s,
                index_bytes,
                store_bytes,
                single_qps,
                batch_qps,
                r1,
                r10,
                recall_at(raw, truth, K),
            )
        )
    return rows


def _reranked(index: VectorIndex, store: EmbeddingStore, params: SearchParams, queries):
    return search_reranked(index, store, queries, K, params)


def _code_bytes(spec: str, n: int) -> int:
    """What an IVF-PQ index holds per vector in memory: the PQ code and an 8-byte id."""
    pq = spec.split("PQ")[-1] if "PQ" in spec else "0"
    return (int(pq.split("x")[0]) + 8) * n


def _ints(csv: str) -> list[int]:
    return [int(part) for part in csv.split(",")]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    flat_qps = rows[0].single_qps
    title = "vector search: Flat vs IVF-PQ + exact re-rank (1-query: 1 thread; batch: all)"
    table = Table(title=title)
    for column in (
        "index",
        "nprobe",
        "build s",
        "index B/vec",
        "store B/vec (mmap)",
        "1-query QPS",
        "x Flat",
        "batch QPS",
        "R@1",
        "R@10",
        "PQ-only R@10",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r.index,
            str(r.nprobe or "-"),
            f"{r.build_s:.0f}",
            f"{r.index_bytes_per_vector:.1f}",
            f"{r.store_bytes_per_vector:.1f}",
            f"{r.single_qps:,.0f}",
            f"{r.single_qps / flat_qps:.1f}",
            f"{r.batch_qps:,.0f}",
            f"{r.recall_at_1:.3f}",
            f"{r.recall_at_10:.3f}",
            "-" if r.pq_only_recall_at_10 is None else f"{r.pq_only_recall_at_10:.3f}",
        )
    Console(width=180).print(table)


def _default_nprobe(spec: str) -> int | None:
    """The nprobe a query naming none gets from an index of this spec (IVF only)."""
    found = re.match(r"IVF(\d+)", spec)
    return default_nprobe(int(found.group(1))) if found else None


def goal_met(rows: list[Row]) -> dict[str, object]:
    """The best configuration meeting the recall goal, and whether it meets the rest."""
    flat_qps = rows[0].single_qps
    good = [r for r in rows[1:] if r.recall_at_10 >= GOAL_RECALL]
    if not good:
        return {"met": False, "reason": f"no configuration reaches recall@10 {GOAL_RECALL}"}
    best = max(good, key=lambda r: r.single_qps)
    speedup = best.single_qps / flat_qps
    met = speedup >= GOAL_SPEEDUP and best.index_bytes_per_vector <= GOAL_BYTES
    default = SearchParams()
    at_default = [
        r.recall_at_10
        for r in rows[1:]
        if (r.nprobe, r.rerank_factor) == (_default_nprobe(r.index), default.rerank_factor)
    ]
    return {
        "met": met,
        "default_params_recall_at_10": at_default[0] if at_default else None,
        "nprobe": best.nprobe,
        "rerank_factor": best.rerank_factor,
        "recall_at_10": best.recall_at_10,
        "speedup_vs_flat_single": speedup,
        "index_bytes_per_vector": best.index_bytes_per_vector,
    }


def main() -> None:
    args = _parse()
    _log(f"{args.n:,} x {args.dim}-d clustered vectors, {args.queries} queries")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir_ctx = tempfile.TemporaryDirectory(prefix="bench_vectors-", dir=args.workdir)
    workdir = Path(workdir_ctx.name)
    started = time.perf_counter()
    data = synthetic_base(args.data_dir or workdir, args.n + args.queries, args.dim, args.seed)
    base, queries = data[: args.n], np.array(data[args.n :])
    _log(f"base ready (memory-mapped, {data.nbytes / 2**30:.1f} GiB)")
    ids = np.arange(args.n, dtype=np.int64) * 3 + 1  # sparse ids, as a catalog hands out
    exact = bench_flat if args.n <= args.flat_max else bench_flat_scan
    flat_row, truth_rows = exact(base, ids, queries, args.flat_single)
    _log(f"{flat_row.index}: {flat_row.single_qps:.2f} QPS one query per call")
    store = write_store(workdir / "embeddings", ids, base)
    _log("re-rank store written (float16, in chunks, compacted into one mapped file)")
    rows, serving = bench_index(base, ids, queries, truth_rows, store, workdir, args)
    del data, base
    print_table([flat_row, *rows])
    print(f"served memory-mapped: {json.dumps(serving)}")
    summary = goal_met([flat_row, *rows])
    print(
        f"goal (R@10>={GOAL_RECALL}, >={GOAL_SPEEDUP}x Flat 1-query QPS, "
        f"<={GOAL_BYTES} B/vec): {summary}"
    )
    _write_json(args, [flat_row, *rows], summary | {"mmap_serving": serving},
                time.perf_counter() - started)
    workdir_ctx.cleanup()


def write_store(path: Path, ids: np.ndarray, base: np.ndarray) -> EmbeddingStore:
    """The float16 re-rank store, appended a chunk at a time, then compacted into one
    snapshot file that is memory-mapped (append's files are read in whole)."""
    store = EmbeddingStore.open(path, base.shape[1])
    for part in row_chunks(len(base)):
        store.append(ids[part], base[part])
    store.compact()
    return store


def bench_index(base, ids, queries, truth_rows, store, workdir: Path, args
                ) -> tuple[list[Row], dict[str, object]]:
    """Build the automatic spec (in memory or on disk), then measure it read in and mapped."""
    spec = choose_spec(args.n, args.dim)
    ondisk = args.ondisk or _code_bytes(spec, args.n) > args.memory_budget_gb * 2**30
    if ondisk:
        path, spec, build_s = build_ondisk(base, ids, workdir, args.shards)
        files = [path, workdir / "lists.ivfdata"]
        # On-disk lists map their .ivfdata by themselves (reading such an index with
        # IO_FLAG_MMAP crashes FAISS 1.15), so it is read without the flag.
        index = VectorIndex.read(path, spec)
    else:
        index, build_s = build_ivf(base, ids, workdir)
        [path] = list((workdir / "index").glob("v*/index.faiss"))
        files = [path]
    rows = bench_ivf(index, store, build_s, queries, truth_rows, args, files)
    del index
    serving = bench_mmap(path, spec, files, store, queries, truth_rows, args)
    serving.update(build_s=build_s, ondisk_build=ondisk, shards=args.shards if ondisk else 1)
    return rows, serving


def _write_json(args, rows: list[Row], summary: dict[str, object], total_s: float) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "faiss": faiss.__version__,
            "omp_threads": faiss.omp_get_max_threads(),
            "python": platform.python_version(),
        },
        "rows": [asdict(r) for r in rows],
        "goal": summary,
        "total_s": total_s,
        "load_average_samples": LOAD_SAMPLES,  # (s since start, 1-min load), per log line
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} ({total_s:.0f} s total)")


if __name__ == "__main__":
    main()
