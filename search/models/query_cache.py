"""An LRU cache of text-query embeddings: e-commerce query streams repeat a few queries
very often, and a hit skips the text tower entirely."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from search.models.encoder import Encoder

DEFAULT_CAPACITY = 10_000  # 10k x 512-d float32 = 20 MB


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    capacity: int

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


def cache_text(encoder: Encoder, text: str) -> str:
    """The text as the tokenizer sees it: two texts with the same key get the same tokens.

    open_clip's own tokenizer cleans first (ftfy, HTML entities, whitespace, lower case by
    default), so its clean function is the normalisation; other tokenizers get the exact
    text (their casing or spacing may matter)."""
    clean = getattr(encoder.tokenizer, "clean_fn", None)
    return clean(text) if callable(clean) else text


class QueryEmbeddingCache:
    """Thread-safe LRU keyed by (encoder identity incl. runtime variant, normalised text).

    The key names the exact weights and how they run (e.g. int8), so a collection
    switched to another model never gets the old model's vectors."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def text_vector(self, encoder: Encoder, text: str) -> np.ndarray:
        """The normalised embedding of `text` ([dim] float32, read-only)."""
        key = (encoder.cache_identity, cache_text(encoder, text))
        with self._lock:
            vector = self._entries.get(key)
            if vector is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return vector
            self._misses += 1
        vector = encoder.encode_query_text(text)  # outside the lock: misses run in parallel
        vector.flags.writeable = False
        if self.capacity:
            with self._lock:
                self._entries[key] = vector
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return vector

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._entries), self.capacity)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
