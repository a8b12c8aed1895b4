"""Vectors: FAISS indexes and the durable embeddings they are built from.

- `index.py` — `VectorIndex`: spec choice, train, add, remove, search, exact re-rank.
- `store.py` — `EmbeddingStore`: the append-only float16 log of a space's embeddings.
- `versions.py` — index versions on disk (manifest, atomic switch, pruning).
- `space.py` — `VectorSpace`: one modality of one collection (store + index kept in step).
"""
