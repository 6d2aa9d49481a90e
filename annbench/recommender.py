"""The deployment question: the best configuration within a budget, measured if need be.

``recommend_index`` is what ``annbench recommend`` and ``annbench.api.recommend`` both call:
optionally measure budget-fitted candidates (or named backends' grids) by bisection within a
time budget, then pick among the full measurements stored for exactly this dataset content.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from annbench.candidates import Candidate, propose
from annbench.data.datasets import Dataset
from annbench.errors import AnnbenchError, BadUsage, NothingFits
from annbench.record import MODES, PLAIN, RunRecord, params_label
from annbench.registry import backend_names, load_backend
from annbench.results.analysis import Constraints, Recommendation, check_objective, recommend
from annbench.results.store import ResultStore
from annbench.sweep.measure import MIN_SECONDS, BuildJob

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
class Step:
    """One build configuration tried while measuring."""

    label: str
    seconds: float
    outcome: str
    records: list[RunRecord] = field(default_factory=list, repr=False)


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
    steps: list[Step] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # candidates left out by the time budget
    measure_seconds: float = 0.0

    @property
    def found(self) -> bool:
        """Whether some configuration meets every constraint."""
        return self.recommendation.choice is not None

    @property
    def query_mode(self) -> str:
        """Which query mode the latency and QPS figures are for."""
        return query_mode(self.mode, self.threads)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values (``--json``)."""
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
                {"config": s.label, "seconds": round(s.seconds, 3), "outcome": s.outcome}
                for s in self.steps
            ],
            "skipped_for_time": self.skipped,
            "measure_seconds": round(self.measure_seconds, 3),
        }


def query_mode(mode: str, threads: int) -> str:
    """``'single-query, 1 thread'`` or ``'batch, 4 threads (latency = time per query
    amortized over the batch)'``."""
    if mode == "single":
        return "single-query, 1 thread"
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
    mode: str = "single",
    threads: int | None = None,
    measure: bool = False,
    backends: list[str] | None = None,
    overrides: dict[str, list[Any]] | None = None,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    policy: MeasurementPolicy = FULL_PROTOCOL,
    progress: Callable[[str], None] | None = None,
    workload: str = PLAIN,
    build_threads: int | None = None,
) -> Outcome:
    """The configuration of ``dataset`` meeting ``constraints`` with the best ``optimize``.

    With ``measure``, first measure by bisection, within ``time_budget_s`` seconds: named
    ``backends``' grids, or else index structures proposed to fit the memory budget. Only
    full measurements (``policy``) of this exact dataset content, ``workload`` (plain or a
    filter), k, mode and thread count are picked from; a pick measured with fewer repeats
    than ``policy`` is re-measured first. ``build_threads`` as for ``annbench run`` (None:
    every core).
    """
    optimize = optimize or default_objective(constraints)
    threads = _check(
        dataset, constraints, optimize, k, mode, threads, time_budget_s, policy, build_threads
    )
    say = progress or log.info
    steps: list[Step] = []
    skipped: list[str] = []
    spent = 0.0
    if measure:
        jobs = _jobs(
            dataset, constraints, optimize, k, mode, threads, backends, overrides, policy, workload
        )
        jobs = [(label, replace(job, build_threads=build_threads)) for label, job in jobs]
        start = time.monotonic()
        steps, skipped = _measure(jobs, store, time_budget_s, say)
        spent = time.monotonic() - start
    if not measure and workload != PLAIN:
        from annbench.data.workloads import is_prepared

        if not is_prepared(dataset, workload):  # read-only: nothing computed, nothing written
            raise AnnbenchError(
                f"Nothing measured on {dataset.name} under filter {workload}; measure it with "
                f"'annbench run -d {dataset.name} --filter {workload}', or add --measure"
            )
    dataset_hash = _hash(dataset, workload)
    frame = _frame(store, dataset, dataset_hash, workload, k, mode, threads)
    result = recommend(frame, constraints, optimize)
    choice = result.choice
    if measure and choice is not None and (choice["runs"] or 0) < policy.runs:
        say(f"Re-measuring the pick under the full protocol: {choice['config']}")
        job = _job_for_row(dataset, choice, k, mode, threads, policy)
        job = replace(
            job, dataset_hash=dataset_hash, workload=workload, build_threads=build_threads
        )
        more, _ = _measure([(choice["config"], job)], store, math.inf, say)
        steps += more
        frame = _frame(store, dataset, dataset_hash, workload, k, mode, threads)
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
    )


def _check(
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


def _hash(dataset: Dataset, workload: str) -> str:
    """What records of ``workload`` on ``dataset`` are keyed on."""
    if workload == PLAIN:
        return dataset.content_hash
    from annbench.data.workloads import workload_hash

    return workload_hash(dataset, workload)


def _frame(
    store: ResultStore,
    dataset: Dataset,
    dataset_hash: str,
    workload: str,
    k: int,
    mode: str,
    threads: int,
) -> pd.DataFrame:
    """Stored full measurements of exactly this content, workload, k, mode and threads."""
    frame = store.dataframe(dataset.name)
    keep = (
        (frame["k"] == k)
        & (frame["mode"] == mode)
        & (frame["threads"] == threads)
        & (frame["dataset_hash"] == dataset_hash)
        & (frame["workload"].fillna(PLAIN) == workload)
        & ~frame["probe"].fillna(False).astype(bool)
    )
    return frame[keep]


def installed_backends() -> list[str]:
    """Registered backends whose library is installed."""
    names = []
    for name in backend_names():
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
        jobs = [replace(j, max_p99_ms=bisect.get("max_p99_ms")) if j.adaptive else j for j in jobs]
        return [(f"{j.backend} [{params_label(j.build_params)}]", j) for j in jobs]
    if overrides:
        raise BadUsage("--grid overrides apply to named backends' grids; add -b BACKEND")
    if workload != PLAIN:
        raise BadUsage(
            f"--measure proposes structures for unfiltered search; to measure filter {workload}, "
            "name backends with -b"
        )
    n, d = dataset.train.shape
    installed = set(installed_backends())
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


def _measure(
    jobs: list[tuple[str, BuildJob]],
    store: ResultStore,
    time_budget_s: float,
    say: Callable[[str], None],
) -> tuple[list[Step], list[str]]:
    """Run each job in a worker while time remains (one may take at most half of what
    remains while others wait); store its records; one step each."""
    from annbench.sweep.runner import run_in_worker

    steps: list[Step] = []
    skipped: list[str] = []
    deadline = time.monotonic() + time_budget_s
    for number, (label, job) in enumerate(jobs, 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            skipped.append(label)
            continue
        say(f"[{number}/{len(jobs)}] {label} ...")
        start = time.monotonic()
        records: list[RunRecord] = []
        failed = False
        share = remaining if number == len(jobs) else remaining / 2
        timeout = None if math.isinf(share) else share
        for record in run_in_worker(job, timeout):
            if record.status != "ok":
                if failed:  # one failure per build tells why; the rest say the same
                    continue
                failed = True
            store.put(record)
            records.append(record)
        step = Step(label, time.monotonic() - start, _outcome(job, records), records)
        steps.append(step)
        say(f"      {step.outcome} ({step.seconds:.1f} s)")
    if skipped:
        say(f"Time budget ({time_budget_s:g} s) spent; not tried: {', '.join(skipped)}")
    return steps, skipped


def _outcome(job: BuildJob, records: list[RunRecord]) -> str:
    """What a job found, in a few words."""
    failures = [r for r in records if r.status != "ok"]
    full = [r for r in records if r.status == "ok" and not r.probe]
    probes = sum(r.probe for r in records)
    if not full:
        if failures and (failures[0].error or "").startswith("timed out"):
            return f"stopped by the time budget ({failures[0].error})"
        if failures:
            return f"failed: {failures[0].error}"
        if job.latency_bound:
            return f"no setting fits the latency limit ({probes} probes)"
        return f"no setting reaches recall {job.target_recall:g} ({probes} probes)"
    best = full[-1]
    return (
        f"{params_label(best.search_params)}: recall {best.recall:.4f}, "
        f"mean {1e3 / best.qps:.3f} ms, p99 {best.latency_p99_ms or float('nan'):.3f} ms, "
        f"build {best.build_s:.1f} s"
        + (f", file {best.index_bytes / 1e6:.1f} MB" if best.index_bytes else "")
        + (f" ({probes} probes + full measurement)" if probes else " (full measurement)")
    )
