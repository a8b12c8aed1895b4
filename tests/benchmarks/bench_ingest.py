"""Ingest benchmark: end-to-end `index_source` samples/s vs the raw encoder forward.

    python -m tests.benchmarks.bench_ingest [--n 2000] [--models ViT-B-32 house]
        [--captions | --images-only] [--media copy reference] [--workers 2 0]

A sample is an 800×800 photo-like JPEG with a caption sidecar (`<stem>.txt`, the way
folder corpora carry captions); `--images-only` drops the captions. Both sides use the
same model, batch size and torch threads, measured side by side in one run: the raw side
encodes pre-decoded, preprocessed tensors and pre-read captions (model work only: image
forward + text forward); the end-to-end side reads files, decodes, preprocesses, embeds
both, writes SQL, the media store, the embedding store and the FAISS index, once per
`--media` mode and `--workers` value. ViT-B-32 runs with random weights (same compute as
the real one). Also reports decode+preprocess images/s per core."""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from multiprocessing import forkserver
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from search import MediaMode
from search.media import decode_image
from search.models.encoder import load_encoder
from search.settings import Settings
from search.workspace import Workspace

RESULTS = Path("tests/benchmarks/results")
_COLOURS = ("red", "blue", "green", "amber", "grey", "violet", "teal", "orange", "white")
_THINGS = ("sky", "ball", "lamp", "shoe", "vase", "cup", "leaf", "stone", "boat", "kite")
_PHRASES = ("on a wooden table", "under soft morning light", "against a plain wall",
            "seen from slightly above", "with a blurred background", "in a studio",
            "next to a window", "on a sunny afternoon", "with visible film grain")


def photo_like(seed: int, size: int = 800) -> Image.Image:
    """Gradient sky, blurred shapes and sensor noise: compresses like a photo."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    base = (rng.uniform(40, 215, 3) * (0.6 + 0.4 * ramp)).astype(np.float32)
    image = Image.fromarray(np.broadcast_to(base, (size, size, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(20, size // 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in
                                                              rng.integers(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(2))
    noise = rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def caption(seed: int) -> str:
    """A product/photo caption of 1-4 clauses (≈ 8-40 tokens), like alt texts and titles."""
    rng = np.random.default_rng(10_000 + seed)
    words = [f"a photo of a {rng.choice(_COLOURS)} {rng.choice(_THINGS)}"]
    words += [str(p) for p in rng.choice(_PHRASES, int(rng.integers(0, 4)), replace=False)]
    return ", ".join(words)


def make_corpus(folder: Path, n: int, captions: bool) -> list[Path]:
    """`n` JPEGs, each with a `<stem>.txt` caption when `captions` (removed otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            photo_like(i).save(path, quality=90)
        sidecar = path.with_suffix(".txt")
        if captions:
            sidecar.write_text(caption(i))
        else:
            sidecar.unlink(missing_ok=True)
        paths.append(path)
    return paths


def cpu_seconds() -> float:
    """User + system CPU of this process, its reaped children and the multiprocessing
    fork server with the decode workers it forked and reaped."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage) + _fork_server_cpu()


def _fork_server_cpu() -> float:
    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if server is None:
        return 0.0
    time.sleep(0.5)  # let the server reap workers that just exited
    try:
        fields = Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime..cstime


def raw_forward(model: str, paths: list[Path], batch: int, captions: bool
                ) -> tuple[float, float, float, float]:
    """(samples/s, images/s, texts/s, CPU s/sample) of the encoder alone on inputs
    prepared beforehand."""
    encoder = load_encoder(model, device="cpu", batch_size=batch)
    pixels = torch.stack([encoder.preprocess(decode_image(p, min_side=encoder.image_size))
                          for p in paths])
    texts = [p.with_suffix(".txt").read_text() for p in paths] if captions else []
    encoder.encode_images(pixels[:batch])  # warm-up
    encoder.encode_texts(texts[:batch])
    cpu, started = cpu_seconds(), time.perf_counter()
    encoder.encode_images(pixels)
    image_s = time.perf_counter() - started
    started = time.perf_counter()
    encoder.encode_texts(texts)
    text_s = time.perf_counter() - started
    n = len(paths)
    cpu_per_sample = (cpu_seconds() - cpu) / n
    return n / (image_s + text_s), n / image_s, (n / text_s if captions else 0.0), cpu_per_sample


def decode_rate(model: str, paths: list[Path]) -> float:
    """Decode + preprocess images/s on one core."""
    encoder = load_encoder(model, device="cpu")
    torch.set_num_threads(1)
    started = time.perf_counter()
    for path in paths:
        encoder.preprocess(decode_image(path, min_side=encoder.image_size))
    rate = len(paths) / (time.perf_counter() - started)
    torch.set_num_threads(THREADS)
    return rate


def end_to_end(model: str, folder: Path, batch: int, workers: int, media: str
               ) -> tuple[float, float, dict]:
    """(samples/s, CPU s/sample, job summary) of `index_source` into a fresh home; the
    encoder is loaded first, as the raw side's is."""
    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(Settings(home=Path(home), device="cpu"))
        ws.create_collection("bench", model=model)
        options = IndexOptions(batch_size=batch, workers=workers, progress=False,
                               media=MediaMode(media))
        cpu, started = cpu_seconds(), time.perf_counter()
        summary = index_source(ws, "bench", folder, options=options)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
        ws.close()
    return summary.indexed / elapsed, cpu / max(1, summary.indexed), summary.as_dict()


THREADS = torch.get_num_threads()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples (800x800 JPEG + caption)")
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "house"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[IndexOptions.workers],
                        help=f"decode processes (default {IndexOptions.workers}, as `add`); "
                             "several values run side by side (0: the parent decodes on "
                             "threads between encoder batches)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--captions", dest="captions", action="store_true", default=True,
                      help="image + caption per sample (default)")
    kind.add_argument("--images-only", dest="captions", action="store_false",
                      help="images without captions")
    parser.add_argument("--media", nargs="+", choices=["copy", "reference"],
                        default=["copy", "reference"], help="media modes to run end to end")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) /
                        "xmodal-bench-ingest")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_ingest.json")
    return parser


def _measure(model: str, paths: list[Path], args: argparse.Namespace) -> dict:
    raw, raw_images, raw_texts, raw_cpu = raw_forward(model, paths, args.batch_size,
                                                      args.captions)
    row = {"model": model, "samples": len(paths), "captions": args.captions,
           "batch": args.batch_size, "threads": THREADS,
           "raw_img_s": round(raw_images, 2), "raw_text_s": round(raw_texts, 2),
           "raw_samples_s": round(raw, 2), "raw_cpu_ms": round(raw_cpu * 1000, 1)}
    for workers in args.workers:
        for media in args.media:
            e2e, cpu, summary = end_to_end(model, args.corpus, args.batch_size, workers,
                                           media)
            key = f"{media}_w{workers}"
            row[f"e2e_{key}_s"] = round(e2e, 2)
            row[f"ratio_{key}"] = round(e2e / raw, 3)
            # CPU per sample, raw over end-to-end: the extra work of the pipeline, robust
            # to other load on the machine (wall-clock ratios are not)
            row[f"cpu_ratio_{key}"] = round(raw_cpu / cpu, 3)
            row[f"e2e_{key}_cpu_ms"] = round(cpu * 1000, 1)
            row["failed"] = row.get("failed", 0) + summary["failed"]
    row["decode_img_s_per_core"] = round(decode_rate(model, paths[: min(300, len(paths))]), 1)
    return row


def main() -> None:
    args = _parser().parse_args()
    args.corpus = args.corpus / str(args.n)  # a folder per size: `add` reads all of it
    paths = make_corpus(args.corpus, args.n, args.captions)
    rows = [_measure(model, paths, args) for model in args.models]
    header = list(rows[0])
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
