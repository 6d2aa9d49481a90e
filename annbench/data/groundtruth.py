"""Exact k-nearest neighbours at BLAS speed, plain or filtered, in chunks so the base can
exceed memory.

Both searches work in two steps. Candidates: faiss' brute-force k-NN (one BLAS product per
block of queries and base rows, and a heap per query) keeps ``k + MARGIN`` per query, so the
float32 rounding of the product cannot push a true neighbour out. Exact order: each candidate's
distance is recomputed exactly, in float64 from the vectors as given, and candidates are
sorted by (distance, id): equal vectors tie exactly and ties go to the lower id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import compress
from typing import Any

import numpy as np

from annbench.metrics import Metric

GT_K = 100
#: Candidates kept past k per query (and block), for the rounding of the BLAS product.
MARGIN = 16


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
    """
    import faiss

    queries = _prepared(metric, xq)
    best_d = np.empty((len(queries), 0), dtype=np.float64)
    best_i = np.empty((len(queries), 0), dtype=np.int64)
    offset = 0
    with _blas_settings(faiss):
        for block in _blocks(xb, base_chunk):
            local = _candidates(
                queries, _prepared(metric, block), min(len(block), k + MARGIN), metric
            )
            best_d, best_i = _rerank(metric, xq, block, local, k + MARGIN, offset, best_d, best_i)
            offset += len(block)
            if progress is not None:
                progress(offset)
    return best_d[:, :k], best_i[:, :k]


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

    The queries of each group are searched over their allowed rows alone (gathered once per
    group), so the work is the selectivity times the unfiltered work, in BLAS-sized products.
    """
    import faiss
    from threadpoolctl import threadpool_limits

    queries = _prepared(metric, xq)
    out_d = np.full((len(queries), k), np.inf, dtype=np.float64)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    order = np.argsort(group, kind="stable")
    bounds = np.cumsum(np.bincount(group, minlength=len(masks)))[:-1]
    searched = [
        (rows, np.flatnonzero(mask))
        for rows, mask in zip(np.split(order, bounds), masks, strict=True)
        if len(rows) and mask.any()
    ]
    # the base is prepared once, unless the groups together gather fewer rows than it holds
    whole = sum(len(allowed) for _, allowed in searched) >= len(xb)
    base = _prepared(metric, xb) if whole else None

    def candidates(
        rows: np.ndarray, allowed: np.ndarray, raw: np.ndarray | None = None
    ) -> np.ndarray:
        """Positions in ``allowed`` of the candidates of queries ``rows`` (``raw``: the
        allowed vectors, if already gathered)."""
        if whole:
            subset = np.take(base, allowed, axis=0)
        else:
            subset = _prepared(metric, xb[allowed] if raw is None else raw)
        return _candidates(queries[rows], subset, min(k + MARGIN, len(allowed)), metric)

    def search_small(rows: np.ndarray, allowed: np.ndarray) -> None:
        # exact distances from the group's own rows (in cache); allowed ascends, so ties
        # ordered by position there are ordered by id
        raw = xb[allowed]
        d, i = _rerank(metric, xq[rows], raw, candidates(rows, allowed, raw), k, threads=1)
        out_d[rows, : d.shape[1]] = d
        out_i[rows, : i.shape[1]] = np.where(i >= 0, allowed[i], -1)

    small = [_small(len(rows), len(allowed), k + MARGIN) for rows, allowed in searched]
    large = [pair for pair, is_small in zip(searched, small, strict=True) if not is_small]
    if large:
        ids = np.full((len(queries), k + MARGIN), -1, dtype=np.int64)
        with _blas_settings(faiss):
            for rows, allowed in large:
                local = candidates(rows, allowed)
                ids[rows, : local.shape[1]] = np.where(local >= 0, allowed[local], -1)
        # one re-ranking pass after all faiss calls (its idle threads spin for a while)
        rows = np.concatenate([rows for rows, _ in large])
        out_d[rows], out_i[rows] = _rerank(metric, xq[rows], xb, ids[rows], k)
    if any(small):
        # a group per thread, each with single-threaded BLAS (idle BLAS threads would
        # otherwise spin beside ours)
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(_threads()) as pool:
            list(pool.map(lambda pair: search_small(*pair), compress(searched, small)))
    return out_d, out_i


#: faiss' brute-force k-NN multiplies blocks of this many queries by this many base rows:
#: products small enough to stay in cache between the BLAS call and the heap updates.
QUERY_BLOCK = 512
BASE_BLOCK = 4096
#: numpy's product and partition beat faiss' k-NN below this many (query, base) pairs (faiss'
#: threads start and synchronise per call), or when the base holds at most this many times the
#: candidates kept (faiss' heaps then take most rows in, one by one).
SMALL_PRODUCT = 1 << 20
SMALL_BASE_PER_KEEP = 64
#: (query, base) scores per numpy product: 16 MB of float32.
NUMPY_SCORES = 1 << 22


@contextmanager
def _blas_settings(faiss: Any) -> Iterator[None]:
    """faiss' k-NN with our block sizes, and BLAS for any number of queries (faiss 1.15
    computes a batch with nq * d under 128,000 pair by pair: 4x slower per score)."""
    cvar = faiss.cvar
    names = (
        "distance_compute_blas_query_bs",
        "distance_compute_blas_database_bs",
        "distance_compute_blas_threshold",
    )
    saved = [getattr(cvar, name) for name in names]
    for name, value in zip(names, (QUERY_BLOCK, BASE_BLOCK, 20), strict=True):
        setattr(cvar, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(cvar, name, value)


def _prepared(metric: Metric, x: np.ndarray) -> np.ndarray:
    """Contiguous float32 rows as the search compares them: unit-normalised under angular
    (zero rows stay zero)."""
    if metric is not Metric.ANGULAR:
        return np.ascontiguousarray(x, dtype=np.float32)
    import faiss

    rows = np.array(x, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(rows)  # in place, in threads
    return rows


def _candidates(queries: np.ndarray, base: np.ndarray, keep: int, metric: Metric) -> np.ndarray:
    """Ids (nq, keep) of the ``keep`` best base rows per query by the float32 product,
    unordered; ``keep <= len(base)``."""
    if _small(len(queries), len(base), keep):
        return _numpy_candidates(queries, base, keep, metric)
    import faiss

    faiss_metric = faiss.METRIC_L2 if metric is Metric.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
    _, ids = faiss.knn(queries, base, keep, metric=faiss_metric)
    return ids


def _small(nq: int, n: int, keep: int) -> bool:
    """Whether numpy's product and partition find the candidates faster than faiss."""
    return nq * n <= SMALL_PRODUCT or n <= SMALL_BASE_PER_KEEP * keep


def _threads() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _numpy_candidates(
    queries: np.ndarray, base: np.ndarray, keep: int, metric: Metric
) -> np.ndarray:
    """``_candidates`` by numpy products and ``argpartition``, a bounded block of queries at
    a time."""
    if keep >= len(base):
        return np.broadcast_to(np.arange(len(base)), (len(queries), len(base))).copy()
    out = np.empty((len(queries), keep), dtype=np.int64)
    half_norms = np.einsum("nd,nd->n", base, base) / 2 if metric is Metric.EUCLIDEAN else None
    step = max(1, NUMPY_SCORES // len(base))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ base.T  # larger is nearer
        if half_norms is not None:
            scores -= half_norms
        out[start : start + step] = np.argpartition(scores, len(base) - keep, axis=1)[:, -keep:]
    return out


def _rerank(
    metric: Metric,
    xq: np.ndarray,
    xb: np.ndarray,
    ids: np.ndarray,
    k: int,
    offset: int = 0,
    best_d: np.ndarray | None = None,
    best_i: np.ndarray | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest (float64 distances, ids) per query among candidates ``xb[ids]``
    (reported as ``ids + offset``; -1 is no candidate) and the earlier ``best_*``, sorted by
    (distance, id). Distances are exact, from the vectors as given; query chunks run in
    ``threads`` threads (default: one per CPU; numpy releases the GIL)."""
    from threadpoolctl import threadpool_limits

    nq, m = ids.shape
    width = min(k, m + (0 if best_d is None else best_d.shape[1]))
    # angular: norms of the whole base once, where that is less work than one per candidate
    threads = threads or _threads()
    norms = _row_norms(xb, threads) if metric is Metric.ANGULAR and len(xb) <= ids.size else None
    out_d = np.full((nq, width), np.inf, dtype=np.float64)
    out_i = np.full((nq, width), -1, dtype=np.int64)

    def chunk(start: int) -> None:
        span = slice(start, start + DISTANCE_CHUNK)
        rows = ids[span]
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        distances = np.where(valid, _exact(metric, xq[span], xb, safe, norms), np.inf)
        found = np.where(valid, rows + offset, -1)
        if best_d is not None:
            distances = np.hstack([best_d[span], distances])
            found = np.hstack([best_i[span], found])
        order = np.lexsort((found, distances), axis=1)[:, :width]
        out_d[span] = np.take_along_axis(distances, order, axis=1)
        out_i[span] = np.take_along_axis(found, order, axis=1)

    starts = range(0, nq, DISTANCE_CHUNK)
    if threads == 1 or len(starts) == 1:
        _each(chunk, starts, 1)
    else:
        # single-threaded BLAS in our threads: idle BLAS threads would spin beside them
        with threadpool_limits(1, user_api="blas"):
            _each(chunk, starts, threads)
    return out_d, out_i


#: Queries per re-ranking chunk: their candidate rows stay in cache.
DISTANCE_CHUNK = 32


def _exact(
    metric: Metric,
    xq: np.ndarray,
    xb: np.ndarray,
    rows: np.ndarray,
    norms: np.ndarray | None = None,
) -> np.ndarray:
    """float64 distance (nq, m) from each query ``xq[q]`` to ``xb[rows[q]]``; ``norms``: the
    float64 norms of ``xb``'s rows, if known (angular)."""
    near = np.take(xb, rows, axis=0).astype(np.float64)
    query = np.asarray(xq, dtype=np.float64)
    if metric is Metric.EUCLIDEAN:
        near -= query[:, None, :]
        return np.sqrt(np.einsum("qmd,qmd->qm", near, near))
    dots = np.matmul(near, query[:, :, None])[:, :, 0]
    if metric is Metric.DOT:
        return -dots
    near_norms = norms[rows] if norms is not None else np.sqrt(np.einsum("qmd,qmd->qm", near, near))
    scale = near_norms * np.sqrt(np.einsum("qd,qd->q", query, query))[:, None]
    scale[scale == 0] = 1.0
    return 1.0 - dots / scale


def _row_norms(x: np.ndarray, threads: int) -> np.ndarray:
    """float64 L2 norm of every row of ``x``, blocks of rows in ``threads`` threads."""
    out = np.empty(len(x), dtype=np.float64)
    step = 8192

    def block(start: int) -> None:
        rows = np.asarray(x[start : start + step], dtype=np.float64)
        out[start : start + step] = np.sqrt(np.einsum("nd,nd->n", rows, rows))

    _each(block, range(0, len(x), step), threads)
    return out


def _each(func: Callable[[int], None], starts: range, threads: int) -> None:
    """``func(start)`` for every start, in ``threads`` threads."""
    if threads == 1 or len(starts) == 1:
        for start in starts:
            func(start)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(func, starts))


def _blocks(xb: np.ndarray | Iterable[np.ndarray], size: int | None) -> Iterable[np.ndarray]:
    if isinstance(xb, np.ndarray):
        size = size or block_rows(xb.shape[1])
        return (xb[i : i + size] for i in range(0, len(xb), size))
    return xb


def block_rows(d: int, block_bytes: int = 256 << 20) -> int:
    """Rows of ``d`` float32 dimensions per base block: few blocks, bounded memory."""
    return max(65536, block_bytes // (4 * d))
