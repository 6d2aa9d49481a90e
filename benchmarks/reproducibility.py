"""Noise check: the same sweep twice, through the real `annbench run`, and how far each run's
median QPS moved between the two (target: within +-5%) and whether recall was identical.

By default the two sweeps run side by side, each pinned to its own core, so that both see the
same host conditions; `--sequential` runs one after the other instead, which adds whatever
the host's other tenants did in between (minutes apart, that is the larger part here).

    python benchmarks/reproducibility.py [--backend faiss-hnsw] [--runs 5] [--min-time 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from annbench.datasets import DEFAULT_DATASET, resolve_dataset
from annbench.record import RunRecord
from annbench.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--backend", default="faiss-hnsw")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--mode", default="single")
    parser.add_argument("--sequential", action="store_true", help="One sweep after the other.")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    side_by_side = not args.sequential and len(cores) >= 2
    path = resolve_dataset(args.dataset)
    command = [
        sys.executable, "-m", "annbench.cli", "run", "-d", str(path), "-b", args.backend,
        "--mode", args.mode, "--threads", "1", "--build-threads", "1",
        "--runs", str(args.runs), "--min-time", str(args.min_time),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        stores = [Path(folder) / "first", Path(folder) / "second"]
        start = time.perf_counter()
        if side_by_side:
            pairs = zip(stores, cores[:2], strict=True)
            sweeps = [_start(command, store, {core}) for store, core in pairs]
            for sweep in sweeps:
                _finish(sweep)
        else:
            for store in stores:
                _finish(_start(command, store, None))
        wall = time.perf_counter() - start
        first, second = (_ok_records(store) for store in stores)
    how = "side by side, one core each" if side_by_side else "one after the other"
    print(
        f"{path.stem}, {args.backend}, {args.mode} mode, {args.runs}+ repeats and at least "
        f"{args.min_time:g} s per run, build on one thread (deterministic graphs); two sweeps "
        f"{how}, {wall:.0f} s"
    )
    _compare(first, second)


def _start(command: list[str], store: Path, cores: set[int] | None) -> subprocess.Popen:
    return subprocess.Popen(
        [*command, "--results", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )


def _finish(sweep: subprocess.Popen) -> None:
    _, err = sweep.communicate()
    if sweep.returncode != 0:
        sys.exit(f"annbench run failed: {err.strip().splitlines()[-1] if err.strip() else ''}")


def _ok_records(store: Path) -> dict[str, RunRecord]:
    with ResultStore(store) as results:
        return {r.key: r for r in results.records() if r.status == "ok"}


def _compare(first: dict[str, RunRecord], second: dict[str, RunRecord]) -> None:
    print(
        f"{'build':28s} {'search':16s} {'QPS 1st':>9s} {'QPS 2nd':>9s} {'change':>7s} "
        f"{'spread':>7s} {'repeats':>7s} {'recall equal':>12s}"
    )
    changes, equal = [], []
    for key, a in first.items():
        b = second.get(key)
        if b is None:
            continue
        changes.append(b.qps / a.qps - 1)
        equal.append(a.recall == b.recall)
        build = " ".join(f"{k}={v}" for k, v in a.build_params.items())
        search = " ".join(f"{k}={v}" for k, v in a.search_params.items())
        print(
            f"{build:28s} {search:16s} {a.qps:9,.0f} {b.qps:9,.0f} {changes[-1]:+7.1%} "
            f"{a.qps_spread:7.1%} {a.runs:7d} {str(equal[-1]):>12s}"
        )
    if not changes:
        sys.exit("no run succeeded in both sweeps")
    size = np.abs(changes)
    print(
        f"median |change| {np.median(size):.1%}, max {size.max():.1%}, "
        f"{(size <= 0.05).mean():.0%} of {len(size)} runs within +-5%; "
        f"recall identical in {sum(equal)} of {len(equal)}"
    )


if __name__ == "__main__":
    main()
