"""Ground-truth speed against the machine's BLAS: GFLOP/s of annbench's exact k-NN, unfiltered
and filtered, next to numpy's float32 matrix product on the same data, measured side by side
(interleaved repeats) in one run.

    python benchmarks/groundtruth.py [--n 200000] [--nq 10000] [--d 128] [--k 100] [--repeats 3]

A filtered ground truth does the work its filters allow: 2 * d multiply-adds per (query,
allowed base vector) pair, which is what its GFLOP/s count. Filters are those annbench's
workloads make: range filters (16 windows of a uniform attribute holding the given fraction of
the base, each query drawing one) and a label filter (50 labels of Zipf-like frequencies).
Each figure is the median over repeats, with the spread (max - min) / median.
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
    work = {"numpy matmul": flops, "exact_knn": flops}
    for name, (group, masks) in filters.items():
        allowed = np.array([mask.sum() for mask in masks])[group].sum()
        work[f"filtered {name}"] = 2.0 * allowed * args.d

    runs = {name: [] for name in work}
    for _ in range(args.repeats):  # interleaved: every figure sees the same machine state
        runs["numpy matmul"].append(min(seconds(lambda s=s: matmul(*s)) for s in shapes))
        runs["exact_knn"].append(seconds(lambda: exact_knn(xb, xq, args.k, metric)))
        for name, (group, masks) in filters.items():
            runs[f"filtered {name}"].append(
                seconds(lambda g=group, m=masks: filtered_knn(xb, xq, args.k, metric, g, m))
            )
    print(
        f"n={args.n} nq={args.nq} d={args.d} k={args.k} {metric.value}, median of "
        f"{args.repeats} interleaved repeats"
    )
    reference = work["numpy matmul"] / np.median(runs["numpy matmul"])
    for name, times in runs.items():
        rates = work[name] / np.array(times)
        median = float(np.median(rates))
        spread = (rates.max() - rates.min()) / median
        print(
            f"{name:24s} {median / 1e9:8.1f} GFLOP/s  spread {spread:4.0%}  "
            f"({np.median(times):.2f} s)  ratio to matmul {median / reference:.2f}"
        )


if __name__ == "__main__":
    main()
