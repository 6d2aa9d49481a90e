"""Synthetic data that behaves like embeddings: clustered, anisotropic, low intrinsic dimension;
written as a dataset file with held-out queries (``create_synthetic``), with a random numeric
attribute to filter on when asked."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from annbench.data.format import write_dataset
from annbench.data.split import split_queries
from annbench.errors import AnnbenchError
from annbench.metrics import Metric


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


class ClusteredGaussianRows:
    """Rows of a clustered-Gaussian dataset generated on demand, chunk by chunk, so datasets
    larger than memory can be written: ``rows[a:b]`` is the same whatever the slicing.

    Shares one mixture (centres, spreads, projection) across chunks; chunk ``i`` draws its
    points from its own seeded stream.
    """

    def __init__(self, n: int, d: int, n_clusters: int = 64, seed: int = 0, chunk: int = 65536):
        rng = np.random.default_rng(seed)
        self.shape = (n, d)
        self.chunk = chunk
        self.seed = seed
        latent = max(2, min(d, d // 4 + 8))
        weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
        self._p = weights / weights.sum()
        self._centers = rng.normal(size=(n_clusters, latent))
        self._spreads = rng.uniform(0.6, 1.2, size=n_clusters)
        self._projection = rng.normal(size=(latent, d)) / np.sqrt(latent)

    def __len__(self) -> int:
        return self.shape[0]

    def labels(self, start: int, stop: int) -> np.ndarray:
        """Cluster labels of rows ``start:stop``."""
        return np.concatenate([c[1] for c in self._chunks(start, stop)])[: stop - start]

    def __getitem__(self, item: slice) -> np.ndarray:
        start, stop, step = item.indices(self.shape[0])
        if step != 1:
            raise ValueError("only contiguous row slices are supported")
        return np.concatenate([c[0] for c in self._chunks(start, stop)])

    def _chunks(self, start: int, stop: int):
        for index in range(
            start // self.chunk, (stop - 1) // self.chunk + 1 if stop > start else 0
        ):
            x, labels = self._chunk(index)
            lo = max(start - index * self.chunk, 0)
            hi = min(stop - index * self.chunk, len(x))
            yield x[lo:hi], labels[lo:hi]

    def _chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = min(self.chunk, self.shape[0] - index * self.chunk)
        rng = np.random.default_rng([self.seed, index])
        labels = rng.choice(len(self._p), size=rows, p=self._p).astype(np.int32)
        z = (
            self._centers[labels]
            + rng.normal(size=(rows, self._centers.shape[1])) * (self._spreads[labels, None])
        )
        x = z @ self._projection + rng.normal(scale=0.05, size=(rows, self.shape[1]))
        return x.astype(np.float32), labels


def create_synthetic(
    path: Path,
    n: int,
    nq: int,
    d: int,
    metric: Metric,
    n_clusters: int = 64,
    seed: int = 0,
    description: str = "clustered Gaussian",
    random_attr: str | None = None,
) -> Path:
    """Write a clustered-Gaussian dataset with ``nq`` held-out queries (not in the base), and
    a uniform random numeric attribute named ``random_attr`` when given."""
    if n < 1 or nq < 1 or d < 1:
        raise AnnbenchError(f"n, nq and d must be positive, got n={n}, nq={nq}, d={d}")
    needed, available = (n + nq) * d * SYNTHETIC_BYTES, _memory_bytes()
    if available and needed > available:
        raise AnnbenchError(
            f"{n + nq:,} synthetic vectors of dimension {d} need about {needed / 1e9:,.0f} GB "
            f"of memory to generate, more than this machine's {available / 1e9:,.0f} GB; "
            "choose a smaller --n, --nq or --d"
        )
    x, labels = clustered_gaussian(n + nq, d, n_clusters=n_clusters, seed=seed)
    train, test, train_labels, test_labels = split_queries(x, labels, nq, seed + 1)
    attrs = {
        "source": f"annbench synthetic: {description}",
        "generator": f"clustered_gaussian(n={n + nq}, d={d}, n_clusters={n_clusters}, seed={seed})",
    }
    numeric = {random_attr: random_attribute(n, nq, seed)} if random_attr else None
    return write_dataset(
        path, train, test, metric, train_labels, test_labels, attrs, numeric_attrs=numeric
    )


#: Bytes of memory per value while a synthetic dataset is generated (float64 draws and their
#: float32 copy).
SYNTHETIC_BYTES = 28


def _memory_bytes() -> int:
    """This machine's physical memory in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def random_attribute(n: int, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random values in [0, 1) for ``n`` base vectors and ``nq`` queries (seeded): an
    attribute unrelated to the vectors, to compare filters on with one that correlates."""
    values = np.random.default_rng([seed, 1]).random(n + nq)
    return values[:n], values[n:]
