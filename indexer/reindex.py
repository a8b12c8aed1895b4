"""Reindexing: rebuild from stored embeddings, or re-embed with another model.

Either way the new version is built beside the serving one and switched only when
complete; a failed or killed reindex leaves the old version serving."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from indexer.pipeline import IndexOptions
from search import (
    Collection,
    IndexStats,
    Modality,
    StoredItem,
    Workspace,
    content_hash,
    decode_image,
    index_stats,
)


@dataclass(frozen=True)
class ReindexReport:
    collection: str
    model: str  # the new encoder's identity
    items: int
    index: dict[str, IndexStats]  # by modality name


def rebuild_index(workspace: Workspace, name: str,
                  spec: str | None = None) -> dict[str, IndexStats]:
    """Train a new index version from stored embeddings (no model run) and switch to it."""
    return index_stats(workspace.collection(name).rebuild(spec))


def _target(workspace: Workspace, collection: Collection, model: str,
            pretrained: str | None) -> Collection:
    encoder = workspace.encoder(model, pretrained)
    info = dataclasses.replace(collection.info, model=encoder.name, pretrained=pretrained,
                               weights_identity=encoder.weights.identity, dim=encoder.dim)
    return Collection(info, collection.catalog, encoder, collection.root, collection.media)


def reindex_model(workspace: Workspace, name: str, model: str, pretrained: str | None = None,
                  options: IndexOptions | None = None) -> ReindexReport:
    """Re-embed every item with another model; resumable (embeddings already stored in the
    new model's spaces are kept), switched atomically at the end."""
    options = options or IndexOptions()
    current = workspace.collection(name)
    with current.write_lock():
        target = _target(workspace, current, model, pretrained)
        hashes: dict[int, str] = {}
        total = current.catalog.collection_counts(current.info.id).items
        with tqdm(total=total, unit="item", disable=not options.progress,
                  desc=f"re-embedding {name}") as bar:
            for batch in current.catalog.iter_items(current.info.id, options.batch_size):
                _embed_batch(target, batch, hashes)
                bar.update(len(batch))
        manifests = target.save(retrain=True)
        current.catalog.switch_model(current.info.id, model=target.encoder.name,
                                     pretrained=pretrained,
                                     weights_identity=target.encoder.weights.identity,
                                     dim=target.encoder.dim, hashes=hashes)
        workspace.reopen_collection(name)
    return ReindexReport(name, target.encoder.identity, len(hashes), index_stats(manifests))


def _embed_batch(target: Collection, batch: list[StoredItem], hashes: dict[int, str]) -> None:
    encoder = target.encoder
    texts, images = [], []
    for item in batch:
        digest = Path(item.image_ref).stem if item.image_ref else ""
        hashes[item.item_id] = content_hash(encoder.identity, item.text, digest)
        for vector in item.vectors:
            if vector.modality == Modality.TEXT.value and item.text:
                texts.append((vector.vector_id, item.text))
            elif vector.modality == Modality.IMAGE.value and item.image_ref:
                images.append((vector.vector_id, item.image_ref))
    _store(target, Modality.TEXT, texts, lambda values: encoder.encode_texts(values))
    _store(target, Modality.IMAGE, images, lambda refs: encoder.encode_images(torch.stack([
        encoder.preprocess(decode_image(target.media.resolve(r), min_side=encoder.image_size))
        for r in refs])))


def _store(target: Collection, modality: Modality, pending: list[tuple[int, Any]],
           encode) -> None:
    space = target.spaces[modality]
    ids = np.array([vid for vid, _ in pending], dtype=np.int64)
    if not len(ids):
        return
    _, done = space.vectors(ids)  # resume: skip what a killed run already stored
    todo = [p for p, ok in zip(pending, done, strict=True) if not ok]
    if todo:
        space.add(np.array([vid for vid, _ in todo], dtype=np.int64),
                  encode([value for _, value in todo]))
