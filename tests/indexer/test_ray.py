"""`--engine ray` in local mode (2 CPUs) gives the same catalog and answers as local:
Ray Data reads the source (paths and URIs), workers stage shards, the commit is exactly
once across a killed run (indexer/distributed.py, commit.py, staging.py)."""

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from indexer import distributed
from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from search import MediaMode
from search.models.encoder import load_encoder
from search.settings import Settings
from search.workspace import Workspace
from tests.indexer.conftest import write_catalog
from tests.utils.snapshots import assert_same_collection, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray  # the [ray] extra is part of `make test`: no skip

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_engine_matches_local_engine(ray_local, tmp_path, tiny_model):
    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_catalog(tmp_path / "src", 60, broken=True)
    snapshots, summaries = [], []
    for engine in ("ray", "local"):
        ws = Workspace.open(Settings(home=tmp_path / engine, device="cpu"))
        options = IndexOptions(workers=0, progress=False, batch_size=16)
        summaries.append(index_source(ws, "shop", source, options=options, model=model,
                                      engine=engine))
        snapshots.append(snapshot(ws, "shop"))
        ws.close()
    ray_run, local_run = summaries
    assert (ray_run.indexed, ray_run.failed) == (local_run.indexed, local_run.failed) == (60, 7)
    assert_same_collection(*snapshots)


def test_ray_engine_references_media(ray_local, tmp_path, tiny_model):
    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_catalog(tmp_path / "src", 12)
    ws = Workspace.open(Settings(home=tmp_path / "home", device="cpu"))
    options = IndexOptions(workers=0, progress=False, media=MediaMode.REFERENCE)
    summary = index_source(ws, "shop", source, options=options, model=model, engine="ray")
    refs = [row[2] for row in snapshot(ws, "shop")[0] if row[2]]
    assert summary.indexed == 12 and len(refs) == 10
    assert all(Path(r).is_file() and Path(r).is_absolute() for r in refs)
    assert not [p for p in ws.media.root.rglob("*") if p.is_file()]  # nothing copied
    ws.close()
def write_synthetic_catalog(root, rows: int, images: int = 200):
    """`rows` items with unique texts; every third has no image, the rest share a pool of
    tiny PNGs (distinct files are not the point: the driver's memory is)."""
    import json

    from tests.utils.corpus import png_bytes

    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        (root / "images" / f"{i}.png").write_bytes(png_bytes(i))
    path = root / "catalog.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            row = {"id": f"sku-{i}", "title": f"synthetic product {i} shade {i % 97}",
                   "price": float(i % 13)}
            if i % 3:
                row["image"] = f"images/{i % images}.png"
            out.write(json.dumps(row) + "\n")
    return path


def reset_peak_rss() -> None:
    """Restart the kernel's high-water mark, so the next reading is one run's own peak
    (getrusage's ru_maxrss is the whole process's, and an earlier run would set it)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


# The sizes (20k -> 100k) take tens of minutes on 2 shared cores: they run in
# `make reliability`; `make test` runs the same check at 2k -> 10k (deploy/SCALING.md).
@pytest.mark.parametrize("small, large", [
    (2_000, 10_000),
    pytest.param(20_000, 100_000, marks=pytest.mark.reliability),
])
def test_driver_memory_does_not_grow_with_the_source(ray_local, tmp_path, tiny_model,
                                                     small, large):
    """The driver streams: indexing 5x more rows must not raise its peak RSS by 100 MB;
    on the smaller run the catalog and answers equal the local engine's."""
    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    options = IndexOptions(workers=0, progress=False, batch_size=64)
    peaks, snapshots = {}, {}
    # the local run goes first, so both Ray runs start from the heap it leaves behind
    for engine, rows in (("local", small), ("ray", small), ("ray", large)):
        reset_peak_rss()
        source = write_synthetic_catalog(tmp_path / f"src-{rows}", rows)
        ws = Workspace.open(Settings(home=tmp_path / f"{engine}-{rows}", device="cpu"))
        # exact search: from 20k vectors the automatic spec is IVF-PQ, whose training
        # sample follows write order (the local engine batches texts by length), so its
        # misses would differ between engines for reasons that are not the engine's
        ws.create_collection("shop", model=model, index_spec="Flat")
        summary = index_source(ws, "shop", source, options=options, engine=engine)
        assert (summary.indexed, summary.failed) == (rows, 0)
        if rows == small:
            snapshots[engine] = snapshot(ws, "shop")
        ws.close()
        peaks[engine, rows] = peak_rss_mib()
    assert_same_collection(snapshots["ray"], snapshots["local"])
    print("driver peak RSS of each run (MiB): "
          + ", ".join(f"{engine} {rows} rows {peak:.0f}" for (engine, rows), peak in peaks.items()))
    assert peaks["ray", large] - peaks["ray", small] < 100, peaks


def _options(**overrides):
    return IndexOptions(**{"workers": 0, "progress": False, "batch_size": 16,
                           "chunk_size": 16, **overrides})


def test_ray_reads_a_parquet_catalog_by_file_uri(ray_local, tmp_path, tiny_model):
    """A file:// URI goes through pyarrow's filesystem; answers equal the local engine's
    on the same Parquet file (bad rows included)."""
    import pyarrow.json as pajson

    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    jsonl = write_catalog(tmp_path / "src", 30)
    source = jsonl.with_suffix(".parquet")
    pq.write_table(pajson.read_json(jsonl), source, row_group_size=8)
    snapshots = []
    for engine, where in (("ray", source.as_uri()), ("local", source)):
        ws = Workspace.open(Settings(home=tmp_path / engine, device="cpu"))
        summary = index_source(ws, "shop", where, options=_options(), model=model,
                               engine=engine)
        assert (summary.indexed, summary.failed) == (30, 0)
        snapshots.append(snapshot(ws, "shop"))
        ws.close()
    assert_same_collection(*snapshots)


def test_killed_ray_job_rerun_commits_each_shard_exactly_once(ray_local, tmp_path,
                                                              tiny_model, monkeypatch):
    """The driver dies after two shards; the re-run commits what the first run staged but
    never committed, skips what it did commit, and ends equal to the local engine."""
    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_catalog(tmp_path / "src", 80, broken=True)
    ws = Workspace.open(Settings(home=tmp_path / "ray", device="cpu"))
    real_commit, committed = distributed.commit_shard, []

    def dies_after_two(*args, **kwargs):
        if len(committed) == 2:
            raise KeyboardInterrupt("killed between shards")
        report = real_commit(*args, **kwargs)
        committed.append(report.shard)
        return report

    monkeypatch.setattr(distributed, "commit_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        index_source(ws, "shop", source, options=_options(), model=model, engine="ray")
    [staging] = (tmp_path / "ray" / "staging" / "shop").iterdir()
    assert (staging / "committed.log").read_text().split() == committed

    def records(*args, **kwargs):
        report = real_commit(*args, **kwargs)
        committed.append(report.shard)
        assert not report.skipped
        return report

    monkeypatch.setattr(distributed, "commit_shard", records)
    summary = index_source(ws, "shop", source, options=_options(), model=model, engine="ray")
    assert len(committed) == len(set(committed))  # no shard committed twice
    assert summary.indexed + summary.unchanged == 80 and summary.unchanged > 0
    assert summary.failed == 7  # the source's bad rows, reported once
    assert not staging.exists()
    ray_snapshot = snapshot(ws, "shop")
    ws.close()
    local = Workspace.open(Settings(home=tmp_path / "local", device="cpu"))
    index_source(local, "shop", source, options=_options(), model=model)
    assert_same_collection(ray_snapshot, snapshot(local, "shop"))
    local.close()


def test_shard_committed_twice_doubles_nothing(tmp_path, tiny_model):
    """A kill between a shard's catalog write and its ledger line: the shard is committed
    again, and its items come back unchanged (no Ray needed: the committer alone)."""
    from indexer.commit import ShardCommitter
    from indexer.staging import StagingArea, write_shard
    from search import embed_prepared, prepare_or_fail
    from tests.utils.corpus import catalog_items

    settings = Settings(home=tmp_path / "home", device="cpu")
    ws = Workspace.open(settings)
    collection = ws.create_collection("shop", model=tiny_model)
    prepared = [prepare_or_fail(i, collection.prepare_context(), None)
                for i in catalog_items(20)]
    embed_prepared(collection.encoder, prepared)
    ws.close()
    staging = StagingArea(tmp_path / "stage")
    shard = staging.shard_path(1, 0)
    write_shard(shard, list(enumerate(prepared)))
    first = ShardCommitter(settings, "shop", None, None, str(staging.root))
    assert first.commit(str(shard), None).new == 20
    vectors = first.collection.stats().vectors
    first.close()
    (staging.root / "committed.log").unlink()  # the kill came before the ledger line
    again = ShardCommitter(settings, "shop", None, None, str(staging.root))
    report = again.commit(str(shard), None)
    assert (report.new, report.changed, report.unchanged) == (0, 0, 20)
    assert again.collection.stats().vectors == vectors
    assert again.commit(str(shard), None).skipped  # now in the ledger: never again
    again.close()


def test_ray_indexes_into_an_empty_ivf_collection(ray_local, tmp_path, tiny_model):
    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    ws = Workspace.open(Settings(home=tmp_path / "home", device="cpu"))
    ws.create_collection("shop", model=model, index_spec="IVF8,Flat")
    summary = index_source(ws, "shop", write_catalog(tmp_path / "src", 40),
                           options=_options(), engine="ray")
    assert summary.indexed == 40
    assert {s.spec for s in summary.index.values()} == {"IVF8,Flat"}
    ws.close()


def test_ray_prune_and_generate_missing_match_local(ray_local, tmp_path, tiny_model):
    """--prune deletes what the source no longer has, --generate-missing pictures the
    text-only items: the same items, vectors and answers as the local engine."""
    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    weights = _generator_for(model, tmp_path / "gen.safetensors")
    older = write_catalog(tmp_path / "old", 24)
    source = write_catalog(tmp_path / "src", 18)  # sku-5, sku-11, sku-17 are text-only
    options = _options(prune=True, generate_missing=True, generator="house",
                       generator_model=str(weights))
    snapshots = []
    for engine in ("ray", "local"):
        ws = Workspace.open(Settings(home=tmp_path / engine, device="cpu"))
        index_source(ws, "shop", older, options=_options(), model=model)
        summary = index_source(ws, "shop", source, options=options, engine=engine)
        assert (summary.deleted, summary.generated, summary.unchanged) == (6, 3, 18)
        snapshots.append(snapshot(ws, "shop"))
        ws.close()
    assert_same_collection(*snapshots)


def _generator_for(model: str, path: Path) -> Path:
    """Tiny house-generator weights bound to the saved model file (Ray's worker processes
    load it by path: the tiny architecture is registered in this process only)."""
    import torch

    from search.models.generators.house_nets import Decoder, Prior, save_generator
    from tests.utils.generators import TINY_NETS

    metadata = {"encoder_model": model, "encoder_pretrained": "",
                "encoder_identity": load_encoder(model, device="cpu").identity}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return save_generator(path, Prior(TINY_NETS), Decoder(TINY_NETS), TINY_NETS, metadata)


def test_ray_unknown_model_is_the_typed_error(ray_local, tmp_path):
    """An error in the committer actor reaches the caller as the engine's typed error."""
    from search.errors import UnknownModelError

    ws = Workspace.open(Settings(home=tmp_path / "home", device="cpu"))
    with pytest.raises(UnknownModelError):
        index_source(ws, "shop", write_catalog(tmp_path / "src", 3), options=_options(),
                     model="no-such-model", engine="ray")
    ws.close()
