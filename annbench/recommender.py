"""The deployment question: the best configuration within a budget, measured if need be.

``recommend_index`` is what ``annbench recommend`` calls (``annbench.api.recommend`` picks
the same way from a DataFrame): optionally measure budget-fitted candidates (or named
backends' grids) by bisection within a time budget (spent on the likeliest winners first:
``annbench.time_budget``), then pick among the full measurements stored for exactly this
dataset content. With ``at_qps`` the question is asked at an offered rate, from rate-mode
records (``annbench.recommend_load``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from annbench.candidates import CANDIDATE_BACKENDS, Candidate, propose
from annbench.data.format import Dataset
from annbench.errors import AnnbenchError, BadUsage, NothingFits
from annbench.record import LOAD_MODES, MODES, PLAIN, params_label
from annbench.registry import backend_names, load_backend
from annbench.results.analysis import Constraints, Recommendation, check_objective, recommend
from annbench.results.store import ResultStore
from annbench.sweep.load import LoadOptions
from annbench.sweep.measure import MIN_SECONDS, BuildJob
from annbench.time_budget import (
    DEFAULT_RATES,
    Budget,
    History,
    Planned,
    Skip,
    Step,
    estimate,
    measure_within,
    plan,
    structure,
)

log = logging.getLogger(__name__)

#: Exit status of ``annbench recommend`` when nothing measured meets the targets (a normal
#: answer, unlike a usage error, 2, or another error, 1).
EXIT_NOTHING_FITS = 3
#: Seconds ``--measure`` may spend building and measuring candidates by default.
DEFAULT_TIME_BUDGET_S = 300.0


@dataclass(frozen=True)
class MeasurementPolicy:
    """How a point is measured: at least ``runs`` timed repeats, more until they add up to
    ``min_seconds``. The same policy for ``annbench run``, ``recommend`` and the Python API."""

    runs: int = 3
    min_seconds: float = MIN_SECONDS


#: The full protocol every recommended point is measured under.
FULL_PROTOCOL = MeasurementPolicy()
#: What a bisection probe gets (stored with ``probe=True``, never picked).
PROBE = MeasurementPolicy(runs=1, min_seconds=0.0)


@dataclass
class Outcome:
    """A recommendation with what it was asked, for which query mode, and what was measured."""

    recommendation: Recommendation
    constraints: Constraints
    objective: str
    dataset: str
    dataset_hash: str
    k: int
    mode: str
    threads: int
    steps: list[Step] = field(default_factory=list)  # candidates measured
    skipped: list[Skip] = field(default_factory=list)  # candidates not measured, and why
    measure_seconds: float = 0.0  # spent measuring
    time_budget_s: float | None = None  # with --measure
    elapsed_s: float = 0.0  # from the start of the time budget to the answer
    at_qps: float | None = None  # the offered rate the limits hold at (rate mode)
    cores: int | None = None  # rate mode: this machine's cores, beside those of the figures
    hint: str | None = None  # rate mode, nothing measured at the rate: how to measure it

    @property
    def found(self) -> bool:
        """Whether some configuration meets every constraint."""
        return self.recommendation.choice is not None

    @property
    def query_mode(self) -> str:
        """Which query mode the latency and QPS figures are for."""
        return query_mode(self.mode, self.threads, self.at_qps)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values (``--json``)."""
        rec = self.recommendation
        out = self._to_dict()
        if self.at_qps is not None:
            from annbench.recommend_load import describe_load, load_warnings

            out |= {"at_qps": self.at_qps, "machine_cores": self.cores, "hint": self.hint}
            if rec.choice is not None:
                assert self.cores is not None
                out["choice"]["figure"] = describe_load(rec.choice, self.at_qps, self.cores)
                out["choice"]["warnings"] = load_warnings(rec.choice)
        return out

    def _to_dict(self) -> dict[str, Any]:
        rec = self.recommendation
        return {
            "found": self.found,
            "dataset": self.dataset,
            "dataset_hash": self.dataset_hash,
            "k": self.k,
            "mode": self.mode,
            "threads": self.threads,
            "query_mode": self.query_mode,
            "objective": self.objective,
            "constraints": constraints_dict(self.constraints),
            "choice": None if rec.choice is None else point(rec.choice),
            "indistinguishable": _points(rec.indistinguishable),
            "best_by_objective": None
            if rec.best_by_objective is None
            else point(rec.best_by_objective),
            "runners_up": _points(rec.runners_up),
            "binding": rec.binding,
            "closest": _points(rec.closest, with_violations=True),
            "candidates_meeting_constraints": rec.candidates,
            "measured": [
                {
                    "config": s.label,
                    "seconds": round(s.seconds, 3),
                    "expected_seconds": _rounded(s.estimate_s),
                    "timed_out": s.timed_out,
                    "outcome": s.outcome,
                }
                for s in self.steps
            ],
            "budget": {
                "time_budget_s": self.time_budget_s,
                "elapsed_s": round(self.elapsed_s, 3),
                "measure_seconds": round(self.measure_seconds, 3),
                "measured": len(self.steps),
                "timed_out": sum(s.timed_out for s in self.steps),
                "skipped": [{"config": s.config, "reason": s.reason} for s in self.skipped],
            },
        }

    def budget_report(self) -> list[str]:
        """What the time budget bought, in lines of text (none without ``--measure``)."""
        if self.time_budget_s is None:
            return []
        timed_out = sum(s.timed_out for s in self.steps)
        lines = [
            f"Time budget: {self.elapsed_s:.0f} s of {self.time_budget_s:g} s; measured "
            f"{len(self.steps)} candidate{'s' if len(self.steps) != 1 else ''}"
            + (f" ({timed_out} stopped by the time budget)" if timed_out else "")
            + f", skipped {len(self.skipped)}"
            + (":" if self.skipped else "")
        ]
        lines += [f"  {s.config}: {s.reason}" for s in self.skipped]
        return lines


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def query_mode(mode: str, threads: int, at_qps: float | None = None) -> str:
    """``'single-query, 1 thread'``, ``'batch, 4 threads (latency = time per query
    amortized over the batch)'`` or, rate mode, ``'open loop at 2,000 queries/s ...'``."""
    if mode == "single":
        return "single-query, 1 thread"
    if mode == "rate":
        at = f" at {at_qps:,.0f} queries/s" if at_qps else ""
        return f"open loop{at} (latency from each query's intended send time)"
    plural = "s" if threads != 1 else ""
    return f"batch, {threads} thread{plural} (mean latency = batch time / queries)"


def constraints_dict(constraints: Constraints) -> dict[str, float | None]:
    """Constraints with their units in the keys."""
    return {
        "min_recall": constraints.min_recall,
        "max_latency_ms": constraints.max_latency_ms,
        "max_p99_ms": constraints.max_p99_ms,
        "max_memory_bytes": constraints.max_memory_bytes,
        "max_build_s": constraints.max_build_s,
    }


def point(row: pd.Series) -> dict[str, Any]:
    """One stored configuration's figures as plain values."""
    out = {
        "backend": row["backend"],
        "build_params": row["build_params"],
        "search_params": row["search_params"],
        "config": row["config"],
        "library_version": _plain(row.get("library_version")),
        "recall": _plain(row["recall"]),
        "qps": _plain(row["qps"]),
        "latency_mean_ms": _plain(row["latency_mean_ms"]),
        "latency_p50_ms": _plain(row.get("latency_p50_ms")),
        "latency_p99_ms": _plain(row.get("latency_p99_ms")),
        "memory_bytes": _plain(row["memory_footprint"]),
        "serving_memory_bytes": _plain(row.get("serving_memory_bytes")),
        "index_bytes": _plain(row.get("index_bytes")),
        "build_s": _plain(row.get("build_s")),
        "runs": _plain(row.get("runs")),
        "qps_spread": _plain(row.get("qps_spread")),
        "p99_spread": _plain(row.get("p99_spread")),
        "noisy": bool(row.get("noisy", False)),
    }
    if row.get("mode") in LOAD_MODES:
        from annbench.recommend_load import load_point

        out |= load_point(row)
    return out


def _points(frame: pd.DataFrame | None, with_violations: bool = False) -> list[dict[str, Any]]:
    if frame is None:
        return []
    out = []
    for _, row in frame.iterrows():
        item = point(row)
        if with_violations:
            item["violations"] = row["violations"]
            item["relative_violation"] = _plain(row["distance"])
        out.append(item)
    return out


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def default_objective(constraints: Constraints) -> str:
    """``qps`` when a recall target is given, else ``recall`` (best recall within the limits)."""
    return "qps" if constraints.min_recall is not None else "recall"


def recommend_index(
    dataset: Dataset,
    store: ResultStore,
    constraints: Constraints,
    optimize: str | None = None,
    *,
    k: int = 10,
    mode: str | None = None,
    threads: int | None = None,
    measure: bool = False,
    backends: list[str] | None = None,
    overrides: dict[str, list[Any]] | None = None,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    policy: MeasurementPolicy = FULL_PROTOCOL,
    progress: Callable[[str], None] | None = None,
    workload: str = PLAIN,
    build_threads: int | None = None,
    started: float | None = None,
    at_qps: float | None = None,
    load: LoadOptions | None = None,
) -> Outcome:
    """The configuration of ``dataset`` meeting ``constraints`` with the best ``optimize``.

    With ``measure``, first measure by bisection, within ``time_budget_s`` seconds: named
    ``backends``' grids, or else index structures proposed to fit the memory budget. Only
    full measurements (``policy``) of this exact dataset content, ``workload`` (plain or a
    filter), k, mode and thread count are picked from; a pick measured with fewer repeats
    than ``policy`` is re-measured first, when the time budget covers it. ``build_threads``
    as for ``annbench run`` (None: every core). ``started``: the ``time_budget.clock()``
    reading at which the time budget began (the CLI passes its process start; None: now).
    ``mode``: ``single`` (the default) or ``batch``.

    With ``at_qps``, the limits hold while queries arrive at ``at_qps`` per second (rate
    mode, open loop; ``mode`` None or ``rate``): the answer comes from rate-mode records,
    and ``measure`` measures candidates at that rate, each load run as ``load`` says
    (``annbench.recommend_load.recommend_at_rate``).
    """
    if at_qps is not None:
        from annbench.recommend_load import recommend_at_rate

        if mode not in (None, "rate"):
            raise BadUsage(
                f"--at-qps asks about queries arriving at a rate (open loop, rate mode); "
                f"--mode {mode} contradicts it: leave --mode out"
            )
        if threads not in (None, 1):
            raise BadUsage(
                "--at-qps: rate mode runs each query on one library thread per client; "
                "leave --threads out"
            )
        return recommend_at_rate(
            dataset,
            store,
            constraints,
            optimize,
            at_qps=at_qps,
            k=k,
            measure=measure,
            backends=backends,
            overrides=overrides,
            time_budget_s=time_budget_s,
            policy=policy,
            progress=progress,
            workload=workload,
            build_threads=build_threads,
            started=started,
            load=load,
        )
    mode = mode or "single"
    if mode in LOAD_MODES:
        raise BadUsage(
            "recommend answers for single or batch mode, or for queries arriving at a rate: "
            f"for --mode {mode} give --at-qps X (the offered queries per second)"
            if mode == "rate"
            else "recommend answers for single or batch mode, or at an offered rate "
            "(--at-qps X); closed-loop concurrent results are not ranked"
        )
    if load is not None:
        raise BadUsage("load options set the load runs of --at-qps; add --at-qps")
    optimize = optimize or default_objective(constraints)
    threads = check_request(
        dataset, constraints, optimize, k, mode, threads, time_budget_s, policy, build_threads
    )
    say = progress or log.info
    budget = Budget(time_budget_s) if started is None else Budget(time_budget_s, started)
    steps: list[Step] = []
    skipped: list[Skip] = []
    spent = 0.0
    history: History | None = None
    threads_building = build_threads or os.cpu_count() or 1
    if measure:
        jobs = _jobs(
            dataset, constraints, optimize, k, mode, threads, backends, overrides, policy, workload
        )
        jobs = [(label, replace(job, build_threads=build_threads)) for label, job in jobs]
        dataset_hash = records_hash(dataset, workload)
        history = History(
            store,
            dataset.name,
            dataset_hash,
            dataset.train.shape,
            k=k,
            mode=mode,
            threads=threads,
            workload=workload,
        )
        planned = plan(
            jobs,
            history,
            constraints,
            optimize,
            nq=len(dataset.test),
            build_threads=threads_building,
            budget_s=time_budget_s,
        )
        start = budget.elapsed()
        steps, skipped = measure_within(
            planned,
            store,
            budget,
            history,
            runs=policy.runs,
            constraints=constraints,
            objective=optimize,
            frame=lambda: measured_frame(store, dataset, dataset_hash, workload, k, mode, threads),
            say=say,
        )
        spent = budget.elapsed() - start
    if not measure:
        check_prepared(dataset, workload)
    dataset_hash = records_hash(dataset, workload)
    frame = measured_frame(store, dataset, dataset_hash, workload, k, mode, threads)
    result = recommend(frame, constraints, optimize)
    choice = result.choice
    if history is not None and choice is not None and (choice["runs"] or 0) < policy.runs:
        say(f"Re-measuring the pick under the full protocol: {choice['config']}")
        job = _job_for_row(dataset, choice, k, mode, threads, policy)
        job = replace(
            job, dataset_hash=dataset_hash, workload=workload, build_threads=build_threads
        )
        s = structure(job.backend, job.build_params, dataset.train.shape[1])
        n, nq = len(dataset.train), len(dataset.test)
        cost = estimate(job, s, n, nq, DEFAULT_RATES, history, threads_building)
        start = budget.elapsed()
        more, fewer = measure_within(
            [Planned(choice["config"], job, s, cost)],
            store,
            budget,
            history,
            runs=policy.runs,
            constraints=constraints,
            objective=optimize,
            frame=lambda: frame,
            say=say,
        )
        spent += budget.elapsed() - start
        steps += more
        skipped += [replace(skip, reason=f"re-measuring the pick {skip.reason}") for skip in fewer]
        frame = measured_frame(store, dataset, dataset_hash, workload, k, mode, threads)
        result = recommend(frame, constraints, optimize)
    return Outcome(
        result,
        constraints,
        optimize,
        dataset.name,
        dataset_hash,
        k,
        mode,
        threads,
        steps,
        skipped,
        spent,
        time_budget_s if measure else None,
        budget.elapsed(),
    )


def check_request(
    dataset: Dataset,
    constraints: Constraints,
    optimize: str,
    k: int,
    mode: str,
    threads: int | None,
    time_budget_s: float,
    policy: MeasurementPolicy,
    build_threads: int | None = None,
) -> int:
    """Validate everything before anything runs; the thread count the figures are for."""
    check_objective(optimize, constraints)
    if constraints.min_recall is not None and not 0 < constraints.min_recall <= 1:
        raise BadUsage(f"--min-recall must be in (0, 1], got {constraints.min_recall}")
    for name, value in (
        ("--max-latency-ms", constraints.max_latency_ms),
        ("--max-p99-ms", constraints.max_p99_ms),
        ("--max-memory", constraints.max_memory_bytes),
        ("--max-build-s", constraints.max_build_s),
    ):
        if value is not None and not (0 < value < math.inf):
            raise BadUsage(f"{name} must be positive and finite, got {value:g}")
    if build_threads is not None and build_threads < 1:
        raise BadUsage(f"--build-threads must be at least 1, got {build_threads}")
    if not 0 < time_budget_s < math.inf:
        raise BadUsage(f"--time-budget must be positive and finite, got {time_budget_s:g}")
    if policy.runs < 1 or not policy.min_seconds >= 0:
        raise BadUsage("--runs must be at least 1 and --min-time 0 or more")
    if mode not in MODES:
        raise BadUsage(f"Mode '{mode}' not valid. Use one of: {', '.join(MODES)}")
    n = len(dataset.train)
    if not 1 <= k <= min(n, dataset.neighbors.shape[1]):
        raise BadUsage(
            f"k must be between 1 and {min(n, dataset.neighbors.shape[1])} for {dataset.name}, "
            f"got {k}"
        )
    if mode == "single":
        if threads not in (None, 1):
            raise BadUsage(
                "single mode times one query per call on one thread; use --mode batch "
                "to measure with threads"
            )
        return 1
    threads = threads or os.cpu_count() or 1
    if threads < 1:
        raise BadUsage(f"--threads must be at least 1, got {threads}")
    return threads


def check_prepared(dataset: Dataset, workload: str, options: str = "") -> None:
    """Raise AnnbenchError when nothing can be stored for ``workload`` on ``dataset`` (a
    filter whose ground truth was never computed), suggesting the run that measures it with
    ``options`` added: read-only, nothing computed or written."""
    if workload == PLAIN:
        return
    from annbench.data.workloads import is_prepared

    if not is_prepared(dataset, workload):
        raise AnnbenchError(
            f"Nothing measured on {dataset.name} under filter {workload}; measure it with "
            f"'annbench run -d {dataset.name} --filter {workload}{options}', or add --measure"
        )


def records_hash(dataset: Dataset, workload: str) -> str:
    """What records of ``workload`` on ``dataset`` are keyed on."""
    if workload == PLAIN:
        return dataset.content_hash
    from annbench.data.workloads import workload_hash

    return workload_hash(dataset, workload)


def measured_frame(
    store: ResultStore,
    dataset: Dataset,
    dataset_hash: str,
    workload: str,
    k: int,
    mode: str,
    threads: int,
) -> pd.DataFrame:
    """Stored full measurements of exactly this content, workload, k, mode and threads."""
    frame = store.dataframe(dataset.name, content_hash=dataset.content_hash)
    keep = (
        (frame["k"] == k)
        & (frame["mode"] == mode)
        & (frame["threads"] == threads)
        & (frame["dataset_hash"] == dataset_hash)
        & (frame["workload"].fillna(PLAIN) == workload)
        & ~frame["probe"].fillna(False).astype(bool)
    )
    return frame[keep]


def installed_backends(among: tuple[str, ...] | None = None) -> list[str]:
    """Registered backends whose library is installed (of ``among``, when given: importing
    every library takes time, some tens of seconds)."""
    names = []
    for name in backend_names():
        if among is not None and name not in among:
            continue
        try:
            load_backend(name)
        except AnnbenchError:
            continue
        names.append(name)
    return names


def _jobs(
    dataset: Dataset,
    constraints: Constraints,
    optimize: str,
    k: int,
    mode: str,
    threads: int,
    backends: list[str] | None,
    overrides: dict[str, list[Any]] | None,
    policy: MeasurementPolicy,
    workload: str = PLAIN,
) -> list[tuple[str, BuildJob]]:
    """Labelled jobs to measure: named backends' grids, else budget-fitted candidates, each
    bisecting for a latency limit (objective recall) or for the recall target."""
    from annbench.sweep.runner import adaptive_jobs, plan_sweep

    if optimize == "recall" or constraints.min_recall is None:
        # best recall within the latency limits: the last rung that fits (the top without one)
        mean = constraints.max_latency_ms
        bisect = {"max_latency_ms": mean if mean is not None else math.inf}
        bisect["max_p99_ms"] = constraints.max_p99_ms
        bisect["latency_clock"] = constraints.clock  # the limits' own clock, wall or cpu
    else:
        bisect = {"target_recall": constraints.min_recall}
    if backends:
        jobs = plan_sweep(
            dataset,
            list(dict.fromkeys(backends)),
            k=k,
            mode=mode,
            runs=policy.runs,
            threads=threads,
            overrides=overrides,
            min_seconds=policy.min_seconds,
            workloads=[workload],
        )
        jobs = adaptive_jobs(
            jobs,
            bisect.get("target_recall"),
            max_latency_ms=bisect.get("max_latency_ms"),
        )
        jobs = [
            replace(
                j,
                max_p99_ms=bisect.get("max_p99_ms"),
                latency_clock=bisect.get("latency_clock", "wall"),
            )
            if j.adaptive
            else j
            for j in jobs
        ]
        return [(f"{j.backend} [{params_label(j.build_params)}]", j) for j in jobs]
    if overrides:
        raise BadUsage("--grid overrides apply to named backends' grids; add -b BACKEND")
    if workload != PLAIN:
        raise BadUsage(
            f"--measure proposes structures for unfiltered search; to measure filter {workload}, "
            "name backends with -b"
        )
    n, d = dataset.train.shape
    installed = set(installed_backends(CANDIDATE_BACKENDS))
    candidates = propose(n, d, constraints.max_memory_bytes, installed, dataset.metric.value)
    if not candidates:
        raise NothingFits(
            "No index structure annbench knows fits "
            + (
                f"{constraints.max_memory_bytes / 1e6:,.1f} MB for {n} x {d} vectors; "
                "raise --max-memory"
                if constraints.max_memory_bytes
                else "this dataset; install faiss-cpu or hnswlib"
            )
        )
    return [
        (c.label, candidate_job(dataset, c, k, mode, threads, policy, **bisect)) for c in candidates
    ]


def candidate_job(
    dataset: Dataset,
    candidate: Candidate,
    k: int,
    mode: str,
    threads: int,
    policy: MeasurementPolicy,
    **bisect: Any,
) -> BuildJob:
    """The build job measuring ``candidate`` (bisecting its ladder when it has one)."""
    cls = load_backend(candidate.backend)
    index = cls(dataset.metric, **candidate.build_params)
    index.check(*dataset.train.shape)
    adaptive = bisect if candidate.search_param is not None else {}
    return _job(
        dataset,
        candidate.backend,
        candidate.build_params,
        candidate.search_configs(),
        k,
        mode,
        threads,
        policy,
        **adaptive,
    )


def _job_for_row(
    dataset: Dataset, row: pd.Series, k: int, mode: str, threads: int, policy: MeasurementPolicy
) -> BuildJob:
    """A full measurement of one stored configuration."""
    search = (dict(row["search_params"]),)
    return _job(dataset, row["backend"], row["build_params"], search, k, mode, threads, policy)


def _job(
    dataset: Dataset,
    backend: str,
    build_params: dict[str, Any],
    search_configs: tuple[dict[str, Any], ...],
    k: int,
    mode: str,
    threads: int,
    policy: MeasurementPolicy,
    **fields: Any,
) -> BuildJob:
    """The build job of ``backend`` on ``dataset`` under ``policy``, on ``threads``."""
    return BuildJob(
        dataset_path=str(dataset.path),
        dataset=dataset.name,
        dataset_hash=dataset.content_hash,
        backend=backend,
        build_params=dict(build_params),
        search_configs=search_configs,
        k=k,
        mode=mode,
        runs=policy.runs,
        threads=(threads,),
        min_seconds=policy.min_seconds,
        library_version=load_backend(backend).library_version(),
        **fields,
    )
