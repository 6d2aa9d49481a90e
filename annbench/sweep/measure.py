"""What a worker process does for one build configuration: build once, then time every
search setting on the same index. Adapters never time themselves; this module does."""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from annbench.backends.server import owned_folder
from annbench.data.format import read_dataset
from annbench.data.subsets import base_subset
from annbench.data.workloads import is_filter, load_workload
from annbench.errors import AnnbenchError, one_line_error
from annbench.index import CheckedSearches, Index, check_neighbors
from annbench.metrics import label_metrics, recall_at_k, true_distances
from annbench.provenance import provenance
from annbench.record import LOAD_MODES, PLAIN, RunRecord, params_label
from annbench.registry import load_backend
from annbench.sweep.filtering import FilteredSearch, split_filter_params
from annbench.sweep.load import (
    GeneratorCeiling,
    LoadOptions,
    LoadResult,
    SavedIndex,
    Target,
    available_cores,
    closed_loop,
    executor_for,
    generator_ceiling,
    open_loop,
    saturation,
)
from annbench.sweep.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
from annbench.sweep.serving import Serving, measure_serving

if TYPE_CHECKING:
    from annbench.data.runbooks import RunbookPlan


@dataclass(frozen=True)
class BuildJob:
    """One build configuration and the search settings still to measure on it."""

    dataset_path: str
    dataset: str
    dataset_hash: str
    backend: str
    build_params: dict[str, Any]
    search_configs: tuple[dict[str, Any], ...]
    k: int
    mode: str  # "single": one query per call, one thread; "batch": all queries in one call
    runs: int
    threads: tuple[int, ...]  # search thread counts, each measured on the same built index
    target_recall: float | None = None  # adaptive: bisect the ladder of search_configs
    #: adaptive: bisect for the last rung whose mean latency per query fits (ms), not recall
    max_latency_ms: float | None = None
    max_p99_ms: float | None = None  # adaptive, with max_latency_ms: p99 must fit too
    latency_clock: str = "wall"  # adaptive: the limits are on wall time or on CPU time ("cpu")
    build_threads: int | None = None  # None: every core
    min_seconds: float = 0.0  # repeat past ``runs`` until the timed repeats add up to this
    library_version: str | None = None  # of the backend's library, part of every record's key
    workload: str = PLAIN  # "plain", a filter ("label", "range:0.01") or "runbook:NAME"
    runbook: RunbookPlan | None = None  # replay this runbook (annbench.sweep.replay), not one build
    #: load modes (annbench.sweep.load): concurrent: the client counts to measure; rate: the
    #: clients pacing arrivals (one count)
    clients: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()  # rate mode: offered queries per second
    rate_shares: tuple[float, ...] = ()  # rate mode: offered rates as shares of saturation
    load: LoadOptions | None = None  # load modes: duration, schedule, deadline
    cores: int | None = None  # load modes: CPUs the sweep runs on, part of each record's key
    #: size ladders: build on this nested subset of the base (annbench.data.subsets); None:
    #: the whole base
    base_size: int | None = None

    @property
    def latency_bound(self) -> bool:
        """Whether an adaptive job bisects for a latency limit (else for recall)."""
        return self.max_latency_ms is not None or self.max_p99_ms is not None

    @property
    def adaptive(self) -> bool:
        """Whether the search settings are a ladder to bisect rather than a grid to sweep."""
        return self.target_recall is not None or self.latency_bound

    def record(
        self, search_params: dict[str, Any], threads: int | None = None, **fields: Any
    ) -> RunRecord:
        """A RunRecord of this job for ``search_params`` on ``threads`` (default: the first)."""
        return RunRecord(
            dataset=self.dataset,
            dataset_hash=self.dataset_hash,
            backend=self.backend,
            build_params=self.build_params,
            search_params=search_params,
            k=self.k,
            mode=self.mode,
            threads=threads or self.threads[0],
            library_version=self.library_version,
            workload=self.workload,
            base_size=self.base_size,
            **fields,
        )

    def load_points(self) -> list[dict[str, Any]]:
        """The record fields of each point a search setting is measured at: per client count
        (concurrent), per rate or share of saturation (rate), else one empty point."""
        base = {"cores": self.cores}
        if self.mode == "concurrent":
            return [base | {"clients": clients} for clients in self.clients]
        if self.mode == "rate":
            clients = {"clients": self.clients[0]}
            return [base | clients | {"rate": rate} for rate in self.rates] + [
                base | clients | {"rate_share": share} for share in self.rate_shares
            ]
        return [{}]

    def records(self, search_params: dict[str, Any], **fields: Any) -> list[RunRecord]:
        """One RunRecord for ``search_params`` per thread count and load point."""
        return [
            self.record(search_params, threads, **point, **fields)
            for threads in self.threads
            for point in self.load_points()
        ]


@dataclass
class Timing:
    """Timed repeats of one search setting."""

    qps: list[float]  # one per repeat
    ids: np.ndarray  # (nq, k) from the median repeat
    latencies_ns: np.ndarray | None  # (nq,) from the median repeat, single mode only
    p99_ms: list[float] | None = None  # p99 latency of each repeat, single mode only
    cpu_ns: np.ndarray | None = None  # (nq,) thread CPU time of each query, single mode only


def run_build_job(
    job: BuildJob,
    emit: Callable[[RunRecord], None],
    status: Callable[[str], None] | None = None,
) -> None:
    """Build the index of ``job`` once and emit one record per search setting measured.

    An adaptive job's search settings are a ladder ordered by one monotone parameter, and
    only the rungs a bisection needs are measured, as probes (one repeat, no minimum time,
    ``probe=True``): with ``job.max_latency_ms`` or ``max_p99_ms`` the last rung whose latency
    fits, else the first rung reaching ``job.target_recall``. The rung found is then measured
    under the full protocol (``job.runs`` repeats, ``job.min_seconds``); if a latency-bound
    rung no longer fits when measured fully, the rung below it is measured fully too.
    ``status`` hears each step: ``building``, ``searching ef=64``.
    """
    tell = status or (lambda text: None)
    tell("building")
    measurer = _Measurer(job, tell)
    if measurer.rows is not None:  # a subset's results are stored as base ids
        emit = functools.partial(_as_base_ids, emit, measurer.rows)
    try:
        _measure_all(job, measurer, emit, tell)
    finally:
        measurer.index.close()  # a database server stops here, whatever happened


def _measure_all(
    job: BuildJob,
    measurer: _Measurer,
    emit: Callable[[RunRecord], None],
    tell: Callable[[str], None],
) -> None:
    if job.mode in LOAD_MODES:
        with measurer.load_target_folder():
            for search_params in job.search_configs:
                for record in measurer.measure_load(search_params):
                    emit(record)
        return
    if not job.adaptive:
        for search_params in job.search_configs:
            for threads in job.threads:
                on = f" on {threads} threads" if len(job.threads) > 1 else ""
                tell(f"searching {params_label(search_params)}{on}")
                emit(measurer.measure(search_params, job.runs, threads, job.min_seconds))
        return

    def probe(i: int) -> RunRecord:
        tell(f"probing {params_label(job.search_configs[i])}")
        record = measurer.measure(job.search_configs[i], 1, job.threads[0])
        record.probe = True
        emit(record)
        return record

    def full(i: int) -> RunRecord:
        tell(f"measuring {params_label(job.search_configs[i])}")
        record = measurer.measure(job.search_configs[i], job.runs, job.threads[0], job.min_seconds)
        emit(record)
        return record

    size = len(job.search_configs)
    if job.latency_bound:
        too_slow = bisect_ladder(size, lambda i: not _latency_fits(probe(i), job))
        chosen = size - 1 if too_slow is None else too_slow - 1
        if chosen < 0:
            return
        if not _latency_fits(full(chosen), job) and chosen > 0:
            full(chosen - 1)
        return
    chosen = bisect_ladder(size, lambda i: _recall_meets(probe(i), job.target_recall))
    if chosen is not None:
        full(chosen)


def _recall_meets(record: RunRecord, target: float) -> bool:
    return record.status == "ok" and record.recall is not None and record.recall >= target


def _latency_fits(record: RunRecord, job: BuildJob) -> bool:
    """Mean time per query and p99 within the job's limits, on the job's clock (wall: 1 / QPS
    and the wall p99; cpu: the queries' CPU times); a failed run does not."""
    if record.status != "ok" or not record.qps:
        return False
    cpu = job.latency_clock == "cpu"
    mean = record.cpu_mean_ms if cpu else 1e3 / record.qps
    if job.max_latency_ms is not None and (mean is None or mean > job.max_latency_ms):
        return False
    p99 = record.cpu_p99_ms if cpu else record.latency_p99_ms
    return job.max_p99_ms is None or (p99 is not None and p99 <= job.max_p99_ms)


def bisect_ladder(size: int, meets: Callable[[int], bool]) -> int | None:
    """Smallest index in ``0..size-1`` where the monotone predicate ``meets`` holds, probing
    at most ``1 + ceil(log2(size))`` indexes; None when even the last one fails."""
    if size == 0 or not meets(size - 1):
        return None
    low, high = -1, size - 1  # meets(high) holds; meets(low) fails (or low is before the start)
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high


def max_probes(size: int) -> int:
    """The most settings ``bisect_ladder`` measures on a ladder of ``size``."""
    return 1 + math.ceil(math.log2(size)) if size > 1 else size


def _build(index: Index, xb: np.ndarray) -> dict[str, float]:
    """Build ``index`` over ``xb``; a ``load_phases`` backend phase by phase, each timed
    (``insert_s``, ``index_build_s``, ``ready_s``), with the insert throughput."""
    if not index.load_phases:
        index.build(xb)
        return {}
    timed = {}
    for name, phase in (
        ("insert_s", lambda: index.insert(xb)),
        ("index_build_s", index.create_index),
        ("ready_s", index.wait_until_ready),
    ):
        start = time.perf_counter()
        phase()
        timed[name] = time.perf_counter() - start
    if timed["insert_s"] > 0:
        timed["inserts_per_s"] = len(xb) / timed["insert_s"]
    return timed


def _as_base_ids(emit: Callable[[RunRecord], None], rows: np.ndarray, record: RunRecord) -> None:
    if record.ids is not None:
        record.ids = np.where(record.ids >= 0, rows[np.maximum(record.ids, 0)], -1)
    emit(record)


class _Measurer:
    """Builds the job's index once, then measures search settings on it."""

    def __init__(self, job: BuildJob, tell: Callable[[str], None] = lambda text: None) -> None:
        self.job = job
        # the parent read this file already; this worker is itself isolated and timed
        dataset = read_dataset(Path(job.dataset_path), probe=False)
        self.rows: np.ndarray | None = None  # size ladders: base ids of the subset's rows
        if job.base_size is not None:
            dataset, self.rows = base_subset(dataset, job.base_size)
        self.dataset = dataset
        self.index = load_backend(job.backend)(dataset.metric, **job.build_params)
        self.index.check(*dataset.train.shape)
        self.filter = load_workload(dataset, job.workload) if is_filter(job.workload) else None
        if self.filter is not None and self.index.native_where:  # stored with the vectors
            self.index.set_fields(self.filter.labels, self.filter.values)
        build_threads = job.build_threads or os.cpu_count() or 1
        self.index.set_num_threads(build_threads)
        reset_peak_rss()
        before = rss_bytes()
        start, cpu_start = time.perf_counter(), time.process_time()
        phases = _build(self.index, dataset.train)
        self.build = {
            "build_s": time.perf_counter() - start,
            "build_cpu_s": time.process_time() - cpu_start,
            **phases,
            "peak_rss_bytes": peak_rss_bytes(),
            "memory_bytes": self.index.memory_bytes() or max(rss_bytes() - before, 0),
        }
        tell("saving, and loading in a fresh process (serving memory)")
        saved = _saved_and_served(job, self.index, dataset.metric.value, dataset.test)
        note = saved.pop("serving_note")
        checked = {"ground_truth_check": dataset.attrs.get("ground_truth_check")}
        self.build |= saved | {"provenance": provenance(build_threads) | checked}
        if note:  # the record says why its serving memory is missing
            self.build["provenance"]["serving_memory"] = note
        self.xq = dataset.test
        self.tell = tell
        self._load_folder: Path | None = None
        self._load_saved = False
        self._ceiling: GeneratorCeiling | None = None

    def measure(
        self, search_params: dict[str, Any], runs: int, threads: int, min_seconds: float = 0.0
    ) -> RunRecord:
        """One record: at least ``runs`` timed repeats of ``search_params`` on ``threads``
        threads, and more until they add up to ``min_seconds`` (a failed record on error)."""
        job, dataset, index = self.job, self.dataset, self.index
        params, filtering = split_filter_params(search_params)
        try:
            if filtering.get("filter_strategy") != "brute":  # brute force uses no index
                index.set_search_params(**params)
            index.set_num_threads(threads)
            n = len(dataset.train)
            if self.filter is None:
                timing = time_search(
                    index, self.xq, job.k, job.mode, runs, min_seconds, n=n, backend=job.backend
                )
            else:
                searcher = FilteredSearch(
                    index,
                    self.filter,
                    dataset.train,
                    dataset.metric,
                    job.k,
                    **filtering,
                    threads=threads,
                )
                timing = time_filtered_search(
                    searcher, self.xq, job.mode, runs, min_seconds, backend=job.backend
                )
        except (Exception, SystemExit) as exc:  # the backend's own code may raise anything
            return job.record(
                search_params,
                threads,
                status="failed",
                error=index.problem() or failure_reason(job.backend, exc),
            )
        return job.record(
            search_params,
            threads,
            **self.quality(timing.ids),
            **timing_fields(timing),
            latency_p99_spread=_relative_iqr(timing.p99_ms),
            n_queries=len(self.xq),
            ids=timing.ids,
            latencies_ns=timing.latencies_ns,
            cpu_ns=timing.cpu_ns,
            **self.build,
        )

    def quality(self, ids: np.ndarray) -> dict[str, Any]:
        """Recall (against the workload's ground truth) and label figures of ``ids``."""
        job, dataset = self.job, self.dataset
        fields: dict[str, Any] = {}
        if self.filter is None:
            found = true_distances(dataset.metric, dataset.train, dataset.test, ids)
            recall = recall_at_k(ids, found, dataset.neighbors, dataset.distances, job.k)
        else:
            recall = self.filter.recall(dataset, ids, job.k)
            fields["selectivity"] = self.filter.mean_selectivity
        if dataset.train_labels is not None and dataset.test_labels is not None:
            by_label = label_metrics(ids, dataset.train_labels, dataset.test_labels, job.k)
            fields |= {
                "label_top_k_accuracy": float(by_label.top_k_accuracy.mean()),
                "label_precision": float(by_label.precision.mean()),
                "label_map": float(by_label.average_precision.mean()),
            }
        return fields | {
            "recall": float(recall.recall.mean()),
            "ann_benchmarks_recall": float(recall.ann_benchmarks_recall.mean()),
            "duplicates": recall.duplicates,
            "missing": recall.missing,
        }

    @contextmanager
    def load_target_folder(self) -> Iterator[None]:
        """A folder for the index file that load client processes share, for the job; owned
        by this process, so it is removed by the runner if the worker is killed."""
        self._load_folder = owned_folder("load")
        try:
            yield
        finally:
            shutil.rmtree(self._load_folder, ignore_errors=True)
            self._load_folder = None

    def measure_load(self, search_params: dict[str, Any]) -> Iterator[RunRecord]:
        """Records of ``search_params`` under load, one per load point of the job (client
        count, rate or share of saturation); a failed record for each point that fails.

        Recall comes from one checked batch search of every query at this setting (what a
        query returns does not depend on the load); throughput and latency from the load run.
        """
        job, index, options = self.job, self.index, self.job.load or LoadOptions()
        points = job.load_points()
        threads = job.threads[0]
        done = 0
        try:
            params, filtering = split_filter_params(search_params)
            if filtering.get("filter_strategy") != "brute":
                index.set_search_params(**params)
            index.set_num_threads(1)
            answers = self._answers(filtering)
            quality = self.quality(answers.ids)
            target, setup = self._load_target(params, filtering)
            drive = {
                "nq": len(self.xq),
                "warmup": options.warmup,
                "deadline_ms": options.deadline_ms,
                "load_timeout": options.load_timeout,
                "thread_setup": setup,
            }
            ceiling = self._generator_ceiling(job.clients[0] if job.mode == "rate" else 1)
            driven = {
                "load_executor": "thread" if callable(target) else "process",
                "load_schedule": options.schedule if job.mode == "rate" else None,
                "load_seed": options.seed if job.mode == "rate" else None,
                "load_cores_seen": available_cores(),
            }
            common = quality | {"n_queries": len(self.xq), "cores": job.cores} | self.build
            common["provenance"] = self.build["provenance"] | driven
            if job.mode == "concurrent":
                runs = []
                for clients in job.clients:
                    self.tell(f"{params_label(search_params)} with {clients} clients")
                    runs.append(closed_loop(target, clients, options.seconds, **drive))
                top = max(run.qps for run in runs)
                for run in runs:
                    done += 1
                    yield job.record(
                        search_params,
                        threads,
                        **common,
                        **load_fields(run),
                        saturation_qps=top,
                        generator_max_qps=ceiling.closed.qps,
                        generator_p99_ms=ceiling.closed.p99_ms,
                    )
                return
            top = None
            if job.rate_shares:
                self.tell(f"{params_label(search_params)}: saturation")
                counts = _saturation_clients(job.cores)
                top = saturation(target, options.seconds, clients=counts, **drive).qps
            for point in points:
                rate = point.get("rate") or point["rate_share"] * top
                self.tell(f"{params_label(search_params)} at {rate:,.0f} queries/s")
                run = open_loop(
                    target,
                    rate,
                    options.seconds,
                    schedule=options.schedule,
                    seed=options.seed,
                    workers=job.clients[0],
                    **drive,
                )
                done += 1
                yield job.record(
                    search_params,
                    threads,
                    **common,
                    **load_fields(run),
                    rate_share=point.get("rate_share"),
                    saturation_qps=top,
                    generator_max_qps=ceiling.max_rate,
                    generator_p99_ms=ceiling.p99_at(rate),
                )
        except (Exception, SystemExit) as exc:  # the backend's own code may raise anything
            error = index.problem() or failure_reason(job.backend, exc)
            for point in points[done:]:
                yield job.record(search_params, threads, **point, status="failed", error=error)

    def _answers(self, filtering: dict[str, Any]) -> Timing:
        """Every query's answer at the current setting, checked: one batch call."""
        job, dataset = self.job, self.dataset
        n = len(dataset.train)
        if self.filter is None:
            return time_search(self.index, self.xq, job.k, "batch", 1, n=n, backend=job.backend)
        searcher = FilteredSearch(
            self.index, self.filter, dataset.train, dataset.metric, job.k, **filtering
        )
        return time_filtered_search(searcher, self.xq, "batch", 1, backend=job.backend)

    def _load_target(
        self, params: dict[str, Any], filtering: dict[str, Any]
    ) -> tuple[Target, Callable[[], None] | None]:
        """What the load generator drives, and what each client thread runs first: the index
        itself in threads when its search releases the GIL, else a saved copy that client
        processes load."""
        job, dataset, index = self.job, self.dataset, self.index
        if executor_for(type(index)) == "process":
            path = self._saved_for_clients()
            filtered = self.filter is not None
            return SavedIndex(
                backend=job.backend,
                metric=dataset.metric.value,
                build_params=job.build_params,
                search_params=params if filtering.get("filter_strategy") != "brute" else {},
                path=path,
                queries=dataset.test,
                k=job.k,
                dataset_path=job.dataset_path if filtered else None,
                workload=job.workload if filtered else None,
                filtering=filtering if filtered else None,
            ), None
        k = job.k
        if self.filter is None:
            xq = index.prepare_queries(self.xq)
            search_one = index.search_one

            def search(i: int) -> Any:
                return search_one(xq[i], k)

        else:
            searcher = FilteredSearch(
                index, self.filter, dataset.train, dataset.metric, k, **filtering
            )
            xq = searcher.prepare_queries(self.xq)
            one = searcher.one

            def search(i: int) -> Any:
                return one(i, xq[i])

        return search, lambda: index.set_num_threads(1)

    def _saved_for_clients(self) -> Path:
        """The built index saved once into the job's load folder (see load_target_folder)."""
        if self._load_folder is None:
            raise RuntimeError("load client processes need measure_load inside load_target_folder")
        path = self._load_folder / "index"
        if not self._load_saved:
            try:
                self.index.save(path)
            except NotImplementedError:
                raise AnnbenchError(
                    f"{self.job.backend} holds the GIL while searching and cannot save its "
                    "index, so load clients can run neither as threads nor as processes"
                ) from None
            self._load_saved = True
        return path

    def _generator_ceiling(self, workers: int) -> GeneratorCeiling:
        """The load generator's own ceiling against a no-op search, measured once per job."""
        if self._ceiling is None:
            self.tell("measuring the load generator's own ceiling")
            self._ceiling = generator_ceiling(CEILING_SECONDS, workers=workers)
        return self._ceiling


#: each step of the load generator's ceiling measurement, seconds
CEILING_SECONDS = 0.3


def _saturation_clients(cores: int | None) -> tuple[int, ...]:
    """Client counts that find saturation: doubling up to four times the cores."""
    top = 4 * (cores or 1)
    counts = [1]
    while counts[-1] < top:
        counts.append(counts[-1] * 2)
    return tuple(counts)


def load_fields(run: LoadResult) -> dict[str, Any]:
    """A record's speed figures from one load run."""
    return {
        "clients": run.clients,
        "rate": run.rate,
        "qps": run.qps,
        "runs": 1,
        "latency_mean_ms": run.mean_ms,
        "latency_p50_ms": run.p50_ms,
        "latency_p95_ms": run.p95_ms,
        "latency_p99_ms": run.p99_ms,
        "latency_p999_ms": run.p999_ms,
        "latency_max_ms": run.max_ms,
        "deadline_ms": run.deadline_ms,
        "deadline_miss": run.deadline_miss,
        "unfinished": run.unfinished if run.mode == "rate" else None,
        "lag_p99_ms": run.lag_p99_ms if run.mode == "rate" else None,
        "load_seconds": run.seconds,
        "latency_histogram": run.histogram,
    }


def timing_fields(timing: Timing) -> dict[str, Any]:
    """A record's speed figures from ``timing``: QPS median, extremes and quartiles over the
    repeats, their number, and the latency percentiles (ms) of the median repeat."""
    latencies = timing.latencies_ns
    percentiles = (
        [float(x) for x in np.percentile(latencies, [50, 95, 99, 99.9]) / 1e6]
        if latencies is not None
        else [None] * 4
    )
    return {
        **cpu_fields(timing.latencies_ns, timing.cpu_ns),
        "qps": float(np.median(timing.qps)),
        "qps_min": float(min(timing.qps)),
        "qps_max": float(max(timing.qps)),
        "qps_q1": float(np.percentile(timing.qps, 25)),
        "qps_q3": float(np.percentile(timing.qps, 75)),
        "runs": len(timing.qps),
        "latency_p50_ms": percentiles[0],
        "latency_p95_ms": percentiles[1],
        "latency_p99_ms": percentiles[2],
        "latency_p999_ms": percentiles[3],
    }


def cpu_fields(latencies_ns: np.ndarray | None, cpu_ns: np.ndarray | None) -> dict[str, Any]:
    """Thread CPU time figures of one repeat's queries (ms) and how far wall time exceeds
    them: summed, and at the 99th percentile. Empty without CPU times (batch mode)."""
    if latencies_ns is None or cpu_ns is None or not len(cpu_ns):
        return {}
    cpu = np.asarray(cpu_ns, dtype=np.float64)
    wall = np.asarray(latencies_ns, dtype=np.float64)
    p50, p99, p999 = np.percentile(cpu, [50, 99, 99.9]) / 1e6
    cpu_total, cpu_p99 = cpu.sum(), np.percentile(cpu, 99)
    return {
        "cpu_mean_ms": float(cpu.mean() / 1e6),
        "cpu_p50_ms": float(p50),
        "cpu_p99_ms": float(p99),
        "cpu_p999_ms": float(p999),
        "wall_cpu_ratio": float(wall.sum() / cpu_total) if cpu_total > 0 else None,
        "wall_cpu_p99_ratio": float(np.percentile(wall, 99) / cpu_p99) if cpu_p99 > 0 else None,
    }


def time_search(
    index: Index,
    xq: np.ndarray,
    k: int,
    mode: str,
    runs: int,
    min_seconds: float = 0.0,
    *,
    n: int,
    backend: str,
) -> Timing:
    """Warm up, then time at least ``runs`` repeats over all queries in ``mode``, and more
    (up to ``MAX_REPEATS``) until the timed repeats add up to ``min_seconds``. What the index
    returns is checked (``check_neighbors``: ids of ``n`` base vectors) while warming up and
    after timing, never inside: an AnnbenchError naming ``backend`` when it is wrong."""
    xq = index.prepare_queries(xq)
    warmup = xq[: max(1, min(len(xq), 100))]
    checked = CheckedSearches(index, n, backend)
    if mode == "batch":
        checked.search(warmup, k)
        timing = _repeat(runs, min_seconds, lambda: _time_batch(index, xq, k))
    else:
        with _one_core():
            for q in warmup:
                checked.search_one(q, k)
            timing = _repeat(runs, min_seconds, lambda: _time_single(index, xq, k))
    timing.ids = check_neighbors(timing.ids, len(xq), k, n, backend)
    if index.kind != "library":  # a database searches in its own threads or server process
        timing.cpu_ns = None  # the calling thread's CPU time would under-count it
    return timing


def time_filtered_search(
    searcher: FilteredSearch,
    xq: np.ndarray,
    mode: str,
    runs: int,
    min_seconds: float = 0.0,
    *,
    backend: str,
) -> Timing:
    """``time_search`` under a filter: batch mode times one call per filter group (summed),
    single mode one call per query, each query with its own filter."""
    xq = searcher.prepare_queries(xq)
    warmup = max(1, min(len(xq), 100))
    checked = searcher.checked(backend)
    if mode == "batch":
        checked.batch(xq, limit=warmup)
        timing = _repeat(runs, min_seconds, lambda: _time_batch_filtered(searcher, xq))
    else:
        with _one_core():
            for i in range(warmup):
                checked.one(i, xq[i])
            timing = _repeat(runs, min_seconds, lambda: _time_single_filtered(searcher, xq))
    timing.ids = check_neighbors(timing.ids, len(xq), searcher.k, searcher.n, backend)
    if searcher.index is not None and searcher.index.kind != "library":
        timing.cpu_ns = None  # as in time_search: the calling thread's CPU under-counts it
    return timing


def _time_single_filtered(searcher: FilteredSearch, xq: np.ndarray) -> Timing:
    nq = len(xq)
    ids = np.full((nq, searcher.k), -1, dtype=np.int64)
    latencies = np.empty(nq, dtype=np.int64)
    cpu = np.empty(nq, dtype=np.int64)
    one = searcher.one
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(nq):
        q = xq[i]
        c0 = cpu_clock()
        t0 = clock()
        found = one(i, q)
        t1 = clock()
        cpu[i] = cpu_clock() - c0
        latencies[i] = t1 - t0
        ids[i, : len(found)] = found
    cpu = np.maximum(cpu - _clock_cost_ns(), 0)
    return Timing(qps=[nq / (latencies.sum() / 1e9)], ids=ids, latencies_ns=latencies, cpu_ns=cpu)


def _time_batch_filtered(searcher: FilteredSearch, xq: np.ndarray) -> Timing:
    t0 = time.perf_counter_ns()
    ids = searcher.batch(xq)
    elapsed = time.perf_counter_ns() - t0
    return Timing(qps=[len(xq) / (elapsed / 1e9)], ids=ids, latencies_ns=None)


@contextmanager
def _one_core() -> Iterator[None]:
    """Keep the timing thread on the core it is running on (Linux), so the scheduler does not
    migrate it between queries; concurrent workers stay on the cores they already have."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    current = psutil.Process().cpu_num()
    os.sched_setaffinity(0, {current} if current in allowed else allowed)
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


#: The one measurement policy of the CLI, the API and ``plan_sweep``: timed repeats of a setting
#: continue past ``runs`` until they add up to this many seconds.
MIN_SECONDS = 1.0
MAX_REPEATS = 100  # bounds the ids and latencies held while ``min_seconds`` is reached


def _repeat(runs: int, min_seconds: float, once: Callable[[], Timing]) -> Timing:
    repeats: list[Timing] = []
    timed = 0.0
    while len(repeats) < runs or (timed < min_seconds and len(repeats) < MAX_REPEATS):
        repeats.append(once())
        timed += len(repeats[-1].ids) / repeats[-1].qps[0]
    qps = [r.qps[0] for r in repeats]
    median = repeats[int(np.argsort(qps)[len(qps) // 2])]
    p99 = [
        float(np.percentile(r.latencies_ns, 99)) / 1e6
        for r in repeats
        if r.latencies_ns is not None
    ]
    return Timing(
        qps=qps,
        ids=median.ids,
        latencies_ns=median.latencies_ns,
        p99_ms=p99 or None,
        cpu_ns=median.cpu_ns,
    )


def _relative_iqr(values: list[float] | None) -> float | None:
    """Interquartile range / median of ``values`` (None for fewer than two)."""
    if not values or len(values) < 2:
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else None


def _time_single(index: Index, xq: np.ndarray, k: int) -> Timing:
    """Each query timed alone: wall time (perf_counter) inside, the thread's CPU time around
    it, so the CPU clock's own cost never enters the wall figure."""
    nq = len(xq)
    ids = np.full((nq, k), -1, dtype=np.int64)
    latencies = np.empty(nq, dtype=np.int64)
    cpu = np.empty(nq, dtype=np.int64)
    search_one = index.search_one
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(nq):
        q = xq[i]
        c0 = cpu_clock()
        t0 = clock()
        found = search_one(q, k)
        t1 = clock()
        cpu[i] = cpu_clock() - c0
        latencies[i] = t1 - t0
        ids[i, : len(found)] = found
    cpu = np.maximum(cpu - _clock_cost_ns(), 0)
    return Timing(qps=[nq / (latencies.sum() / 1e9)], ids=ids, latencies_ns=latencies, cpu_ns=cpu)


def _clock_cost_ns(samples: int = 201) -> int:
    """The thread CPU time the clock reads around a query cost by themselves (two wall clock
    reads and one CPU clock read: about a microsecond, a fifth of a fast query), measured on
    an empty loop and taken off each query's CPU time."""
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    costs = np.empty(samples, dtype=np.int64)
    for i in range(samples):
        c0 = cpu_clock()
        clock()
        clock()
        costs[i] = cpu_clock() - c0
    return int(np.median(costs))


def _time_batch(index: Index, xq: np.ndarray, k: int) -> Timing:
    t0 = time.perf_counter_ns()
    result = index.search(xq, k)
    elapsed = time.perf_counter_ns() - t0
    return Timing(qps=[len(xq) / (elapsed / 1e9)], ids=result.ids, latencies_ns=None)


def failure_reason(backend: str, exc: BaseException) -> str:
    """One line for a run ``exc`` failed: an AnnbenchError's message (it says what to fix; a
    bad search result names ``backend``), else what ``backend`` raised."""
    if isinstance(exc, AnnbenchError):
        return one_line_error(exc)
    return f"{backend} raised {one_line_error(exc)}"


def _saved_and_served(job: BuildJob, index: Index, metric: str, xq: np.ndarray) -> dict[str, Any]:
    """``index_bytes`` (file size), ``serving_memory_bytes`` and ``load_s`` (the file loaded
    cold in a fresh process); None where they cannot be measured, with ``serving_note``
    saying why."""
    with tempfile.TemporaryDirectory(prefix="annbench-") as folder:
        path = Path(folder) / "index"
        try:
            index.save(path)
        except NotImplementedError:
            served = Serving(None, None, f"not measured: {job.backend} cannot save an index")
            size = None
        else:
            size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
            served = _served(job, metric, path, xq)
    return {
        "index_bytes": size,
        "serving_memory_bytes": served.memory_bytes,
        "serving_rss_bytes": served.rss_bytes,
        "load_s": served.load_s,
        "serving_note": served.note,
    }


def _served(job: BuildJob, metric: str, path: Path, xq: np.ndarray) -> Serving:
    """Serving memory of the index saved at ``path``, warmed up with the last settings that
    search it (its own parameters: a filter strategy is not the index's to set)."""
    searching = [p for p in job.search_configs if p.get("filter_strategy") != "brute"]
    if job.search_configs and not searching:
        return Serving(None, None, "not measured: brute force searches no index")
    warm, _ = split_filter_params(searching[-1] if searching else {})
    return measure_serving(job.backend, metric, job.build_params, path, xq, warm, job.k)
