"""Noise check: the same sweep twice, side by side in one run; prints how far each run's
median QPS moved between the two (target: within +-5%) and whether recall was identical.

    python benchmarks/reproducibility.py [--backend faiss-hnsw] [--runs 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from annbench.datasets import DEFAULT_DATASET, read_dataset, resolve_dataset
from annbench.runner import plan_sweep, run_sweep
from annbench.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--backend", default="faiss-hnsw")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mode", default="single")
    args = parser.parse_args()
    data = read_dataset(resolve_dataset(args.dataset))
    jobs = plan_sweep(data, [args.backend], runs=args.runs, mode=args.mode, build_threads=1)
    sweeps = []
    with tempfile.TemporaryDirectory() as folder:
        for attempt in ("first", "second"):
            with ResultStore(Path(folder) / attempt) as store:
                run_sweep(jobs, store)
                sweeps.append({r.key: r for r in store.records() if r.status == "ok"})
    first, second = sweeps
    print(
        f"{data.name}, {args.backend}, {args.mode} mode, {args.runs} repeats per run, "
        "build on one thread (deterministic graphs)"
    )
    print(
        f"{'build':28s} {'search':16s} {'QPS 1st':>9s} {'QPS 2nd':>9s} {'change':>7s} "
        f"{'spread':>7s} {'recall equal':>12s}"
    )
    changes = []
    for key, a in first.items():
        b = second.get(key)
        if b is None:
            continue
        change = b.qps / a.qps - 1
        changes.append(change)
        build = " ".join(f"{k}={v}" for k, v in a.build_params.items())
        search = " ".join(f"{k}={v}" for k, v in a.search_params.items())
        print(
            f"{build:28s} {search:16s} {a.qps:9,.0f} {b.qps:9,.0f} {change:+7.1%} "
            f"{a.qps_spread:7.1%} {str(a.recall == b.recall):>12s}"
        )
    changes = np.abs(changes)
    print(
        f"median |change| {np.median(changes):.1%}, max {changes.max():.1%}, "
        f"{(changes <= 0.05).mean():.0%} of runs within +-5%"
    )


if __name__ == "__main__":
    main()
