"""Harness overhead: annbench's timed loop against the library's fastest documented call, on
the same built index and queries, interleaved finely enough to resolve a few percent.

    python benchmarks/overhead.py [--dataset NAME] [--rounds 200] [--block-ms 20] [--backend NAME]

Every backend registered and installed is measured, one thread, single-query and batch mode.
annbench's side is what the runner times (``_time_single`` / ``_time_batch`` in
``annbench.sweep.measure``): ``index.search_one(q, k)`` per query, or ``index.search(xq, k)``,
on queries from ``index.prepare_queries``. (Storing each query's ids and latency between
calls is outside annbench's clocks and so outside this loop too.) The library's side is a loop
written outside annbench with the library's fastest documented call and its fastest query form
(Annoy: ``get_nns_by_vector`` on a Python list; faiss: ``search`` on a ``(1, d)`` array; ...).

The queries are cut into blocks of about ``--block-ms`` of work. Each round takes one block and
runs three loops over it in a rotating order: annbench, the library, and the library again. The
ratio of a block is library time / annbench time (above 1: annbench is faster), on wall time
and on thread CPU time (``time.thread_time_ns``, which other tenants of the host barely move);
the table shows the median over the rounds with its interquartile range. The library against
itself is an A/A control whose ratio should be 1.00: its spread is what the benchmark can
resolve on this host, and ``±`` is the 95% confidence half-width of a median ratio.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from annbench.data.datasets import Dataset, read_dataset, resolve_dataset
from annbench.errors import AnnbenchError
from annbench.index import Index, cosine_ready
from annbench.registry import backend_names, load_backend
from annbench.sweep.measure import _time_batch, _time_single

# backend -> build parameters, search parameters (mid-recall settings on the bundled data)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "faiss-flat": ({}, {}),
    "faiss-ivf": ({"nlist": 256}, {"nprobe": 8}),
    "faiss-ivfpq": ({"nlist": 256, "m": 32, "nbits": 8}, {"nprobe": 8}),
    "faiss-hnsw": ({"M": 16, "efConstruction": 100}, {"efSearch": 32}),
    "faiss-factory": ({"factory": "IVF256,SQ8"}, {"nprobe": 8}),
    "hnswlib": ({"M": 16, "ef_construction": 100}, {"ef": 32}),
    "annoy": ({"n_trees": 20}, {"search_k": 2000}),
    "usearch": ({"connectivity": 16, "expansion_add": 64}, {"expansion_search": 32}),
    "scann": ({"num_leaves": 100}, {"leaves_to_search": 8, "reorder": 100}),
    "voyager": ({"M": 16, "ef_construction": 100}, {"ef": 32}),
    "pynndescent": ({"n_neighbors": 20}, {"epsilon": 0.08}),
}
MODES = ("single", "batch")


@dataclass(frozen=True)
class Direct:
    """How a user of the library searches without annbench: ``single`` is one library call on
    one query as ``prepare`` made it, ``batch`` one call (or the shortest loop, for a library
    without a batch call) on queries as ``prepare_batch`` made them. Both preparations take
    float32 rows (normalised where annbench normalises) and run before any timing."""

    prepare: Callable[[np.ndarray], Sequence[Any]]
    single: Callable[[Any, int], Any]
    batch: Callable[[Any, int], Any]
    prepare_batch: Callable[[np.ndarray], Any] = lambda xq: xq


def direct_calls(backend: str, index: Index, search: dict[str, Any]) -> Direct:
    """The library calls a user would write around the library object ``index`` holds, with
    the same search setting already applied (it was, through ``index.set_search_params``)."""
    rows = list  # 1-D float32 views, as hnswlib, usearch, ScaNN and Voyager take one query
    if backend == "hnswlib":
        knn = index._index.knn_query
        return Direct(
            rows,
            lambda q, k: knn(q, k=k, num_threads=1),
            lambda xq, k: knn(xq, k=k, num_threads=1),
        )
    if backend == "annoy":
        nns, search_k = index._index.get_nns_by_vector, search["search_k"]

        def each(xq: Sequence[list[float]], k: int) -> None:  # Annoy has no batch call
            for q in xq:
                nns(q, k, search_k, True)  # with distances, as annbench's search returns them

        lists = np.ndarray.tolist  # Annoy converts a list faster than an array row
        return Direct(lists, lambda q, k: nns(q, k, search_k), each, lists)
    if backend == "usearch":
        lib = index._index
        return Direct(
            rows,
            lambda q, k: lib.search(q, k, threads=1),
            lambda xq, k: lib.search(xq, k, threads=1),
        )
    if backend == "scann":
        lib, leaves, reorder = index._searcher, search["leaves_to_search"], search["reorder"]
        return Direct(
            rows,
            lambda q, k: lib.search(
                q, k, pre_reorder_num_neighbors=reorder, leaves_to_search=leaves
            ),
            lambda xq, k: lib.search_batched(
                xq, k, leaves_to_search=leaves, pre_reorder_num_neighbors=reorder
            ),
        )
    if backend == "voyager":
        query, ef = index._index.query, search["ef"]
        return Direct(
            rows,
            lambda q, k: query(q, k, query_ef=ef),
            lambda xq, k: query(xq, k, num_threads=1, query_ef=ef),
        )
    if backend == "pynndescent":
        query, epsilon = index._index.query, search["epsilon"]
        unit = index.metric.value == "angular"  # the queries are normalised: say so
        return Direct(
            _one_row_arrays,
            lambda q, k: query(
                q, k=k, epsilon=epsilon, pre_normalized=unit, return_distances=False
            ),
            lambda xq, k: query(xq, k=k, epsilon=epsilon, pre_normalized=unit),
        )
    if backend.startswith("faiss"):
        lib = index._index
        return Direct(
            _one_row_arrays, lambda q, k: lib.search(q, k), lambda xq, k: lib.search(xq, k)
        )
    raise AnnbenchError(f"No library loop for backend '{backend}'; add one to overhead.py")


def _one_row_arrays(xq: np.ndarray) -> list[np.ndarray]:
    """Each query as its own C-contiguous ``(1, d)`` array, as faiss and PyNNDescent take one."""
    return [np.ascontiguousarray(xq[i : i + 1]) for i in range(len(xq))]


@dataclass(frozen=True)
class Ratio:
    """Per-block ratios summarised: median, quartiles, and the half-width of the 95%
    confidence interval of the median (distribution-free, from order statistics)."""

    median: float
    q1: float
    q3: float
    ci95: float

    @classmethod
    def of(cls, ratios: Iterable[float]) -> Ratio:
        """The summary of ``ratios`` (at least one)."""
        values = np.sort(np.asarray(list(ratios), dtype=float))
        n = len(values)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        half = 0.98 * math.sqrt(n)  # ranks n/2 -+ 1.96 sqrt(n)/2 bound the median at 95%
        low = values[max(0, math.floor(n / 2 - half))]
        high = values[min(n - 1, math.ceil(n / 2 + half))]
        return cls(float(median), float(q1), float(q3), float(max(high - low, 0.0) / 2))

    def __str__(self) -> str:
        return f"{self.median:.3f} ({self.q1:.3f}-{self.q3:.3f})"


@dataclass(frozen=True)
class Overhead:
    """annbench against the library for one backend and mode."""

    backend: str
    mode: str
    block: int  # queries per block
    rounds: int
    annbench_qps: float  # median over blocks of annbench's timed calls, wall time
    library_qps: float  # median over blocks of the library's loop, wall time
    wall: Ratio  # library time / annbench time, wall clock
    cpu: Ratio  # the same on thread CPU time
    control_wall: Ratio  # library / library (A/A): 1.00 up to what the host lets us resolve
    control_cpu: Ratio


def measure_overhead(
    data: Dataset,
    backends: Iterable[str],
    *,
    k: int = 10,
    rounds: int = 200,
    block_ms: float = 20.0,
    modes: Sequence[str] = MODES,
    cases: dict[str, tuple[dict[str, Any], dict[str, Any]]] | None = None,
) -> Iterator[Overhead]:
    """Build each of ``backends`` on ``data`` (one thread, its ``cases`` setting) and yield one
    Overhead per mode, from ``rounds`` blocks of about ``block_ms`` each."""
    import faiss

    faiss.omp_set_num_threads(1)
    cases = cases or CASES
    for backend in backends:
        build, search = cases[backend]
        index = load_backend(backend)(data.metric, **build)
        index.set_num_threads(1)
        index.build(data.train)
        index.set_search_params(**search)
        index.set_num_threads(1)
        direct = direct_calls(backend, index, search)
        ours = index.prepare_queries(data.test)
        values = cosine_ready(data.metric, data.test)
        for mode in modes:
            if mode == "single":
                theirs, call = direct.prepare(values), direct.single
            else:
                theirs, call = direct.prepare_batch(values), direct.batch
            yield _compare(backend, mode, index, ours, theirs, call, k, rounds, block_ms)


def _compare(
    backend: str,
    mode: str,
    index: Index,
    ours: Sequence[Any],
    theirs: Sequence[Any],
    call: Callable[[Any, int], Any],
    k: int,
    rounds: int,
    block_ms: float,
) -> Overhead:
    """Interleaved blocks of annbench's timed calls, the library's, and the library's again."""
    if mode == "single":
        one, each = index.search_one, call

        def annbench(queries: Sequence[Any]) -> None:
            for q in queries:  # what _time_single times, query by query
                one(q, k)

        def library(queries: Sequence[Any]) -> None:
            for q in queries:
                each(q, k)
    else:
        many = index.search

        def annbench(queries: Sequence[Any]) -> None:
            many(queries, k)  # what _time_batch times

        def library(queries: Sequence[Any]) -> None:
            call(queries, k)

    nq = len(ours)
    warm = _time_single if mode == "single" else _time_batch
    warm(index, ours, k)  # warm-up through the runner's own loop, on annbench's prepared queries
    cpu = _clock(library, theirs)[1]  # warm-up too, which sizes the blocks
    block = int(min(nq, max(10, round(block_ms * 1e6 / max(cpu / nq, 1.0)))))
    # cut before timing: a slice of a list is a copy
    blocks = [
        (ours[lo : lo + block], theirs[lo : lo + block]) for lo in range(0, nq - block + 1, block)
    ]
    loops = {"annbench": (annbench, 0), "library": (library, 1), "again": (library, 1)}
    orders = list(itertools.permutations(loops))
    wall: dict[str, list[int]] = {name: [] for name in loops}
    cpus: dict[str, list[int]] = {name: [] for name in loops}
    for r in range(rounds):
        queries = blocks[r % len(blocks)]
        for name in orders[r % len(orders)]:
            loop, side = loops[name]
            spent_wall, spent_cpu = _clock(loop, queries[side])
            wall[name].append(spent_wall)
            cpus[name].append(spent_cpu)

    def ratio(times: dict[str, list[int]], a: str, b: str) -> Ratio:
        return Ratio.of(np.array(times[a], dtype=float) / np.maximum(times[b], 1))

    return Overhead(
        backend=backend,
        mode=mode,
        block=block,
        rounds=rounds,
        annbench_qps=float(np.median(block * 1e9 / np.maximum(wall["annbench"], 1))),
        library_qps=float(np.median(block * 1e9 / np.maximum(wall["library"], 1))),
        wall=ratio(wall, "library", "annbench"),
        cpu=ratio(cpus, "library", "annbench"),
        control_wall=ratio(wall, "library", "again"),
        control_cpu=ratio(cpus, "library", "again"),
    )


def _clock(loop: Callable[[Any], Any], queries: Any) -> tuple[int, int]:
    """Wall and thread CPU nanoseconds of ``loop(queries)``."""
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    loop(queries)
    cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
    return wall, cpu


HEADER = (
    f"{'backend':13s} {'mode':6s} {'block':>5s} {'annbench QPS':>12s} {'library QPS':>11s}  "
    f"{'wall ratio (IQR)':>19s}  {'CPU ratio (IQR)':>19s} {'±95%':>5s}  "
    f"{'A/A wall (IQR)':>19s}  {'A/A CPU (IQR)':>19s} {'±95%':>5s}"
)


def format_row(row: Overhead) -> str:
    """One line of the table."""
    return (
        f"{row.backend:13s} {row.mode:6s} {row.block:5d} {row.annbench_qps:12,.0f} "
        f"{row.library_qps:11,.0f}  {row.wall!s:>19s}  {row.cpu!s:>19s} {row.cpu.ci95:5.1%}  "
        f"{row.control_wall!s:>19s}  {row.control_cpu!s:>19s} {row.control_cpu.ci95:5.1%}"
    )


def resolution(rows: Sequence[Overhead]) -> str:
    """What the A/A control says the table can resolve."""
    if not rows:
        return "nothing measured"
    off = max(abs(r.control_cpu.median - 1) for r in rows)
    iqr = [r.control_cpu.q3 - r.control_cpu.q1 for r in rows]
    ci = [r.control_cpu.ci95 for r in rows]
    return (
        f"A/A control on CPU time: medians within {off:.1%} of 1.00, per-block IQR "
        f"{min(iqr):.1%} to {max(iqr):.1%}, 95% half-width of a median {min(ci):.1%} to "
        f"{max(ci):.1%}: a CPU ratio further from 1.00 than that is unlikely to be the host"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="debian-packages-384-angular")
    parser.add_argument("--rounds", type=int, default=200, help="Blocks per backend and mode.")
    parser.add_argument("--block-ms", type=float, default=20.0, help="Work per block.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backend", action="append", help="Only these backends.")
    args = parser.parse_args()
    data = read_dataset(resolve_dataset(args.dataset))
    installed = set(backend_names())
    wanted = [b for b in CASES if b in installed and (not args.backend or b in args.backend)]
    print(
        f"{data.name}: {len(data.train)} x {data.train.shape[1]}, {len(data.test)} queries, "
        f"k={args.k}, one thread; {os.cpu_count()} cores, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(
        f"{args.rounds} rounds of blocks of ~{args.block_ms:g} ms; ratio = library time / "
        "annbench time per block (above 1: annbench faster), median (IQR)"
    )
    print(HEADER)
    rows = []
    for row in measure_overhead(data, wanted, k=args.k, rounds=args.rounds, block_ms=args.block_ms):
        print(format_row(row), flush=True)
        rows.append(row)
    print(resolution(rows))
    print("load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
