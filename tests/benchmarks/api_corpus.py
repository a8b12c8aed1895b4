"""A large synthetic collection for the API benchmark, built without running the model.

Items, their typed attribute rows and vector rows go into the catalog in bulk; each item
gets an image and a text vector (independent clustered unit vectors: the two modalities
disagree, the hard case for fused `target: any`) straight into the embedding stores;
opening the collection then trains the index the engine would choose (IVF-PQ above ~20k
vectors) and `save()` writes the version `xmodal-serve` loads. Cached: a stamp records
what was built, for which encoder and database.

Items read like a shop's (`shop_corpus`: titles, category, brand, price, keywords, sku);
the lexical index covers the title, category, brand and keywords (sku is an identifier).
On PostgreSQL (`database="postgres"`) the catalog lives in a cluster of the test harness
kept under `home/postgres`, started for the build and again for each benchmark run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from search import tidy_lexical
from search.catalog import loader
from search.catalog.bulk import ITEM_COLUMNS, VECTOR_COLUMNS, load_attribute_rows
from search.catalog.catalog import open_catalog
from search.catalog.lexical import LexicalSettings
from search.catalog.models import ItemRow, Modality, VectorRow, utcnow
from search.collection.collection import model_key
from search.settings import Settings
from search.vectors.store import EmbeddingStore
from search.workspace import Workspace
from tests.benchmarks.shop_corpus import attributes_of, brand_of, title_of
from tests.utils.synthetic import clustered_unit_vectors

CHUNK = 100_000
# what a cached build holds; bump on change
LAYOUT = "image+text+shop-attributes+lexical-v4+image-refs"
SEARCHABLE = ("category", "brand", "keywords")
# Filters the benchmark runs, with the share of items each one keeps.
FILTERS = {
    "selective 1%": {"brand": brand_of(7)},
    "broad 30%": {"in_stock": True},
    "range 10%": {"price": {"gte": 100, "lt": 150}},
}


def bench_settings(home: Path, model: str = "house", database_url: str | None = None
                   ) -> Settings:
    pretrained = None if model == "house" else "random"  # same compute as real weights
    return Settings(home=home, model=model, pretrained=pretrained, device="cpu", offline=True,
                    database_url=database_url)


def ensure_collection(home: Path, name: str, n: int, *, seed: int = 0,
                      model: str = "house", database_url: str | None = None,
                      vectors_from: Path | None = None) -> dict:
    """Build `name` with `n` items under `home` unless the stamp says it is there.

    `database_url`: the catalog's database (None: SQLite under `home`); the caller keeps
    it across runs (see `bench_database`). `vectors_from`: the home of a finished build of
    the same collection on the other database; its embeddings and index versions (the
    same vector ids) are copied instead of generated and trained again."""
    stamp = home / f"{name}.built.json"
    workspace = Workspace.open(bench_settings(home, model))
    identity = workspace.encoder().identity
    workspace.close()
    database = "postgres" if database_url else "sqlite"
    if stamp.is_file():
        built = json.loads(stamp.read_text())
        if (built.get("n"), built.get("encoder"), built.get("layout"),
                built.get("database", "sqlite")) == (n, identity, LAYOUT, database):
            return {**built, "cached": True,
                    "lexical_tidied": _tidy_lexical(home, model, database_url)}
    for stale in home.iterdir() if home.is_dir() else ():
        if stale.name != "postgres":  # the cluster's files belong to the caller
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
    if database_url:
        _empty_database(database_url)
    reuse = _reusable(vectors_from, name, n, identity, seed)
    built = {**_build(home, name, n, seed, model, database_url, reuse), "database": database}
    stamp.write_text(json.dumps(built))
    return {**built, "cached": False, "lexical_tidied": _tidy_lexical(home, model, database_url)}


def _tidy_lexical(home: Path, model: str, database_url: str | None) -> int:
    """The lexical index as an index job leaves it (`search.tidy_lexical`): FTS5's
    segments merged, GIN's pending list moved; nothing to do on later runs."""
    workspace = Workspace.open(bench_settings(home, model, database_url))
    try:
        return tidy_lexical(workspace)
    finally:
        workspace.close()


def ensure_catalog(home: Path, name: str, n: int, url: str) -> dict:
    """Only the catalog of `ensure_collection` (items, attribute rows, lexical index; no
    vectors), for benchmarks of the keyword side; cached with a stamp under `home`."""
    stamp = home / f"{name}.catalog.json"
    layout = [LAYOUT, n, url.split(":")[0]]  # the dialect: a kept cluster's port changes
    if stamp.is_file() and json.loads(stamp.read_text()).get("layout") == layout:
        return {**json.loads(stamp.read_text()), "cached": True}
    if url.startswith("sqlite"):
        (home / "catalog.db").unlink(missing_ok=True)
    else:
        _empty_database(url)
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    catalog = open_catalog(url)
    info = catalog.create_collection(name, model="house", pretrained=None,
                                     weights_identity="bench", dim=1)
    insert_items(catalog.engine, info.id, n, vectors=False)
    rows_s = time.perf_counter() - started
    catalog.set_lexical_settings(info.id, LexicalSettings(searchable=SEARCHABLE))
    with catalog.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    catalog.close()
    built = {"n": n, "layout": layout, "build_s": {
        "sql_s": round(rows_s, 1), "lexical_s": round(time.perf_counter() - started - rows_s, 1)}}
    stamp.write_text(json.dumps(built))
    return {**built, "cached": False}


def _empty_database(url: str) -> None:
    """Drop what an earlier build left in the benchmark's own PostgreSQL database."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _reusable(source: Path | None, name: str, n: int, identity: str, seed: int
              ) -> Path | None:
    """`source`'s collection folder if it holds a finished build of the same items."""
    stamp = source / f"{name}.built.json" if source else None
    if stamp is None or not stamp.is_file():
        return None
    built = json.loads(stamp.read_text())
    if (built.get("n"), built.get("encoder"), built.get("layout"), built.get("seed", 0)) != (
            n, identity, LAYOUT, seed):
        return None
    return source / "collections" / name  # type: ignore[operator]


def _copy_vectors(workspace: Workspace, name: str, source: Path) -> dict[str, float]:
    """Embeddings and index versions from another build; the versions are recorded in
    this catalog as `save()` records them."""
    started = time.perf_counter()
    shutil.copytree(source, workspace.settings.collection_dir(name))
    collection = workspace.collection(name)  # loads the copied current versions
    for modality, space in collection.spaces.items():
        manifest = space.manifest
        assert manifest is not None, f"{source} has no saved {modality.value} index"
        workspace.catalog.history.record_index_version(
            collection.info.id, version=f"{modality.value}/{manifest.version}",
            spec=manifest.spec, vector_count=manifest.count,
            model_identity=collection.encoder.identity)
    return {"vectors_copied_s": time.perf_counter() - started}


def _build(home: Path, name: str, n: int, seed: int, model: str,
           database_url: str | None, vectors_from: Path | None = None) -> dict:
    workspace = Workspace.open(bench_settings(home, model, database_url))
    encoder = workspace.encoder()
    info = workspace.catalog.create_collection(
        name, model=encoder.name, pretrained=encoder.pretrained,
        weights_identity=encoder.weights.identity, dim=encoder.dim)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    _insert_rows(workspace, info.id, n)
    timings["sql_s"] = time.perf_counter() - started
    started = time.perf_counter()
    # rows went in bulk, around upsert_items: index them as a settings change does
    workspace.catalog.set_lexical_settings(info.id, LexicalSettings(searchable=SEARCHABLE))
    with workspace.catalog.engine.begin() as connection:  # planner statistics, as a
        connection.execute(text("ANALYZE"))  # long-running database would have them
    timings["lexical_s"] = time.perf_counter() - started
    if vectors_from is not None:
        timings.update(_copy_vectors(workspace, name, vectors_from))
        spec = workspace.collection(name).spaces[Modality.IMAGE].index.spec
        workspace.close()
        return {"n": n, "encoder": encoder.identity, "spec": spec, "layout": LAYOUT,
                "seed": seed, "vectors_from": str(vectors_from),
                "build_s": {k: round(v, 1) for k, v in timings.items()}}
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
    return {"n": n, "encoder": encoder.identity, "spec": spec, "layout": LAYOUT, "seed": seed,
            "build_s": {k: round(v, 1) for k, v in timings.items()}}


def image_ref(i: int) -> str:
    """Item i's picture as the media store names one (`<2>/<2>/<sha256>.<ext>`; no file is
    written: queries only return the ref). Every item has an image vector, so it has a
    picture too: without one, `target: image` could show none of the keyword side's
    candidates (`search.hybrid._shows`), as in no real catalogue."""
    digest = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}.jpg"


def _insert_rows(workspace: Workspace, collection_id: int, n: int) -> None:
    insert_items(workspace.catalog.engine, collection_id, n)


def insert_items(engine: Engine, collection_id: int, n: int, vectors: bool = True) -> None:
    """Items 1..n, each with an image vector (id i) and a text vector (id n + i), in one
    transaction by the catalog's bulk loader (COPY on PostgreSQL, executemany on SQLite)."""
    now = utcnow()
    items, vector_rows = ItemRow.__table__, VectorRow.__table__
    with Session(engine) as session, session.begin():
        for start in range(1, n + 1, CHUNK):
            ids = range(start, min(start + CHUNK, n + 1))
            attributes = {i: attributes_of(i) for i in ids}
            loader.load_rows(session, items, (  # type: ignore[arg-type]
                {"id": i, "collection_id": collection_id, "external_id": f"item-{i}",
                 "text": title_of(i), "image_ref": image_ref(i), "attributes": attributes[i],
                 "content_hash": "", "status": "active", "created_at": now,
                 "updated_at": now} for i in ids), ITEM_COLUMNS)
            load_attribute_rows(session, collection_id, attributes.items())
            for modality, offset in ((Modality.IMAGE, 0), (Modality.TEXT, n))[:2 * vectors]:
                loader.load_rows(session, vector_rows, (  # type: ignore[arg-type]
                    {"id": i + offset, "collection_id": collection_id, "item_id": i,
                     "modality": modality.value, "source": "original", "created_at": now}
                    for i in ids), VECTOR_COLUMNS)
        for table in (items, vector_rows):
            loader.follow_explicit_ids(session, table)  # type: ignore[arg-type]
