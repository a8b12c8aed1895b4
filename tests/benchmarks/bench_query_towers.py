"""Query-tower time in process: torch vs ONNX Runtime, float32 vs int8, 1 vs 2 threads.

    python -m tests.benchmarks.bench_query_towers [--model ViT-B-32] [--repeats 30]
        [--threads 1,2] [--batch 32] [--out FILE]

One encoder per query runtime (`--model ViT-B-32`: random weights, the same compute as
real ones; ONNX exports cached under a temporary directory, the export time reported).
Per runtime and thread count: a 7-token text query (`encode_query_text`, tokenizer and
normalisation included) and an image query's tower on one preprocessed image. Runtimes
are measured round-robin, one call each in turn, so a noisy machine slows them alike;
ratios to torch float32 come from the same rounds. `--batch` also times the image tower
on a batch (what indexing runs), torch float32 against ONNX Runtime float32, at the
largest thread count. Not a test; prints a table and writes JSON.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search.models.encoder import Encoder, load_encoder  # noqa: E402
from search.models.query_runtime import QueryBackend, QueryRuntime  # noqa: E402

QUERY = "red leather ankle boots with laces"  # 7 tokens with the CLIP tokenizer's ends
RUNTIMES = {"torch fp32": (QueryBackend.TORCH, False), "torch int8": (QueryBackend.TORCH, True),
            "onnx fp32": (QueryBackend.ONNX, False), "onnx int8": (QueryBackend.ONNX, True)}


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repeats", type=int, default=30, help="rounds per measurement")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", type=int, default=32, help="image batch; 0: none")
    parser.add_argument("--out", type=Path,
                        default=Path("tests/benchmarks/results/bench_query_towers.json"))
    return parser.parse_args()


def _encoder(model: str, backend: QueryBackend, int8: bool, threads: int, cache: Path
             ) -> Encoder:
    runtime = QueryRuntime(threads, int8, int8, backend, backend, onnx_cache=cache)
    pretrained = None if model == "house" else "random"
    return load_encoder(model, pretrained, device="cpu", runtime=runtime)


def _round_robin(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms per call, each call once per round."""
    for call in calls.values():
        call()  # warm-up: first-run allocations and lazily built kernels
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}


def _query_rows(args: argparse.Namespace, cache: Path) -> list[dict]:
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        encoders = {name: _encoder(args.model, *spec, threads, cache)
                    for name, spec in RUNTIMES.items()}
        reference = next(iter(encoders.values()))
        image = reference.preprocess_images([_image(reference.image_size)])  # [1, 3, S, S]
        text = _round_robin({n: (lambda e=e: e.encode_query_text(QUERY))
                             for n, e in encoders.items()}, args.repeats)
        towers = {n: (lambda e=e, x=image, t=threads: e._query_towers().image(x, t))
                  for n, e in encoders.items()}
        with torch.inference_mode():
            pixels = _round_robin(towers, max(3, args.repeats // 3))
        for name, encoder in encoders.items():
            rows.append({"runtime": name, "variant": encoder.variant, "threads": threads,
                         "text_ms": text[name], "image_ms": pixels[name],
                         "text_vs_torch_fp32": text["torch fp32"] / text[name],
                         "image_vs_torch_fp32": pixels["torch fp32"] / pixels[name]})
    return rows


def _image(size: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def _batch_row(args: argparse.Namespace, cache: Path) -> dict:
    threads = max(int(t) for t in args.threads.split(","))
    onnx = _encoder(args.model, QueryBackend.ONNX, False, threads, cache)
    pixels = torch.randn(args.batch, 3, onnx.image_size, onnx.image_size)
    torch.set_num_threads(threads)
    with torch.inference_mode():
        times = _round_robin({"torch fp32": lambda: onnx.model.encode_image(pixels),
                              "onnx fp32": lambda: onnx._query_towers().image(pixels, threads)},
                             max(2, args.repeats // 10))
    return {"batch": args.batch, "threads": threads,
            **{f"{name} img/s": args.batch * 1000 / ms for name, ms in times.items()},
            "onnx_vs_torch": times["torch fp32"] / times["onnx fp32"]}


def main() -> int:
    args = _parse()
    with tempfile.TemporaryDirectory(prefix="xmodal-bench-towers-") as scratch:
        cache = Path(scratch)
        start = time.perf_counter()
        for int8 in (False, True):  # exports (first time) before any timing
            _encoder(args.model, QueryBackend.ONNX, int8, 1, cache)
        export_s = time.perf_counter() - start
        rows = _query_rows(args, cache)
        batch = _batch_row(args, cache) if args.batch else None
    print(f"{args.model}: ONNX export + int8 quantisation of both towers {export_s:.1f} s")
    print("| runtime | threads | text ms | vs torch fp32 | image tower ms | vs torch fp32 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['runtime']} | {row['threads']} | {row['text_ms']:.1f} | "
              f"{row['text_vs_torch_fp32']:.2f}x | {row['image_ms']:.1f} | "
              f"{row['image_vs_torch_fp32']:.2f}x |")
    if batch:
        print(f"image batch {batch['batch']}, {batch['threads']} threads: torch fp32 "
              f"{batch['torch fp32 img/s']:.1f} img/s, onnx fp32 {batch['onnx fp32 img/s']:.1f}"
              f" img/s ({batch['onnx_vs_torch']:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"model": args.model, "export_s": export_s, "rows": rows,
                                    "batch": batch, "machine": machine}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
