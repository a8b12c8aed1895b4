"""Consistency checks over a whole home: catalog rows, embedding stores, FAISS indexes and
media files agree with each other (used after write runs, kills and compactions)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from search.catalog.models import Modality
from search.lifecycle import is_stored_ref, referenced_media, stored_media
from search.workspace import Workspace


def png(seed: int, size: int = 32) -> bytes:
    """A small, distinct PNG per seed (same seed, same bytes: shared media)."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def png_b64(seed: int) -> str:
    return base64.b64encode(png(seed)).decode()


def count_files(root: Path) -> tuple[int, int]:
    """(files, bytes) under root."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                size += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return files, size


def assert_consistent(ws: Workspace, name: str) -> dict[str, int]:
    """No vector without an item, no item without its vectors, store == index == catalog.

    Returns per-modality live vector counts."""
    collection = ws.collection(name)
    collection.sync()
    counts = {}
    items = {}
    for batch in ws.catalog.iter_items(collection.info.id):
        for item in batch:
            items[item.item_id] = item
    for modality in Modality:
        in_sql = ws.catalog.vector_ids(collection.info.id, modalities=[modality.value])
        space = collection.spaces[modality]
        in_store = space.store.live_ids()
        in_index = np.sort(space.index.ids())
        assert np.array_equal(in_sql, in_store), f"{modality}: catalog and store differ"
        assert np.array_equal(in_store, in_index), f"{modality}: store and index differ"
        counts[modality.value] = len(in_store)
    pending = {i for i, row in _statuses(ws, collection.info.id).items() if row == "pending"}
    for item in items.values():
        kinds = {(v.modality, v.source) for v in item.vectors}
        if item.item_id in pending:
            assert not kinds, f"{item.external_id} is pending (half-written) yet searchable"
            continue
        if item.text:
            assert ("text", "original") in kinds, f"{item.external_id} lost its text vector"
        if item.image_ref:
            assert ("image", "original") in kinds, f"{item.external_id} lost its image"
    return counts


def assert_no_orphan_media(ws: Workspace) -> int:
    """Every stored media file is referenced, and every reference has its file."""
    stored = {ref for ref, _ in stored_media(ws.media)}
    referenced = {r for r in referenced_media(ws.catalog) if is_stored_ref(r)}
    assert referenced <= stored, f"missing media: {sorted(referenced - stored)[:5]}"
    assert stored <= referenced, f"orphaned media: {sorted(stored - referenced)[:5]}"
    return len(stored)


def _statuses(ws: Workspace, collection_id: int) -> dict[int, str]:
    from sqlalchemy import select

    from search.catalog.models import ItemRow

    with ws.catalog.session() as session:
        return dict(session.execute(select(ItemRow.id, ItemRow.status).where(
            ItemRow.collection_id == collection_id)).all())
