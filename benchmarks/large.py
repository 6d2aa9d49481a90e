"""Large data on this machine: a 1M x 128 synthetic dataset generated and ground-truthed in
chunks, then the default faiss-hnsw sweep. Prints wall times and the worker's peak resident
memory against the size of the data plus the index (target: at most 1.5x).

    python benchmarks/large.py [--n 1000000] [--nq 1000] [--folder /tmp/annbench-large]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from annbench.data.datasets import read_dataset, write_dataset
from annbench.data.synthetic import ClusteredGaussianRows
from annbench.metrics import Metric
from annbench.results.store import ResultStore
from annbench.sweep.runner import plan_sweep, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--nq", type=int, default=1_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--backend", default="faiss-hnsw")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/annbench-large"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    path = args.folder / f"clustered-{args.n}-{args.d}.hdf5"

    start = time.perf_counter()
    if not path.exists():
        base = ClusteredGaussianRows(args.n, args.d, n_clusters=256, seed=1)
        queries = ClusteredGaussianRows(args.nq, args.d, n_clusters=256, seed=1)
        queries.seed = 2  # same mixture, other draws: held out by construction
        write_dataset(
            path,
            base,
            queries[0 : args.nq],
            Metric.EUCLIDEAN,
            attrs={"source": "benchmarks/large.py"},
        )
    made = time.perf_counter() - start
    data = read_dataset(path)
    data_bytes = data.train.nbytes + data.test.nbytes
    print(
        f"dataset {args.n:,} x {args.d}: generated + ground truth in {made:.0f} s "
        f"({data_bytes / 1e6:,.0f} MB of vectors)"
    )
    del data

    data = read_dataset(path)
    jobs = plan_sweep(data, [args.backend], runs=args.runs)
    start = time.perf_counter()
    with ResultStore(args.folder / "results") as store:
        summary = run_sweep(jobs, store, force=True)
        records = [r for r in store.records(data.name) if r.backend == args.backend]
    swept = time.perf_counter() - start
    print(
        f"{args.backend} default sweep: {summary.stored} runs, {len(summary.failed)} failed, "
        f"{swept:.0f} s wall"
    )
    print(
        f"{'build':32s} {'build s':>8s} {'index MB':>9s} {'peak RSS MB':>12s} "
        f"{'(data+index) MB':>16s} {'ratio':>6s}"
    )
    seen = set()
    for r in records:
        label = " ".join(f"{k}={v}" for k, v in r.build_params.items())
        if r.status != "ok" or label in seen:
            continue
        seen.add(label)
        footprint = data_bytes + r.index_bytes
        print(
            f"{label:32s} {r.build_s:8.1f} {r.index_bytes / 1e6:9.0f} "
            f"{r.peak_rss_bytes / 1e6:12.0f} {footprint / 1e6:16.0f} "
            f"{r.peak_rss_bytes / footprint:6.2f}"
        )
    best = max((r for r in records if r.status == "ok"), key=lambda r: r.recall)
    print(
        f"best recall@10 {best.recall:.4f} at {best.qps:,.0f} QPS "
        f"({best.build_params} {best.search_params})"
    )


if __name__ == "__main__":
    main()
