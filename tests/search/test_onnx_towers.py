"""Query towers under ONNX Runtime: same vectors as torch float32 (int8 within the
acceptance rule), every query length and batch size, an export cache that is reused and
follows the weights, and query-cache keys that name the runtime."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from search.media import decode_image
from search.models import onnx_towers
from search.models.encoder import load_encoder, normalize
from search.models.query_cache import QueryEmbeddingCache
from search.models.query_runtime import QueryBackend, QueryRuntime
from search.settings import Settings
from tests.search.test_query_runtime import _recall_at_10, _sample_pairs

ONNX = QueryBackend.ONNX
TEXTS = ["a", "a red shoe", "fruit number 12 with a much longer description",
         "x " * 40]  # the last one is longer than the tiny model's context: truncated


def _onnx(model: str, cache, int8: bool = False, **kwargs):
    runtime = QueryRuntime(text_int8=int8, image_int8=int8, text_backend=ONNX,
                           image_backend=ONNX, onnx_cache=cache, **kwargs)
    return load_encoder(model, device="cpu", runtime=runtime)


@pytest.fixture
def fresh_process(monkeypatch):
    """No tower opened earlier in this test process: exports and the cache really run."""
    monkeypatch.setattr(onnx_towers, "_open", OrderedDict())


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1)


@pytest.mark.parametrize("int8, floor", [(False, 0.999), (True, 0.99)])
def test_onnx_towers_agree_with_torch_at_every_length_and_batch(tiny_model, tmp_path, int8,
                                                                floor):
    reference = load_encoder(tiny_model, device="cpu")
    onnx = _onnx(tiny_model, tmp_path / "onnx", int8)
    assert onnx.variant == ("text-onnx-int8+image-onnx-int8" if int8 else
                            "text-onnx+image-onnx")
    exact = reference.encode_texts(TEXTS)
    single = np.stack([onnx.encode_query_text(text) for text in TEXTS])
    assert _cosines(exact, single).min() >= floor
    for batch in (TEXTS[:1], TEXTS[1:3], TEXTS):  # one length per batch, padded batches
        tokens = onnx.tokenizer(batch)
        features = normalize(np.asarray(onnx._query_towers().text(tokens, threads=1)))
        assert features.shape == (len(batch), onnx.dim)
        assert _cosines(reference.encode_texts(batch), features).min() >= floor
    images = [decode_image(path, min_side=onnx.image_size) for path in _sample_pairs(3)[1]]
    pixels = onnx.preprocess_images(images)  # a batch of 3 through the dynamic batch axis
    batch_features = normalize(np.asarray(onnx._query_towers().image(pixels, threads=2)))
    assert _cosines(reference.encode_images(images), batch_features).min() >= floor
    assert float(reference.encode_images(images[:1])[0] @
                 onnx.encode_query_image(images[0])) >= floor


def test_house_model_onnx_int8_text_keeps_cosine_and_recall(tmp_path):
    """The acceptance rule for quantised queries, for ONNX Runtime's int8 text tower:
    cosine >= 0.99 to the float32 vector, text->image R@10 moves by less than one point;
    its float32 graph agrees to 0.999; the same rule holds for the ResNet image tower."""
    fp32 = load_encoder("house", device="cpu", runtime=QueryRuntime())
    onnx = _onnx("house", tmp_path / "onnx", int8=False)
    int8 = _onnx("house", tmp_path / "onnx", int8=True)
    titles, paths = _sample_pairs(300)
    images = [decode_image(p, min_side=fp32.image_size) for p in paths]
    image_vectors = fp32.encode_images(images)
    exact = fp32.encode_texts(titles)
    for encoder, floor in ((onnx, 0.999), (int8, 0.99)):
        queries = np.stack([encoder.encode_query_text(t) for t in titles])
        assert _cosines(exact, queries).min() >= floor
        moved = _recall_at_10(queries, image_vectors) - _recall_at_10(exact, image_vectors)
        assert abs(moved) < 0.01
        image_queries = np.stack([encoder.encode_query_image(im) for im in images[:100]])
        assert _cosines(image_vectors[:100], image_queries).min() >= floor
        moved = (_recall_at_10(image_queries, exact[:100])
                 - _recall_at_10(image_vectors[:100], exact[:100]))
        assert abs(moved) < 0.01  # image -> text
    # stored vectors never come from ONNX Runtime
    np.testing.assert_allclose(int8.encode_texts(titles[:5]), fp32.encode_texts(titles[:5]),
                               rtol=0, atol=1e-6)


def test_export_cache_is_reused_and_follows_the_weights(tiny_model, tmp_path, monkeypatch,
                                                        fresh_process):
    exports = []
    real_export = onnx_towers._export
    monkeypatch.setattr(onnx_towers, "_export",
                        lambda model, tower, target: (exports.append(tower),
                                                      real_export(model, tower, target)))
    cache = tmp_path / "onnx"
    encoder = _onnx(tiny_model, cache)
    assert exports == []  # built on first use: a batch job that never queries never exports
    first = encoder.encode_query_text("a red shoe")
    assert sorted(exports) == ["image", "text"]
    files = sorted(path.name for path in cache.glob("*.onnx"))
    assert len(files) == 2 and not list(cache.glob("*.tmp"))  # written atomically

    monkeypatch.setattr(onnx_towers, "_open", OrderedDict())  # a new server process
    np.testing.assert_allclose(_onnx(tiny_model, cache).encode_query_text("a red shoe"), first,
                               rtol=0, atol=1e-6)
    assert len(exports) == 2  # read from the cache, not exported again

    changed = load_encoder(tiny_model, device="cpu")
    with torch.no_grad():
        changed.model.token_embedding.weight.mul_(-1.0)
    model_dir = changed.save(tmp_path / "changed")
    other = _onnx(str(model_dir), cache)
    other.warm_queries()
    assert len(exports) == 4  # other weights: exported again, under another name
    assert len(list(cache.glob("*.onnx"))) == 4
    reference = load_encoder(str(model_dir), device="cpu").encode_texts(["a red shoe"])[0]
    assert float(reference @ other.encode_query_text("a red shoe")) >= 0.999
    assert float(first @ other.encode_query_text("a red shoe")) < 0.999


def test_unwritable_cache_exports_in_memory(tiny_model, tmp_path, fresh_process):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    encoder = _onnx(tiny_model, blocker / "onnx")
    assert encoder.variant == "text-onnx+image-onnx"
    reference = load_encoder(tiny_model, device="cpu").encode_texts(["a hat"])[0]
    assert float(reference @ encoder.encode_query_text("a hat")) >= 0.999


def test_query_cache_keys_name_the_runtime(tiny_model, tmp_path):
    torch_fp32 = load_encoder(tiny_model, device="cpu")
    onnx_fp32 = _onnx(tiny_model, tmp_path / "onnx")
    onnx_int8 = _onnx(tiny_model, tmp_path / "onnx", int8=True)
    identities = {e.cache_identity for e in (torch_fp32, onnx_fp32, onnx_int8)}
    assert len(identities) == 3
    cache = QueryEmbeddingCache()
    vectors = [cache.text_vector(e, "a shoe") for e in (torch_fp32, onnx_fp32, onnx_int8)]
    assert cache.stats().misses == 3
    np.testing.assert_allclose(vectors[2], onnx_int8.encode_query_text("a shoe"), rtol=0, atol=1e-6)


def test_settings_choose_the_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("XMODAL_QUERY_BACKEND", "torch")
    runtime = Settings(home=tmp_path).query_runtime()
    assert runtime.text_backend == runtime.image_backend == QueryBackend.TORCH
    monkeypatch.delenv("XMODAL_QUERY_BACKEND")
    runtime = Settings(home=tmp_path).query_runtime()
    assert runtime.text_backend == QueryBackend.ONNX  # the default
    assert runtime.onnx_cache == tmp_path / "cache" / "onnx"
    monkeypatch.setenv("XMODAL_QUERY_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="query_backend"):
        Settings(home=tmp_path)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_searches_rank_as_with_torch(workspace, settings, database_url):
    """End to end through the Searcher: an ONNX Runtime server ranks text and image
    queries as the torch one does (same ids, scores within float32 noise)."""
    from search.engine import Searcher
    from search.query import SearchQuery, Target
    from search.workspace import Workspace
    from tests.utils.corpus import catalog_items, png_bytes

    workspace.create_collection("shop").add_items(catalog_items(40))
    queries = [SearchQuery.text("shop", "fruit number 12", target=Target.IMAGE, k=10),
               SearchQuery.text("shop", "a red fruit", target=Target.ANY, k=10),
               SearchQuery.image("shop", png_bytes(7), target=Target.TEXT, k=10)]
    expected = [Searcher(workspace).search(query).hits for query in queries]
    onnx_settings = settings.model_copy(update={"query_backend": QueryBackend.ONNX})
    onnx_workspace = Workspace.open(onnx_settings)
    try:
        assert onnx_workspace.collection("shop").encoder.variant == "text-onnx+image-onnx"
        searcher = Searcher(onnx_workspace)
        for query, hits in zip(queries, expected, strict=True):
            got = searcher.search(query).hits
            assert [h.external_id for h in got] == [h.external_id for h in hits]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in hits],
                                       atol=1e-4)
    finally:
        onnx_workspace.close()
