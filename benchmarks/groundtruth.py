"""Ground-truth speed against the machine's BLAS: GFLOP/s of annbench's exact k-NN, unfiltered
and filtered, next to numpy's float32 matrix product on the same data, measured side by side
(interleaved repeats) in one run.

    python benchmarks/groundtruth.py [--n 200000] [--nq 10000] [--d 128] [--k 100] [--repeats 3]

Two columns count the work two ways, 2 * d flops per pair:
- per (query, base) pair: the size of the ground-truth problem, nq * n pairs with or without a
  filter; the unit of numpy's matmul and of the unfiltered ground truth;
- per allowed pair: only the (query, base vector) pairs the filters allow, the work left to do
  once the filter is known.
Filters are those annbench's workloads make: range filters (16 windows of a uniform attribute
holding the given fraction of the base, each query drawing one) and a label filter (50 labels
of Zipf-like frequencies). Each figure is the median over repeats, with the spread
(max - min) / median of the time; each timed call starts after a pause, so idle BLAS threads
still spinning from the call before do not slow it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from annbench.data.groundtruth import exact_knn, filtered_knn
from annbench.metrics import Metric


def seconds(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def faiss_candidates(xb: np.ndarray, xq: np.ndarray, k: int, metric: Metric) -> None:
    """The control: faiss' k-NN of the k + MARGIN candidates exact_knn starts from, with its
    block sizes, and no exact re-ranking (what BLAS plus a heap per query cost)."""
    import faiss

    from annbench.data.groundtruth import MARGIN, _blas_settings, _prepared

    faiss_metric = faiss.METRIC_L2 if metric is Metric.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
    with _blas_settings(faiss):
        faiss.knn(_prepared(metric, xq), _prepared(metric, xb), k + MARGIN, metric=faiss_metric)


def range_filter(n: int, nq: int, fraction: float, rng: np.random.Generator, windows: int = 16):
    """``(group, masks)`` as annbench's range workloads build them, on a uniform attribute."""
    order = np.argsort(rng.random(n))
    width = max(1, round(fraction * n))
    starts = rng.choice(n - width + 1, size=min(windows, n - width + 1), replace=False)
    masks = []
    for start in starts:
        mask = np.zeros(n, bool)
        mask[order[start : start + width]] = True
        masks.append(mask)
    return rng.integers(len(masks), size=nq), masks


def label_filter(n: int, nq: int, rng: np.random.Generator, labels: int = 50):
    """``(group, masks)`` of a same-label filter with Zipf-like label frequencies."""
    weights = 1 / np.arange(1, labels + 1)
    weights /= weights.sum()
    base = rng.choice(labels, size=n, p=weights)
    query = rng.choice(labels, size=nq, p=weights)
    return query, [base == label for label in range(labels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--nq", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--metric", default="angular", help="euclidean, angular or dot")
    args = parser.parse_args()
    metric = Metric.parse(args.metric)
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(args.n, args.d)).astype(np.float32)
    xq = rng.normal(size=(args.nq, args.d)).astype(np.float32)
    flops = 2.0 * args.n * args.nq * args.d

    def matmul(query_rows: int, base_rows: int) -> None:
        for q in range(0, args.nq, query_rows):
            for s in range(0, args.n, base_rows):
                xq[q : q + query_rows] @ xb[s : s + base_rows].T

    # numpy's best blocking is the reference: small outputs stay in cache
    shapes = [(args.nq, 65536), (4096, 16384), (1024, 8192), (256, 4096)]
    filters = {f"range:{f:g}": range_filter(args.n, args.nq, f, rng) for f in (0.01, 0.1, 0.5)}
    filters["label"] = label_filter(args.n, args.nq, rng)
    problem = flops  # every filtered ground truth solves a problem of nq * n pairs
    work = {"numpy matmul": flops, "faiss.knn (control)": flops, "exact_knn": flops}
    for name, (group, masks) in filters.items():
        allowed = np.array([mask.sum() for mask in masks])[group].sum()
        work[f"filtered {name}"] = 2.0 * allowed * args.d

    runs = {name: [] for name in work}
    for _ in range(args.repeats):  # interleaved: every figure sees the same machine state
        runs["numpy matmul"].append(min(settled(lambda s=s: matmul(*s)) for s in shapes))
        runs["faiss.knn (control)"].append(
            settled(lambda: faiss_candidates(xb, xq, args.k, metric))
        )
        runs["exact_knn"].append(settled(lambda: exact_knn(xb, xq, args.k, metric)))
        for name, (group, masks) in filters.items():
            runs[f"filtered {name}"].append(
                settled(lambda g=group, m=masks: filtered_knn(xb, xq, args.k, metric, g, m))
            )
    print(
        f"n={args.n} nq={args.nq} d={args.d} k={args.k} {metric.value}, median of "
        f"{args.repeats} interleaved repeats"
    )
    print(f"{'':24s} {'seconds':>8s} {'spread':>7s}   per (query, base) pair   per allowed pair")
    reference = np.median(runs["numpy matmul"])
    for name, times in runs.items():
        median = float(np.median(times))
        spread = (max(times) - min(times)) / median
        columns = [
            f"{rate / 1e9:7.1f} GFLOP/s {rate / (problem / reference):5.2f}"
            for rate in (problem / median, work[name] / median)
        ]
        print(f"{name:24s} {median:8.3f} {spread:6.0%}   " + "   ".join(columns))
    print("ratios are to numpy's matmul. The control is faiss' k-NN alone (BLAS and a heap per")
    print("query, no exact re-ranking). Per allowed pair, re-ranking k+16 exact candidates per")
    print("query is a fixed cost that dominates at low selectivity")


def settled(func) -> float:
    """Seconds ``func`` takes, started after BLAS and OpenMP threads have gone idle."""
    time.sleep(PAUSE)
    return seconds(func)


#: Seconds to let BLAS threads stop spinning (OpenBLAS spins up to about 0.1 s after a call).
PAUSE = 0.3


if __name__ == "__main__":
    main()
