"""`--engine ray` in local mode (2 CPUs) gives the same catalog and answers as local."""

from pathlib import Path

import pytest

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
