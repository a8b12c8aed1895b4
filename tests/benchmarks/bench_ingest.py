"""Ingest benchmark: end-to-end `index_source` images/s vs the raw encoder forward.

    python -m tests.benchmarks.bench_ingest [--n 2000] [--models ViT-B-32 house]

Both sides use the same model, batch size and torch threads, measured side by side in
one run: the raw side encodes pre-decoded, preprocessed tensors (model work only); the
end-to-end side reads JPEG files, decodes, preprocesses, embeds, writes SQL, the
embedding store and the FAISS index. ViT-B-32 runs with random weights (same compute as
the real one). Also reports decode+preprocess images/s per core."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from search.media import decode_image
from search.models.encoder import load_encoder
from search.settings import Settings
from search.workspace import Workspace

RESULTS = Path("tests/benchmarks/results")


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


def make_corpus(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            photo_like(i).save(path, quality=90)
        paths.append(path)
    return paths


def raw_forward(model: str, paths: list[Path], batch: int) -> float:
    """Images/s of the encoder alone on tensors prepared beforehand."""
    encoder = load_encoder(model, device="cpu", batch_size=batch)
    pixels = torch.stack([encoder.preprocess(decode_image(p, min_side=encoder.image_size))
                          for p in paths])
    encoder.encode_images(pixels[:batch])  # warm-up
    started = time.perf_counter()
    encoder.encode_images(pixels)
    return len(paths) / (time.perf_counter() - started)


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


def end_to_end(model: str, folder: Path, batch: int, workers: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(Settings(home=Path(home), device="cpu"))
        options = IndexOptions(batch_size=batch, workers=workers, progress=False)
        started = time.perf_counter()
        summary = index_source(ws, "bench", folder, options=options, model=model)
        elapsed = time.perf_counter() - started
        ws.close()
    return summary.indexed / elapsed, summary.as_dict()


THREADS = torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images (800x800 JPEG)")
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "house"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="decode processes")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) /
                        "xmodal-bench-ingest")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_ingest.json")
    args = parser.parse_args()
    paths = make_corpus(args.corpus, args.n)
    rows = []
    for model in args.models:
        raw = raw_forward(model, paths, args.batch_size)
        e2e, summary = end_to_end(model, args.corpus, args.batch_size, args.workers)
        decode = decode_rate(model, paths[: min(300, len(paths))])
        rows.append({"model": model, "images": args.n, "batch": args.batch_size,
                     "threads": THREADS, "workers": args.workers,
                     "raw_forward_img_s": round(raw, 2), "end_to_end_img_s": round(e2e, 2),
                     "ratio": round(e2e / raw, 3), "decode_img_s_per_core": round(decode, 1),
                     "failed": summary["failed"]})
    header = list(rows[0])
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
