"""Plan a sweep, run each build configuration in its own worker process, store every record.

A worker that crashes, hangs past the timeout or raises is recorded as failed runs with the
reason, and the sweep goes on with the next configuration.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

from annbench.backends.server import remove_stale_folders
from annbench.data.format import Dataset
from annbench.data.runbooks import RunbookPlan
from annbench.data.subsets import check_ladder_workload, check_sizes, size_hash
from annbench.data.workloads import (
    canonical_workloads,
    check_filter,
    expected_selectivity,
    is_filter,
    workload_hash,
)
from annbench.errors import AnnbenchError, BadUsage, one_line_error
from annbench.index import Index
from annbench.metrics import Metric
from annbench.param_grid import check_grid
from annbench.record import LOAD_MODES, MODES, PLAIN, RunRecord, params_label
from annbench.registry import default_grid, load_backend, plugin_problems
from annbench.results.store import ResultStore
from annbench.sweep.filtering import FILTER_PARAMS, default_overfetch, filter_search_configs
from annbench.sweep.grids import check_overrides, with_overrides
from annbench.sweep.load import LoadOptions, available_cores, check_clients, parse_rates
from annbench.sweep.measure import (
    MIN_SECONDS,
    BuildJob,
    failure_reason,
    max_probes,
    run_build_job,
)
from annbench.sweep.replay import (
    pending_runbook_job,
    run_runbook_job,
    runbook_records,
    runbook_run_count,
)

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
    runbook: RunbookPlan | None = None,
    memory_limit: float | None = None,
    clients: Sequence[int] | None = None,
    rates: Sequence[float | str] | None = None,
    load: LoadOptions | None = None,
    sizes: Sequence[int] | None = None,
) -> list[BuildJob]:
    """Every build job of the sweep, with all parameters checked before anything runs.

    A build configuration that cannot work on this dataset (the backend's ``check``, or its
    ``estimate_memory_bytes`` over ``memory_limit`` or the machine's memory) stops the sweep
    with BadUsage when a value of it came from ``overrides``; from the default grid it becomes
    a ``RejectedJob``, whose runs are recorded as failed with the reason and no worker.

    Each workload (``plain`` or a filter, see ``annbench.data.workloads``) gets its own build jobs;
    a filter workload's search settings add ``filter_strategy`` (and ``overfetch`` for
    ``post``), which ``overrides`` may set like any search parameter. With ``runbook`` (see
    ``annbench.data.runbooks.prepare_runbook``) each job replays it instead (no filters then).

    Load modes (see ``annbench.sweep.load``): ``concurrent`` measures each setting with each
    of ``clients`` closed-loop clients (default 1, 2 and 4); ``rate`` at each of ``rates``,
    queries per second or shares of the measured saturation (``0.5`` of it written ``"50%"``),
    paced by ``clients`` clients (one count, default: the cores), driven as ``load`` says.

    Size ladders: with ``sizes`` (base row counts, increasing, see
    ``annbench.data.subsets.parse_sizes``) every configuration is built and swept at each
    size on a nested subset of the base, smallest size first (so an interrupted ladder resumes
    at the size it stopped in); each size's ground truth is computed here if missing."""
    full, d = dataset.train.shape
    ladder = list(sizes or [full])
    if sizes is not None:
        ladder = check_sizes(list(sizes), full, k)
        check_ladder_workload(workloads, runbook)
    n = ladder[0]
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
    counted = load_points(mode, clients, rates, runbook, load)
    counts = (threads,) if isinstance(threads, int) else tuple(threads or ())
    if mode in LOAD_MODES and counts not in ((), (1,)):
        raise BadUsage(
            f"{mode} mode runs each query on one library thread per client; "
            "vary --clients instead of --threads"
        )
    counts = counts or ((1,) if mode in ("single", *LOAD_MODES) else (os.cpu_count() or 1,))
    if any(t < 1 for t in counts):
        raise AnnbenchError(f"threads must be at least 1, got {', '.join(map(str, counts))}")
    if mode == "single" and counts != (1,):
        raise BadUsage(
            "single mode times one query per call on one thread; "
            "use --mode batch to measure thread counts"
        )
    if build_threads is not None and build_threads < 1:
        raise AnnbenchError(f"build threads must be at least 1, got {build_threads}")
    overrides = dict(overrides or {})
    filtering = {key: overrides.pop(key) for key in FILTER_PARAMS if key in overrides}
    workloads = list(dict.fromkeys(workloads)) or [PLAIN]
    if runbook is not None and workloads != [PLAIN]:
        raise BadUsage(
            "--runbook and --filter measure different workloads; run them as separate sweeps"
        )
    for workload in workloads:
        check_filter(dataset, workload)
    workloads = canonical_workloads(dataset, workloads)  # range:ATTR:x is range:x
    if filtering and not any(is_filter(w) for w in workloads):
        raise BadUsage(
            f"{' and '.join(filtering)} {'applies' if len(filtering) == 1 else 'apply'} only "
            "to filtered searches; add --filter (e.g. label)"
        )
    if runbook is not None and k > runbook.min_live:
        raise AnnbenchError(
            f"k={k} exceeds the {runbook.min_live} rows live at a search step of runbook "
            f"{runbook.runbook.name}; use --k {runbook.min_live} or less"
        )
    classes = {name: load_backend(name) for name in backends}
    check_overrides(classes, overrides)

    jobs = []
    for size in ladder:  # smallest first: an interrupted ladder resumes where it stopped
        n, whole = size, size == full
        content = dataset.content_hash if whole else size_hash(dataset, size)
        for name, cls in classes.items():
            # default-grid blocks for other metrics are not attempted (nor recorded as failed)
            grid = with_overrides(default_grid(name).for_metric(dataset.metric), cls, overrides)
            check_grid(name, cls, grid)
            if not grid.build_configs():
                log.warning("%s: its grid has no block for %s data", name, dataset.metric.value)
            for build_params in grid.build_configs():
                searches = tuple(grid.search_configs(build_params))
                problem = _check_values(
                    cls, name, dataset.metric, build_params, searches, runbook, n, d, memory_limit
                )
                label = f"{name} [{params_label(build_params)}]"
                if problem is not None and any(key in overrides for key in build_params):
                    raise BadUsage(f"{label}: {problem}")
                if problem is not None:
                    log.warning(
                        "%s cannot run on %s (recorded as failed): %s", label, dataset.name, problem
                    )
                make_job = (
                    BuildJob if problem is None else functools.partial(RejectedJob, reason=problem)
                )
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
                            where=cls.native_where,
                        )
                    jobs.append(
                        make_job(
                            dataset_path=str(dataset.path),
                            dataset=dataset.name,
                            dataset_hash=runbook.workload_hash if runbook else content,
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
                            workload=runbook.runbook.workload if runbook else workload,
                            runbook=runbook,
                            **counted,
                            load=load or LoadOptions() if mode in LOAD_MODES else None,
                            base_size=None if whole else size,
                        )
                    )
    # filter records are keyed on the workload's ground truth too (computed here if missing)
    hashes = {w: workload_hash(dataset, w) for w in workloads if is_filter(w)}
    return [replace(j, dataset_hash=hashes.get(j.workload, j.dataset_hash)) for j in jobs]


def load_points(
    mode: str,
    clients: Sequence[int] | None,
    rates: Sequence[float | str] | None,
    runbook: RunbookPlan | None = None,
    load: LoadOptions | None = None,
) -> dict[str, Any]:
    """BuildJob fields of a load mode's points (client counts, rates, shares of saturation,
    cores), checked: BadUsage for what the mode cannot take, and for a rate that would
    schedule too many queries in a run of ``load``'s length."""
    if mode not in LOAD_MODES:
        if clients or rates:
            raise BadUsage("--clients and --rate need --mode concurrent or --mode rate")
        return {}
    if runbook is not None:
        raise BadUsage(f"{mode} mode does not replay runbooks; run the runbook in single mode")
    cores = available_cores()
    if mode == "concurrent":
        if rates:
            raise BadUsage("--rate needs --mode rate; concurrent mode varies --clients")
        counts = tuple(dict.fromkeys(check_clients(c) for c in (clients or (1, 2, 4))))
        return {"clients": counts, "cores": cores}
    if not rates:
        raise BadUsage(
            "rate mode needs --rate: queries per second (500,1000) or shares of the "
            "saturation throughput (25%,50%)"
        )
    counts = tuple(check_clients(c) for c in (clients or (cores,)))
    if len(counts) != 1:
        raise BadUsage(
            f"rate mode paces arrivals with one client count, got {len(counts)}; "
            "pass one --clients value"
        )
    absolute, shares = parse_rates(rates)
    for rate in absolute:
        (load or LoadOptions()).check_rate(rate)
    return {"clients": counts, "rates": absolute, "rate_shares": shares, "cores": cores}


def _check_values(
    cls: type[Index],
    name: str,
    metric: Metric,
    build_params: dict[str, Any],
    searches: tuple[dict[str, Any], ...],
    runbook: RunbookPlan | None,
    n: int,
    d: int,
    memory_limit: float | None = None,
) -> str | None:
    """Raise AnnbenchError for parameter values an unbuilt index rejects; return why the
    configuration cannot work on this dataset (None: it may). Any other error is the backend's
    own and is left to the worker, where it becomes failed runs naming it."""
    try:
        index = cls(metric, **build_params)
        problem = _unworkable(index, runbook.min_live if runbook else n, n, d, memory_limit)
        if problem is None:  # what a failed check leaves unread (faiss-factory's parameters)
            for search_params in searches:
                index.set_search_params(**search_params)
        return problem
    except AnnbenchError:
        raise
    except (Exception, SystemExit) as exc:
        label = f"{name} [{params_label(build_params)}]"
        log.info("%s raised %s; its runs will fail", label, one_line_error(exc))
        return None


def _unworkable(index: Index, size: int, n: int, d: int, memory_limit: float | None) -> str | None:
    """Why ``index`` cannot be built: its ``check`` on ``size`` vectors of ``d`` dims (a
    runbook builds on fewer than ``n``), or its estimated memory with the ``n`` base vectors
    over ``memory_limit`` bytes or this machine's memory; None if neither."""
    try:
        index.check(size, d)
    except AnnbenchError as exc:
        return one_line_error(exc)
    for warning in index.build_warnings(size, d):
        log.warning(warning)
    estimate = index.estimate_memory_bytes(n, d)
    if estimate is None:
        return None
    needed = estimate + n * d * 4  # the worker holds the base vectors beside the index
    total = psutil.virtual_memory().total
    if memory_limit is not None and needed > memory_limit:
        return (
            f"needs about {needed / 1e6:,.1f} MB (index and base vectors), over the memory "
            f"limit of {memory_limit / 1e6:,.1f} MB; raise the limit or use smaller parameters"
        )
    if needed > total:
        return (
            f"needs about {needed / 1e6:,.1f} MB (index and base vectors), over this machine's "
            f"{total / 1e6:,.1f} MB; use smaller parameters"
        )
    return None


@dataclass(frozen=True)
class RejectedJob(BuildJob):
    """A build job planning found cannot work on its dataset: its runs are recorded as failed
    with ``reason``, and no worker starts."""

    reason: str = ""


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
    with interrupts_noticed():
        for job in todo:
            on_status = None
            if status is not None:
                label = f"{job.backend} [{params_label(job.build_params)}]"
                on_status = lambda text, label=label: status(f"{label}: {text}")  # noqa: E731
            for record in run_in_worker(job, timeout, memory_limit, on_status):
                summary.keep(record, store, progress)
            check_interrupted()
    return summary


_interrupted = threading.Event()


@contextmanager
def interrupts_noticed() -> Iterator[None]:
    """Make Ctrl-C (and a SIGTERM the caller turned into KeyboardInterrupt) sticky while a
    sweep runs: the handler still raises KeyboardInterrupt, and also sets a flag the sweep
    checks, so an interrupt whose exception landed in a finaliser (where Python only prints
    "Exception ignored") still stops the sweep. Only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if callable(handler):  # the default KeyboardInterrupt, or the caller's own handler
            previous[signum] = handler
            signal.signal(signum, _sticky(handler))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _interrupted.clear()


def _sticky(handler: Callable[..., Any]) -> Callable[..., Any]:
    def noticed(signum: int, frame: Any) -> Any:
        _interrupted.set()
        return handler(signum, frame)

    return noticed


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived during the sweep (see above)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


def pending_jobs(
    jobs: list[BuildJob], store: ResultStore, force: bool = False
) -> tuple[list[BuildJob], int]:
    """The jobs narrowed to the search settings not yet stored (a setting is re-measured at
    every thread count if any is missing), and how many runs are skipped."""
    done = set() if force else store.completed_keys()
    todo, skipped = [], 0
    for job in jobs:
        if job.runbook is not None:
            narrowed, stored = pending_runbook_job(job, done)
            skipped += stored
            if narrowed is not None:
                todo.append(narrowed)
            continue
        if job.adaptive:  # an adaptive search needs its whole ladder
            todo.append(job)
            continue
        remaining = tuple(
            s for s in job.search_configs if any(r.key not in done for r in job.records(s))
        )
        skipped += (len(job.search_configs) - len(remaining)) * len(job.records({}))
        if remaining:
            todo.append(replace(job, search_configs=remaining))
    return todo, skipped


def adaptive_jobs(
    jobs: list[BuildJob],
    target_recall: float | None = None,
    step: float = 1.25,
    max_latency_ms: float | None = None,
) -> list[BuildJob]:
    """Jobs that bisect instead of sweeping the whole grid: for ``target_recall``, or with
    ``max_latency_ms`` for the last setting whose mean latency per query fits.

    A job whose search grid has one integer parameter gets a geometric ladder (ratio
    ``step``) from its smallest to its largest grid value; other jobs keep their full grid.
    """
    out = []
    for job in jobs:
        ladder = search_ladder(job.search_configs, step)
        if ladder is None:
            out.append(job)
            continue
        out.append(
            replace(
                job,
                search_configs=ladder,
                target_recall=target_recall,
                max_latency_ms=max_latency_ms,
            )
        )
    return out


def search_ladder(
    configs: tuple[dict[str, Any], ...], step: float = 1.25
) -> tuple[dict[str, Any], ...] | None:
    """A geometric ladder over the one positive integer parameter of ``configs`` (its smallest
    to its largest value), or None when the settings do not vary one such parameter."""
    names = {name for params in configs for name in params}
    if len(names) != 1:  # several parameters (a filter strategy among them), or none
        return None
    (name,) = names
    values = [params.get(name) for params in configs]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return None
    return tuple({name: value} for value in geometric_ladder(min(values), max(values), step))


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
        runbook_run_count(job)
        if job.runbook is not None
        else max_probes(len(job.search_configs)) + (2 if job.latency_bound else 1)
        if job.adaptive
        else len(job.search_configs) * len(job.records({}))
        for job in todo
    )


def job_records(job: BuildJob, **fields: Any) -> list[RunRecord]:
    """Every record ``job`` produces when all goes well, with ``fields`` (keys, failures)."""
    if job.runbook is not None:
        return runbook_records(job, **fields)
    return [record for params in job.search_configs for record in job.records(params, **fields)]


def run_in_worker(
    job: BuildJob,
    timeout: float | None = None,
    memory_limit: float | None = None,
    status: Callable[[str], None] | None = None,
) -> Iterator[RunRecord]:
    """Records of ``job`` measured in a fresh process; if the worker does not finish (crash,
    timeout, resident memory over ``memory_limit`` bytes, error), failed records with the
    reason for the settings it did not measure. The worker is killed if it must be stopped."""
    if isinstance(job, RejectedJob):
        yield from job_records(job, status="failed", error=job.reason)
        return
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_worker_main, args=(job, sender, os.getpid()), daemon=True)
    finished: set[str] = set()
    error: str | None = None
    completed = False
    kill = True  # unless the loop ends normally: an exception in the consumer kills at once
    try:
        _start(worker)
        sender.close()
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            check_interrupted()
            if deadline is not None and time.monotonic() > deadline:
                error = f"timed out after {timeout:g} s"
                break
            if memory_limit is not None:
                resident = _resident_bytes(worker.pid)
                if resident > memory_limit:
                    error = (
                        f"exceeded the memory limit: {resident / 1e6:,.0f} MB resident > "
                        f"{memory_limit / 1e6:,.1f} MB"
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
        sender.close()
        _stop(worker, kill)
        receiver.close()
        if worker.exitcode:  # killed, or died: the temporary folders it owned stay behind
            remove_stale_folders("*")
    if completed:
        return
    if error is None:
        error = _exit_reason(worker.exitcode)
    for record in job_records(job, status="failed", error=error):
        if record.key not in finished:
            yield record


def _resident_bytes(pid: int | None) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, ValueError):
        return 0


def _start(worker: multiprocessing.process.BaseProcess) -> None:
    """Start ``worker`` with Ctrl-C ignored, so the child starts ignoring it: a Ctrl-C that
    reaches the whole process group while the child is still starting up cannot kill it with
    a traceback (the parent handles Ctrl-C and stops the worker). Blocking SIGINT instead does
    not reach the child: starting a spawned process clears the signal mask (CPython 3.11).
    A Ctrl-C within the few milliseconds of the start itself is not seen."""
    if threading.current_thread() is not threading.main_thread():
        worker.start()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_main(job: BuildJob, sender: Any, parent: int | None = None) -> None:
    """Entry point of a worker process: measure ``job``, send records to the parent process
    ``parent``, and exit at once (quietly) if that parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if parent is not None:
        exit_with_parent(parent)
    if job.mode in LOAD_MODES:
        # a load run may start client processes, which a daemonic process may not; this
        # worker still dies with its parent (exit_with_parent) and is stopped by it
        multiprocessing.current_process().daemon = False

    def send(message: tuple[str, Any]) -> None:
        try:
            sender.send(message)
        except (BrokenPipeError, ConnectionError, EOFError):  # the parent is gone: no traceback
            os._exit(EXIT_ORPHANED)

    plugin_problems()  # the parent process reported them: not again from every worker
    try:
        run = run_runbook_job if job.runbook is not None else run_build_job
        run(
            job,
            lambda record: send(("record", record)),
            status=lambda text: send(("status", text)),
        )
        send(("done", None))
    except (Exception, SystemExit) as exc:  # reported to the parent, which records the failure
        send(("error", failure_reason(job.backend, exc)))
    finally:
        try:
            sender.close()
        except OSError:
            pass


#: Exit status of a worker that found its parent gone.
EXIT_ORPHANED = 3
#: Seconds between the watchdog's checks that the parent is still there.
WATCHDOG_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent: int, death_signal: bool = True) -> None:
    """End this process as soon as ``parent`` is gone: the kernel sends SIGKILL when it dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``), and a watchdog thread polling ``os.getppid()`` covers
    other systems and a parent that died before this ran."""
    if death_signal and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as exc:
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    if os.getppid() != parent:  # died before the death signal was armed
        os._exit(EXIT_ORPHANED)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="annbench-parent-watchdog", daemon=True).start()


def _stop(worker: multiprocessing.process.BaseProcess, kill: bool) -> None:
    if worker.pid is None:  # interrupted before it started
        return
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
    if exitcode == EXIT_ORPHANED:
        return "worker stopped: its parent process was gone"
    return f"worker exited with code {exitcode} before finishing"
