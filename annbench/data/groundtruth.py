"""Exact k-nearest neighbours at BLAS speed, in chunks so the base can exceed one block."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from annbench.metrics import Metric, normalize_rows, pair_distances

GT_K = 100


def exact_knn(
    xb: np.ndarray | Iterable[np.ndarray],
    xq: np.ndarray,
    k: int,
    metric: Metric,
    base_chunk: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(distances, ids)`` of shape (nq, k), nearest first, ids ascending among ties.

    ``xb`` is an array (processed in blocks of ``base_chunk`` rows, default about 256 MB) or
    an iterable of consecutive row blocks (for bases larger than memory);
    ``progress`` is called with the number of base rows done after each block.
    Each block's best candidates come from faiss' brute-force k-NN (one BLAS matrix product
    and a heap per query, at close to BLAS speed); their distances are then recomputed exactly
    in float64 and merged, so ties and near-ties are ordered consistently (ids ascending).
    """
    import faiss

    faiss_metric = faiss.METRIC_L2 if metric is Metric.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
    with _blas_blocks(faiss):
        return _exact_knn(xb, xq, k, metric, base_chunk, progress, faiss_metric)


#: faiss' brute-force k-NN multiplies blocks of this many queries by this many base rows (64 MB
#: of float32 products); its defaults (4096 x 1024) spend more time on heap updates than BLAS.
QUERY_BLOCK = 1024
BASE_BLOCK = 16384


@contextmanager
def _blas_blocks(faiss: Any) -> Iterator[None]:
    cvar = faiss.cvar
    saved = cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs
    cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = (
        QUERY_BLOCK,
        BASE_BLOCK,
    )
    try:
        yield
    finally:
        cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = saved


def _exact_knn(
    xb: np.ndarray | Iterable[np.ndarray],
    xq: np.ndarray,
    k: int,
    metric: Metric,
    base_chunk: int | None,
    progress: Callable[[int], None] | None,
    faiss_metric: int,
) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    xq32 = np.ascontiguousarray(xq, dtype=np.float32)
    if metric is Metric.ANGULAR:
        xq32 = normalize_rows(xq32)
    nq = len(xq32)
    best_d = np.empty((nq, 0), dtype=np.float64)
    best_i = np.empty((nq, 0), dtype=np.int64)
    offset = 0
    for block in _blocks(xb, base_chunk):
        block = np.ascontiguousarray(block, dtype=np.float32)
        ranked = normalize_rows(block) if metric is Metric.ANGULAR else block
        # a margin past k so float32 rounding in the ranking cannot lose a true neighbour
        keep = min(len(block), k + 16)
        if len(xq32) * len(ranked) <= SMALL_PRODUCT:
            top = _small_candidates(xq32, ranked, keep, metric)
        else:
            _, top = faiss.knn(xq32, ranked, keep, metric=faiss_metric)
        cand_d = _exact(metric, xq, block, top)
        merged_d = np.hstack([best_d, cand_d])
        merged_i = np.hstack([best_i, top + offset])
        order = np.lexsort((merged_i, merged_d), axis=1)[:, : k + 16]
        best_d = np.take_along_axis(merged_d, order, axis=1)
        best_i = np.take_along_axis(merged_i, order, axis=1)
        offset += len(block)
        if progress is not None:
            progress(offset)
    return best_d[:, :k], best_i[:, :k]


#: Below this many (query, base) pairs one numpy product and a partition beat faiss' k-NN,
#: whose threads synchronise several times per call (costly on a busy machine).
SMALL_PRODUCT = 1 << 24


def _small_candidates(xq: np.ndarray, xb: np.ndarray, keep: int, metric: Metric) -> np.ndarray:
    """Ids (nq, keep) of the ``keep`` best base rows per query, unordered (float32 scores)."""
    scores = xq @ xb.T
    if metric is Metric.EUCLIDEAN:
        scores = np.einsum("nd,nd->n", xb, xb)[None, :] - 2 * scores
    else:
        np.negative(scores, out=scores)
    if keep >= len(xb):
        return np.broadcast_to(np.arange(len(xb)), scores.shape).copy()
    return np.argpartition(scores, keep - 1, axis=1)[:, :keep]


def _blocks(xb: np.ndarray | Iterable[np.ndarray], size: int | None) -> Iterable[np.ndarray]:
    if isinstance(xb, np.ndarray):
        size = size or block_rows(xb.shape[1])
        return (xb[i : i + size] for i in range(0, len(xb), size))
    return xb


def block_rows(d: int, block_bytes: int = 256 << 20) -> int:
    """Rows of ``d`` float32 dimensions per base block: few blocks, bounded memory."""
    return max(65536, block_bytes // (4 * d))


def _exact(metric: Metric, xq: np.ndarray, block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float64 distances from each query to ``block[rows[q]]``, in query chunks (as
    ``pair_distances``, with the base norms computed once per block)."""
    if metric is Metric.EUCLIDEAN:
        out = np.empty(rows.shape, dtype=np.float64)
        step = 256
        for s in range(0, len(xq), step):
            out[s : s + step] = pair_distances(metric, xq[s : s + step], block[rows[s : s + step]])
        return out
    xq64 = np.asarray(xq, dtype=np.float64)
    dots = np.empty(rows.shape, dtype=np.float64)
    step = 256
    for s in range(0, len(xq), step):
        near = block[rows[s : s + step]].astype(np.float64)
        dots[s : s + step] = np.einsum("qmd,qd->qm", near, xq64[s : s + step])
    if metric is Metric.DOT:
        return -dots
    used = np.unique(rows)
    norms = np.zeros(len(block), dtype=np.float64)
    sub = block[used].astype(np.float64)
    norms[used] = np.sqrt(np.einsum("nd,nd->n", sub, sub))
    pair_norms = norms[rows] * np.sqrt(np.einsum("qd,qd->q", xq64, xq64))[:, None]
    pair_norms[pair_norms == 0] = 1.0
    return 1.0 - dots / pair_norms


def filtered_knn(
    xb: np.ndarray,
    xq: np.ndarray,
    k: int,
    metric: Metric,
    group: np.ndarray,
    masks: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(distances, ids)`` (nq, k) among allowed base vectors only: query ``q`` may
    return the rows where ``masks[group[q]]`` (bool, (n,)) is True. Slots past a query's
    allowed count hold id -1 and distance inf.

    The queries of each group are searched with ``exact_knn`` over their allowed rows alone,
    so the work is the selectivity times the unfiltered work, in BLAS-sized products; ties
    stay ordered by id (allowed rows keep their order).
    """
    nq = len(xq)
    distances = np.full((nq, k), np.inf, dtype=np.float64)
    ids = np.full((nq, k), -1, dtype=np.int64)
    order = np.argsort(group, kind="stable")
    bounds = np.cumsum(np.bincount(group, minlength=len(masks)))[:-1]
    for rows, mask in zip(np.split(order, bounds), masks, strict=True):
        allowed = np.flatnonzero(mask)
        if len(rows) == 0 or len(allowed) == 0:
            continue
        d, i = exact_knn(xb[allowed], xq[rows], min(k, len(allowed)), metric)
        distances[rows, : i.shape[1]] = d
        ids[rows, : i.shape[1]] = allowed[i]
    return distances, ids
