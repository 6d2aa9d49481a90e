"""Synthetic data that behaves like embeddings: clustered, anisotropic, low intrinsic dimension."""

from __future__ import annotations

import numpy as np


def clustered_gaussian(
    n: int,
    d: int,
    n_clusters: int = 64,
    intrinsic_dim: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(x (n, d) float32, labels (n,) int32)`` drawn from a mixture of Gaussians.

    Cluster sizes are uneven (Zipf-like) and spreads differ per cluster; points live near a
    random ``intrinsic_dim``-dimensional subspace plus small isotropic noise, as real
    embeddings do, so recall-vs-speed curves have the shape seen on real data.
    """
    if n <= 0 or d <= 0 or n_clusters <= 0:
        raise ValueError("n, d and n_clusters must be positive")
    rng = np.random.default_rng(seed)
    latent = intrinsic_dim or max(2, min(d, d // 4 + 8))
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
    labels = rng.choice(n_clusters, size=n, p=weights / weights.sum()).astype(np.int32)
    centers = rng.normal(scale=1.0, size=(n_clusters, latent))
    spreads = rng.uniform(0.6, 1.2, size=n_clusters)
    z = centers[labels] + rng.normal(size=(n, latent)) * spreads[labels, None]
    projection = rng.normal(size=(latent, d)) / np.sqrt(latent)
    x = z @ projection + rng.normal(scale=0.05, size=(n, d))
    return x.astype(np.float32), labels
