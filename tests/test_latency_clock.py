"""Latency on two clocks: each query's thread CPU time beside its wall time, so a run measured
while the host took the core away is flagged, and a budget can say which time it means."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner
from tests_helpers import a_record

from annbench.cli import main
from annbench.index import Index, Neighbors
from annbench.metrics import Metric
from annbench.results.analysis import Constraints, host_interference, recommend
from annbench.results.store import ResultStore
from annbench.sweep.measure import cpu_fields, time_search, timing_fields


class _Stalling(Index):
    """Answers each query after ``busy_s`` of work and ``idle_s`` off the CPU, as a query that
    the host preempted would."""

    metrics = frozenset(Metric)

    def __init__(self, metric: Metric, *, busy_s: float = 0.0002, idle_s: float = 0.0) -> None:
        self.busy_s, self.idle_s = busy_s, idle_s

    def build(self, xb: np.ndarray) -> None:
        self.n = len(xb)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        ids = np.array([self.search_one(q, k) for q in xq], dtype=np.int64)
        return Neighbors(np.zeros(ids.shape, dtype=np.float32), ids)

    def search_one(self, q: np.ndarray, k: int) -> list[int]:
        end = time.thread_time() + self.busy_s
        while time.thread_time() < end:
            pass
        if self.idle_s:
            time.sleep(self.idle_s)
        return list(range(k))


def _timed(idle_s: float) -> dict:
    index = _Stalling(Metric.EUCLIDEAN, idle_s=idle_s)
    index.build(np.zeros((50, 4), dtype=np.float32))
    xq = np.zeros((40, 4), dtype=np.float32)
    timing = time_search(index, xq, 5, "single", runs=1, n=50, backend="stalling")
    assert timing.cpu_ns is not None and len(timing.cpu_ns) == 40
    return timing_fields(timing)


def test_cpu_time_leaves_out_time_off_the_core():
    stalled = _timed(idle_s=0.001)
    # each query: 0.2 ms of work and 1 ms asleep; wall counts both, CPU only the work
    assert 0.15 < stalled["cpu_p50_ms"] < 0.6
    assert stalled["latency_p50_ms"] > 1.0
    assert stalled["wall_cpu_ratio"] > 3 and stalled["wall_cpu_p99_ratio"] > 2
    frame = pd.DataFrame([stalled])
    assert host_interference(frame).iloc[0]


def test_cpu_fields_ratios_and_the_interference_flag():
    wall = np.full(100, 2_000_000)
    fields = cpu_fields(wall, np.full(100, 1_000_000))
    assert fields["cpu_p99_ms"] == 1.0 and fields["wall_cpu_ratio"] == 2.0
    steady = cpu_fields(wall, np.full(100, 1_950_000))
    frame = pd.DataFrame([fields, steady])
    assert host_interference(frame).tolist() == [True, False]
    tail = np.full(200, 1_000_000)
    tail[-3:] = 4_000_000  # three stalled queries out of 200: the mean hides them, the p99 not
    late = cpu_fields(tail, np.full(200, 1_000_000))
    assert late["wall_cpu_ratio"] < 1.10 and late["wall_cpu_p99_ratio"] > 1.5
    assert host_interference(pd.DataFrame([late])).iloc[0]
    assert cpu_fields(wall, None) == {}  # batch mode: no per-query CPU times


def _store_pair(folder: Path) -> None:
    """A fast index measured under interference (wall p99 5 ms, CPU 0.5 ms) and a slower one
    measured quietly (wall p99 1.5 ms, CPU 1.45 ms)."""
    common = dict(dataset="d", recall=0.95, runs=3, qps_min=900.0, qps_max=1100.0)
    common.update(build_s=1.0, index_bytes=1000, serving_memory_bytes=2000)
    with ResultStore(folder) as store:
        store.put(
            a_record(
                ef=16,
                **common,
                latency_p99_ms=5.0,
                cpu_p99_ms=0.5,
                cpu_mean_ms=0.4,
                wall_cpu_ratio=1.8,
                wall_cpu_p99_ratio=10.0,
            )
        )
        store.put(
            a_record(
                ef=64,
                **common,
                latency_p99_ms=1.5,
                cpu_p99_ms=1.45,
                cpu_mean_ms=1.0,
                wall_cpu_ratio=1.02,
                wall_cpu_p99_ratio=1.03,
            )
        )


def test_a_budget_says_which_clock_it_means(tmp_path):
    _store_pair(tmp_path)
    with ResultStore(tmp_path) as store:
        frame = store.dataframe()
    wall = recommend(frame, Constraints(min_recall=0.9, max_p99_ms=2.0))
    cpu = recommend(frame, Constraints(min_recall=0.9, max_p99_ms=2.0, clock="cpu"))
    assert wall.choice["search_params"] == {"ef": 64}  # the wall p99 of ef=16 breaks 2 ms
    assert cpu.choice["search_params"] == {"ef": 16}
    nothing = recommend(frame, Constraints(min_recall=0.9, max_p99_ms=0.1, clock="cpu"))
    assert "CPU p99 0.500 ms > 0.1 ms" in nothing.closest["violations"].iloc[0]


def test_the_cli_states_the_clock_and_marks_interference(isolated_folders):
    folder = Path(os.environ["ANNBENCH_RESULTS"])
    _store_pair(folder)
    runner = CliRunner()
    table = runner.invoke(main, ["results"]).output.splitlines()
    assert "cpu_p99_ms" in table[0] and "wall/cpu" in table[0]
    assert "1.80!" in table[1] and "1.02" in table[2] and "1.02!" not in table[2]
    # recommend reads a dataset: point it at one whose content the records name
    from annbench.data.synthetic import create_synthetic

    path = create_synthetic(
        isolated_folders / "d.hdf5", n=200, nq=10, d=4, metric=Metric.EUCLIDEAN, seed=1
    )
    from annbench.data.format import read_dataset

    content = read_dataset(path).content_hash
    with ResultStore(folder) as store:
        records = store.records()
    with ResultStore(folder / "again") as store:
        for record in records:
            record.dataset_hash = content
            store.put(record)
    base = ["recommend", "-d", str(path), "--results", str(folder / "again")]
    base += ["--min-recall", "0.9", "--max-p99-ms", "2"]
    on_cpu = runner.invoke(main, [*base, "--latency-clock", "cpu"])
    assert on_cpu.exit_code == 0, on_cpu.output
    assert "p99 <= 2 ms (CPU time)" in on_cpu.output
    assert "[ef=16]" in on_cpu.output.splitlines()[1]
    assert "host interference: wall time 1.80x CPU time, p99 10.00x" in on_cpu.output
    assert "(CPU 0.500)" in on_cpu.output
    on_wall = runner.invoke(main, base)
    assert on_wall.exit_code == 0 and "p99 <= 2 ms (wall time)" in on_wall.output
    assert "[ef=64]" in on_wall.output.splitlines()[1]
    batch = runner.invoke(main, [*base, "--latency-clock", "cpu", "--mode", "batch"])
    assert batch.exit_code == 2 and "--latency-clock cpu needs --mode single" in batch.output
