"""Updates while serving: the shipped runbooks (sliding-window, grow) replayed on hnswlib,
faiss-ivf, faiss-hnsw and annoy through annbench's isolated workers, one configuration each.

For each runbook x backend it prints: how updates were done (native add/remove or rebuilds),
the initial build time, inserts and deletes per second after it, recall@k at the first, worst
and last search step, and the recall of a *fresh* build on the last step's live rows with the
same parameters (measured side by side in this process), so the cost of updating in place
rather than rebuilding shows as the difference between the last two recall columns.

    python benchmarks/streaming.py [--dataset NAME] [--runbook NAME ...] [--backend NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from annbench.data.datasets import DEFAULT_DATASET, read_dataset, resolve_dataset
from annbench.data.runbooks import prepare_runbook, read_truth
from annbench.metrics import recall_at_k, true_distances
from annbench.registry import load_backend
from annbench.results.runbook_analysis import runbook_summary
from annbench.results.store import ResultStore
from annbench.sweep.runner import plan_sweep, run_sweep

CASES = {
    "hnswlib": ({"M": 16, "ef_construction": 100}, {"ef": 64}),
    "faiss-hnsw": ({"M": 16, "efConstruction": 100}, {"efSearch": 64}),
    "faiss-ivf": ({"nlist": 128}, {"nprobe": 16}),
    "annoy": ({"n_trees": 20}, {"search_k": 4000}),
}


def fresh_recall(data, runbook, truth, backend: str, k: int) -> float:
    """Recall@k of a fresh build on the live rows of the runbook's last search step."""
    build, search = CASES[backend]
    last = runbook.search_steps()[-1]
    rows = np.flatnonzero(runbook.live_masks()[last])
    index = load_backend(backend)(data.metric, **build)
    index.set_num_threads(1)
    index.build(data.train[rows])
    index.set_search_params(**search)
    found = index.search(index.prepare_queries(data.test), k).ids
    ids = np.where(found >= 0, rows[np.clip(found, 0, None)], -1)
    gt_ids, gt_distances = truth.steps[last]
    distances = true_distances(data.metric, data.train, data.test, ids)
    return float(recall_at_k(ids, distances, gt_ids, gt_distances, k).recall.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--runbook", action="append", help="Runbooks [grow, sliding-window].")
    parser.add_argument("--backend", action="append", help=f"Backends [{', '.join(CASES)}].")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--mode", default="batch", help="single or batch [batch: shorter].")
    args = parser.parse_args()
    backends = args.backend or list(CASES)
    data = read_dataset(resolve_dataset(args.dataset))
    print(
        f"{data.name}: {len(data.train)} x {data.train.shape[1]} {data.metric.value}, "
        f"{len(data.test)} queries, k={args.k}, {args.mode} mode, 1 build thread"
    )
    with tempfile.TemporaryDirectory(prefix="annbench-streaming-") as folder:
        store = ResultStore(Path(folder))
        for name in args.runbook or ["grow", "sliding-window"]:
            plan, _ = prepare_runbook(data, name)
            truth = read_truth(Path(plan.truth_path), plan.runbook)
            for backend in backends:
                build, search = CASES[backend]
                overrides = {key: [value] for key, value in {**build, **search}.items()}
                jobs = plan_sweep(
                    data,
                    [backend],
                    k=args.k,
                    mode=args.mode,
                    runs=1,
                    overrides=overrides,
                    build_threads=1,
                    threads=1,
                    runbook=plan,
                )
                outcome = run_sweep(jobs, store)
                for record in outcome.failed:
                    print(f"  {backend} step {record.step} failed: {record.error}")
            table = runbook_summary(store.dataframe())
            table = table[table["runbook"] == name]
            print(f"\nrunbook {name}: {plan.runbook.description}")
            header = (
                f"{'backend':11s} {'updates':10s} {'build_s':>7s} {'insert/s':>9s} "
                f"{'delete/s':>9s} {'recall first':>12s} {'worst':>6s} {'last':>6s} "
                f"{'fresh':>6s} {'QPS last':>9s}"
            )
            print(header)
            for backend in backends:
                row = table[table["backend"] == backend]
                if row.empty:
                    print(f"{backend:11s} (no successful search step)")
                    continue
                row = row.iloc[0]
                frame = store.dataframe()
                steps = frame[
                    (frame["backend"] == backend)
                    & (frame["workload"] == plan.runbook.workload)
                    & (frame["step_kind"] == "search")
                ].sort_values("step")
                rebuilds = int(row["rebuilds"])
                how = f"{rebuilds} rebuilds" if rebuilds else "native"
                fresh = fresh_recall(data, plan.runbook, truth, backend, args.k)
                print(
                    f"{backend:11s} {how:10s} {row['build_s']:7.2f} {row['insert_per_s']:9,.0f} "
                    f"{_rate(row['delete_per_s'])} {steps['recall'].iloc[0]:12.4f} "
                    f"{row['worst_recall']:6.4f} {row['last_recall']:6.4f} {fresh:6.4f} "
                    f"{row['last_qps']:9,.0f}"
                )
        store.close()


def _rate(value: float) -> str:
    return f"{'-':>9s}" if np.isnan(value) else f"{value:9,.0f}"


if __name__ == "__main__":
    main()
