"""Single-item API writes over time: PUT/DELETE/search latency and files on disk.

Replays the issue's measurement: one server (in-process ASGI), the house model,
single-item PUTs (text; a third with a small PNG), then deleting every other item,
with searches sampled along the way. Prints a table per window and writes JSON.

    python -m tests.benchmarks.bench_writes --writes 1500 --model house

Besides wall-clock latency, each window reports this process's CPU time per PUT (the
server runs in process): on a shared machine a slow window with unchanged CPU per PUT
is the host's noise, not the write path.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from api.config import ApiConfig
from search.settings import Settings
from tests.api.conftest import API_KEY, WRITE, build_home, open_client

RESULTS = Path("tests/benchmarks/results")


def png_b64(seed: int) -> str:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def count_files(root: Path) -> tuple[int, int]:
    """(files, bytes) under root."""
    sizes = [os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root)
             for n in names]
    return len(sizes), sum(sizes)


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _search(client, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        started = time.perf_counter()
        response = client.post("/v1/search", json={"collection": "w", "text": f"red {i}",
                                                   "k": 10})
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return out


def _timed(call) -> float:
    started = time.perf_counter()
    response = call()
    assert response.status_code in (200, 201, 204), response.text
    return time.perf_counter() - started


def run(writes: int, window: int, home: Path, model: str) -> list[dict]:
    settings = Settings(home=home, model=model, device="cpu", offline=True, api_key=API_KEY)
    build_home(settings, "w", [])
    rows = []
    with open_client(settings, ApiConfig(reload_interval_s=0.5)) as client:
        puts: list[float] = []
        cpu_at = time.process_time()
        for i in range(writes):
            body = {"text": f"item {i}: a red apple on a wooden table"}
            if i % 3 == 0:
                body["image"] = png_b64(i)
            puts.append(_timed(lambda i=i, body=body: client.put(
                f"/v1/collections/w/items/i{i}", headers=WRITE, json=body)))
            if (i + 1) % window == 0:
                files, size = count_files(settings.collection_dir("w"))
                recent = puts[-window:]
                cpu_ms = round(1000 * (time.process_time() - cpu_at) / window, 1)
                rows.append({"phase": "put", "ops": i + 1, "files": files, "bytes": size,
                             "p50_ms": _ms(recent, 0.5), "p99_ms": _ms(recent, 0.99),
                             "cpu_ms_per_op": cpu_ms,
                             "search_p50_ms": _ms(_search(client, 20), 0.5)})
                cpu_at = time.process_time()
                print(rows[-1], flush=True)
        cpu_at = time.process_time()
        deletes = [_timed(lambda i=i: client.delete(f"/v1/collections/w/items/i{i}",
                                                    headers=WRITE))
                   for i in range(0, writes, 2)]
        cpu_ms = round(1000 * (time.process_time() - cpu_at) / max(len(deletes), 1), 1)
        files, size = count_files(settings.collection_dir("w"))
        rows.append({"phase": "delete", "ops": len(deletes), "files": files, "bytes": size,
                     "p50_ms": _ms(deletes, 0.5), "p99_ms": _ms(deletes, 0.99),
                     "cpu_ms_per_op": cpu_ms,
                     "search_p50_ms": _ms(_search(client, 20), 0.5)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1500)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--model", default="house",
                        help="encoder (a name load_encoder knows, or a saved model's path)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_writes.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.writes, args.window, Path(tmp) / "home", args.model)
    header = list(rows[0])
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    puts = [r for r in rows if r["phase"] == "put"]
    print(f"PUT p50 first/last window: {puts[0]['p50_ms']} / {puts[-1]['p50_ms']} ms "
          f"(ratio {puts[-1]['p50_ms'] / puts[0]['p50_ms']:.2f}); "
          f"median of windows {statistics.median(r['p50_ms'] for r in puts)} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
