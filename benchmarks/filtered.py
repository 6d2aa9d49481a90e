"""Filtered search on the bundled dataset: per backend and strategy, the best QPS at recall@10
>= 0.9 under range filters of 1%, 10% and 50% selectivity and the same-label filter, next to
brute force over the allowed vectors.

    python benchmarks/filtered.py [--attribute installed_size_kb|random] [--mode batch]
                                  [--backend hnswlib --backend ...] [--runs 1]

Runs the real pipeline (plan_sweep, one worker process per build, the results store) into a
temporary results folder, on small grids, so it takes a few minutes on 2 cores. A cell shows
the best QPS among settings reaching the recall target, or the best recall reached in
brackets when none did. Batch mode (the default here) searches the queries sharing a filter
in one call per filter, on one thread; single mode times each query alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from annbench.datasets import DEFAULT_DATASET, read_dataset, resolve_dataset
from annbench.errors import AnnbenchError
from annbench.registry import load_backend
from annbench.runner import plan_sweep, run_sweep
from annbench.store import ResultStore
from annbench.workloads import expected_selectivity

#: One build configuration per backend, a short ladder of its search parameter.
GRIDS = {
    "hnswlib": {"M": [16], "ef_construction": [100], "ef": [16, 64, 256]},
    "faiss-hnsw": {"M": [16], "efConstruction": [100], "efSearch": [16, 64, 256]},
    "faiss-ivf": {"nlist": [256], "nprobe": [4, 16, 64, 256]},
    "annoy": {"n_trees": [50], "search_k": [1000, 10000, 50000]},
    "faiss-flat": {},
}
SELECTIVITIES = (0.01, 0.1, 0.5)
TARGET = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--attribute", default=None, help="attribute of the range filters")
    parser.add_argument("--backend", action="append", default=None, dest="backends")
    parser.add_argument("--mode", choices=["single", "batch"], default="batch")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    data = read_dataset(resolve_dataset(args.dataset))
    attribute = f"{args.attribute}:" if args.attribute else ""
    workloads = [f"range:{attribute}{s:g}" for s in SELECTIVITIES] + ["label"]
    backends = args.backends or [name for name in GRIDS if _installed(name)]
    threads = 1 if args.mode == "batch" else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="annbench-filtered-") as folder:
        with ResultStore(Path(folder)) as store:
            for workload in workloads:
                # post-filtering asks for about 1.5x and 4x what an even spread of allowed
                # vectors needs (k / selectivity neighbours)
                selectivity = expected_selectivity(data, workload)
                overfetch = sorted({round(f / selectivity, 1) for f in (1.5, 4)})
                for name in backends:
                    grid = {key: list(values) for key, values in GRIDS.get(name, {}).items()}
                    jobs = plan_sweep(
                        data,
                        [name],
                        k=args.k,
                        mode=args.mode,
                        runs=args.runs,
                        threads=threads,
                        overrides={**grid, "overfetch": overfetch},
                        workloads=[workload],
                    )
                    if name == "faiss-flat":  # brute force once, on the cheapest build
                        jobs += plan_sweep(
                            data,
                            [name],
                            k=args.k,
                            mode=args.mode,
                            runs=args.runs,
                            threads=threads,
                            overrides={"filter_strategy": ["brute"]},
                            workloads=[workload],
                        )
                    summary = run_sweep(jobs, store)
                    for record in summary.failed:
                        print(f"failed: {name} {workload} {record.search_params}: {record.error}")
            frame = store.dataframe(data.name)
    print(table(frame, workloads).to_string())
    print(
        f"\n{data.name}, k={args.k}, {args.mode} mode"
        + (", 1 thread" if threads == 1 else "")
        + f", {args.runs} run(s) per setting; cells: best QPS at recall >= {TARGET} "
        f"(best recall in brackets when not reached); {time.perf_counter() - start:.0f} s"
    )


def table(frame: pd.DataFrame, workloads: list[str]) -> pd.DataFrame:
    """Rows backend/strategy, columns workload (with selectivity)."""
    ok = frame[(frame["status"] == "ok") & frame["workload"].isin(workloads)].copy()
    ok["strategy"] = ok["search_params"].map(lambda p: p.get("filter_strategy"))
    ok["row"] = [
        "brute force" if s == "brute" else f"{b} {s}"
        for b, s in zip(ok["backend"], ok["strategy"], strict=True)
    ]
    columns = {}
    for workload in workloads:
        runs = ok[ok["workload"] == workload]
        if runs.empty:
            continue
        label = f"{workload} ({runs['selectivity'].mean():.3f})"
        cells = {}
        for row, points in runs.groupby("row"):
            meeting = points[points["recall"] >= TARGET]
            if len(meeting):
                cells[row] = f"{meeting['qps'].max():,.0f}"
            else:
                cells[row] = f"[{points['recall'].max():.2f}]"
        columns[label] = cells
    out = pd.DataFrame(columns)
    order = sorted(out.index, key=lambda r: (r == "brute force", r))
    return out.loc[order].fillna("-")


def _installed(name: str) -> bool:
    try:
        load_backend(name)
    except AnnbenchError:
        return False
    return True


if __name__ == "__main__":
    main()
