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
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(args.n, args.d)).astype(np.float32)
    xq = rng.normal(size=(args.nq, args.d)).astype(np.float32)
    flops = 2.0 * args.n * args.nq * args.d

    chunk = 65536
    blas = best_of(
        args.repeats, lambda: [xq @ xb[s : s + chunk].T for s in range(0, args.n, chunk)]
    )
    print(f"n={args.n} nq={args.nq} d={args.d} k={args.k}")
    print(f"numpy float32 matmul     {flops / blas / 1e9:8.1f} GFLOP/s  ({blas:.2f} s)")
    for metric in Metric:
        gt = best_of(args.repeats, lambda m=metric: exact_knn(xb, xq, args.k, m))
        print(
            f"exact_knn {metric.value:10s}     {flops / gt / 1e9:8.1f} GFLOP/s  ({gt:.2f} s)  "
            f"ratio {blas / gt:.2f}"
        )


if __name__ == "__main__":
    main()
