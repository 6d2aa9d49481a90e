"""Plan a sweep, run each build configuration in its own worker process, store every record.

A worker that crashes, hangs past the timeout or raises is recorded as failed runs with the
reason, and the sweep goes on with the next configuration.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

from annbench.datasets import Dataset
from annbench.errors import AnnbenchError
from annbench.filtering import FILTER_PARAMS, default_overfetch, filter_search_configs
from annbench.grids import check_grid, check_overrides, default_grid, with_overrides
from annbench.measure import MIN_SECONDS, BuildJob, max_probes, run_build_job
from annbench.record import MODES, PLAIN, RunRecord, params_label
from annbench.registry import load_backend
from annbench.store import ResultStore
from annbench.workloads import check_filter, expected_selectivity, is_filter, workload_hash

log = logging.getLogger(__name__)

Progress = Callable[[RunRecord], None]


@dataclass
class SweepSummary:
    """What a sweep did."""

    stored: int = 0
    skipped: int = 0
    failed: list[RunRecord] = field(default_factory=list)

    def keep(self, record: RunRecord, store: ResultStore, progress: Progress | None) -> None:
        """Store ``record`` at once and count it."""
        store.put(record)
        self.stored += 1
        if record.status != "ok":
            self.failed.append(record)
        if progress is not None:
            progress(record)


def plan_sweep(
    dataset: Dataset,
    backends: list[str],
    k: int = 10,
    mode: str = "single",
    runs: int = 3,
    threads: int | tuple[int, ...] | None = None,
    overrides: dict[str, list[Any]] | None = None,
    build_threads: int | None = None,
    min_seconds: float = MIN_SECONDS,
    workloads: Sequence[str] = (PLAIN,),
) -> list[BuildJob]:
    """Every build job of the sweep, with all parameters checked before anything runs.

    Each workload (``plain`` or a filter, see ``annbench.workloads``) gets its own build jobs;
    a filter workload's search settings add ``filter_strategy`` (and ``overfetch`` for
    ``post``), which ``overrides`` may set like any search parameter."""
    n, d = dataset.train.shape
    if mode not in MODES:
        raise AnnbenchError(f"Mode '{mode}' not valid. Use one of: {', '.join(MODES)}")
    if k < 1 or k > n:
        raise AnnbenchError(f"k must be between 1 and the {n} base vectors, got {k}")
    if k > dataset.neighbors.shape[1]:
        raise AnnbenchError(
            f"k={k} exceeds the {dataset.neighbors.shape[1]} true neighbours stored in "
            f"{dataset.name}; use --k {dataset.neighbors.shape[1]} or less"
        )
    if runs < 1:
        raise AnnbenchError(f"runs must be at least 1, got {runs}")
    if not min_seconds >= 0:  # also rejects NaN
        raise AnnbenchError(f"minimum timing seconds must be 0 or more, got {min_seconds:g}")
    counts = (threads,) if isinstance(threads, int) else tuple(threads or ())
    counts = counts or ((1,) if mode == "single" else (os.cpu_count() or 1,))
    if any(t < 1 for t in counts):
        raise AnnbenchError(f"threads must be at least 1, got {', '.join(map(str, counts))}")
    if mode == "single" and counts != (1,):
        raise AnnbenchError(
            "single mode times one query per call on one thread; "
            "use --mode batch to measure thread counts"
        )
    if build_threads is not None and build_threads < 1:
        raise AnnbenchError(f"build threads must be at least 1, got {build_threads}")
    overrides = dict(overrides or {})
    filtering = {key: overrides.pop(key) for key in FILTER_PARAMS if key in overrides}
    workloads = list(dict.fromkeys(workloads)) or [PLAIN]
    for workload in workloads:
        check_filter(dataset, workload)
    if filtering and not any(is_filter(w) for w in workloads):
        raise AnnbenchError(
            f"{' and '.join(filtering)} apply to filtered searches; add --filter (e.g. label)"
        )
    classes = {name: load_backend(name) for name in backends}
    check_overrides(classes, overrides)

    jobs = []
    for name, cls in classes.items():
        grid = with_overrides(default_grid(name), cls, overrides)
        check_grid(name, cls, grid)
        for build_params in grid.build_configs():
            searches = tuple(grid.search_configs(build_params))
            index = cls(dataset.metric, **build_params)  # an unbuilt index checks values
            index.check(n, d)
            for search_params in searches:
                index.set_search_params(**search_params)
            for workload in workloads:
                configs = searches
                if is_filter(workload):
                    overfetch = filtering.get("overfetch") or default_overfetch(
                        expected_selectivity(dataset, workload), k, n
                    )
                    configs = filter_search_configs(
                        searches,
                        name,
                        cls.native_filter,
                        filtering.get("filter_strategy"),
                        overfetch,
                    )
                jobs.append(
                    BuildJob(
                        dataset_path=str(dataset.path),
                        dataset=dataset.name,
                        dataset_hash=dataset.content_hash,
                        backend=name,
                        build_params=build_params,
                        search_configs=configs,
                        k=k,
                        mode=mode,
                        runs=runs,
                        threads=counts,
                        build_threads=build_threads,
                        min_seconds=min_seconds,
                        library_version=cls.library_version(),
                        workload=workload,
                    )
                )
    # filter records are keyed on the workload's ground truth too (computed here if missing)
    hashes = {w: workload_hash(dataset, w) for w in workloads if is_filter(w)}
    return [replace(j, dataset_hash=hashes.get(j.workload, j.dataset_hash)) for j in jobs]


def run_sweep(
    jobs: list[BuildJob],
    store: ResultStore,
    force: bool = False,
    timeout: float | None = None,
    progress: Progress | None = None,
    memory_limit: float | None = None,
    status: Callable[[str], None] | None = None,
) -> SweepSummary:
    """Run ``jobs`` one worker process each, storing each record as soon as it arrives;
    ``status`` hears what is being worked on (``hnswlib [M=16]: building``)."""
    summary = SweepSummary()
    todo, summary.skipped = pending_jobs(jobs, store, force)
    for job in todo:
        on_status = None
        if status is not None:
            label = f"{job.backend} [{params_label(job.build_params)}]"
            on_status = lambda text, label=label: status(f"{label}: {text}")  # noqa: E731
        for record in run_in_worker(job, timeout, memory_limit, on_status):
            summary.keep(record, store, progress)
    return summary


def pending_jobs(
    jobs: list[BuildJob], store: ResultStore, force: bool = False
) -> tuple[list[BuildJob], int]:
    """The jobs narrowed to the search settings not yet stored (a setting is re-measured at
    every thread count if any is missing), and how many runs are skipped."""
    done = set() if force else store.completed_keys()
    todo, skipped = [], 0
    for job in jobs:
        if job.target_recall is not None:  # an adaptive search needs its whole ladder
            todo.append(job)
            continue
        remaining = tuple(
            s for s in job.search_configs if any(r.key not in done for r in job.records(s))
        )
        skipped += (len(job.search_configs) - len(remaining)) * len(job.threads)
        if remaining:
            todo.append(replace(job, search_configs=remaining))
    return todo, skipped


def adaptive_jobs(jobs: list[BuildJob], target_recall: float, step: float = 1.25) -> list[BuildJob]:
    """Jobs that bisect for ``target_recall`` instead of sweeping the whole grid.

    A job whose search grid has one integer parameter gets a geometric ladder (ratio
    ``step``) from its smallest to its largest grid value; other jobs keep their full grid.
    """
    out = []
    for job in jobs:
        names = {name for params in job.search_configs for name in params}
        values = [params[name] for params in job.search_configs for name in names]
        if len(names) != 1 or not all(isinstance(v, int) and v > 0 for v in values):
            out.append(job)
            continue
        (name,) = names
        ladder = geometric_ladder(min(values), max(values), step)
        configs = tuple({name: value} for value in ladder)
        out.append(replace(job, search_configs=configs, target_recall=target_recall))
    return out


def geometric_ladder(low: int, high: int, step: float) -> list[int]:
    """Integers from ``low`` to ``high`` (both included), each about ``step`` times the last."""
    values = [low]
    while values[-1] < high:
        values.append(min(high, max(values[-1] + 1, round(values[-1] * step))))
    return values


def pending_runs(jobs: list[BuildJob], store: ResultStore, force: bool = False) -> int:
    """How many runs (records) the sweep will measure; for adaptive jobs, at most."""
    todo, _ = pending_jobs(jobs, store, force)
    return sum(
        max_probes(len(job.search_configs)) + (job.runs > 1)
        if job.target_recall is not None
        else len(job.search_configs) * len(job.threads)
        for job in todo
    )


def run_in_worker(
    job: BuildJob,
    timeout: float | None = None,
    memory_limit: float | None = None,
    status: Callable[[str], None] | None = None,
) -> Iterator[RunRecord]:
    """Records of ``job`` measured in a fresh process; if the worker does not finish (crash,
    timeout, resident memory over ``memory_limit`` bytes, error), failed records with the
    reason for the settings it did not measure. The worker is killed if it must be stopped."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_worker_main, args=(job, sender), daemon=True)
    worker.start()
    sender.close()
    deadline = time.monotonic() + timeout if timeout else None
    finished: set[str] = set()
    error: str | None = None
    completed = False
    kill = True  # unless the loop ends normally: an exception in the consumer kills at once
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                error = f"timed out after {timeout:g} s"
                break
            if memory_limit is not None:
                resident = _resident_bytes(worker.pid)
                if resident > memory_limit:
                    error = (
                        f"exceeded the memory limit: {resident / 1e6:,.0f} MB resident > "
                        f"{memory_limit / 1e6:,.0f} MB"
                    )
                    break
            if not receiver.poll(0.05):
                if not worker.is_alive() and not receiver.poll(0):
                    break
                continue
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "record":
                finished.add(payload.key)
                yield payload
            elif kind == "status":  # what the worker is doing: building, searching ...
                if status is not None:
                    status(payload)
            elif kind == "error":
                error = payload
                break
            else:  # "done": an adaptive job legitimately leaves settings unmeasured
                completed = True
                break
        kill = error is not None
    finally:
        _stop(worker, kill)
        receiver.close()
    if completed:
        return
    if error is None:
        error = _exit_reason(worker.exitcode)
    for search_params in job.search_configs:
        for record in job.records(search_params, status="failed", error=error):
            if record.key not in finished:
                yield record


def _resident_bytes(pid: int | None) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, ValueError):
        return 0


def _worker_main(job: BuildJob, sender: Any) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        run_build_job(
            job,
            lambda record: sender.send(("record", record)),
            status=lambda text: sender.send(("status", text)),
        )
        sender.send(("done", None))
    except Exception as exc:  # reported to the parent, which records the failure
        text = " ".join(str(exc).split())
        sender.send(
            ("error", text if isinstance(exc, AnnbenchError) else f"{type(exc).__name__}: {text}")
        )
    finally:
        sender.close()


def _stop(worker: multiprocessing.process.BaseProcess, kill: bool) -> None:
    if kill:
        worker.kill()
    worker.join(timeout=5)
    if worker.is_alive():
        worker.kill()
        worker.join()


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker did not finish"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker killed by {name}"
    return f"worker exited with code {exitcode} before finishing"
