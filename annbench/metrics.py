"""Distance metrics and the recall measures computed from a run's returned ids.

Distances follow ann-benchmarks' convention, smaller is nearer:
euclidean is the L2 distance, angular is ``1 - cos``, dot is ``-<q, x>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from annbench.errors import AnnbenchError

#: A returned id counts as a tie with the k-th true neighbour when its true distance is
#: within ``TIE_RTOL * |d_k| + TIE_ATOL`` of the k-th true distance ``d_k``.
TIE_RTOL = 1e-5
TIE_ATOL = 1e-6
#: ann-benchmarks' absolute threshold for its distance-based recall.
ANN_BENCHMARKS_EPSILON = 1e-3


class Metric(str, Enum):
    """A similarity measure; the value is the ann-benchmarks ``distance`` attribute."""

    EUCLIDEAN = "euclidean"
    ANGULAR = "angular"
    DOT = "dot"

    @classmethod
    def parse(cls, name: str | Metric) -> Metric:
        """Metric from its name or a common alias (l2, cosine, ip, inner_product)."""
        if isinstance(name, Metric):
            return name
        key = str(name).strip().lower()
        found = _ALIASES.get(key)
        if found is None:
            valid = ", ".join(sorted(_ALIASES))
            raise AnnbenchError(f"Metric '{name}' not valid. Use one of: {valid}")
        return found


_ALIASES = {
    "euclidean": Metric.EUCLIDEAN,
    "l2": Metric.EUCLIDEAN,
    "angular": Metric.ANGULAR,
    "cosine": Metric.ANGULAR,
    "dot": Metric.DOT,
    "ip": Metric.DOT,
    "inner_product": Metric.DOT,
}


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def pair_distances(metric: Metric, xq: np.ndarray, xr: np.ndarray) -> np.ndarray:
    """Distance of each query ``xq (nq, d)`` to each of its rows ``xr (nq, m, d)`` -> (nq, m)."""
    xq = np.asarray(xq, dtype=np.float64)
    xr = np.asarray(xr, dtype=np.float64)
    if metric is Metric.EUCLIDEAN:
        return np.sqrt(((xr - xq[:, None, :]) ** 2).sum(axis=2))
    dots = np.einsum("qmd,qd->qm", xr, xq)
    if metric is Metric.DOT:
        return -dots
    norms = np.linalg.norm(xr, axis=2) * np.linalg.norm(xq, axis=1)[:, None]
    norms[norms == 0] = 1.0
    return 1.0 - dots / norms


def true_distances(
    metric: Metric, xb: np.ndarray, xq: np.ndarray, ids: np.ndarray, chunk: int = 256
) -> np.ndarray:
    """Exact distances of returned ``ids (nq, k)`` into ``xb`` from ``xq``; inf where id is -1."""
    out = np.full(ids.shape, np.inf, dtype=np.float64)
    for start in range(0, len(ids), chunk):
        block = ids[start : start + chunk]
        valid = (block >= 0) & (block < len(xb))
        rows = xb[np.where(valid, block, 0)]
        d = pair_distances(metric, xq[start : start + chunk], rows)
        out[start : start + chunk] = np.where(valid, d, np.inf)
    return out


@dataclass(frozen=True)
class RecallResult:
    """Per-query recall figures of one run."""

    recall: np.ndarray  # (nq,) annbench recall@k: id-based, ties counted
    ann_benchmarks_recall: np.ndarray  # (nq,) ann-benchmarks' distance-threshold recall
    duplicates: int  # ids returned more than once for the same query, summed over queries
    missing: int  # slots left empty (-1) or out of range


def recall_at_k(
    ids: np.ndarray,
    found_distances: np.ndarray,
    gt_ids: np.ndarray,
    gt_distances: np.ndarray,
    k: int,
) -> RecallResult:
    """Recall@k of returned ``ids (nq, >=k)`` against exact ground truth ``gt_* (nq, >=k)``.

    ``found_distances`` are the exact distances of the returned ids (see ``true_distances``).
    A returned id is a hit when it is among the true top-k, or when its true distance ties the
    k-th true distance (within ``TIE_RTOL``/``TIE_ATOL``). A repeated id is a miss after its
    first occurrence and is counted in ``duplicates``; -1 is a miss counted in ``missing``.
    """
    if k <= 0:
        raise AnnbenchError(f"k must be a positive integer, got {k}")
    if gt_ids.shape[1] < k:
        raise AnnbenchError(
            f"k={k} exceeds the {gt_ids.shape[1]} neighbours in the ground truth; "
            "use a smaller --k or recompute the ground truth"
        )
    ids = np.asarray(ids)[:, :k]
    found = np.asarray(found_distances, dtype=np.float64)[:, :k]
    nq, width = ids.shape
    if width < k:
        pad = k - width
        ids = np.hstack([ids, np.full((nq, pad), -1, dtype=ids.dtype)])
        found = np.hstack([found, np.full((nq, pad), np.inf)])

    kth = np.asarray(gt_distances, dtype=np.float64)[:, k - 1 : k]
    tie_threshold = kth + TIE_RTOL * np.abs(kth) + TIE_ATOL
    in_true_top = (ids[:, :, None] == gt_ids[:, None, :k]).any(axis=2)
    valid = ids >= 0
    first = _first_occurrence(ids)
    hits = valid & first & (in_true_top | (found <= tie_threshold))

    ab_hits = found <= kth + ANN_BENCHMARKS_EPSILON
    return RecallResult(
        recall=hits.sum(axis=1) / k,
        ann_benchmarks_recall=ab_hits.sum(axis=1) / k,
        duplicates=int((valid & ~first).sum()),
        missing=int((~valid).sum()),
    )


@dataclass(frozen=True)
class LabelResult:
    """Per-query label-aware retrieval figures of one run."""

    top_k_accuracy: np.ndarray  # (nq,) 1 if any of the k results has the query's label
    precision: np.ndarray  # (nq,) fraction of the k results with the query's label
    average_precision: np.ndarray  # (nq,) AP@k, normalised by min(k, items with that label)


def label_metrics(
    ids: np.ndarray, train_labels: np.ndarray, test_labels: np.ndarray, k: int
) -> LabelResult:
    """Top-k accuracy, precision@k and AP@k of returned ``ids (nq, >=k)`` by class label.

    A result is relevant when its base label equals the query's label; -1 ids and repeats of
    an id already returned are irrelevant.
    AP@k = sum over ranks j <= k of precision@j at relevant ranks, / min(k, R), where R is
    the number of base items carrying the query's label (the usual retrieval mAP@k).
    """
    ids = np.asarray(ids)[:, :k]
    valid = (ids >= 0) & _first_occurrence(ids)  # a repeated id is not a second relevant item
    retrieved = np.asarray(train_labels)[np.where(valid, ids, 0)]
    relevant = valid & (retrieved == np.asarray(test_labels)[:, None])
    hits_so_far = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, ids.shape[1] + 1)
    values, counts = np.unique(train_labels, return_counts=True)
    per_label = dict(zip(values.tolist(), counts.tolist(), strict=True))
    available = np.array([per_label.get(label, 0) for label in np.asarray(test_labels).tolist()])
    denominator = np.maximum(np.minimum(k, available), 1)
    return LabelResult(
        top_k_accuracy=relevant.any(axis=1).astype(np.float64),
        precision=relevant.sum(axis=1) / k,
        average_precision=(relevant * hits_so_far / ranks).sum(axis=1) / denominator,
    )


def _first_occurrence(ids: np.ndarray) -> np.ndarray:
    """Mask (nq, k): True where an id appears for the first time in its row."""
    order = np.argsort(ids, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(ids, order, axis=1)
    repeat = np.zeros_like(sorted_ids, dtype=bool)
    repeat[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    mask = np.empty_like(repeat)
    np.put_along_axis(mask, order, ~repeat, axis=1)
    return mask
