"""The three memory figures and the cold load time of every default build configuration on
the bundled dataset: serving memory (the saved index loaded in a fresh process), build-time
peak RSS, file size, and the ratio of serving memory to file size.

One search setting per index (the search grid does not change these figures), one repeat:

    python benchmarks/serving_memory.py [--results /tmp/annbench-serving] [-b faiss-ivfpq ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from annbench.data.datasets import DEFAULT_DATASET, read_dataset, resolve_dataset
from annbench.index import search_param_names
from annbench.record import params_label
from annbench.registry import load_backend
from annbench.results.store import ResultStore
from annbench.sweep.runner import plan_sweep, run_sweep

DEFAULTS = ["faiss-ivfpq", "faiss-hnsw", "faiss-ivf", "hnswlib", "annoy", "faiss-flat"]
# the last value of each default search grid: the warm-up search touches the most pages
ONE_SETTING = {"nprobe": [128], "efSearch": [512], "ef": [512], "search_k": [100000]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("/tmp/annbench-serving"))
    parser.add_argument("-b", "--backend", action="append", dest="backends")
    args = parser.parse_args()
    data = read_dataset(resolve_dataset(DEFAULT_DATASET))
    backends = args.backends or DEFAULTS
    taken = {key for name in backends for key in search_param_names(load_backend(name))}
    overrides = {key: values for key, values in ONE_SETTING.items() if key in taken}
    jobs = plan_sweep(data, backends, runs=1, overrides=overrides)
    start = time.perf_counter()
    with ResultStore(args.results) as store:
        summary = run_sweep(jobs, store, force=True)
        records = [r for r in store.records(data.name) if r.backend in backends]
    print(
        f"{data.name}: {len(data.train):,} x {data.train.shape[1]}, {len(jobs)} build "
        f"configurations in {time.perf_counter() - start:.0f} s ({len(summary.failed)} failed)"
    )
    print(
        f"{'backend':12s} {'build':28s} {'serving MB':>10s} {'build peak MB':>13s} "
        f"{'file MB':>8s} {'serving/file':>12s} {'load s':>7s}"
    )
    for r in records:
        serving = r.serving_memory_bytes
        ratio = f"{serving / r.index_bytes:.2f}" if serving and r.index_bytes else "-"
        print(
            f"{r.backend:12s} {params_label(r.build_params):28s} {_mb(serving):>10s} "
            f"{_mb(r.peak_rss_bytes):>13s} {_mb(r.index_bytes):>8s} {ratio:>12s} "
            f"{_num(r.load_s, '.3f'):>7s}"
        )
        if serving is None:
            print(f"{'':12s} {r.provenance.get('serving_memory', r.error)}")


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
