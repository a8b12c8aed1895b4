"""Query latency and throughput of `xmodal-serve` over a large synthetic collection.

    python -m tests.benchmarks.bench_api [--n 1000000] [--model house|ViT-B-32]
        [--requests 400] [--concurrency 1,8,32] [--targets image,any] [--options all]
        [--filters] [--image-requests 40] [--zipf 2000] [--fusion 200] [--workers 2]
        [--mode vector|keyword|hybrid] [--database sqlite|postgres]

Builds (once; cached under --home) a collection of `n` items, each with an image and a
text vector (independent clustered unit vectors, no model run; the engine's automatic
index: IVF-PQ with exact re-ranking from ~20k vectors) and attributes, then, for each
server option (query runtime torch or ONNX Runtime, threads per query, int8 query towers;
`--options` takes names separated by ';'), starts `xmodal-serve` on loopback
and drives it from this process with distinct text queries (every one a cache miss: the
text tower runs) per target and concurrency level. Queries go through the real encoder
(`--model ViT-B-32`: random weights, the same compute as real ones).

With the default option it also measures: image uploads (800x800 JPEG, c=1), filtered
queries (`--filters`: selective 1 %, broad 30 %, range), a Zipf query stream (s=1.1
over 10,000 distinct queries) with the query cache's hit rate from /metrics, and
(`--fusion`) vector queries for `image` and `any` side by side: the fused default
target's own cost on the worst case, image and text vectors that never agree.

Reports p50/p95/p99 latency, QPS and server CPU per query (xmodal-serve and, on
PostgreSQL, the database server: SQLite runs inside), checks the goals and writes
JSON under tests/benchmarks/results/. Not a test; `--n 100000` gives a quicker run.

Keyword and hybrid modes send shopper queries drawn from the catalogue's own words
(`shop_corpus.shopper_queries`: "black ankle boot", a brand and a noun, a typo now and
then; still distinct, so the text tower runs for each hybrid one). `--database postgres`
keeps the catalog in a PostgreSQL cluster of the test harness under the build's home
(`home/postgres`), so a rerun reuses the 1M build instead of rebuilding it; its first
build loads the rows by COPY and copies the SQLite build's embeddings and index versions
(same vector ids) when that build exists, instead of training the index again.
"""

from __future__ import annotations

import os

# As in bench_vectors: spinning OpenMP threads on shared cores make faiss much slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tests.benchmarks import server_profile  # noqa: E402
from tests.benchmarks.api_load import Sample, run_load  # noqa: E402
from tests.utils.servers import free_port, wait_ready  # noqa: E402

COLLECTION = "bench"
GOAL_QPS_SHARE = 0.8
# p50 / p99 goals at concurrency 1 for the default target, by model
GOALS_MS = {"ViT-B-32": (20.0, 40.0), "house": (8.0, 40.0)}
GOALS_LEXICAL_MS = (30.0, 80.0)  # keyword and hybrid text queries at 1M items
GOAL_IMAGE_P50_MS = {"ViT-B-32": 70.0}
GOAL_FILTERED_RATIO = 2.0
GOAL_FUSED_RATIO = 2.0  # fused `any` close to one round: at most 2x a one-space query
WORDS = ["red", "blue", "green", "black", "white", "leather", "cotton", "wooden", "running",
         "summer", "winter", "vintage", "small", "large", "soft", "striped", "shoe", "jacket",
         "lamp", "chair", "mug", "backpack", "watch", "dress", "sofa", "bicycle", "camera",
         "kettle", "scarf", "hat", "table", "rug"]
# Server options side by side: query runtime (torch / ONNX Runtime) x threads x precision;
# "int8" quantises both query towers where they allow it.
_BACKENDS = {"": {"XMODAL_QUERY_BACKEND": "torch"}, "onnx, ": {"XMODAL_QUERY_BACKEND": "onnx"}}
_THREADS = {"1 thread": {"XMODAL_QUERY_THREADS": "1"}, "threads by load": {},
            "all cores": {"XMODAL_QUERY_THREADS": str(os.cpu_count() or 1)}}
_PRECISIONS = {"fp32": {"XMODAL_QUERY_TEXT_INT8": "false", "XMODAL_QUERY_IMAGE_INT8": "false"},
               "int8": {"XMODAL_QUERY_TEXT_INT8": "true", "XMODAL_QUERY_IMAGE_INT8": "true"}}
OPTIONS = {f"{backend}{threads}, {precision}": {**b_env, **t_env, **p_env}
           for backend, b_env in _BACKENDS.items()
           for threads, t_env in _THREADS.items()
           for precision, p_env in _PRECISIONS.items()
           if threads != "all cores" or precision == "int8"}
DEFAULT_OPTION = "onnx, threads by load, int8"
# The default with a hybrid query's two sides run one after the other rather than at once
# (`Settings.hybrid_overlap`): side by side with the default under --mode hybrid.
SIDES_IN_TURN = f"{DEFAULT_OPTION}, sides in turn"
OPTIONS[SIDES_IN_TURN] = {**OPTIONS[DEFAULT_OPTION], "XMODAL_HYBRID_OVERLAP": "false"}


@dataclass(frozen=True)
class Level:
    """One measured stream (one line of the table)."""

    option: str
    scenario: str  # "text", "image upload", "filter: ...", "zipf"
    target: str
    concurrency: int
    requests: int
    errors: int
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_ms_per_query: float  # xmodal-serve and, on PostgreSQL, the database server
    server_cores_used: float  # server CPU seconds per wall second: < cores = CPU was shared
    encode_ms: float
    ann_ms: float
    sql_ms: float
    keyword_ms: float  # the lexical side of keyword and hybrid queries (wall time)
    cache_hit_rate: float | None = None
    profile_ms: dict[str, float] | None = None  # --profile: server ms per request by stage


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="items (2 vectors each)")
    parser.add_argument("--model", default="house", help="house or an open_clip name")
    parser.add_argument("--requests", type=int, default=400, help="per stream")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--targets", default="image,any")
    parser.add_argument("--options", default="all", help=f"all or names: {list(OPTIONS)}")
    parser.add_argument("--filters", action="store_true", help="filtered queries too")
    parser.add_argument("--image-requests", type=int, default=40, help="0: none")
    parser.add_argument("--zipf", type=int, default=0, help="Zipf stream length; 0: none")
    parser.add_argument("--fusion", type=int, default=0,
                        help="vector queries per target (image, any) without the encoder: "
                             "the cost of fused `any` on its own; 0: none")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="xmodal-serve --workers (default: one per core)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--mode", choices=["vector", "keyword", "hybrid"], default="vector",
                        help="query mode of every text request (hybrid goal: p50 <= 30 / "
                             "p99 <= 80 ms at concurrency 1)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                        help="catalog database (postgres: a cluster kept under --home)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, default=None,
                        help="cache of the built collection (default: a dir under /tmp)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the server through each concurrency-1 stream: raw "
                             "stacks into this folder, ms per request by stage printed "
                             "and in the JSON")
    parser.add_argument("--out", type=Path,
                        default=Path("tests/benchmarks/results/bench_api.json"))
    return parser.parse_args()


# -- the server ---------------------------------------------------------------------------
@contextmanager
def serve(home: Path, workers: int, model: str, extra_env: dict[str, str]
          ) -> Iterator[tuple[str, int, int]]:
    """`xmodal-serve` on a loopback port, read-only: yields (host, port, pid)."""
    port = free_port()
    env = {**os.environ, "XMODAL_HOME": str(home), "XMODAL_MODEL": model,
           "XMODAL_DEVICE": "cpu", "XMODAL_OFFLINE": "true", "XMODAL_API_READ_ONLY": "true",
           **({} if model == "house" else {"XMODAL_PRETRAINED": "random"}), **extra_env}
    command = [sys.executable, "-m", "api.cli", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, timeout_s=600)  # first start exports
        yield "127.0.0.1", port, server.pid
    finally:
        server.terminate()
        server.wait(30)


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (/proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


# -- query streams -----------------------------------------------------------------------
class Texts:
    """Distinct query texts: each one is new to the server (the query cache misses)."""

    def __init__(self, seed: int) -> None:
        self.rng, self.used = random.Random(seed), 0

    def take(self, count: int) -> list[str]:
        texts = [f"{' '.join(self.rng.sample(WORDS, self.rng.randint(2, 4)))} {self.used + i}"
                 for i in range(count)]
        self.used += count
        return texts


class ShopperTexts(Texts):
    """Distinct shopper queries for keyword and hybrid modes (see `shop_corpus`)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.seen: set[str] = set()

    def take(self, count: int) -> list[str]:
        from tests.benchmarks.shop_corpus import shopper_queries

        texts = shopper_queries(count, self.rng.randrange(2**31), exclude=self.seen)
        self.seen.update(texts)
        return texts


@contextmanager
def bench_database(home: Path, database: str) -> Iterator[str | None]:
    """The catalog's URL: None for SQLite under `home`; for postgres a kept cluster in
    `home/postgres` (created on first use), started now and stopped at the end."""
    if database == "sqlite":
        yield None
        return
    from tests.utils.postgres import start_kept_cluster

    cluster = start_kept_cluster(home / "postgres")
    try:
        url = cluster.url.rsplit("/", 1)[0] + "/bench"
        import psycopg

        with psycopg.connect(cluster.url.replace("+psycopg", ""), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'bench'").fetchone() \
                    is None:
                conn.execute("CREATE DATABASE bench")
        yield url
    finally:
        cluster.stop()


def database_pid(home: Path) -> int | None:
    """The running kept cluster's postmaster under `home` (None: SQLite)."""
    pid_file = home / "postgres" / "data" / "postmaster.pid"
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, PermissionError, IndexError, ValueError):
        return None


def zipf_texts(count: int, seed: int, distinct: int = 10_000, s: float = 1.1) -> list[str]:
    """A skewed stream: query of rank r comes with probability proportional to r^-s."""
    weights = 1.0 / np.arange(1, distinct + 1) ** s
    ranks = np.random.default_rng(seed).choice(distinct, size=count, p=weights / weights.sum())
    vocabulary = Texts(seed + 1).take(distinct)
    return [vocabulary[r] for r in ranks]


def bodies(texts: list[str], target: str, k: int, filters: dict | None = None,
           mode: str = "vector") -> list[bytes]:
    extra = {"filters": filters} if filters else {}
    return [json.dumps({"collection": COLLECTION, "text": t, "target": target, "k": k,
                        "mode": mode, **extra}).encode() for t in texts]


def jpeg_uploads(count: int, seed: int) -> list[bytes]:
    """800x800 photo-like JPEGs (smooth noise), as a shop's upload would be."""
    import io

    from PIL import Image

    rng, out = np.random.default_rng(seed), []
    for _ in range(count):
        small = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((800, 800), Image.BICUBIC).save(buffer, "JPEG",
                                                                      quality=90)
        out.append(buffer.getvalue())
    return out


# -- measuring -------------------------------------------------------------------------
@dataclass(frozen=True)
class Server:
    host: str
    port: int
    pid: int
    database_pid: int | None = None  # PostgreSQL's postmaster: its backends' CPU counts too
    profile_dir: Path | None = None  # --profile: py-spy the concurrency-1 streams into it

    def cpu_s(self) -> float:
        """CPU seconds of the server and of its database server (SQLite runs inside)."""
        return process_tree_cpu_s(self.pid) + (
            process_tree_cpu_s(self.database_pid) if self.database_pid else 0.0)


def measure(server: Server, label: tuple[str, str, str], concurrency: int,
            payloads: list[bytes]) -> Level:
    with profiled(server, label, concurrency) as finish:
        cpu_before, started = server.cpu_s(), time.perf_counter()
        samples = asyncio.run(run_load(server.host, server.port, "/v1/search", payloads,
                                       concurrency))
        wall = time.perf_counter() - started
        level = _level(label, concurrency, samples, wall, server.cpu_s() - cpu_before)
    level = finish(level)
    print(f"  {label} c={concurrency}: p50 {level.p50_ms:.1f} ms, {level.qps:.1f} QPS",
          flush=True)
    return level


def measure_uploads(server: Server, option: str, uploads: list[bytes], k: int) -> Level:
    import httpx

    samples = []
    label = (option, "image upload", "any")
    with profiled(server, label, 1) as finish, \
            httpx.Client(base_url=f"http://{server.host}:{server.port}") as client:
        cpu_before, started = server.cpu_s(), time.perf_counter()
        for data in uploads:
            began = time.perf_counter()
            response = client.post("/v1/search/image", data={"collection": COLLECTION,
                                                              "k": str(k)},
                                    files={"image": ("query.jpg", data, "image/jpeg")})
            took = response.json().get("took_ms", {}) if response.status_code == 200 else {}
            samples.append(Sample(response.status_code, time.perf_counter() - began, took))
        wall = time.perf_counter() - started
        level = _level(label, 1, samples, wall, server.cpu_s() - cpu_before)
    return finish(level)


@contextmanager
def profiled(server: Server, label: tuple[str, str, str], concurrency: int
             ) -> Iterator[Callable[[Level], Level]]:
    """With --profile, py-spy the server through a concurrency-1 stream (the latency
    goals' level); yields what adds the per-stage profile to the stream's Level."""
    if server.profile_dir is None or concurrency != 1 or label[1] == "warm-up":
        yield lambda level: level
        return
    name = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(label)).strip("-")
    raw = server.profile_dir / f"{name}.txt"
    with server_profile.sampled(server.pid, raw):
        yield lambda level: replace(
            level, profile_ms=server_profile.read_raw(raw).ms_per_request(level.requests))


def _level(label: tuple[str, str, str], concurrency: int, samples: list[Sample], wall: float,
           server_cpu: float) -> Level:
    ok = [s for s in samples if s.status == 200]
    latencies = np.array([s.seconds * 1000 for s in ok]) if ok else np.zeros(1)
    encode, ann, sql, keyword = (
        float(np.mean([s.took_ms.get(key, 0.0) for s in ok])) if ok else 0.0
        for key in ("encode_ms", "ann_ms", "sql_ms", "keyword_ms"))
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    n = max(len(samples), 1)
    return Level(*label, concurrency, len(samples), len(samples) - len(ok), len(ok) / wall,
                 float(p50), float(p95), float(p99), server_cpu / n * 1000, server_cpu / wall,
                 encode, ann, sql, keyword)


def run_option(option: str, server: Server, args: argparse.Namespace, texts: Texts
               ) -> list[Level]:
    """Every stream of one server option; the extras only for the default option."""
    measure(server, (option, "warm-up", "any"), 1,
            bodies(texts.take(20), "any", args.k, mode=args.mode))
    levels = [measure(server, (option, "text", target), c,
                      bodies(texts.take(args.requests), target, args.k, mode=args.mode))
              for target in args.targets.split(",") for c in args.levels]
    if args.image_requests:
        uploads = jpeg_uploads(args.image_requests + 3, args.seed)
        measure_uploads(server, option, uploads[:3], args.k)  # warm-up
        levels.append(measure_uploads(server, option, uploads[3:], args.k))
    if option != DEFAULT_OPTION:
        return levels
    if args.filters:
        from tests.benchmarks.api_corpus import FILTERS

        for name, spec in FILTERS.items():
            for target in args.targets.split(","):
                payloads = bodies(texts.take(args.requests), target, args.k, spec, args.mode)
                levels.append(measure(server, (option, f"filter: {name}", target), 1,
                                      payloads))
    if args.fusion:
        levels += measure_fusion(server, option, args)
    if args.zipf:
        stream = zipf_texts(args.zipf, args.seed)
        level = measure(server, (option, "zipf s=1.1 / 10k", "any"), 1,
                        bodies(stream, "any", args.k, mode=args.mode))
        levels.append(replace(level, cache_hit_rate=replayed_hit_rate(stream, args.workers)))
    return levels


# -- fused `target: any` against `target: image`, encoder left out ----------------------
def vector_bodies(count: int, dim: int, seed: int, target: str, k: int) -> list[bytes]:
    """Query vectors unrelated to the collection's clusters, as a random-weights text
    tower's are: no item's image and text agree on them (the worst case for fusion)."""
    from tests.utils.synthetic import clustered_unit_vectors

    vectors = clustered_unit_vectors(count, dim, seed=seed + 7_919)
    return [json.dumps({"collection": COLLECTION, "vector": [round(float(x), 6) for x in v],
                        "target": target, "k": k}).encode() for v in vectors]


def measure_fusion(server: Server, option: str, args: argparse.Namespace) -> list[Level]:
    """`vector` queries at concurrency 1, `image` then `any`, the same vectors: what the
    default fused target costs over one space, with nothing else in the way. The
    collection's image and text vectors are independent (api_corpus), so scores of an
    item's two modalities never agree."""
    import httpx

    url = f"http://{server.host}:{server.port}/v1/collections/{COLLECTION}"
    dim = int(httpx.get(url, timeout=30).json()["dim"])
    levels = []
    for target in ("image", "any"):
        payloads = vector_bodies(args.fusion + 5, dim, args.seed, target, args.k)
        measure(server, (option, "warm-up", target), 1, payloads[:5])
        levels.append(measure(server, (option, "vector (fusion)", target), 1, payloads[5:]))
    image, fused = levels
    print(f"  fused any / image p50: {fused.p50_ms / max(image.p50_ms, 1e-9):.2f}x "
          f"(ann {fused.ann_ms:.1f} vs {image.ann_ms:.1f} ms, sql {fused.sql_ms:.1f} vs "
          f"{image.sql_ms:.1f} ms)", flush=True)
    return levels


def replayed_hit_rate(stream: list[str], workers: int) -> float:
    """The query cache's hit rate on this stream, replayed through the real cache class.

    /metrics cannot say it: each worker process has its own cache and registry, and a
    scrape reaches one of them. Requests are spread over workers as evenly as the
    kernel's accept queue does, so each cache sees about every `workers`-th query."""
    from search.models.query_cache import QueryEmbeddingCache

    class _Counting:  # the cache only needs these of an encoder
        cache_identity, tokenizer = "replay", None

        def encode_query_text(self, text: str) -> np.ndarray:
            return np.zeros(1, dtype=np.float32)

    caches = [QueryEmbeddingCache() for _ in range(max(workers, 1))]
    encoder = _Counting()
    for i, text in enumerate(stream):
        caches[i % len(caches)].text_vector(encoder, text)  # type: ignore[arg-type]
    hits = sum(c.stats().hits for c in caches)
    return hits / max(len(stream), 1)


def latency_goal_ms(model: str, mode: str) -> tuple[float, float]:
    """(p50, p99) at concurrency 1: issue 13 sets keyword and hybrid queries their own."""
    if mode in ("keyword", "hybrid"):
        return GOALS_LEXICAL_MS
    return GOALS_MS.get(model, GOALS_MS["ViT-B-32"])


def goals(levels: list[Level], model: str, cores: int, mode: str = "vector"
          ) -> dict[str, dict]:
    """The issue's goals, checked on the default option's streams."""
    mine = [lv for lv in levels if lv.option == DEFAULT_OPTION]
    find = {(lv.scenario, lv.target, lv.concurrency): lv for lv in mine}
    result: dict[str, dict] = {}
    p50_goal, p99_goal = latency_goal_ms(model, mode)
    for target in ("any", "image"):
        single = find.get(("text", target, 1))
        if single is None:
            continue
        result[f"p50 c=1 {target}"] = _check(single.p50_ms, p50_goal)
        result[f"p99 c=1 {target}"] = _check(single.p99_ms, p99_goal)
        if ("text", target, 8) in find:
            # CPU cost per query measured where queries do not contend (concurrency 1)
            target_qps = GOAL_QPS_SHARE * cores / (single.server_cpu_ms_per_query / 1000)
            result[f"QPS c=8 {target}"] = _check(find["text", target, 8].qps, target_qps,
                                                 at_least=True)
        for lv in mine:
            if lv.scenario.startswith("filter") and lv.target == target:
                result[f"{lv.scenario} {target} p50 / unfiltered"] = _check(
                    lv.p50_ms / single.p50_ms, GOAL_FILTERED_RATIO)
    fused, single = find.get(("vector (fusion)", "any", 1)), find.get(("vector (fusion)",
                                                                        "image", 1))
    if fused is not None and single is not None:
        result["fused any / image p50 (vector queries)"] = _check(
            fused.p50_ms / max(single.p50_ms, 1e-9), GOAL_FUSED_RATIO)
    upload = find.get(("image upload", "any", 1))
    if upload is not None and model in GOAL_IMAGE_P50_MS:
        result["image upload p50"] = _check(upload.p50_ms, GOAL_IMAGE_P50_MS[model])
    return result


def _check(value: float, goal: float, at_least: bool = False) -> dict:
    return {"value": value, "goal": goal, "met": value >= goal if at_least else value <= goal}


def print_table(levels: list[Level], checks: dict[str, dict]) -> None:
    header = (f"{'option':<22} {'stream':<24} {'target':<6} {'c':>3} {'QPS':>7} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'CPU ms/q':>8} {'cores':>5} "
              f"{'enc':>6} {'ann':>5} {'sql':>5} {'kw':>5} {'hits':>5}")
    print(header)
    print("-" * len(header))
    for lv in levels:
        hits = "" if lv.cache_hit_rate is None else f"{lv.cache_hit_rate:.0%}"
        print(f"{lv.option:<22} {lv.scenario:<24} {lv.target:<6} {lv.concurrency:>3} "
              f"{lv.qps:>7.1f} {lv.p50_ms:>7.1f} {lv.p95_ms:>7.1f} {lv.p99_ms:>7.1f} "
              f"{lv.server_cpu_ms_per_query:>8.1f} {lv.server_cores_used:>5.2f} "
              f"{lv.encode_ms:>6.1f} {lv.ann_ms:>5.1f} {lv.sql_ms:>5.1f} {lv.keyword_ms:>5.1f} "
              f"{hits:>5}"
              + (f"  ({lv.errors} errors)" if lv.errors else ""))
    for name, check in checks.items():
        print(f"goal {name}: {check['value']:.2f} vs {check['goal']:.2f} -> "
              f"{'met' if check['met'] else 'MISSED'}")
    for lv in (lv for lv in levels if lv.profile_ms):
        print(f"profile, server ms per request: {lv.scenario} {lv.target} "
              f"(p50 {lv.p50_ms:.1f} ms at the client)")
        for stage, ms in (lv.profile_ms or {}).items():
            print(f"  {stage:<46} {ms:>6.2f}")


def run_options(home: Path, options: list[str], args: argparse.Namespace,
                database_url: str | None) -> list[Level]:
    levels: list[Level] = []
    texts = Texts(args.seed) if args.mode == "vector" else ShopperTexts(args.seed)
    database = {"XMODAL_DATABASE_URL": database_url} if database_url else {}
    for option in options:
        with serve(home, args.workers, args.model, {**OPTIONS[option], **database}) as (
                host, port, pid):
            server = Server(host, port, pid, database_pid(home), args.profile)
            levels += run_option(option, server, args, texts)
        print(f"done: {option}", flush=True)
    return levels


def main() -> int:
    args = _parse()
    from tests.benchmarks.api_corpus import ensure_collection

    args.levels = [int(c) for c in args.concurrency.split(",")]
    options = list(OPTIONS) if args.options == "all" else args.options.split(";")
    unknown = [option for option in options if option not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown --options {unknown}; known: {'; '.join(OPTIONS)}")
    sqlite_home = Path(tempfile.gettempdir()) / f"xmodal-bench-api-{args.model}-{args.n}"
    home = args.home or (sqlite_home if args.database == "sqlite"
                         else sqlite_home.with_name(f"{sqlite_home.name}-{args.database}"))
    with bench_database(home, args.database) as database_url:
        # a PostgreSQL build copies the SQLite build's vectors and index when it has them
        build = ensure_collection(home, COLLECTION, args.n, seed=args.seed, model=args.model,
                                  database_url=database_url,
                                  vectors_from=None if home == sqlite_home else sqlite_home)
        print(f"collection: {json.dumps(build)}", flush=True)
        load_at_start = os.getloadavg()  # other work on the machine shares its cores
        levels = run_options(home, options, args, database_url)
    cores = os.cpu_count() or 1
    checks = goals(levels, args.model, cores, args.mode)
    print_table(levels, checks)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"config": config, "options": {o: OPTIONS[o] for o in options},
              "machine": {"cpus": cores, "python": platform.python_version(),
                          "load_avg_at_start": load_at_start,
                          "load_avg_at_end": os.getloadavg()},
              "collection": build, "levels": [asdict(lv) for lv in levels], "goals": checks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
