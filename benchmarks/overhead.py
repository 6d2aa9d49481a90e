"""Harness overhead: QPS through annbench's measurement loop vs a hand-written loop calling
the library directly, on the same built index and queries, measured side by side.

    python benchmarks/overhead.py [--dataset NAME] [--repeats 9] [--backend NAME ...]

Every backend registered and installed is measured, one thread, single-query and batch mode;
the hand-written loop is what a user of the library would write with its public API, with
queries already in the form the library wants (normalized for angular where annbench does).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from annbench.datasets import read_dataset, resolve_dataset
from annbench.errors import AnnbenchError
from annbench.measure import time_search
from annbench.metrics import Metric, normalize_rows
from annbench.registry import backend_names, load_backend

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

Loop = Callable[[np.ndarray, int], None]


def direct_loops(backend: str, index: Any, search: dict[str, Any]) -> tuple[Loop, Loop]:
    """The (single, batch) loops a user would write around the library object ``index``
    holds, with the same search setting already applied."""
    if backend == "hnswlib":
        lib = index._index

        def single(xq: np.ndarray, k: int) -> None:
            for q in xq:
                lib.knn_query(q, k=k, num_threads=1)

        return single, lambda xq, k: lib.knn_query(xq, k=k, num_threads=1)
    if backend == "annoy":
        lib, search_k = index._index, search["search_k"]

        def each(xq: np.ndarray, k: int) -> None:
            for q in xq:
                lib.get_nns_by_vector(q, k, search_k)

        return each, each  # Annoy has no batch call
    if backend == "usearch":
        lib = index._index

        def single(xq: np.ndarray, k: int) -> None:
            for q in xq:
                lib.search(q, k, threads=1)

        return single, lambda xq, k: lib.search(xq, k, threads=1)
    if backend == "scann":
        lib, leaves, reorder = index._searcher, search["leaves_to_search"], search["reorder"]

        def single(xq: np.ndarray, k: int) -> None:
            for q in xq:
                lib.search(q, k, reorder, leaves)

        def batch(xq: np.ndarray, k: int) -> None:
            lib.search_batched(xq, k, leaves_to_search=leaves, pre_reorder_num_neighbors=reorder)

        return single, batch
    if backend == "voyager":
        lib, ef = index._index, search["ef"]

        def single(xq: np.ndarray, k: int) -> None:
            for q in xq:
                lib.query(q, k, query_ef=ef)

        return single, lambda xq, k: lib.query(xq, k, num_threads=1, query_ef=ef)
    if backend == "pynndescent":
        lib, epsilon = index._index, search["epsilon"]

        def single(xq: np.ndarray, k: int) -> None:
            for i in range(len(xq)):
                lib.query(xq[i : i + 1], k=k, epsilon=epsilon)

        return single, lambda xq, k: lib.query(xq, k=k, epsilon=epsilon)
    if backend.startswith("faiss"):
        lib = index._index

        def single(xq: np.ndarray, k: int) -> None:
            for i in range(len(xq)):
                lib.search(xq[i : i + 1], k)

        return single, lambda xq, k: lib.search(xq, k)
    raise AnnbenchError(f"No hand-written loop for backend '{backend}'; add one to overhead.py")


def timed(loop: Loop, xq: np.ndarray, k: int) -> float:
    """QPS of one pass of ``loop`` over ``xq``."""
    start = time.perf_counter()
    loop(xq, k)
    return len(xq) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="debian-packages-384-angular")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backend", action="append", help="Only these backends.")
    args = parser.parse_args()
    data = read_dataset(resolve_dataset(args.dataset))
    import faiss

    faiss.omp_set_num_threads(1)
    xq = np.ascontiguousarray(data.test, dtype=np.float32)
    prepared = normalize_rows(xq) if data.metric is Metric.ANGULAR else xq
    print(
        f"{data.name}: {len(data.train)} x {data.train.shape[1]}, {len(xq)} queries, "
        f"k={args.k}, one thread, median of {args.repeats} interleaved repeats "
        f"(spread: (max - min) / median of the ratios per repeat)"
    )
    print(
        f"{'backend':13s} {'mode':6s} {'annbench QPS':>13s} {'direct QPS':>11s} "
        f"{'ratio':>6s} {'spread':>6s}"
    )
    installed = set(backend_names())
    for backend, (build, search) in CASES.items():
        if (args.backend and backend not in args.backend) or backend not in installed:
            continue
        try:
            cls = load_backend(backend)
        except AnnbenchError as exc:
            print(f"{backend:13s} skipped: {exc}")
            continue
        index = cls(data.metric, **build)
        index.set_num_threads(1)
        index.build(data.train)
        index.set_search_params(**search)
        index.set_num_threads(1)
        loops = dict(zip(("single", "batch"), direct_loops(backend, index, search), strict=True))
        for mode, direct in loops.items():
            ours, theirs = [], []
            timed(direct, prepared, args.k)  # warm-up (annbench's time_search warms itself)
            for repeat in range(args.repeats):  # alternate who goes first
                for who in ("ours", "theirs") if repeat % 2 else ("theirs", "ours"):
                    if who == "ours":
                        ours.append(time_search(index, xq, args.k, mode, 1).qps[0])
                    else:
                        theirs.append(timed(direct, prepared, args.k))
            ratios = np.array(ours) / np.array(theirs)
            a, b, r = float(np.median(ours)), float(np.median(theirs)), float(np.median(ratios))
            spread = (ratios.max() - ratios.min()) / r
            print(f"{backend:13s} {mode:6s} {a:13,.0f} {b:11,.0f} {r:6.3f} {spread:6.1%}")


if __name__ == "__main__":
    main()
