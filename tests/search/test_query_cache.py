"""The query-embedding cache: same vectors as the model, keyed so a model switch never
serves the old model's vectors, bounded, and counted."""

import numpy as np

from search.engine import Searcher
from search.models.encoder import load_encoder
from search.models.query_cache import QueryEmbeddingCache, cache_text
from search.models.query_runtime import QueryRuntime
from search.query import QueryPart
from tests.utils.corpus import catalog_items


def test_hits_return_the_model_vectors_and_normalised_text_shares_an_entry(tiny_model):
    encoder = load_encoder(tiny_model, device="cpu")
    cache = QueryEmbeddingCache(capacity=8)
    first = cache.text_vector(encoder, "Red  Apple ")
    again = cache.text_vector(encoder, "red apple")  # the tokenizer lower-cases and trims
    np.testing.assert_allclose(first, encoder.encode_texts(["red apple"])[0], rtol=0, atol=1e-6)
    assert again is first and not first.flags.writeable
    assert cache_text(encoder, "Red  Apple ") == cache_text(encoder, "red apple")
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.hit_rate) == (1, 1, 1, 0.5)


def test_least_recently_used_entry_is_evicted(tiny_model):
    encoder = load_encoder(tiny_model, device="cpu")
    cache = QueryEmbeddingCache(capacity=2)
    for text in ("a shoe", "a hat", "a shoe", "a lamp"):  # "a hat" is the oldest
        cache.text_vector(encoder, text)
    cache.text_vector(encoder, "a shoe")
    cache.text_vector(encoder, "a hat")
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 4, 2)


def test_other_weights_or_runtime_variant_never_share_entries(tiny_model):
    random_init = load_encoder(tiny_model, pretrained="random", device="cpu")
    cache = QueryEmbeddingCache()
    cache.text_vector(random_init, "a shoe")
    quantised = load_encoder(tiny_model, pretrained="random", device="cpu",
                             runtime=QueryRuntime(text_int8=True))  # how it runs: in the key
    cache.text_vector(quantised, "a shoe")
    assert cache.stats().misses == 2


def test_collection_switched_to_another_model_gets_its_own_vectors(workspace, tmp_path,
                                                                   tiny_model):
    shop = workspace.create_collection("shop")
    shop.add_items(catalog_items(10))
    other = load_encoder(tiny_model, device="cpu")
    other.model.token_embedding.weight.data.mul_(-1.0)  # same architecture, other weights
    other_dir = other.save(tmp_path / "other-model")
    searcher = Searcher(workspace)
    parts = (QueryPart(text="fruit number 3"),)
    before = searcher.query_vector(workspace.collection("shop"), parts)
    # not bit-equal: the query runtime sets torch's thread count by load, which moves the
    # float sums by ~1e-7; another model's vectors differ by far more (checked below)
    np.testing.assert_allclose(before, shop.encoder.encode_query_text("fruit number 3"),
                               rtol=0, atol=1e-6)

    workspace.catalog.update_collection(shop.info.id, model=str(other_dir), pretrained=None)
    switched = workspace.reopen_collection("shop")
    after = searcher.query_vector(switched, parts)  # same searcher, same cache
    assert switched.encoder.cache_identity != shop.encoder.cache_identity
    np.testing.assert_allclose(after, switched.encoder.encode_query_text("fruit number 3"),
                               rtol=0, atol=1e-6)
    assert float(after @ before) < 0.999
    assert searcher.query_cache.stats().misses == 2
