"""Exact k-nearest neighbours at BLAS speed, plain or filtered, in chunks so the base can
exceed memory.

Both searches work in two steps. Candidates: faiss' brute-force k-NN (one BLAS product per
block of queries and base rows, and a heap per query), or for small problems a numpy product
and a partition, keeps ``k + MARGIN`` per query, so the float32 rounding of the product cannot
push a true neighbour out (euclidean vectors are ranked from their mean, where that rounding
is smallest). Exact order: each candidate's distance is recomputed exactly, in float64 from
the vectors as given, and candidates are sorted by (distance, id): equal vectors tie exactly
and ties go to the lower id.

``knn_in_blocks`` is ``exact_knn`` over row blocks with ``tie_safe_candidates``: where more
than MARGIN vectors tie (exactly, or within float32 rounding) at the k-th place, faiss' k-NN
keeps arbitrary ones and ``_top`` the lowest ids of the band, so both can lose a true
neighbour; the tie-safe step ranks such a band by exact distance instead.
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

    best_d = np.empty((len(xq), 0), dtype=np.float64)
    best_i = np.empty((len(xq), 0), dtype=np.int64)
    queries, center, offset = None, None, 0
    with _blas_settings(faiss):
        for block in _blocks(xb, base_chunk):
            if queries is None:  # the first block sets the centre every block is ranked from
                center = _center(metric, block)
                queries = _prepared(metric, xq, center)
            keep = min(len(block), k + MARGIN)
            local = tie_safe_candidates(metric, xq, block, queries, center, keep, k)
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

    center = _center(metric, xb)
    queries = _prepared(metric, xq, center)
    out_d = np.full((len(queries), k), np.inf, dtype=np.float64)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    order = np.argsort(group, kind="stable")
    bounds = np.cumsum(np.bincount(group, minlength=len(masks)))[:-1]
    # (query rows, mask, allowed count) per group; the allowed ids are listed one group at a time
    searched = [
        (rows, mask, int(np.count_nonzero(mask)))
        for rows, mask in zip(np.split(order, bounds), masks, strict=True)
        if len(rows)
    ]
    searched = [group for group in searched if group[2]]
    # the base is prepared once, unless the groups together gather fewer rows than it holds
    whole = sum(count for *_, count in searched) >= len(xb)
    base = _prepared(metric, xb, center) if whole else None

    def candidates(rows: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Ids (into the base) of the candidates of queries ``rows`` among ``allowed``."""
        if whole:
            subset = np.take(base, allowed, axis=0)
        else:
            subset = _prepared(metric, xb[allowed], center)
        local = _candidates(queries[rows], subset, min(k + MARGIN, len(allowed)), metric)
        return np.where(local >= 0, allowed[local], -1)

    def search_small(rows: np.ndarray, mask: np.ndarray) -> None:
        found = candidates(rows, np.flatnonzero(mask))
        d, i = _rerank(metric, xq[rows], xb, found, k, threads=1)
        out_d[rows, : d.shape[1]] = d
        out_i[rows, : i.shape[1]] = i

    small = [_small(len(rows), count, k + MARGIN) for rows, _, count in searched]
    large = [group for group, is_small in zip(searched, small, strict=True) if not is_small]
    if large:
        ids = np.full((len(queries), k + MARGIN), -1, dtype=np.int64)
        with _blas_settings(faiss):
            for rows, mask, _ in large:
                found = candidates(rows, np.flatnonzero(mask))
                ids[rows, : found.shape[1]] = found
        # one re-ranking pass after all faiss calls (its idle threads spin for a while)
        rows = np.concatenate([rows for rows, *_ in large])
        out_d[rows], out_i[rows] = _rerank(metric, xq[rows], xb, ids[rows], k)
    if any(small):
        # a group per thread, each with single-threaded BLAS (idle BLAS threads would
        # otherwise spin beside ours)
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(_threads()) as pool:
            groups = compress(searched, small)
            list(pool.map(lambda group: search_small(*group[:2]), groups))
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


def _center(metric: Metric, x: np.ndarray) -> np.ndarray | None:
    """Euclidean: the mean of ``x``'s rows, subtracted before ranking. Distances do not change,
    but a large common offset would drown the float32 products in rounding."""
    if metric is not Metric.EUCLIDEAN or len(x) == 0:
        return None
    return np.mean(x, axis=0, dtype=np.float64).astype(np.float32)


def _prepared(metric: Metric, x: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Contiguous float32 rows as the search ranks them: unit-normalised under angular (zero
    rows stay zero), minus ``center`` under euclidean."""
    if metric is Metric.ANGULAR:
        import faiss

        rows = np.array(x, dtype=np.float32, order="C", copy=True)
        faiss.normalize_L2(rows)  # in place, in threads
        return rows
    rows = np.ascontiguousarray(x, dtype=np.float32)
    if center is not None:
        rows = rows - center
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
        out[start : start + step] = _top(scores, keep)
    return out


def _top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Positions of the ``keep`` largest scores per row. Scores within float32 rounding
    (``TIE_RTOL``) of the last one kept count as ties, and among ties the lowest positions
    (ids) are kept: equal vectors can score a few ulps apart in a BLAS product."""
    n = scores.shape[1]
    part = np.argpartition(scores, n - keep, axis=1)
    top = part[:, n - keep :]
    kth = np.take_along_axis(scores, part[:, n - keep : n - keep + 1], axis=1)
    best = np.take_along_axis(scores, top, axis=1).max(axis=1, keepdims=True)
    tol = TIE_RTOL * np.maximum(np.abs(kth), np.abs(best))
    for row in np.flatnonzero((scores >= kth - tol).sum(axis=1) > keep):  # ties at the edge
        above = np.flatnonzero(scores[row] > kth[row, 0] + tol[row, 0])
        tied = np.flatnonzero(np.abs(scores[row] - kth[row, 0]) <= tol[row, 0])
        top[row] = np.concatenate([above, tied[: keep - len(above)]])
    return top


#: Relative difference of two float32 product scores still taken for a tie by ``_top``.
TIE_RTOL = 1e-5


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
    dots = np.einsum("qmd,qd->qm", near, query)  # one order of sums: equal vectors tie
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


def knn_in_blocks(
    blocks: Iterable[np.ndarray],
    xq: np.ndarray,
    k: int,
    metric: Metric,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``exact_knn`` over consecutive row blocks, with candidates from ``tie_safe_candidates``:
    the exact top-k by (distance, id) however many vectors tie, in whatever blocks.

    A block may be overwritten once the next one is asked for. Re-ranking runs in ``threads``
    threads (default: one per CPU). Memory beside the block: the running best, one block's
    ranked copy and at most NUMPY_SCORES scores at once, O(rows x d + nq x (k + rows))
    (``annbench.data.scale_truth.streamed_peak_bytes`` states it in bytes).
    """
    import faiss

    best_d = np.empty((len(xq), 0), dtype=np.float64)
    best_i = np.empty((len(xq), 0), dtype=np.int64)
    queries, center, offset = None, None, 0
    with _blas_settings(faiss):
        for block in blocks:
            if queries is None:  # as in exact_knn, the first block sets the centre
                center = _center(metric, block)
                queries = _prepared(metric, xq, center)
            keep = min(len(block), k + MARGIN)
            local = tie_safe_candidates(metric, xq, block, queries, center, keep, k)
            best_d, best_i = _rerank(
                metric, xq, block, local, k + MARGIN, offset, best_d, best_i, threads
            )
            offset += len(block)
            if progress is not None:
                progress(offset)
    return best_d[:, :k], best_i[:, :k]


def tie_safe_candidates(
    metric: Metric,
    xq: np.ndarray,
    xb: np.ndarray,
    queries: np.ndarray,
    center: np.ndarray | None,
    keep: int,
    k: int,
) -> np.ndarray:
    """Ids (nq, keep) into ``xb`` that hold every query's exact top-k among ``xb`` by
    (distance, id), ties included; ``queries`` are ``xq`` as ``_prepared`` ranks them.

    Float32 scores (faiss' k-NN for large blocks, numpy's product for small ones) find the
    ``keep`` best. Scores within ``TIE_RTOL`` of a query's scale (``_tolerances``) may be in
    either order, so where the k-th and the ``keep``-th score are that close, the vectors
    scoring within it of the k-th (the band) could all be nearest: a band larger than
    ``keep`` is ranked by exact distance and ascending id, in slabs, and its ``keep`` best
    kept. (faiss cuts a group of equal scores anywhere, and ``_top`` keeps a band's lowest
    ids whatever their distances: ``_candidates`` alone could lose a tied or nearer id.)
    """
    if keep >= len(xb):
        return np.broadcast_to(np.arange(len(xb)), (len(xq), len(xb))).copy()
    base = _prepared(metric, xb, center)
    tolerance = _tolerances(metric, queries, base)
    if _small(len(queries), len(base), keep):
        return _band_candidates(
            metric, xq, xb, queries, base, np.arange(len(xq)), keep, k, tolerance
        )
    import faiss

    faiss_metric = faiss.METRIC_L2 if metric is Metric.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
    scores, ids = faiss.knn(queries, base, keep, metric=faiss_metric)
    gap = np.abs(scores[:, keep - 1].astype(np.float64) - scores[:, k - 1])
    if metric is Metric.EUCLIDEAN:
        gap /= 2  # faiss' squared distances are |q|^2 - 2 x numpy's score
    risky = np.flatnonzero(gap <= tolerance)
    if len(risky):
        ids[risky] = _band_candidates(metric, xq, xb, queries, base, risky, keep, k, tolerance)
    return ids


def _tolerances(metric: Metric, queries: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per query, how far apart two float32 scores (numpy's: q.x, minus |x|^2 / 2 under
    euclidean) may be and still be in either order: TIE_RTOL of their scale, |q| |x|max
    (plus |x|max^2 / 2 under euclidean)."""
    q_norms = np.sqrt(np.einsum("qd,qd->q", queries, queries, dtype=np.float64))
    top = 0.0
    for start in range(0, len(base), 65536):  # the largest row norm, a bounded slab at a time
        rows = base[start : start + 65536]
        top = max(top, float(np.einsum("nd,nd->n", rows, rows, dtype=np.float64).max()))
    scale = q_norms * np.sqrt(top)
    if metric is Metric.EUCLIDEAN:
        scale += top / 2
    return TIE_RTOL * scale


def _band_candidates(
    metric: Metric,
    xq: np.ndarray,
    xb: np.ndarray,
    queries: np.ndarray,
    base: np.ndarray,
    rows: np.ndarray,
    keep: int,
    k: int,
    tolerance: np.ndarray,
) -> np.ndarray:
    """Ids (len(rows), keep) into ``xb`` holding the exact top-k of queries ``rows``: numpy's
    scores of a bounded block of queries at a time; the ``keep`` best scores where no more
    than ``keep`` score within ``tolerance`` of the k-th, else the band ranked exactly."""
    n = len(base)
    out = np.empty((len(rows), keep), dtype=np.int64)
    half_norms = np.einsum("nd,nd->n", base, base) / 2 if metric is Metric.EUCLIDEAN else None
    step = max(1, NUMPY_SCORES // n)
    for start in range(0, len(rows), step):
        span = rows[start : start + step]
        scores = queries[span] @ base.T  # larger is nearer
        if half_norms is not None:
            scores -= half_norms
        kth = np.partition(scores, n - k, axis=1)[:, n - k : n - k + 1]
        floor = kth - tolerance[span, None]
        wide = np.flatnonzero((scores >= floor).sum(axis=1) > keep)
        out[start : start + len(span)] = np.argpartition(scores, n - keep, axis=1)[:, n - keep :]
        for j in wide:
            band = np.flatnonzero(scores[j] >= floor[j, 0])
            out[start + j] = _exact_best(metric, xq[span[j]], xb, band, keep)
    return out


#: Band vectors whose exact distances are computed at once (float64 rows of the base).
BAND_SLAB = 8192


def _exact_best(
    metric: Metric, q: np.ndarray, xb: np.ndarray, band: np.ndarray, keep: int
) -> np.ndarray:
    """The ``keep`` ids of ``band`` nearest to query ``q`` by (exact distance, id), computed
    BAND_SLAB rows at a time."""
    best_d = np.empty(0, dtype=np.float64)
    best_i = np.empty(0, dtype=np.int64)
    for start in range(0, len(band), BAND_SLAB):
        ids = band[start : start + BAND_SLAB]
        d = _exact(metric, q[None, :], xb, ids[None, :])[0]
        d, ids = np.concatenate([best_d, d]), np.concatenate([best_i, ids])
        order = np.lexsort((ids, d))[:keep]
        best_d, best_i = d[order], ids[order]
    return best_i


def merge_knn(
    parts: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``(distances, ids)`` per query among partial results, each the exact
    top-k (nq, <=k) of a disjoint part of the base with ids into the whole base, sorted as
    ``exact_knn`` sorts: by distance, ties by ascending id."""
    parts = list(parts)
    distances = np.hstack([d for d, _ in parts])
    ids = np.hstack([i for _, i in parts])
    order = np.lexsort((ids, distances), axis=1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1)
