"""Noise check: the same sweep twice, through the real `annbench run`, and how far each run's
median QPS moved between the two (target: within +-5%) and whether recall was identical.

By default the two sweeps run side by side, each pinned to its own core, so that both see the
same host conditions; `--sequential` runs one after the other instead, which adds whatever
the host's other tenants did in between (minutes apart, that is the larger part here).

For faiss-hnsw a control follows: a hand-written loop calling faiss directly (no annbench
code), on the same graphs, with the same repeats, run twice in the same way. What the control
cannot reproduce is the host's noise floor, not annbench's.

    python benchmarks/reproducibility.py [--backend faiss-hnsw] [--runs 5] [--min-time 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from annbench.data.datasets import DEFAULT_DATASET, read_dataset, resolve_dataset
from annbench.metrics import Metric, normalize_rows
from annbench.record import RunRecord
from annbench.results.store import ResultStore
from annbench.sweep.grids import default_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--backend", default="faiss-hnsw")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--mode", default="single")
    parser.add_argument("--sequential", action="store_true", help="One sweep after the other.")
    parser.add_argument("--control-worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.control_worker:
        _control_worker(args, Path(args.control_worker))
        return
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    side_by_side = not args.sequential and len(cores) >= 2
    path = resolve_dataset(args.dataset)
    command = [
        sys.executable, "-m", "annbench.cli", "run", "-d", str(path), "-b", args.backend,
        "--mode", args.mode, "--threads", "1", "--build-threads", "1",
        "--runs", str(args.runs), "--min-time", str(args.min_time),
    ]  # fmt: skip
    control = [sys.executable, __file__, "--dataset", str(path), "--runs", str(args.runs)]
    control += ["--min-time", str(args.min_time), "--control-worker"]
    how = "side by side, one core each" if side_by_side else "one after the other"
    with tempfile.TemporaryDirectory() as folder:
        stores = [Path(folder) / "first", Path(folder) / "second"]
        wall = _twice(command + ["--results"], stores, cores if side_by_side else None)
        first, second = (_ok_records(store) for store in stores)
        print(
            f"{path.stem}, {args.backend}, {args.mode} mode, {args.runs}+ repeats and at least "
            f"{args.min_time:g} s per run, build on one thread (deterministic graphs); two "
            f"sweeps {how}, {wall:.0f} s"
        )
        _compare(
            {key: (_label(r), r.qps, r.qps_spread, r.runs, r.recall) for key, r in first.items()},
            {key: (_label(r), r.qps, r.qps_spread, r.runs, r.recall) for key, r in second.items()},
        )
        if args.backend != "faiss-hnsw" or args.mode != "single":
            return
        outputs = [Path(folder) / "control-first.json", Path(folder) / "control-second.json"]
        wall = _twice(control, outputs, cores if side_by_side else None)
        print(
            f"\nControl: the same graphs and repeats through a hand-written faiss loop, twice "
            f"{how}, {wall:.0f} s"
        )
        _compare(*(json.loads(output.read_text()) for output in outputs))


def _twice(command: list[str], outputs: list[Path], cores: list[int] | None) -> float:
    """Run ``command OUTPUT`` for both outputs, side by side on ``cores`` or in sequence;
    the wall seconds it took."""
    start = time.perf_counter()
    if cores:
        pairs = zip(outputs, cores[:2], strict=True)
        for process in [_start(command, output, {core}) for output, core in pairs]:
            _finish(process)
    else:
        for output in outputs:
            _finish(_start(command, output, None))
    return time.perf_counter() - start


def _label(record: RunRecord) -> list[str]:
    return [
        " ".join(f"{k}={v}" for k, v in params.items())
        for params in (record.build_params, record.search_params)
    ]


def _control_worker(args: argparse.Namespace, out: Path) -> None:
    """The default faiss-hnsw grid measured by hand: one faiss call per query, one thread,
    at least ``runs`` repeats and more (up to 100, as annbench) adding up to ``min_time``
    seconds, median QPS per setting."""
    import faiss

    data = read_dataset(Path(args.dataset))
    faiss.omp_set_num_threads(1)
    train, xq = (np.ascontiguousarray(x, dtype=np.float32) for x in (data.train, data.test))
    if data.metric is Metric.ANGULAR:
        train, xq = normalize_rows(train), normalize_rows(xq)
    metric = faiss.METRIC_L2 if data.metric is Metric.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
    grid = default_grid("faiss-hnsw")
    results = {}
    for build in grid.build_configs():
        index = faiss.IndexHNSWFlat(train.shape[1], build["M"], metric)
        index.hnsw.efConstruction = build["efConstruction"]
        index.add(train)
        for search in grid.search_configs():
            index.hnsw.efSearch = search["efSearch"]
            for i in range(100):  # warm-up, as annbench does
                index.search(xq[i : i + 1], 10)
            seconds: list[float] = []
            while len(seconds) < args.runs or (sum(seconds) < args.min_time and len(seconds) < 100):
                start = time.perf_counter()
                for i in range(len(xq)):
                    index.search(xq[i : i + 1], 10)
                seconds.append(time.perf_counter() - start)
            qps = len(xq) / np.array(seconds)
            median = float(np.median(qps))
            spread = float(np.subtract(*np.percentile(qps, [75, 25]))) / median  # as annbench's
            labels = [f"M={build['M']} efConstruction={build['efConstruction']}"]
            labels.append(f"efSearch={search['efSearch']}")
            found = index.search(xq, 10)[1].tolist()
            results[" ".join(labels)] = (labels, median, spread, len(seconds), found)
    out.write_text(json.dumps(results))


def _start(command: list[str], output: Path, cores: set[int] | None) -> subprocess.Popen:
    return subprocess.Popen(
        [*command, str(output)],
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


Row = tuple  # (build and search labels, median QPS, spread, repeats, recall or result ids)


def _compare(first: dict[str, Row], second: dict[str, Row]) -> None:
    print(
        f"{'build':28s} {'search':16s} {'QPS 1st':>9s} {'QPS 2nd':>9s} {'change':>7s} "
        f"{'spread':>7s} {'repeats':>7s} {'same result':>12s}"
    )
    changes, equal = [], []
    for key, ((build, search), qps, spread, repeats, result) in first.items():
        if key not in second:
            continue
        changes.append(second[key][1] / qps - 1)
        equal.append(result == second[key][4])
        print(
            f"{build:28s} {search:16s} {qps:9,.0f} {second[key][1]:9,.0f} {changes[-1]:+7.1%} "
            f"{spread:7.1%} {repeats:7d} {str(equal[-1]):>12s}"
        )
    if not changes:
        sys.exit("no run succeeded in both sweeps")
    size = np.abs(changes)
    print(
        f"median |change| {np.median(size):.1%}, max {size.max():.1%}, "
        f"{(size <= 0.05).mean():.0%} of {len(size)} runs within +-5%; "
        f"same result (recall, or ids for the control) in {sum(equal)} of {len(equal)}"
    )


if __name__ == "__main__":
    main()
