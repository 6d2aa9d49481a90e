"""Which configurations ``recommend --at-qps --measure`` measures at the offered rate, and
measuring them within the time budget.

The candidates are stored single-mode figures (found by the single-query bisection of
``annbench.recommender`` or stored by earlier sweeps) whose p99 fits the limit and whose mean
latency keeps the load clients under ``PLAUSIBLE_UTILISATION`` at the rate. Each build
configuration becomes one rate-mode build job with its ``SETTINGS_PER_BUILD`` likeliest
settings (so each index is built once), run through the same worker as ``annbench run``;
a job starts only with as many settings as fit in what is left of the time budget
(``annbench.time_budget.load_estimate``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from annbench.data.format import Dataset
from annbench.recommend_load import SAME_RATE, AtRate, at_rate, config_key, plural, whole
from annbench.record import PLAIN, RunRecord, params_label
from annbench.results.analysis import RECALL_TIE, Constraints, recommend, successful
from annbench.results.store import ResultStore
from annbench.sweep.load import LoadOptions, available_cores
from annbench.sweep.measure import BuildJob
from annbench.time_budget import (
    Budget,
    History,
    Skip,
    Step,
    clock,
    kept,
    load_estimate,
    structure,
    timed_out,
    timeout_for,
)

#: ``--measure``: a search setting is worth a load run when its single-query mean latency
#: keeps the clients below this utilisation at the rate (rate x mean / clients).
PLAUSIBLE_UTILISATION = 0.7
#: ``--measure``: search settings of one build measured at the rate, the likeliest first.
SETTINGS_PER_BUILD = 3
#: What ranks builds to measure, most promising first, for each objective.
_PROMISE = {
    "recall": ("recall", False),
    "memory": ("memory_footprint", True),
    "build": ("build_s", True),
    "latency": ("latency_p99_ms", True),
}


def service_limit_ms(at_qps: float, clients: int, cores: int) -> float:
    """The single-query mean latency (ms) at which ``clients`` clients on ``cores`` cores
    serving ``at_qps`` queries/s run at ``PLAUSIBLE_UTILISATION``."""
    return PLAUSIBLE_UTILISATION * min(clients, cores) * 1e3 / at_qps


def plausible(
    single: pd.DataFrame, constraints: Constraints, at_qps: float, service_ms: float
) -> pd.DataFrame:
    """Single-mode rows (probes too) whose figures make ``at_qps`` plausible: single p99
    within the limit, mean latency within ``service_ms``, and recall, memory and build time
    within their limits where measured; the latest attempt of each configuration."""
    ok = successful(single.assign(probe=False))
    if ok.empty:
        return ok
    ok = ok.assign(key=[config_key(row) for _, row in ok.iterrows()])
    ok = ok.sort_values("created_at", kind="stable").drop_duplicates("key", keep="last")
    keep = (ok["latency_p99_ms"] <= constraints.max_p99_ms) & (1e3 / ok["qps"] <= service_ms)
    memory = ok[
        "memory_footprint" if constraints.memory_figure == "serving" else "serving_rss_bytes"
    ]
    for limit, values, floor in (
        (constraints.min_recall, ok["recall"], True),
        (constraints.max_memory_bytes, pd.to_numeric(memory, errors="coerce"), False),
        (constraints.max_build_s, pd.to_numeric(ok["build_s"], errors="coerce"), False),
    ):
        if limit is not None:
            keep &= values.isna() | ((values >= limit) if floor else (values <= limit))
    return ok[keep]


@dataclass
class _Build:
    """A build configuration to measure at the rate, with its plausible search settings."""

    backend: str
    build_params: dict[str, Any]
    settings: pd.DataFrame  # single-mode rows, likeliest winner first

    @property
    def label(self) -> str:
        return f"{self.backend} [{params_label(self.build_params)}]"


def _builds(candidates: pd.DataFrame, optimize: str) -> list[_Build]:
    """``candidates`` grouped by build configuration, most promising first: by the objective
    of its best setting (recall to ``RECALL_TIE``), then the fastest single query (the
    likeliest to keep up); within a build the same way."""
    column, ascending = _PROMISE.get(optimize, _PROMISE["recall"])
    ranked = candidates.assign(
        _rank=pd.to_numeric(candidates[column], errors="coerce").fillna(
            math.inf if ascending else -math.inf
        )
    )
    if column == "recall":
        ranked["_rank"] = (ranked["_rank"] / RECALL_TIE).round()
    ranked = ranked.sort_values(
        ["_rank", "latency_mean_ms"], ascending=[ascending, True], kind="stable"
    )
    keys = [
        json.dumps([b, p], sort_keys=True, default=str)
        for b, p in zip(ranked["backend"], ranked["build_params"], strict=True)
    ]
    builds = []
    for _, group in ranked.groupby(keys, sort=False) if len(ranked) else ():
        first = group.iloc[0]
        builds.append(_Build(first["backend"], dict(first["build_params"]), group))
    return builds


def measure_at_rate(
    dataset: Dataset,
    store: ResultStore,
    constraints: Constraints,
    optimize: str,
    *,
    at_qps: float,
    k: int,
    workload: str,
    dataset_hash: str,
    backends: list[str] | None,
    budget: Budget,
    build_threads: int | None,
    load: LoadOptions,
    frame: Callable[[], pd.DataFrame],
    say: Callable[[str], None],
) -> tuple[list[Step], list[Skip]]:
    """Measure at ``at_qps`` the stored single-mode configurations (of ``backends``, when
    named) that make it plausible, one build job each with its likeliest settings, while the
    budget lasts; ``frame()`` gives the stored rate-mode records. Returns what was measured
    and what was skipped, with the reason."""
    from annbench.registry import load_backend
    from annbench.sweep import runner
    from annbench.sweep.load import executor_for

    cores = available_cores()
    clients = cores  # as 'annbench run --mode rate' paces arrivals by default
    service_ms = service_limit_ms(at_qps, clients, cores)
    history = History(
        store,
        dataset.name,
        dataset_hash,
        dataset.train.shape,
        k=k,
        mode="rate",
        threads=1,
        workload=workload,
    )
    single = history.attempts
    single = single[
        (single["mode"] == "single")
        & (single["k"] == k)
        & (single["threads"] == 1)
        & (single["workload"].fillna(PLAIN) == workload)
    ]
    if backends:
        single = single[single["backend"].isin(backends)]
    candidates = plausible(single, constraints, at_qps, service_ms)
    builds = _builds(candidates, optimize)
    rate_text = f"{at_qps:,.0f} q/s"
    if not builds:
        reason = (
            f"no stored configuration's single-query figures make {rate_text} with p99 <= "
            f"{constraints.max_p99_ms:g} ms plausible (single-query p99 within the limit and "
            f"mean latency within {service_ms:.3g} ms, for {plural(clients, 'client')} on "
            f"{plural(cores, 'core')})"
        )
        say(f"At {rate_text}: {reason}")
        return [], [Skip(f"at {rate_text}", reason)]
    steps: list[Step] = []
    skips: list[Skip] = []
    n, nq = len(dataset.train), len(dataset.test)
    threads_building = build_threads or available_cores()
    for number, build in enumerate(builds, 1):
        label = f"{build.label} at {rate_text}"
        prefix = f"[{number}/{len(builds)}] {label}"
        found = at_rate(frame(), at_qps, cores)
        todo = _unsettled(build.settings, found, constraints)[:SETTINGS_PER_BUILD]
        reason = None
        if not len(todo):
            reason = "measured at this rate on an earlier call (stored)"
        else:
            reason = _cannot_contend(todo, found, constraints, optimize)
        if reason is not None:
            skips.append(Skip(label, reason))
            say(f"{prefix}: skipped, {reason}")
            continue
        cls = load_backend(build.backend)
        job = BuildJob(
            dataset_path=str(dataset.path),
            dataset=dataset.name,
            dataset_hash=dataset_hash,
            backend=build.backend,
            build_params=build.build_params,
            search_configs=tuple(dict(p) for p in todo["search_params"]),
            k=k,
            mode="rate",
            runs=1,
            threads=(1,),
            build_threads=build_threads,
            library_version=cls.library_version(),
            workload=workload,
            clients=(clients,),
            rates=(at_qps,),
            load=load,
            cores=cores,
        )
        s = structure(job.backend, job.build_params, dataset.train.shape[1])
        process = executor_for(cls) == "process"
        cost = load_estimate(job, s, n, nq, history, threads_building, process_clients=process)
        left = budget.left()
        fit = min(cost.settings_within(left), len(job.search_configs))
        if fit < 1:
            one = cost.for_settings(1)
            reason = (
                f"needs about {one.seconds:.0f} s for one setting (build {one.build_s:.0f} s: "
                f"{one.basis}), {max(left, 0):.0f} s left"
            )
            skips.append(Skip(label, reason))
            say(f"{prefix}: skipped, {reason}")
            continue
        job = replace(job, search_configs=job.search_configs[:fit])
        expected = cost.for_settings(fit)
        timeout = timeout_for(expected, left)
        settings = ", ".join(params_label(p) for p in job.search_configs)
        say(f"{prefix}: {settings} (expected {expected.seconds:.0f} s, given {timeout:.0f} s) ...")
        start = clock()
        records = list(kept(runner.run_in_worker(job, timeout), store))
        step = Step(
            label,
            clock() - start,
            _outcome(records, constraints),
            records,
            expected.seconds,
            timed_out(records),
        )
        steps.append(step)
        say(f"      {step.outcome} ({step.seconds:.1f} s)")
    return steps, skips


def _unsettled(settings: pd.DataFrame, found: AtRate, constraints: Constraints) -> pd.DataFrame:
    """``settings`` without those whose stored rate-mode record on this machine's cores
    answers for the rate: measured at it, or fitting at a higher rate."""
    stored = found.by_key()
    keep = []
    for _, row in settings.iterrows():
        record = stored.get(config_key(row))
        settled = False
        if record is not None and whole(record.get("cores")) == found.cores:
            at_it = float(record["rate"]) <= found.at_qps * (1 + SAME_RATE)
            fits = bool(record["sustained"]) and not constraints.violations(record)
            settled = at_it or fits
        keep.append(not settled)
    return settings[keep]


def _cannot_contend(
    todo: pd.DataFrame, found: AtRate, constraints: Constraints, optimize: str
) -> str | None:
    """Why the best recall ``todo`` could give cannot beat the stored answer at the rate
    (a tie at best: not worth a build while the budget lasts)."""
    if optimize != "recall":
        return None
    rows = found.rows
    best = recommend(rows[rows["sustained"].astype(bool)], constraints, optimize).choice
    if best is None or todo["recall"].max() > best["recall"]:
        return None
    return (
        f"cannot beat: recall at most {todo['recall'].max():.4f} against "
        f"{best['recall']:.4f} stored at {found.at_qps:,.0f} q/s ({best['config']})"
    )


def _outcome(records: list[RunRecord], constraints: Constraints) -> str:
    """What a load job found, in a few words."""
    failures = [r for r in records if r.status != "ok"]
    if failures and not len(records) - len(failures):
        error = failures[0].error or ""
        stopped = "stopped by the time budget" if error.startswith("timed out") else "failed"
        return f"{stopped}: {error}"
    parts = []
    for record in records:
        if record.status != "ok":
            parts.append(f"{params_label(record.search_params)}: failed ({record.error})")
            continue
        text = (
            f"{params_label(record.search_params)}: recall {record.recall:.4f}, "
            f"p99 {record.latency_p99_ms:.3f} ms"
        )
        if record.rate and record.qps is not None and record.qps < record.rate * 0.95:
            text += f", served {record.qps:,.0f} of {record.rate:,.0f} q/s"
        if constraints.max_p99_ms is not None and record.latency_p99_ms is not None:
            text += " (fits)" if record.latency_p99_ms <= constraints.max_p99_ms else " (too slow)"
        parts.append(text)
    return "; ".join(parts)
