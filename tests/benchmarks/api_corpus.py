"""A large synthetic collection for the API benchmark, built without running the model.

Items and vector rows go into the catalog in bulk; clustered unit vectors go straight
into the image space's embedding store; opening the collection then trains the index
the engine would choose (IVF-PQ above ~20k vectors) and `save()` writes the version
`xmodal-serve` loads. Cached: a stamp records what was built, for which encoder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sqlalchemy import insert

from search.catalog import lexical
from search.catalog.models import ItemRow, Modality, VectorRow, utcnow
from search.collection.collection import model_key
from search.settings import Settings
from search.vectors.store import EmbeddingStore
from search.workspace import Workspace
from tests.utils.synthetic import clustered_unit_vectors

CHUNK = 100_000
CATEGORIES = ("shoes", "bags", "lamps", "chairs", "mugs", "jackets", "watches", "rugs")
# Item texts draw three words from the benchmark's query words, so that keyword and hybrid
# queries match about a tenth of the collection per word (common words: the hard case).
WORDS = ("red", "blue", "green", "black", "white", "leather", "cotton", "wooden", "running",
         "summer", "winter", "vintage", "small", "large", "soft", "striped", "shoe", "jacket",
         "lamp", "chair", "mug", "backpack", "watch", "dress", "sofa", "bicycle", "camera",
         "kettle", "scarf", "hat", "table", "rug")
CORPUS_VERSION = 2  # 2: item texts from WORDS, lexical index built


def bench_settings(home: Path) -> Settings:
    return Settings(home=home, model="house", device="cpu", offline=True)


def ensure_collection(home: Path, name: str, n: int, *, seed: int = 0) -> dict:
    """Build `name` with `n` items under `home` unless the stamp says it is there."""
    stamp = home / f"{name}.built.json"
    workspace = Workspace.open(bench_settings(home))
    identity = workspace.encoder().identity
    workspace.close()
    if stamp.is_file():
        built = json.loads(stamp.read_text())
        if built.get("n") == n and built.get("encoder") == identity and \
                built.get("corpus") == CORPUS_VERSION:
            return {**built, "cached": True}
    shutil.rmtree(home, ignore_errors=True)
    built = _build(home, name, n, seed)
    stamp.write_text(json.dumps(built))
    return {**built, "cached": False}


def _build(home: Path, name: str, n: int, seed: int) -> dict:
    workspace = Workspace.open(bench_settings(home))
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
    store_dir = (workspace.settings.collection_dir(name) / model_key(encoder.identity)
                 / Modality.IMAGE.value / "embeddings")
    store = EmbeddingStore.open(store_dir, encoder.dim)
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        vectors = clustered_unit_vectors(count, encoder.dim, seed=seed * 1_000_003 + start)
        store.append(list(range(start + 1, start + count + 1)), vectors)
    timings["embeddings_s"] = time.perf_counter() - started
    started = time.perf_counter()
    collection = workspace.collection(name)  # no saved index: trains one from the store
    collection.save()
    timings["index_s"] = time.perf_counter() - started
    spec = collection.spaces[Modality.IMAGE].index.spec
    workspace.close()
    return {"n": n, "encoder": encoder.identity, "spec": spec, "corpus": CORPUS_VERSION,
            "build_s": {k: round(v, 1) for k, v in timings.items()}}


def _text(i: int) -> str:
    """Three distinct words, a fixed pseudo-random pick per item."""
    a, b, c = (i * 7919) % 32, (i * 104729 + 11) % 32, (i * 1299709 + 23) % 32
    words = dict.fromkeys(WORDS[j] for j in (a, b, c))
    return " ".join(words) + f" {CATEGORIES[i % 8]} number {i}"


def _insert_rows(workspace: Workspace, collection_id: int, n: int) -> None:
    """Items 1..n, each with one image vector whose id (= FAISS id) is the item's id."""
    now = utcnow()
    with workspace.catalog.engine.begin() as connection:
        for start in range(1, n + 1, CHUNK):
            ids = range(start, min(start + CHUNK, n + 1))
            connection.execute(insert(ItemRow), [
                {"id": i, "collection_id": collection_id, "external_id": f"item-{i}",
                 "text": _text(i), "image_ref": None,
                 "attributes": {"category": CATEGORIES[i % 8], "price": float(i % 500)},
                 "content_hash": "", "status": "active", "created_at": now,
                 "updated_at": now} for i in ids])
            connection.execute(insert(VectorRow), [
                {"id": i, "collection_id": collection_id, "item_id": i,
                 "modality": Modality.IMAGE.value, "source": "original", "created_at": now}
                for i in ids])
