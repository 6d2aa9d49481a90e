"""Ground truth checked, not trusted: shapes, dtypes, ids, ordering, and a sample recomputed.

A dataset's ``neighbors``/``distances`` decide every recall annbench reports, so a file whose
ground truth is wrong (shuffled between queries, all one id, NaN or text distances, computed
under another metric) is refused rather than measured against.
"""

from __future__ import annotations

import numpy as np

from annbench.data.groundtruth import exact_knn
from annbench.errors import AnnbenchError
from annbench.metrics import Metric, true_distances

#: Queries whose exact top-k is recomputed (seeded sample) on a dataset's first use.
SAMPLE_QUERIES = 32
#: Stored and recomputed distances agree within ``RTOL * scale + ATOL`` (float32 storage,
#: other tools' BLAS rounding); ``scale`` is the largest distance magnitude of the query.
RTOL = 1e-3
ATOL = 1e-5


def check_ground_truth(
    name: str,
    train: np.ndarray,
    test: np.ndarray,
    neighbors: np.ndarray,
    distances: np.ndarray,
    metric: Metric,
    fix: str,
    sample: int = SAMPLE_QUERIES,
    seed: int = 0,
) -> str:
    """Verify stored ground truth against the vectors; raise AnnbenchError (ending in
    ``fix``, how to recompute it) if it disagrees, else return what was checked."""
    dist = check_truth_layout(name, len(train), len(test), neighbors, distances, fix)
    nq, k = neighbors.shape
    rows = np.sort(np.random.default_rng(seed).choice(nq, size=min(sample, nq), replace=False))
    xq = test[rows]
    exact_d, _ = exact_knn(train, xq, k, metric)
    stored_d = dist[rows]
    # the distances the stored ids really have: wrong ids show even if distances look right
    of_ids = true_distances(metric, train, xq, neighbors[rows].astype(np.int64))
    tol = RTOL * np.maximum(np.abs(exact_d).max(axis=1, keepdims=True), 1.0) + ATOL
    for found, what in (
        (of_ids, "the stored neighbours' actual distances"),
        (exact_d, "the exact nearest distances"),
    ):
        gap = np.abs(stored_d - found)
        off = (gap > tol).any(axis=1)
        if off.any():
            i = int(np.argmax(off))
            j = int(np.argmax(gap[i]))
            raise AnnbenchError(
                f"{name}: stored distances disagree with {what} (query {int(rows[i])}, rank "
                f"{j + 1}: stored {stored_d[i, j]:.6g}, recomputed {found[i, j]:.6g}); {fix}"
            )
    return f"passed: shapes, ids, order; exact top-{k} of {len(rows)} sampled queries recomputed"


def check_truth_layout(
    name: str, n: int, nq: int, neighbors: np.ndarray, distances: np.ndarray, fix: str
) -> np.ndarray:
    """Cheap checks of ground truth for ``n`` base vectors and ``nq`` queries: shapes, dtypes,
    id range, no repeated id, finite distances sorted nearest first; returns float64 distances."""

    def refuse(problem: str) -> AnnbenchError:
        return AnnbenchError(f"{name}: {problem}; {fix}")

    if neighbors.ndim != 2 or neighbors.shape[0] != nq or neighbors.shape[1] == 0:
        raise refuse(f"neighbors has shape {neighbors.shape}, expected ({nq}, k)")
    if distances.shape != neighbors.shape:
        raise refuse(f"distances has shape {distances.shape}, neighbors {neighbors.shape}")
    if not np.issubdtype(neighbors.dtype, np.integer):
        raise refuse(f"neighbors must be integer ids, got dtype {neighbors.dtype}")
    if distances.dtype.kind not in "fiu":
        raise refuse(f"distances must be numbers, got dtype {distances.dtype}")
    if neighbors.min() < 0 or neighbors.max() >= n:
        raise refuse(f"neighbors holds ids outside 0..{n - 1}")
    k = neighbors.shape[1]
    if k > n:
        raise refuse(f"neighbors lists {k} ids per query but there are only {n} base vectors")
    ordered = np.sort(neighbors, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if repeated.any():
        raise refuse(f"query {int(np.argmax(repeated))} lists the same neighbour id twice")
    dist = distances.astype(np.float64)
    finite = np.isfinite(dist).all(axis=1)
    if not finite.all():
        raise refuse(f"distances of query {int(np.argmin(finite))} are NaN or infinite")
    tol = RTOL * np.abs(dist).max(axis=1, keepdims=True) + ATOL
    falling = (np.diff(dist, axis=1) < -tol).any(axis=1)
    if falling.any():
        raise refuse(f"distances of query {int(np.argmax(falling))} are not sorted nearest first")
    return dist
