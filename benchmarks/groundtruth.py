"""Ground-truth speed against the machine's BLAS: GFLOP/s of annbench's exact k-NN next to
numpy's float32 matrix product on the same shapes, measured side by side in one run.

    python benchmarks/groundtruth.py [--n 200000] [--nq 10000] [--d 128] [--k 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from annbench.groundtruth import exact_knn
from annbench.metrics import Metric


def best_of(repeats: int, func) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--nq", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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

    # interleaved repeats, best of each, so both see the same machine state
    best = {"matmul": float("inf"), **{m.value: float("inf") for m in Metric}}
    for _ in range(args.repeats):
        for shape in shapes:
            best["matmul"] = min(best["matmul"], best_of(1, lambda s=shape: matmul(*s)))
        for metric in Metric:
            seconds = best_of(1, lambda m=metric: exact_knn(xb, xq, args.k, m))
            best[metric.value] = min(best[metric.value], seconds)
    print(f"n={args.n} nq={args.nq} d={args.d} k={args.k}, best of {args.repeats} interleaved")
    blas = best["matmul"]
    print(f"numpy float32 matmul     {flops / blas / 1e9:8.1f} GFLOP/s  ({blas:.2f} s)")
    for metric in Metric:
        seconds = best[metric.value]
        print(
            f"exact_knn {metric.value:10s}     {flops / seconds / 1e9:8.1f} GFLOP/s  "
            f"({seconds:.2f} s)  ratio {blas / seconds:.2f}"
        )


if __name__ == "__main__":
    main()
