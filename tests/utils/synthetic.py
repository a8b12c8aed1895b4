"""Seeded synthetic embeddings that look like CLIP's: clustered unit vectors.

Real embeddings sit near a low-dimensional manifold inside tight semantic clusters,
so isotropic noise is the wrong model: in 256 dimensions every point would be about
as far from every other, and no ANN index (nor a user) could tell neighbours apart.
Here each point is a cluster centre plus a displacement in a shared low-rank latent
space plus a little isotropic noise, then normalised, the only normalisation these
vectors get (the engine never normalises outside the encoder).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClusterShape:
    """How the points of one cluster scatter around its centre (per-dimension units)."""

    n_centres: int = 200
    latent_dim: int = 32  # intrinsic dimension of the within-cluster manifold
    spread: float = 0.6  # latent displacement, relative to the centre's norm
    noise: float = 0.3  # isotropic noise, relative to the centre's norm


def clustered_unit_vectors(
    n: int,
    dim: int,
    *,
    seed: int = 0,
    shape: ClusterShape = ClusterShape(),
    chunk: int = 131_072,
) -> np.ndarray:
    """[n, dim] float32, rows of unit L2 norm; same seed and shape give the same rows."""
    out = np.empty((n, dim), dtype=np.float32)
    start = 0
    for block in iter_clustered_unit_vectors(n, dim, seed=seed, shape=shape, chunk=chunk):
        out[start : start + len(block)] = block
        start += len(block)
    return out


def iter_clustered_unit_vectors(
    n: int,
    dim: int,
    *,
    seed: int = 0,
    shape: ClusterShape = ClusterShape(),
    chunk: int = 131_072,
) -> Iterator[np.ndarray]:
    """The rows of `clustered_unit_vectors` (same arguments), `chunk` rows at a time:
    for bases too big to hold at once (a benchmark writes them to a memory-mapped file)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((shape.n_centres, dim), dtype=np.float32)
    # [latent_dim, dim] shared basis, scaled so a unit latent step has norm ~spread*|centre|
    basis = rng.standard_normal((shape.latent_dim, dim), dtype=np.float32)
    basis *= shape.spread / np.sqrt(shape.latent_dim)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        yield _cluster_points(rng, centres, basis, stop - start, shape.noise)


def _cluster_points(
    rng: np.random.Generator, centres: np.ndarray, basis: np.ndarray, n: int, noise: float
) -> np.ndarray:
    dim = centres.shape[1]
    labels = rng.integers(0, len(centres), size=n)
    latent = rng.standard_normal((n, basis.shape[0]), dtype=np.float32)
    points = centres[labels] + latent @ basis
    points += rng.standard_normal((n, dim), dtype=np.float32) * noise
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product neighbours (the reference every ANN test compares with)."""
    import faiss

    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    return flat.search(queries, k)


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of the true top-k ids that appear in the found top-k ids."""
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * k)
