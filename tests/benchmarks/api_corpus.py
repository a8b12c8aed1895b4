"""A large synthetic collection for the API benchmark, built without running the model.

Items, their typed attribute rows and vector rows go into the catalog in bulk; each item
gets an image and a text vector (independent clustered unit vectors: the two modalities
disagree, the hard case for fused `target: any`) straight into the embedding stores;
opening the collection then trains the index the engine would choose (IVF-PQ above ~20k
vectors) and `save()` writes the version `xmodal-serve` loads. Cached: a stamp records
what was built, for which encoder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sqlalchemy import insert

from search.catalog import lexical
from search.catalog.attributes import attribute_rows
from search.catalog.models import ItemAttributeRow, ItemRow, Modality, VectorRow, utcnow
from search.collection.collection import model_key
from search.settings import Settings
from search.vectors.store import EmbeddingStore
from search.workspace import Workspace
from tests.utils.synthetic import clustered_unit_vectors

CHUNK = 100_000
CATEGORIES = ("shoes", "bags", "lamps", "chairs", "mugs", "jackets", "watches", "rugs")
LAYOUT = "image+text+attributes+lexical-v3"  # what a cached build holds; bump when it changes
# Filters the benchmark runs, with the share of items each one keeps.
FILTERS = {
    "selective 1%": {"brand": "brand-7"},
    "broad 30%": {"in_stock": True},
    "range 10%": {"price": {"gte": 100, "lt": 150}},
}


def bench_settings(home: Path, model: str = "house") -> Settings:
    pretrained = None if model == "house" else "random"  # same compute as real weights
    return Settings(home=home, model=model, pretrained=pretrained, device="cpu", offline=True)


def attributes_of(i: int) -> dict:
    return {"category": CATEGORIES[i % 8], "brand": f"brand-{i % 100}",
            "in_stock": i % 10 < 3, "price": float(i % 500)}


def ensure_collection(home: Path, name: str, n: int, *, seed: int = 0,
                      model: str = "house") -> dict:
    """Build `name` with `n` items under `home` unless the stamp says it is there."""
    stamp = home / f"{name}.built.json"
    workspace = Workspace.open(bench_settings(home, model))
    identity = workspace.encoder().identity
    workspace.close()
    if stamp.is_file():
        built = json.loads(stamp.read_text())
        if (built.get("n"), built.get("encoder"), built.get("layout")) == (n, identity, LAYOUT):
            return {**built, "cached": True}
    shutil.rmtree(home, ignore_errors=True)
    built = _build(home, name, n, seed, model)
    stamp.write_text(json.dumps(built))
    return {**built, "cached": False}


def _build(home: Path, name: str, n: int, seed: int, model: str) -> dict:
    workspace = Workspace.open(bench_settings(home, model))
    encoder = workspace.encoder()
    info = workspace.catalog.create_collection(
        name, model=encoder.name, pretrained=encoder.pretrained,
        weights_identity=encoder.weights.identity, dim=encoder.dim)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    _insert_rows(workspace, info.id, n)
    timings["sql_s"] = time.perf_counter() - started
    started = time.perf_counter()
    with workspace.catalog.session() as session:  # rows went in bulk, around upsert_items
        lexical.backfill(session, batch=20_000)
    timings["lexical_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for modality, first_id in ((Modality.IMAGE, 1), (Modality.TEXT, n + 1)):
        store_dir = (workspace.settings.collection_dir(name) / model_key(encoder.identity)
                     / modality.value / "embeddings")
        store = EmbeddingStore.open(store_dir, encoder.dim)
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            vectors = clustered_unit_vectors(count, encoder.dim,
                                             seed=seed * 1_000_003 + start + first_id * 7)
            store.append(list(range(first_id + start, first_id + start + count)), vectors)
    timings["embeddings_s"] = time.perf_counter() - started
    started = time.perf_counter()
    collection = workspace.collection(name)  # no saved index: trains one from the store
    collection.save()
    timings["index_s"] = time.perf_counter() - started
    spec = collection.spaces[Modality.IMAGE].index.spec
    workspace.close()
    return {"n": n, "encoder": encoder.identity, "spec": spec, "layout": LAYOUT,
            "build_s": {k: round(v, 1) for k, v in timings.items()}}


# Item texts draw three words from the benchmark's query words, so that keyword and hybrid
# queries match about a tenth of the collection per word (common words: the hard case).
WORDS = ("red", "blue", "green", "black", "white", "leather", "cotton", "wooden", "running",
         "summer", "winter", "vintage", "small", "large", "soft", "striped", "shoe", "jacket",
         "lamp", "chair", "mug", "backpack", "watch", "dress", "sofa", "bicycle", "camera",
         "kettle", "scarf", "hat", "table", "rug")


def _text(i: int) -> str:
    """Three distinct words, a fixed pseudo-random pick per item."""
    a, b, c = (i * 7919) % 32, (i * 104729 + 11) % 32, (i * 1299709 + 23) % 32
    words = dict.fromkeys(WORDS[j] for j in (a, b, c))
    return " ".join(words) + f" {CATEGORIES[i % 8]} number {i}"


def _insert_rows(workspace: Workspace, collection_id: int, n: int) -> None:
    """Items 1..n, each with an image vector (id i) and a text vector (id n + i)."""
    now = utcnow()
    with workspace.catalog.engine.begin() as connection:
        for start in range(1, n + 1, CHUNK):
            ids = range(start, min(start + CHUNK, n + 1))
            connection.execute(insert(ItemRow), [
                {"id": i, "collection_id": collection_id, "external_id": f"item-{i}",
                 "text": _text(i), "image_ref": None,
                 "attributes": attributes_of(i), "content_hash": "", "status": "active",
                 "created_at": now, "updated_at": now} for i in ids])
            connection.execute(insert(ItemAttributeRow), [
                row for i in ids for row in attribute_rows(collection_id, i, attributes_of(i))])
            for modality, offset in ((Modality.IMAGE, 0), (Modality.TEXT, n)):
                connection.execute(insert(VectorRow), [
                    {"id": i + offset, "collection_id": collection_id, "item_id": i,
                     "modality": modality.value, "source": "original", "created_at": now}
                    for i in ids])
