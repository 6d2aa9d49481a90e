"""Harness overhead: QPS through annbench's measurement loop vs a hand-written loop calling
the library directly, on the same built index and queries, measured side by side.

    python benchmarks/overhead.py [--dataset NAME] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from annbench.datasets import read_dataset, resolve_dataset
from annbench.measure import time_search
from annbench.metrics import normalize_rows
from annbench.registry import load_backend

CASES = [
    ("hnswlib", {"M": 16, "ef_construction": 100}, {"ef": 32}),
    ("faiss-hnsw", {"M": 16, "efConstruction": 100}, {"efSearch": 32}),
    ("faiss-ivf", {"nlist": 256}, {"nprobe": 8}),
    ("annoy", {"n_trees": 20}, {"search_k": 2000}),
]


def direct_single(backend: str, library_index, xq: np.ndarray, k: int, search_k: int) -> float:
    """QPS of the loop a user would write around the library, one query per call."""
    start = time.perf_counter()
    if backend == "hnswlib":
        for q in xq:
            library_index.knn_query(q, k=k, num_threads=1)
    elif backend == "annoy":
        for q in xq:
            library_index.get_nns_by_vector(q, k, search_k)
    else:
        for i in range(len(xq)):
            library_index.search(xq[i : i + 1], k)
    return len(xq) / (time.perf_counter() - start)


def direct_batch(backend: str, library_index, xq: np.ndarray, k: int, search_k: int) -> float:
    """QPS of one library call over every query."""
    start = time.perf_counter()
    if backend == "hnswlib":
        library_index.knn_query(xq, k=k, num_threads=1)
    elif backend == "annoy":
        for q in xq:
            library_index.get_nns_by_vector(q, k, search_k)
    else:
        library_index.search(xq, k)
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
    # the hand-written loop gets queries prepared as the library wants them
    xq = np.ascontiguousarray(data.test, dtype=np.float32)
    prepared = normalize_rows(xq) if data.metric.value == "angular" else xq
    print(
        f"{data.name}: {len(data.train)} x {data.train.shape[1]}, {len(xq)} queries, "
        f"k={args.k}, one thread, median of {args.repeats} interleaved repeats"
    )
    print(f"{'backend':12s} {'mode':6s} {'annbench QPS':>13s} {'direct QPS':>11s} {'ratio':>6s}")
    for backend, build, search in CASES:
        if args.backend and backend not in args.backend:
            continue
        index = load_backend(backend)(data.metric, **build)
        index.build(data.train)
        index.set_search_params(**search)
        index.set_num_threads(1)
        library = index._index  # the same built index, called without annbench
        search_k = search.get("search_k", -1)
        for mode, direct in (("single", direct_single), ("batch", direct_batch)):
            ours, theirs = [], []
            direct(backend, library, prepared, args.k, search_k)  # warm-up
            for repeat in range(args.repeats):  # alternate who goes first
                for who in ("ours", "theirs") if repeat % 2 else ("theirs", "ours"):
                    if who == "ours":
                        ours.append(time_search(index, xq, args.k, mode, 1).qps[0])
                    else:
                        theirs.append(direct(backend, library, prepared, args.k, search_k))
            a, b = float(np.median(ours)), float(np.median(theirs))
            print(f"{backend:12s} {mode:6s} {a:13,.0f} {b:11,.0f} {a / b:6.3f}")


if __name__ == "__main__":
    main()
