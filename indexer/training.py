"""Fine-tuning a CLIP on a collection's own image-text pairs, and measuring it there.

`train_on_collection` is `xmodal-index train`; `evaluate_collection` is `xmodal-index
eval`. Both read the collection's items that have text and a real (not generated) image;
the same `holdout_percent` in both leaves a slice of items (by hash of the external id)
out of training and measures on exactly that slice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indexer.house.evaluate import EvalSet, evaluate
from indexer.house.train import TrainConfig, parse_from, train_clip
from search import InvalidInputError, Workspace, decode_image, resolve_device

DEFAULT_EVAL_LIMIT = 5000  # n x n similarities: 5k items is 100 MB and a few seconds


def is_heldout(external_id: str, percent: int) -> bool:
    """Stable across runs, machines and catalog order."""
    digest = hashlib.sha256(external_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def _check_percent(percent: int) -> int:
    if not 0 <= percent < 100:
        raise InvalidInputError(f"holdout percent must be in [0, 100), got {percent}")
    return percent


def collection_pairs(workspace: Workspace, collection: str, *, holdout_percent: int = 0,
                     heldout: bool = False) -> Iterator[tuple[str, Path, str]]:
    """(external id, image path, text) of items with a real image and text, in id order;
    `heldout` picks the held-out slice instead of the rest."""
    info = workspace.catalog.get_collection(collection)
    for batch in workspace.catalog.iter_items(info.id):
        for item in batch:
            if not (item.text and item.image_ref):
                continue
            if holdout_percent and is_heldout(item.external_id, holdout_percent) != heldout:
                continue
            yield item.external_id, workspace.media.resolve(item.image_ref), item.text


def train_on_collection(workspace: Workspace, collection: str, out: Path, *,
                        source: str | None = None, epochs: int = 10, batch_size: int = 64,
                        lr: float = 1e-4, seed: int = 0, holdout_percent: int = 0,
                        progress: bool = True) -> dict[str, Any]:
    """Fine-tune `source` (MODEL[/PRETRAINED]; default the collection's own model) on the
    collection's pairs into `out`, an `Encoder.save` directory. Re-running the same command
    resumes from the last checkpoint in `out`."""
    _check_percent(holdout_percent)
    info = workspace.catalog.get_collection(collection)
    model, pretrained = parse_from(source) if source else (info.model, info.pretrained)
    pairs = [(path, text) for _, path, text in
             collection_pairs(workspace, collection, holdout_percent=holdout_percent)]
    if len(pairs) < batch_size:
        raise InvalidInputError(
            f"collection {collection!r} has {len(pairs)} items with both text and an image "
            f"(outside the held-out slice); training needs at least one batch ({batch_size})")
    steps = len(pairs) // batch_size * epochs
    config = TrainConfig(out=Path(out), model=model, pretrained=pretrained, epochs=epochs,
                         batch_size=batch_size, lr=lr, warmup_steps=max(1, min(200, steps // 10)),
                         seed=seed, device=str(resolve_device(workspace.settings.device)),
                         progress=progress)
    train_clip(pairs, config)
    return {"collection": collection, "out": str(out), "from": f"{model}/{pretrained or ''}",
            "pairs": len(pairs), "epochs": epochs, "holdout_percent": holdout_percent,
            "next": f"xmodal-index reindex --collection {collection} --model {out}"}


def _eval_set(workspace: Workspace, collection: str, holdout_percent: int,
              limit: int) -> EvalSet:
    images, captions, seen = [], [], set()
    pairs = collection_pairs(workspace, collection, holdout_percent=holdout_percent,
                             heldout=bool(holdout_percent))
    for _, path, text in pairs:
        if text in seen:  # recall over distinct captions: a repeated title has no one answer
            continue
        seen.add(text)
        images.append(decode_image(path))
        captions.append(text)
        if len(captions) >= limit:
            break
    if len(captions) < 2:
        raise InvalidInputError(f"collection {collection!r} has {len(captions)} items with "
                                "distinct text and an image to evaluate on; need at least 2")
    return EvalSet(collection, images, captions)


def evaluate_collection(workspace: Workspace, collection: str, *,
                        models: list[str] | None = None, holdout_percent: int = 0,
                        limit: int = DEFAULT_EVAL_LIMIT) -> dict[str, Any]:
    """Text->image R@1/5/10 and image->text R@1/5 of the collection's own model and of each
    of `models` (MODEL[/PRETRAINED]), side by side on the same items."""
    _check_percent(holdout_percent)
    info = workspace.catalog.get_collection(collection)
    eval_set = _eval_set(workspace, collection, holdout_percent, limit)
    specs = [(info.model, info.pretrained)] + [parse_from(m) for m in models or []]
    rows = []
    for model, pretrained in specs:
        t2i, i2t = evaluate(workspace.encoder(model, pretrained), eval_set)
        rows.append({"model": model, "pretrained": pretrained, "text_to_image": t2i,
                     "image_to_text": i2t})
    return {"collection": collection, "n": len(eval_set.captions),
            "holdout_percent": holdout_percent, "split": "held-out" if holdout_percent
            else "all", "rows": rows}


def format_eval(result: dict[str, Any]) -> str:
    header = f"{'model':<40} {'T→I R@1':>8} {'R@5':>6} {'R@10':>6}  {'I→T R@1':>8} {'R@5':>6}"
    lines = [f"{result['collection']}: {result['n']} items ({result['split']})", header,
             "-" * len(header)]
    for row in result["rows"]:
        t2i, i2t = row["text_to_image"], row["image_to_text"]
        name = row["model"] + (f"/{row['pretrained']}" if row["pretrained"] else "")
        lines.append(f"{name[-40:]:<40} {t2i[1]:>8.1%} {t2i[5]:>6.1%} {t2i[10]:>6.1%}  "
                     f"{i2t[1]:>8.1%} {i2t[5]:>6.1%}")
    return "\n".join(lines)
