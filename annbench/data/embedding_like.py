"""SYNTHETIC vectors shaped like real embeddings, at any size, fitted to a real dataset.

The model (``EmbeddingModel``) is a two-level mixture. Topic clusters: a centre and a weight
each, and an anisotropic covariance of low intrinsic dimension, a few principal directions
with their decaying variances plus noise (isotropic in shape, or shaped like the data's
pooled within-cluster residual, which keeps the global PCA spectrum). Inside the clusters,
groups of near-duplicates: real embeddings have many (texts with near-identical wording), and
they decide the nearest-neighbour distances. ``fit_embedding_model`` fits it from real vectors
(k-means by faiss, near-duplicate groups linked within each cluster, per-cluster PCA of the
group centres); ``sample`` draws rows in fixed blocks (row ``i`` is the same whatever the
slicing, and a smaller sample is the first rows of a larger one), so a million rows stream
to a file one block at a time; ``create_like`` writes a dataset file with held-out queries,
exact ground truth and provenance saying it is synthetic. Draws use numpy's own products, not
BLAS, so a seed gives the same bits whatever the threads; save a model to draw from it again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from annbench import __version__
from annbench.data.format import WRITE_CHUNK, Dataset, write_dataset
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric, normalize_rows

log = logging.getLogger(__name__)

#: Rows drawn together from one random stream: the unit of generation (25 MB at d=384). A
#: sample's last block is drawn whole and cut, so the first m rows of any larger sample are
#: the sample of m rows: sizes drawn with one seed are nested.
BLOCK = 16384
#: A near-duplicate group larger than this is taken apart (its members become singletons).
MAX_GROUP = 64
#: Quantiles of the within-group spread kept in the model.
SPREAD_QUANTILES = 65
MODEL_VERSION = 1


@dataclass(eq=False)
class EmbeddingModel:
    """Parameters of a synthetic embedding-like distribution (see the module docstring)."""

    centers: np.ndarray  # (K, d) float32 cluster centres
    weights: np.ndarray  # (K,) float64: each cluster's share of near-duplicate groups
    rank: np.ndarray  # (K,) int: principal directions of each cluster, r_k
    directions: np.ndarray  # (sum r_k, d) float32: each cluster's in turn, orthonormal rows
    scales: np.ndarray  # (sum r_k,) float32 standard deviation along each, decaying
    noise: np.ndarray  # (K,) float32 scale of each cluster's noise
    noise_basis: np.ndarray  # (q, d) float32: noise covariance floor * I + basis.T @ basis
    noise_floor: float  # (trace d: noise * that noise has per-dimension variance noise**2)
    group_sizes: np.ndarray  # (m,) float64 probability of a group of 1, 2, ... m vectors
    group_spread: np.ndarray  # (s,) float32 quantiles of a group's spread per dimension
    normalize: bool  # rows scaled to unit length (fitted to angular data)
    metric: str  # the metric of the data it was fitted to
    info: dict[str, Any] = field(default_factory=dict)  # provenance: source, fit settings

    @property
    def d(self) -> int:
        """Dimension of the vectors."""
        return int(self.centers.shape[1])

    @property
    def n_clusters(self) -> int:
        """Number of topic clusters."""
        return int(self.centers.shape[0])

    def first_direction(self) -> np.ndarray:
        """Row of ``directions`` where each cluster's start (K + 1,)."""
        return np.concatenate([[0], np.cumsum(self.rank)]).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        """The model in a few numbers, for provenance and printing."""
        ranks = self.rank
        sizes = np.arange(1, len(self.group_sizes) + 1)
        return {
            "model": "embedding-like mixture (annbench.data.embedding_like)",
            "d": self.d,
            "clusters": self.n_clusters,
            "directions per cluster": [int(ranks.min()), float(np.median(ranks)), int(ranks.max())],
            "noise rank": int(self.noise_basis.shape[0]),
            "mean group size": float(self.group_sizes @ sizes),
            "normalized": self.normalize,
            **{k: v for k, v in self.info.items() if k in ("fitted from", "fit")},
        }

    def save(self, path: str | Path) -> Path:
        """Write the model to an ``.npz`` file (arrays, and its settings as JSON)."""
        path = Path(path)
        meta = {
            "version": MODEL_VERSION,
            "noise_floor": self.noise_floor,
            "normalize": self.normalize,
            "metric": self.metric,
            "info": self.info,
        }
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                centers=self.centers,
                weights=self.weights,
                rank=self.rank,
                directions=self.directions,
                scales=self.scales,
                noise=self.noise,
                noise_basis=self.noise_basis,
                group_sizes=self.group_sizes,
                group_spread=self.group_spread,
                meta=np.array(json.dumps(meta)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingModel:
        """A model saved by ``save``."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {key: z[key] for key in z.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError) as exc:
            raise AnnbenchError(f"{path} is not a saved embedding model (.npz): {exc}") from exc
        if meta.get("version") != MODEL_VERSION:
            raise AnnbenchError(
                f"{path} holds a model of version {meta.get('version')}; this annbench reads "
                f"version {MODEL_VERSION}: fit it again"
            )
        return cls(
            **arrays,
            noise_floor=float(meta["noise_floor"]),
            normalize=bool(meta["normalize"]),
            metric=meta["metric"],
            info=meta["info"],
        )


def fit_embedding_model(
    x: np.ndarray | Dataset,
    n_clusters: int | None = None,
    intrinsic_dim: int | None = None,
    seed: int = 0,
    *,
    metric: Metric | str | None = None,
    explained: float = 0.7,
    max_dim: int = 64,
    noise_rank: int = 128,
    group_radius: float = 0.4,
    max_rows: int = 200_000,
    source: str | None = None,
) -> EmbeddingModel:
    """Fit an ``EmbeddingModel`` to real vectors ``x`` (n, d), or to a ``Dataset``'s base.

    ``n_clusters``: topic clusters (default: one per 40 vectors, at most 4,096).
    ``intrinsic_dim``: the principal directions of every cluster, which then carry all its
    variance but ``NOISE_SHARE`` (estimators read less where variances decay fast: 32 reads
    as about 11 on the bundled data). By default each cluster keeps as many as explain
    ``explained`` of its variance (at most ``max_dim``), an explained-variance estimate of
    its intrinsic dimension, and the rest is noise. ``noise_rank``: directions of the shared
    noise shape (0: isotropic noise). ``group_radius``: vectors nearer each
    other than this times the median nearest-neighbour distance form a near-duplicate group
    (0: no groups).
    ``metric``: that of ``x`` (a Dataset's own by default; angular models are normalised).
    At most ``max_rows`` rows (a seeded sample) are used.

    Examples:
        >>> from annbench.api import load_dataset
        >>> model = fit_embedding_model(load_dataset("debian-packages-384-angular"))
        >>> model.save("debian-like.npz")  # doctest: +SKIP
    """
    info: dict[str, Any] = {}
    if isinstance(x, Dataset):
        metric = metric or x.metric
        info["fitted from"] = {
            "name": source or x.name,
            "content_hash": x.content_hash,
            "n": len(x.train),
            "metric": x.metric.value,
        }
        x = x.train
    else:
        info["fitted from"] = {"name": source or "vectors given as an array", "n": len(x)}
    metric = Metric.parse(metric or Metric.EUCLIDEAN)
    x = _check_vectors(x)
    rng = np.random.default_rng([seed, 0])
    if len(x) > max_rows:
        x = x[np.sort(rng.choice(len(x), max_rows, replace=False))]
    normalize = metric is Metric.ANGULAR
    if normalize:
        x = normalize_rows(x[np.linalg.norm(x, axis=1) > 0])
    n, d = x.shape
    if n_clusters is None:
        n_clusters = int(np.clip(round(n / 40), 1, 4096))
    if not 1 <= n_clusters <= n // 2:
        raise BadUsage(f"n_clusters must be between 1 and half the {n} vectors, got {n_clusters}")
    if intrinsic_dim is not None and not 1 <= intrinsic_dim <= d:
        raise BadUsage(f"intrinsic_dim must be between 1 and {d}, got {intrinsic_dim}")
    if max_dim < 1:
        raise BadUsage(f"max_dim must be at least 1, got {max_dim}")
    if not 0 < explained <= 1:
        raise BadUsage(f"explained must be in (0, 1], got {explained}")
    labels = _kmeans(x, n_clusters, normalize, seed)
    groups = _groups(x, labels, group_radius)
    sizes = np.bincount(groups)
    by_group = np.argsort(groups, kind="stable")
    heads = np.add.reduceat(
        x[by_group].astype(np.float64), np.concatenate([[0], np.cumsum(sizes)[:-1]]), axis=0
    )
    heads /= sizes[:, None]
    offsets = x - heads[groups]
    head_labels = np.zeros(len(sizes), dtype=np.int64)
    head_labels[groups] = labels
    spread = _group_spread(offsets, groups, sizes)
    max_rank = min(d, max(max_dim, intrinsic_dim or 0))
    counts = np.bincount(head_labels, minlength=n_clusters)
    centers, ranks, directions, scales, noise, rest = _principal(
        heads, head_labels, n_clusters, explained, max_rank, intrinsic_dim
    )
    lonely = (counts > 0) & (counts < 2)
    if lonely.any():  # a cluster of one group: the typical noise, not none (no duplicates)
        noise[lonely] = np.median(noise[counts >= 2]) if (counts >= 2).any() else 0.0
    residual = rest.T @ rest
    basis, floor = _noise_shape(residual, min(noise_rank, d))
    used = counts > 0
    info["fit"] = {
        "n": n,
        "clusters": n_clusters,
        "intrinsic_dim": intrinsic_dim,
        "explained": explained,
        "max_dim": max_dim,
        "noise_rank": noise_rank,
        "group_radius": group_radius,
        "seed": seed,
    }
    model = EmbeddingModel(
        centers=centers[used],
        weights=counts[used] / counts.sum(),
        rank=ranks[used],
        directions=np.concatenate([directions[c] for c in np.flatnonzero(used)]),
        scales=np.concatenate([scales[c] for c in np.flatnonzero(used)]),
        noise=noise[used],
        noise_basis=basis,
        noise_floor=floor,
        group_sizes=np.bincount(np.minimum(sizes, MAX_GROUP))[1:] / len(sizes),
        group_spread=spread,
        normalize=normalize,
        metric=metric.value,
        info=info,
    )
    return model


#: Share of a cluster's variance left to noise when its intrinsic dimension is chosen.
NOISE_SHARE = 0.05


def _principal(
    heads: np.ndarray,
    labels: np.ndarray,
    k: int,
    explained: float,
    max_rank: int,
    dim: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Per cluster of ``heads`` (rows labelled 0..k-1): ``(centres (k, d), ranks (k,),
    directions [(r, d)], deviations [(r,)], noise (k,), residual rows (n, d))``, by PCA:
    as many directions as explain ``explained`` of the variance, at most ``max_rank`` and one
    fewer than the cluster's rows. With ``dim``, that many directions instead, carrying all
    the cluster's variance but the ``NOISE_SHARE`` left to noise."""
    from threadpoolctl import threadpool_limits

    d = heads.shape[1]
    centers = np.zeros((k, d), np.float32)
    ranks = np.zeros(k, np.int64)
    directions = [np.zeros((0, d), np.float32)] * k
    scales = [np.zeros(0, np.float32)] * k
    noise = np.zeros(k, np.float32)
    rest = np.zeros_like(heads)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    with threadpool_limits(1, user_api="blas"):  # many small products: threads only wait
        for rows in np.split(order, bounds):
            c, members = labels[rows[0]], heads[rows]
            centers[c] = members.mean(axis=0)
            if len(members) < 2:
                continue
            z = members - members.mean(axis=0)
            _, s, vt = np.linalg.svd(z, full_matrices=False)
            variances = s**2 / (len(members) - 1)
            total = max(variances.sum(), 1e-300)
            rank = dim or int(np.searchsorted(np.cumsum(variances) / total, explained)) + 1
            rank = ranks[c] = min(rank, max_rank, len(members) - 1)
            directions[c] = vt[:rank].astype(np.float32)
            kept = variances[:rank]
            if dim is not None:  # the rest moves to the kept directions, but a little noise
                kept = kept * (1 - NOISE_SHARE) * total / max(kept.sum(), 1e-300)
            scales[c] = np.sqrt(kept).astype(np.float32)
            noise[c] = np.sqrt((total - kept.sum()) / d)
            rest[rows] = z - (z @ vt[:rank].T) @ vt[:rank]
    return centers, ranks, directions, scales, noise, rest


class SampledRows:
    """Rows of a sample from an ``EmbeddingModel``, generated on demand block by block:
    ``rows[a:b]`` (float32, (b - a, d)) is the same whatever the slicing or chunking, and
    iterating yields chunks of ``chunk_rows`` rows. Row positions in ``skip`` (sorted) are
    left out (held-out queries). ``ahead`` blocks past the one read are drawn in background
    threads (numpy releases the GIL; default: one per CPU but one), so ``ahead + 2`` blocks
    are held at most."""

    def __init__(
        self,
        model: EmbeddingModel,
        n: int,
        seed: int = 0,
        chunk_rows: int = BLOCK,
        skip: np.ndarray | None = None,
        ahead: int | None = None,
    ) -> None:
        if n < 0 or chunk_rows < 1:
            raise BadUsage(f"n must be >= 0 and chunk_rows >= 1, got {n} and {chunk_rows}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise BadUsage(f"seed must be a non-negative integer, got {seed!r}")
        self.model, self.seed, self.chunk_rows = model, seed, chunk_rows
        self.skip = np.zeros(0, np.int64) if skip is None else np.asarray(skip, np.int64)
        self.total = n + len(self.skip)  # rows drawn, held-out ones included
        self.shape = (n, model.d)
        self.dtype = np.dtype(np.float32)
        self._ahead = max(0, _cpus() - 1) if ahead is None else ahead
        self._pool: ThreadPoolExecutor | None = None
        self._blocks: dict[int, Future] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item: slice) -> np.ndarray:
        if not isinstance(item, slice):
            raise TypeError("sampled rows are read by row slices, rows[a:b]")
        start, stop, step = item.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous row slices are supported")
        if stop <= start:
            return np.empty((0, self.model.d), np.float32)
        first, last = self._drawn(start), self._drawn(stop - 1)
        parts = []
        for block in range(first // BLOCK, last // BLOCK + 1):
            x = self._block(block)
            lo, hi = max(first - block * BLOCK, 0), min(last + 1 - block * BLOCK, len(x))
            kept = self._kept(block, lo, hi)
            parts.append(x[lo:hi] if kept is None else x[kept])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), self.chunk_rows):
            yield self[start : start + self.chunk_rows]
        self.close()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        x = self[:]
        return x if dtype is None else x.astype(dtype)

    def labels(self) -> np.ndarray:
        """The topic cluster of every row (n,) int32, without drawing the vectors."""
        parts = []
        for block in range((self.total + BLOCK - 1) // BLOCK):
            labels = _structure(self.model, BLOCK, self._rng(block, 0))[0][: self._rows_in(block)]
            kept = self._kept(block, 0, len(labels))
            parts.append(labels if kept is None else labels[kept])
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def close(self) -> None:
        """Drop the blocks held and stop the background threads."""
        with self._lock:
            self._blocks.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def _drawn(self, row: int) -> int:
        """Position among the drawn rows of row ``row`` of this sample."""
        gaps = self.skip - np.arange(len(self.skip))  # sample row before which each gap falls
        return row + int(np.searchsorted(gaps, row, side="right"))

    def _kept(self, block: int, lo: int, hi: int) -> np.ndarray | None:
        """Positions in ``block``'s rows ``lo:hi`` that are not skipped (None: all)."""
        start = block * BLOCK
        inside = self.skip[(self.skip >= start + lo) & (self.skip < start + hi)] - start
        if not len(inside):
            return None
        return np.setdiff1d(np.arange(lo, hi), inside, assume_unique=True)

    def _rows_in(self, block: int) -> int:
        return min(BLOCK, self.total - block * BLOCK)

    def _rng(self, block: int, part: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, block, part])

    def _draw(self, block: int) -> np.ndarray:
        return draw_block(self.model, BLOCK, self._rng(block, 0), self._rng(block, 1))[
            : self._rows_in(block)
        ]

    def _block(self, block: int) -> np.ndarray:
        """Block ``block``'s rows, with the next ones queued in the background."""
        last = (self.total - 1) // BLOCK
        with self._lock:
            if self._pool is None:
                workers = max(1, self._ahead)
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sample")
            for ahead in range(block, min(block + self._ahead + 1, last + 1)):
                if ahead not in self._blocks:
                    self._blocks[ahead] = self._pool.submit(self._draw, ahead)
            for old in [b for b in self._blocks if b < block - 1 or b > block + self._ahead]:
                del self._blocks[old]
            future = self._blocks[block]
        return future.result()


def sample(model: EmbeddingModel, n: int, seed: int = 0, chunk_rows: int = BLOCK) -> SampledRows:
    """``n`` SYNTHETIC rows drawn from ``model`` with ``seed``, generated lazily: slice it
    (``rows[a:b]``), iterate it in chunks of ``chunk_rows`` rows, or take it whole with
    ``np.asarray(rows)``. The same seed gives the same rows whatever the chunking.

    Examples:
        >>> rows = sample(model, 1_000_000, seed=1)  # doctest: +SKIP
        >>> for chunk in rows: ...  # (16384, d) float32 at a time  # doctest: +SKIP
    """
    return SampledRows(model, n, seed, chunk_rows)


def held_out_sample(
    model: EmbeddingModel, n: int, nq: int, seed: int = 0
) -> tuple[SampledRows, np.ndarray, np.ndarray, np.ndarray]:
    """``(base rows, queries (nq, d), base labels (n,), query labels (nq,))``: ``n + nq`` rows
    drawn, ``nq`` of them (random rows of the first blocks, whose rows are in random order)
    held out of the base, so queries have near-duplicates in the base as real ones do. Once
    ``n + nq`` reaches ``max(BLOCK, 4 nq)``, sizes drawn with one seed share their queries and
    nest: a smaller base is the first rows of a larger one."""
    if n < 1 or nq < 1:
        raise BadUsage(f"n and nq must be positive, got n={n}, nq={nq}")
    span = min(n + nq, max(BLOCK, 4 * nq))
    positions = np.sort(np.random.default_rng([seed, 2]).choice(span, nq, replace=False))
    drawn = SampledRows(model, n + nq, seed, ahead=0)
    queries = np.concatenate(
        [
            drawn[b * BLOCK : (b + 1) * BLOCK][positions[(positions // BLOCK) == b] - b * BLOCK]
            for b in range((span + BLOCK - 1) // BLOCK)
        ]
    )
    labels = drawn.labels()
    drawn.close()
    base = SampledRows(model, n, seed, skip=positions)
    keep = np.ones(n + nq, dtype=bool)
    keep[positions] = False
    return base, queries, labels[keep], labels[positions]


def create_like(
    path: str | Path,
    source: EmbeddingModel | Dataset | str | Path,
    n: int,
    nq: int = 1000,
    seed: int = 0,
    metric: Metric | str | None = None,
    truth: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    **fit: Any,
) -> Path:
    """Write a SYNTHETIC dataset of ``n`` base vectors and ``nq`` held-out queries drawn from
    a model fitted to ``source`` (a model, a saved model ``.npz``, a Dataset, or a dataset name
    or HDF5 path, fitted with ``fit``'s keywords), in annbench's HDF5 layout with exact ground
    truth (``truth=False``: without, for ``annbench datasets truth`` to add later), cluster ids
    as labels and attributes saying it is synthetic and what it was fitted to.

    ``metric`` defaults to the source's. Memory stays within a few blocks of rows.
    """
    path = Path(path)
    model = _model(source, fit)
    metric = Metric.parse(metric or model.metric)
    base, queries, base_labels, query_labels = held_out_sample(model, n, nq, seed)
    fitted_from = model.info.get("fitted from", {"name": "(not fitted)"})
    attrs = {
        "synthetic": "yes: drawn from a model, not real data",
        "source": f"annbench synthetic: embedding-like, fitted to {fitted_from.get('name')}",
        "fitted_from": json.dumps(fitted_from),
        "generator": json.dumps(
            {
                "function": "annbench.data.embedding_like.create_like",
                "n": n,
                "nq": nq,
                "seed": seed,
                "model": model.summary(),
            }
        ),
    }
    try:
        if truth:
            return write_dataset(
                path, base, queries, metric, base_labels, query_labels, attrs, progress=progress
            )
        return _write_without_truth(
            path, base, queries, metric, base_labels, query_labels, attrs, progress
        )
    finally:
        base.close()


def draw_block(
    model: EmbeddingModel,
    rows: int,
    structure: np.random.Generator,
    values: np.random.Generator,
) -> np.ndarray:
    """``rows`` vectors (rows, d) float32: near-duplicate groups and their clusters drawn from
    ``structure``, the vectors from ``values``, rows in random order. Products are numpy's
    own loops (``_product``), not BLAS, so the same draws give the same bits in any thread."""
    cluster, group_of_row, spread, order = _structure(model, rows, structure)[1:]
    d = model.d
    heads = _noise(model, len(cluster), values) * model.noise[cluster][:, None]
    counts = np.bincount(cluster, minlength=model.n_clusters)
    first = model.first_direction()
    start = 0
    for c in np.flatnonzero(counts):
        stop = start + counts[c]
        own = slice(first[c], first[c + 1])
        if model.rank[c]:
            z = values.standard_normal((stop - start, model.rank[c]), dtype=np.float32)
            heads[start:stop] += _product(z * model.scales[own], model.directions[own])
        heads[start:stop] += model.centers[c]
        start = stop
    x = heads[group_of_row[order]]
    moved = np.flatnonzero(spread[group_of_row[order]] > 0)
    if len(moved):
        x[moved] += _noise(model, len(moved), values) * spread[group_of_row[order[moved]], None]
    if model.normalize:
        norms = np.sqrt(np.einsum("nd,nd->n", x, x))[:, None]
        norms[norms == 0] = 1.0
        x /= norms
    assert x.shape == (rows, d)
    return x


def _structure(
    model: EmbeddingModel, rows: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(label per row, cluster per group, group per row, spread per group, row order)`` of a
    block: groups sized from the model until ``rows`` are filled, clusters by weight (groups
    sorted by cluster), rows in random order ``order``."""
    sizes_p = model.group_sizes
    mean = float(sizes_p @ np.arange(1, len(sizes_p) + 1))
    sizes = rng.choice(len(sizes_p), size=int(rows / mean * 1.2) + 32, p=sizes_p) + 1
    while sizes.sum() < rows:
        sizes = np.concatenate([sizes, rng.choice(len(sizes_p), size=rows, p=sizes_p) + 1])
    ends = np.cumsum(sizes)
    groups = int(np.searchsorted(ends, rows)) + 1
    sizes = sizes[:groups]
    sizes[-1] -= ends[groups - 1] - rows
    counts = rng.multinomial(groups, model.weights)
    cluster = np.repeat(np.arange(model.n_clusters, dtype=np.int32), counts)
    quantiles = np.linspace(0.0, 1.0, len(model.group_spread))  # drawn by the inverse CDF
    drawn = np.interp(rng.random(groups), quantiles, model.group_spread)
    spread = np.where(sizes > 1, drawn, 0.0).astype(np.float32)
    group_of_row = np.repeat(np.arange(groups), sizes)
    order = rng.permutation(rows)
    return cluster[group_of_row[order]], cluster, group_of_row, spread, order


def _noise(model: EmbeddingModel, rows: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` draws (rows, d) float32 of the model's noise shape (mean variance 1)."""
    x = rng.standard_normal((rows, model.d), dtype=np.float32)
    if model.noise_floor != 1.0:
        x *= np.float32(np.sqrt(model.noise_floor))
    q = model.noise_basis.shape[0]
    if q:
        x += _product(rng.standard_normal((rows, q), dtype=np.float32), model.noise_basis)
    return x


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` by einsum's loops: BLAS sums in an order that depends on its thread count,
    so its last bits would change with the machine's load and threads (both C-ordered: the
    loops, hence the bits, follow the layout)."""
    return np.einsum("ij,jk->ik", np.ascontiguousarray(a), np.ascontiguousarray(b))


def _noise_shape(residual: np.ndarray, rank: int) -> tuple[np.ndarray, float]:
    """``(basis (rank, d), floor)`` with ``floor * I + basis.T @ basis`` the pooled residual
    covariance ``residual`` scaled to trace d, its top ``rank`` directions kept."""
    d = residual.shape[0]
    values, vectors = np.linalg.eigh(residual)
    values = np.maximum(values[::-1], 0.0)
    vectors = vectors[:, ::-1]
    if values.sum() <= 0 or rank == 0:
        return np.zeros((0, d), np.float32), 1.0
    values = values * d / values.sum()
    floor = float(values[rank:].mean()) if rank < d else 0.0
    extra = np.sqrt(np.maximum(values[:rank] - floor, 0.0))
    return np.ascontiguousarray((vectors[:, :rank] * extra).T, dtype=np.float32), floor


def _kmeans(x: np.ndarray, k: int, spherical: bool, seed: int) -> np.ndarray:
    """Cluster of each row by faiss' k-means."""
    import faiss

    if k == 1:
        return np.zeros(len(x), np.int64)
    kmeans = faiss.Kmeans(
        x.shape[1],
        k,
        niter=20,
        seed=seed,
        spherical=spherical,
        min_points_per_centroid=1,
        max_points_per_centroid=256,
        verbose=False,
    )
    kmeans.train(x)
    return kmeans.index.search(x, 1)[1][:, 0]


def _groups(x: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """Near-duplicate group of each row: rows whose nearest neighbour within their cluster is
    nearer than ``radius`` times the median such distance are linked, and linked rows form a
    group; groups above ``MAX_GROUP`` rows are taken apart. Group ids 0..g-1."""
    import faiss
    from threadpoolctl import threadpool_limits

    n = len(x)
    nearest = np.arange(n)
    distance = np.full(n, np.inf)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    with threadpool_limits(1, user_api="blas"):  # many small products: threads only wait
        for rows in np.split(order, bounds):
            if len(rows) < 2 or radius <= 0:
                continue
            block = np.ascontiguousarray(x[rows])
            if len(rows) > 4096:
                squared, ids = faiss.knn(block, block, 2)
            else:
                norms = np.einsum("nd,nd->n", block, block)
                pairs = norms[:, None] + norms[None, :] - 2 * block @ block.T
                ids = np.argpartition(pairs, 1, axis=1)[:, :2]
                squared = np.take_along_axis(pairs, ids, axis=1)
            at = np.arange(len(rows))
            other = np.where(ids[:, 0] == at, 1, 0)  # the row itself, unless a duplicate came first
            nearest[rows] = rows[ids[at, other]]
            distance[rows] = np.sqrt(np.maximum(squared[at, other], 0))
    finite = distance[np.isfinite(distance)]
    if radius <= 0 or not len(finite):
        return np.arange(n)
    linked = distance < radius * np.median(finite)
    group = np.arange(n)
    sources, targets = np.flatnonzero(linked), nearest[linked]
    while True:  # each row takes the smallest id of its linked component
        before = group.copy()
        low = np.minimum(group[sources], group[targets])
        np.minimum.at(group, sources, low)
        np.minimum.at(group, targets, low)
        group = group[group]
        if np.array_equal(group, before):
            break
    _, group, sizes = np.unique(group, return_inverse=True, return_counts=True)
    big = sizes[group] > MAX_GROUP
    if big.any():
        group[big] = group.max() + 1 + np.arange(int(big.sum()))
        _, group = np.unique(group, return_inverse=True)
    return group


def _group_spread(offsets: np.ndarray, groups: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Quantiles of the per-dimension spread of groups of two or more (zeros if none)."""
    squares = np.zeros(len(sizes))
    np.add.at(squares, groups, np.einsum("nd,nd->n", offsets, offsets))
    many = sizes > 1
    if not many.any():
        return np.zeros(1, np.float32)
    spread = np.sqrt(squares[many] / ((sizes[many] - 1) * offsets.shape[1]))
    return np.quantile(spread, np.linspace(0, 1, SPREAD_QUANTILES)).astype(np.float32)


def _model(source: EmbeddingModel | Dataset | str | Path, fit: dict[str, Any]) -> EmbeddingModel:
    """The model ``create_like`` draws from."""
    if isinstance(source, EmbeddingModel):
        if fit:
            raise BadUsage(f"Fit settings ({', '.join(fit)}) need a dataset, not a model")
        return source
    if isinstance(source, (str, Path)) and str(source).endswith(".npz"):
        return EmbeddingModel.load(source)
    if not isinstance(source, Dataset):
        from annbench.data.catalog import resolve_dataset
        from annbench.data.format import read_dataset

        source = read_dataset(resolve_dataset(str(source)))
    return fit_embedding_model(source, **fit)


def _check_vectors(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 4 or x.shape[1] < 1:
        raise AnnbenchError(f"Need a 2-D array of at least 4 vectors to fit, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise AnnbenchError(f"Vectors must hold numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise AnnbenchError("Vectors hold NaN or inf; clean or drop those rows before fitting")
    return x


def _write_without_truth(
    path: Path,
    base: SampledRows,
    queries: np.ndarray,
    metric: Metric,
    base_labels: np.ndarray,
    query_labels: np.ndarray,
    attrs: dict[str, Any],
    progress: Callable[[str, int, int], None] | None,
) -> Path:
    """``write_dataset``'s layout without ``neighbors``/``distances``, atomically."""
    n, d = base.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with h5py.File(partial, "w") as f:
            train = f.create_dataset(
                "train",
                shape=(n, d),
                dtype=np.float32,
                chunks=(min(n, max(1, 65536 // d)), d),
                compression="gzip",
            )
            for start in range(0, n, WRITE_CHUNK):
                stop = min(start + WRITE_CHUNK, n)
                train[start:stop] = base[start:stop]
                if progress is not None:
                    progress("writing", stop, n)
            f.create_dataset("test", data=queries.astype(np.float32))
            f.create_dataset("train_labels", data=base_labels)
            f.create_dataset("test_labels", data=query_labels)
            f.attrs["distance"] = metric.value
            f.attrs["dimension"] = d
            f.attrs["point_type"] = "float"
            f.attrs["annbench_version"] = __version__
            for key, value in attrs.items():
                f.attrs[key] = value
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
