"""Ground truth at scale: exact_knn on the base in memory, streamed_knn reading the file in
chunks, and sharded_knn over a Dask LocalCluster of 2 worker processes, on one synthetic
base written to a temporary HDF5 file. Each runs in its own process; prints wall time, peak
resident memory (and the workers' for the sharded run), and whether the ids agree.

    python benchmarks/groundtruth_scale.py [--n 1000000] [--d 128] [--nq 1000] [--k 100]
        [--metric angular] [--chunk-rows 65536] [--duplicates 0.01] [--hot 500]
        [--hot-queries 20] [--folder /tmp/annbench-gt-scale]

The base is clustered Gaussian rows (annbench.data.synthetic) with exact ties, as real
embedding sets have them: a fraction ``--duplicates`` of the rows are copies of other rows,
and one "hot" vector (think of the embedding of an empty text) is repeated ``--hot`` times
across the base, with ``--hot-queries`` queries next to it, whose top-k is all copies of it.
Where two results differ, the queries that differ are settled by brute force: exact float64
distances to every base row, read in chunks, sorted by (distance, id).
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

import h5py
import numpy as np

from annbench.data.scale_truth import streamed_peak_bytes
from annbench.data.synthetic import ClusteredGaussianRows
from annbench.metrics import Metric

METHODS = ("in-memory", "streamed", "sharded")


def make_file(path: Path, args: argparse.Namespace) -> None:
    """The synthetic base, queries and metric, written chunk by chunk (never whole)."""
    rng = np.random.default_rng(7)
    rows = ClusteredGaussianRows(args.n, args.d, n_clusters=256, seed=1)
    queries = ClusteredGaussianRows(args.nq, args.d, n_clusters=256, seed=1)
    queries.seed = 2  # the same mixture, other draws: held out by construction
    xq = queries[0 : args.nq]
    hot = rows[0:1][0] * 0.1  # a vector near the centre of the data
    hot_rows = np.sort(rng.choice(args.n, size=args.hot, replace=False))
    xq[: args.hot_queries] = hot + rng.normal(scale=1e-3, size=(args.hot_queries, args.d))
    step = 65536
    with h5py.File(path, "w") as f:
        train = f.create_dataset("train", shape=(args.n, args.d), dtype=np.float32)
        for start in range(0, args.n, step):
            block = rows[start : start + step]
            copies = rng.random(len(block)) < args.duplicates
            block[copies] = block[rng.integers(len(block), size=int(copies.sum()))]
            mine = hot_rows[(hot_rows >= start) & (hot_rows < start + len(block))]
            block[mine - start] = hot
            train[start : start + len(block)] = block
        f.create_dataset("test", data=xq.astype(np.float32))
        f.attrs["distance"] = args.metric


def run_method(method: str, path: Path, out: Path, args: argparse.Namespace) -> dict:
    """One method in this process: ``(distances, ids)`` saved to ``out``; times and RSS."""
    import faiss  # noqa: F401 - loaded before the baseline is read, as the searches load it
    import psutil

    from annbench.data.groundtruth import exact_knn
    from annbench.data.scale_truth import sharded_knn, streamed_knn
    from annbench.sweep.distributed import dask_client

    baseline = psutil.Process().memory_info().rss
    metric = Metric.parse(args.metric)
    with h5py.File(path, "r") as f:
        xq = f["test"][()]
    report: dict = {"method": method, "baseline_rss": baseline}
    start = time.perf_counter()
    if method == "in-memory":
        with h5py.File(path, "r") as f:
            xb = f["train"][()]
        report["read_s"] = time.perf_counter() - start
        found = exact_knn(xb, xq, args.k, metric)
    elif method == "streamed":
        found = streamed_knn(path, xq, args.k, metric, chunk_rows=args.chunk_rows)
    else:
        with dask_client("local", workers=2) as client:
            report["cluster_s"] = time.perf_counter() - start
            client.run(_warm)  # the workers import what the search needs, then idle
            report["worker_baseline_rss"] = max(client.run(_rss).values())
            started = time.perf_counter()
            found = sharded_knn(path, xq, args.k, metric, client=client, chunk_rows=args.chunk_rows)
            report["search_s"] = time.perf_counter() - started
            report["worker_peak_rss"] = max(client.run(_peak_rss).values())
    report["wall_s"] = time.perf_counter() - start
    report["peak_rss"] = _peak_rss()
    np.savez(out, distances=found[0], ids=found[1])
    return report


def _peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM, which (unlike getrusage's
    ru_maxrss, kept across exec) starts afresh in a new program."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _warm() -> None:
    import faiss  # noqa: F401

    import annbench.data.scale_truth  # noqa: F401


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def brute_force(path: Path, xq: np.ndarray, k: int, metric: Metric) -> tuple:
    """Exact ``(distances, ids)`` of a few queries against every base row, by the
    re-ranking's own formula, a chunk of rows at a time, sorted by (distance, id)."""
    from annbench.data.groundtruth import _exact
    from annbench.data.scale_truth import base_chunks

    best_d = np.empty((len(xq), 0))
    best_i = np.empty((len(xq), 0), dtype=np.int64)
    offset = 0
    for block in base_chunks(path, chunk_rows=4096):
        every = np.broadcast_to(np.arange(len(block)), (len(xq), len(block)))
        d = np.hstack([best_d, _exact(metric, xq, block, every)])
        i = np.hstack([best_i, every + offset])
        order = np.lexsort((i, d), axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
        offset += len(block)
    return best_d, best_i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--nq", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--metric", default="angular", help="euclidean, angular or dot")
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--duplicates", type=float, default=0.01)
    parser.add_argument("--hot", type=int, default=500)
    parser.add_argument("--hot-queries", type=int, default=20)
    parser.add_argument("--folder", type=Path, default=None, help="keep the file here")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:  # a child process: one method
        print(json.dumps(run_method(args.method, args.file, args.out, args)))
        return

    folder = args.folder or Path(tempfile.mkdtemp(prefix="annbench-gt-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"base-{args.n}x{args.d}-{args.metric}.hdf5"
    start = time.perf_counter()
    if not path.exists():
        make_file(path, args)
    made = time.perf_counter() - start
    size = args.n * args.d * 4
    print(
        f"base {args.n:,} x {args.d} float32 ({size / 1e6:,.0f} MB), {args.nq:,} queries, "
        f"k={args.k}, {args.metric}; {args.duplicates:.0%} duplicate rows, a vector repeated "
        f"{args.hot} times with {args.hot_queries} queries next to it; file written in "
        f"{made:.0f} s; chunk {args.chunk_rows:,} rows ({args.chunk_rows * args.d * 4 / 1e6:.0f} "
        f"MB); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    reports, found = {}, {}
    for method in METHODS:
        out = folder / f"{method}.npz"
        command = [sys.executable, __file__, *sys.argv[1:], "--method", method]
        command += ["--file", str(path), "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{method} failed:\n{done.stderr[-3000:]}")
        reports[method] = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(out) as saved:
            found[method] = saved["distances"], saved["ids"]

    (folder / "reports.json").write_text(json.dumps(reports, indent=1))
    bound = streamed_peak_bytes(args.chunk_rows, args.d, args.nq, args.k)
    print("\n| method | wall s | peak RSS MB | RSS above baseline MB | notes |")
    print("|---|---:|---:|---:|---|")
    for method in METHODS:
        r = reports[method]
        notes = []
        if "read_s" in r:
            notes.append(f"read {r['read_s']:.1f} s")
        if method != "in-memory":
            notes.append(f"stated bound {bound / 1e6:,.0f} MB above baseline per process")
        if "cluster_s" in r:
            notes.append(
                f"cluster start {r['cluster_s']:.1f} s, search {r['search_s']:.1f} s; "
                f"worker peak RSS {r['worker_peak_rss'] / 1e6:,.0f} MB "
                f"({(r['worker_peak_rss'] - r['worker_baseline_rss']) / 1e6:,.0f} above "
                "its idle RSS)"
            )
        print(
            f"| {method} | {r['wall_s']:.1f} | {r['peak_rss'] / 1e6:,.0f} | "
            f"{(r['peak_rss'] - r['baseline_rss']) / 1e6:,.0f} | {'; '.join(notes)} |"
        )

    metric = Metric.parse(args.metric)
    with h5py.File(path, "r") as f:
        xq = f["test"][()]
    reference = found["streamed"]
    for method in ("sharded", "in-memory"):
        d, ids = found[method]
        rows = np.flatnonzero((ids != reference[1]).any(axis=1))
        same_d = np.array_equal(d, reference[0])
        print(
            f"\n{method} vs streamed: ids identical for {args.nq - len(rows):,} of "
            f"{args.nq:,} queries; distances identical: {same_d}"
        )
        if len(rows):
            truth = brute_force(path, xq[rows], args.k, metric)
            right = [
                name
                for name, (dd, ii) in (("streamed", reference), (method, found[method]))
                if np.array_equal(ii[rows], truth[1])
            ]
            hot = int(np.sum(rows < args.hot_queries))
            print(
                f"  the {len(rows)} that differ ({hot} next to the hot vector), by brute "
                f"force over the file: {', '.join(right) or 'neither'} right"
            )


if __name__ == "__main__":
    main()
