"""How alike two vector sets are in the ways that decide how ANN indexes behave on them:
intrinsic dimension (the Levina-Bickel maximum-likelihood estimate over k neighbours, and
TwoNN), relative contrast (a query's mean distance over its nearest one: near 1, every point
is about as far as every other and search is hard) and the recall an HNSW graph reaches at a
given search effort. ``profile`` measures them all; synthetic data is checked against the
real data it was fitted to by comparing two profiles (``compare``).

Distances are Euclidean on the vectors as the metric sees them: unit-normalised under angular
(where they rank as cosine does), as given under euclidean and dot.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from annbench.errors import AnnbenchError
from annbench.metrics import Metric, normalize_rows

#: HNSW settings of the recall check: hnswlib's M=16 graph searched at these efforts.
RECALL_EFS = (16, 64)
RECALL_M = 16
RECALL_K = 10


def intrinsic_dimension(
    x: np.ndarray,
    metric: Metric | str = Metric.EUCLIDEAN,
    k: int = 20,
    sample: int = 2000,
    seed: int = 0,
) -> float:
    """Maximum-likelihood intrinsic dimension (Levina & Bickel 2005, averaged over points as
    MacKay & Ghahramani suggest) from the ``k`` nearest neighbours of ``sample`` rows of ``x``
    (n, d) among all rows. Points with an exact duplicate are left out."""
    distances = _neighbour_distances(x, metric, k, sample, seed)
    logs = np.log(distances[:, -1:] / distances[:, :-1])  # (m, k - 1): log(T_k / T_j)
    return float(1.0 / np.mean(logs.mean(axis=1)))


def twonn_dimension(
    x: np.ndarray,
    metric: Metric | str = Metric.EUCLIDEAN,
    sample: int = 2000,
    seed: int = 0,
    discard: float = 0.1,
) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017): the slope of ``-log(1 - F(mu))`` against
    ``log(mu)``, ``mu`` the ratio of second to first neighbour distance, through the origin,
    the largest ``discard`` share of ratios left out. Sensitive to near-duplicates, which pull
    it far below the MLE estimate."""
    distances = _neighbour_distances(x, metric, 2, sample, seed)
    mu = np.sort(distances[:, 1] / distances[:, 0])
    keep = max(2, int(len(mu) * (1.0 - discard)))
    cdf = np.arange(1, len(mu) + 1) / len(mu)
    log_mu, target = np.log(mu[:keep]), -np.log1p(-cdf[:keep])
    return float(log_mu @ target / max(log_mu @ log_mu, 1e-300))


def relative_contrast(
    xb: np.ndarray,
    xq: np.ndarray,
    metric: Metric | str = Metric.EUCLIDEAN,
    k: int = 1,
    sample: int = 4096,
    seed: int = 0,
) -> np.ndarray:
    """Per query (nq,): its mean distance to the base (estimated on ``sample`` random base
    rows) over its distance to its ``k``-th nearest base row; inf for a query with an exact
    duplicate in the base."""
    metric = Metric.parse(metric)
    base, queries = _prepared(xb, metric), _prepared(xq, metric)
    nearest = _knn_distances(base, queries, k)[:, k - 1]
    rows = np.random.default_rng(seed).choice(len(base), min(sample, len(base)), replace=False)
    picked = base[np.sort(rows)]
    squared = (
        np.einsum("qd,qd->q", queries, queries)[:, None]
        + np.einsum("nd,nd->n", picked, picked)[None, :]
        - 2.0 * queries @ picked.T
    )
    mean = np.sqrt(np.maximum(squared, 0.0)).mean(axis=1)
    with np.errstate(divide="ignore"):
        return mean / nearest


def hnsw_recall(
    xb: np.ndarray,
    xq: np.ndarray,
    metric: Metric | str = Metric.EUCLIDEAN,
    efs: tuple[int, ...] = RECALL_EFS,
    k: int = RECALL_K,
    M: int = RECALL_M,
    ef_construction: int = 100,
    seed: int = 0,
    threads: int | None = None,
) -> dict[int, float]:
    """Recall@k of an hnswlib HNSW graph (``M``, ``ef_construction``) over ``xb`` for the
    queries ``xq`` at each search effort ``ef``: how hard the data is for a graph index."""
    import hnswlib

    metric = Metric.parse(metric)
    base, queries = _prepared(xb, metric), _prepared(xq, metric)
    truth = _knn_ids(base, queries, k) if metric is not Metric.DOT else _dot_ids(xb, xq, k)
    space = {Metric.EUCLIDEAN: "l2", Metric.ANGULAR: "ip", Metric.DOT: "ip"}[metric]
    index = hnswlib.Index(space=space, dim=base.shape[1])
    index.init_index(len(base), M=M, ef_construction=ef_construction, random_seed=seed)
    index.set_num_threads(threads or _cpus())
    index.add_items(base if metric is not Metric.DOT else np.ascontiguousarray(xb, np.float32))
    found = {}
    for ef in efs:
        index.set_ef(max(ef, k))
        ids, _ = index.knn_query(queries if metric is not Metric.DOT else xq, k)
        hits = (ids[:, :, None] == truth[:, None, :]).any(axis=2).sum()
        found[int(ef)] = float(hits / truth.size)
    return found


@dataclass
class Profile:
    """The structure of a base set and its queries, as ``profile`` measures it."""

    n: int
    d: int
    intrinsic_dim: float  # MLE over 20 neighbours
    twonn_dim: float
    contrast: list[float]  # relative contrast (k=1) at the 10th, 50th and 90th percentiles
    contrast10: list[float]  # the same against the 10th neighbour
    recall: dict[int, float] = field(default_factory=dict)  # hnswlib M=16 recall@10 per ef

    def as_dict(self) -> dict:
        """Plain values, for printing and JSON."""
        return asdict(self)


#: What ``compare`` accepts as alike (the checks synthetic data must pass): relative
#: difference of the intrinsic dimension (MLE), relative difference of the median and 90th
#: percentile of relative contrast against the 10th neighbour and of the median against the
#: nearest, and absolute difference of HNSW recall at each ef. Samples of the model fitted to
#: the bundled dataset differ by 0.07-0.15, 0.01-0.08 and, at ef=16, 0.047-0.054 (easier for
#: the graph than the real data: 2.5 % of neighbours missed, not 7.5 %; 0.011 at ef=64).
TOLERANCE = {"intrinsic_dim": 0.25, "contrast": 0.10, "recall": 0.06}


def profile(
    xb: np.ndarray,
    xq: np.ndarray,
    metric: Metric | str = Metric.EUCLIDEAN,
    seed: int = 0,
    recall: bool = True,
) -> Profile:
    """Intrinsic dimension, relative contrast and (with ``recall``) HNSW recall of base
    ``xb`` (n, d) with queries ``xq`` (nq, d): a few seconds for 20,000 x 384."""
    metric = Metric.parse(metric)
    if len(xb) < 30 or len(xq) < 1:
        raise AnnbenchError(
            f"A profile needs at least 30 base vectors and a query, got {len(xb)} and {len(xq)}"
        )
    percentiles = [10, 50, 90]
    contrast = relative_contrast(xb, xq, metric, 1, seed=seed)
    contrast10 = relative_contrast(xb, xq, metric, min(10, len(xb)), seed=seed)
    return Profile(
        n=len(xb),
        d=xb.shape[1],
        intrinsic_dim=intrinsic_dimension(xb, metric, seed=seed),
        twonn_dim=twonn_dimension(xb, metric, seed=seed),
        contrast=[float(v) for v in np.percentile(contrast[np.isfinite(contrast)], percentiles)],
        contrast10=[float(v) for v in np.percentile(contrast10, percentiles)],
        recall=hnsw_recall(xb, xq, metric, seed=seed) if recall else {},
    )


def compare(real: Profile, other: Profile, tolerance: dict | None = None) -> dict[str, dict]:
    """Each check of ``other`` against ``real``: ``{name: {"real", "other", "difference",
    "limit", "ok"}}``, differences relative except for recall (absolute)."""
    limits = {**TOLERANCE, **(tolerance or {})}
    checks: dict[str, dict] = {}

    def add(name: str, a: float, b: float, limit: float, relative: bool) -> None:
        difference = abs(b - a) / abs(a) if relative else abs(b - a)
        checks[name] = {
            "real": a,
            "other": b,
            "difference": difference,
            "limit": limit,
            "ok": bool(difference <= limit),
        }

    add("intrinsic_dim", real.intrinsic_dim, other.intrinsic_dim, limits["intrinsic_dim"], True)
    add("contrast median", real.contrast[1], other.contrast[1], limits["contrast"], True)
    add("contrast10 median", real.contrast10[1], other.contrast10[1], limits["contrast"], True)
    add("contrast10 p90", real.contrast10[2], other.contrast10[2], limits["contrast"], True)
    for ef, value in real.recall.items():
        if ef in other.recall:
            add(f"recall ef={ef}", value, other.recall[ef], limits["recall"], False)
    return checks


def _prepared(x: np.ndarray, metric: Metric) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return normalize_rows(x) if metric is Metric.ANGULAR else x


def _neighbour_distances(
    x: np.ndarray, metric: Metric | str, k: int, sample: int, seed: int
) -> np.ndarray:
    """Distances (m, k) from ``sample`` random rows to their k nearest other rows, rows with
    an exact duplicate left out."""
    x = _prepared(x, Metric.parse(metric))
    if len(x) <= k + 1:
        raise AnnbenchError(f"Need more than {k + 1} vectors to estimate a dimension, got {len(x)}")
    rows = np.random.default_rng(seed).choice(len(x), min(sample, len(x)), replace=False)
    distances = _knn_distances(x, x[np.sort(rows)], k + 1)[:, 1:]  # the first is the row itself
    distances = distances[distances[:, 0] > 0]
    if len(distances) < 2:
        raise AnnbenchError("Almost every vector has an exact duplicate: no dimension to estimate")
    return distances


def _knn_distances(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distances (nq, k) to the k nearest base rows, nearest first."""
    import faiss

    squared, _ = faiss.knn(queries, base, k)
    return np.sqrt(np.maximum(squared, 0.0))


def _knn_ids(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    return faiss.knn(queries, base, k)[1]


def _dot_ids(xb: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    import faiss

    base = np.ascontiguousarray(xb, np.float32)
    queries = np.ascontiguousarray(xq, np.float32)
    return faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
