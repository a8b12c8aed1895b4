"""Reindex: from stored embeddings, or with another model; the old version serves until
the new one is complete."""

import numpy as np
import pytest
import torch

from indexer import reindex
from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from search.engine import Searcher
from search.models.encoder import load_encoder
from search.query import SearchMode, SearchQuery, Target
from tests.indexer.conftest import write_catalog

QUIET = IndexOptions(workers=0, progress=False, batch_size=16)


@pytest.fixture
def other_model(tmp_path, tiny_model):
    """The tiny architecture with different weights, saved as a checkpoint directory."""
    encoder = load_encoder(tiny_model, device="cpu")
    with torch.no_grad():
        for parameter in encoder.model.parameters():
            parameter.mul_(-1.0).add_(0.05)
    path = encoder.save(tmp_path / "other")
    with torch.random.fork_rng():  # put the shared test encoder's weights back
        torch.manual_seed(0)
        import open_clip

        encoder.model.load_state_dict(open_clip.create_model(tiny_model).state_dict())
    return str(path)


def _ranking(ws, text, target=Target.IMAGE):
    query = SearchQuery.text("shop", text, target=target, k=6, mode=SearchMode.VECTOR)
    hits = Searcher(ws).search(query).hits
    return [h.external_id for h in hits]


def test_rebuild_switches_spec_without_changing_answers(ws, catalog_file):
    index_source(ws, "shop", catalog_file, options=QUIET)
    before = _ranking(ws, "fruit product")
    result = reindex.rebuild_index(ws, "shop", spec="IVF2,Flat")
    assert result["image"].spec == "IVF2,Flat"
    query = SearchQuery.text("shop", "fruit product", target=Target.IMAGE, k=6, nprobe=2,
                             mode=SearchMode.VECTOR)
    assert [h.external_id for h in Searcher(ws).search(query).hits] == before


def test_reindex_with_another_model_matches_its_exact_search(ws, tmp_path, other_model):
    source = write_catalog(tmp_path / "src", 30)
    index_source(ws, "shop", source, options=QUIET)
    old = _ranking(ws, "toys product", Target.TEXT)
    result = reindex.reindex_model(ws, "shop", other_model, options=QUIET)
    assert result.items == 30
    new_encoder = ws.collection("shop").encoder
    assert new_encoder.name == other_model
    texts = {f"sku-{i}": f"{['fruit', 'shoes', 'clothes', 'toys'][i % 4]} product {i}"
             for i in range(30)}
    scores = new_encoder.encode_texts(list(texts.values())) @ new_encoder.encode_texts(
        ["toys product"])[0]
    expected = [list(texts)[i] for i in np.argsort(-scores)[:6]]
    assert _ranking(ws, "toys product", Target.TEXT) == expected != old
    # content hashes follow the model: re-running the source is a no-op
    again = index_source(ws, "shop", source, options=QUIET)
    assert (again.unchanged, again.updated) == (30, 0)


def test_failed_reindex_leaves_the_old_version_serving(ws, tmp_path, other_model, monkeypatch):
    source = write_catalog(tmp_path / "src", 30)
    index_source(ws, "shop", source, options=QUIET)
    before = _ranking(ws, "shoes product")
    calls = {"n": 0}
    real = reindex._embed_batch

    def dies_midway(target, batch, hashes):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        real(target, batch, hashes)

    monkeypatch.setattr(reindex, "_embed_batch", dies_midway)
    with pytest.raises(RuntimeError):
        reindex.reindex_model(ws, "shop", other_model,
                              options=IndexOptions(progress=False, batch_size=10))
    assert ws.collection("shop").encoder.name != other_model
    assert _ranking(ws, "shoes product") == before
    monkeypatch.setattr(reindex, "_embed_batch", real)  # resume completes the switch
    reindex.reindex_model(ws, "shop", other_model, options=QUIET)
    assert ws.collection("shop").encoder.name == other_model
