"""Recommend at an offered rate: the best configuration whose p99 stays within the limit
while queries arrive at ``at_qps`` per second (rate mode, open loop: ``annbench.sweep.load``).

Each configuration (backend, build and search parameters) is judged by its rate-mode record
at the lowest offered rate at or above ``at_qps``: latency grows with load, so a record at a
lower rate cannot vouch for ``at_qps``. A record whose achieved throughput fell short of its
offered rate (``RATE_SHORTFALL``), or that left queries unanswered, shows the configuration
did not keep up. Records measured on this machine's core count are preferred; one from
another core count still counts, and the answer states the core count of its figure.

``--measure`` (``recommend_at_rate`` with ``measure``) first finds candidates by the
single-query bisection of ``annbench.recommender`` (within ``SINGLE_SHARE`` of the time
budget), keeps the search settings whose single-query figures make the rate plausible
(``plausible``), and measures those at the rate: one build job per build configuration with
its likeliest settings, never started unless it fits in what is left of the time budget.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from annbench.data.datasets import Dataset
from annbench.errors import BadUsage
from annbench.record import PLAIN, RunRecord, params_label
from annbench.results.analysis import (
    RECALL_TIE,
    Constraints,
    Recommendation,
    recommend,
    successful,
)
from annbench.results.store import ResultStore
from annbench.sweep.load import MAX_RATE, LoadOptions, available_cores
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

if TYPE_CHECKING:
    from annbench.recommender import MeasurementPolicy, Outcome

log = logging.getLogger(__name__)

#: An offered rate is met when the achieved throughput falls short of it by at most this
#: share, or by three standard deviations of a Poisson arrival count if that is more (a
#: short run at a low rate: 1 s at 200 queries/s offers 200 +- 14 arrivals).
RATE_SHORTFALL = 0.05
#: ``--measure``: a search setting is worth a load run when its single-query mean latency
#: keeps the clients below this utilisation at the rate (rate x mean / clients).
PLAUSIBLE_UTILISATION = 0.7
#: ``--measure``: the share of the time budget the single-query search for candidates may use.
SINGLE_SHARE = 0.5
#: ``--measure``: search settings of one build measured at the rate, the likeliest first.
SETTINGS_PER_BUILD = 3
#: Offered rates this close (relative) are the same rate.
SAME_RATE = 1e-6
#: What ranks builds to measure, most promising first, for each objective.
_PROMISE = {
    "recall": ("recall", False),
    "memory": ("memory_footprint", True),
    "build": ("build_s", True),
    "latency": ("latency_p99_ms", True),
}


def check_at_rate(constraints: Constraints, optimize: str, at_qps: float) -> None:
    """Raise BadUsage for what an answer at an offered rate cannot take."""
    if not (isinstance(at_qps, (int, float)) and 0 < at_qps <= MAX_RATE):  # NaN fails too
        raise BadUsage(
            f"--at-qps must be a number of queries per second above 0 and at most "
            f"{MAX_RATE:,.0f}, got {at_qps!r}"
        )
    if constraints.max_p99_ms is None:
        raise BadUsage(
            f"--at-qps {at_qps:g} needs --max-p99-ms: the p99 latency the configuration must "
            "keep while queries arrive at that rate"
        )
    if constraints.max_latency_ms is not None:
        raise BadUsage(
            "--at-qps limits the tail under load: use --max-p99-ms, not --max-latency-ms "
            "(a single- or batch-mode limit)"
        )
    if constraints.clock != "wall":
        raise BadUsage(
            "--at-qps figures are wall time from each query's intended send time; "
            "--latency-clock cpu needs single mode"
        )
    if optimize == "qps":
        raise BadUsage(
            "--at-qps fixes the throughput: every configuration that fits serves the offered "
            "rate; use --optimize recall, latency, memory or build"
        )


# --- the answer from stored records ---------------------------------------------------------


def config_key(row: pd.Series) -> str:
    """What one configuration is, whatever it was measured at: backend, library version,
    build and search parameters."""
    version = row.get("library_version")
    version = None if version is None or pd.isna(version) else str(version)
    return json.dumps(
        [row["backend"], version, row["build_params"], row["search_params"]],
        sort_keys=True,
        default=str,
    )


@dataclass
class AtRate:
    """What stored rate-mode records say about ``at_qps`` on a machine of ``cores`` cores.

    ``rows``: per configuration, the record that vouches for ``at_qps``, with the columns of
    ``annbench.results.analysis.successful`` and ``shortfall`` (1 - achieved / offered),
    ``sustained`` (it kept up) and ``load_mean_ms`` (the load run's mean latency);
    ``below``: per configuration measured only below ``at_qps``, its record at its highest
    rate."""

    at_qps: float
    cores: int
    rows: pd.DataFrame
    below: pd.DataFrame

    def by_key(self) -> dict[str, pd.Series]:
        """``rows`` by ``config_key``."""
        return {config_key(row): row for _, row in self.rows.iterrows()}


def at_rate(frame: pd.DataFrame, at_qps: float, cores: int) -> AtRate:
    """Per configuration in ``frame``, the successful rate-mode record at the lowest offered
    rate at or above ``at_qps`` (records on ``cores`` cores preferred; among several at that
    rate, e.g. client counts, one that kept up, then the lowest p99)."""
    ok = frame[(frame["mode"] == "rate") & (frame["status"] == "ok")]
    if "probe" in ok:
        ok = ok[~ok["probe"].fillna(False).astype(bool)]
    ok = ok[ok["rate"].notna() & ok["qps"].notna() & ok["recall"].notna()]
    ok = _with_load_columns(ok)
    picked, below = [], []
    keys = pd.Series([config_key(row) for _, row in ok.iterrows()], index=ok.index, dtype=object)
    for _, group in ok.groupby(keys, sort=False) if len(ok) else ():
        above = group[group["rate"] >= at_qps * (1 - SAME_RATE)]
        if above.empty:
            below.append(group["rate"].astype(float).idxmax())
            continue
        here = above[above["cores"] == cores]
        above = here if len(here) else above
        lowest = above[above["rate"] <= above["rate"].min() * (1 + SAME_RATE)]
        order = lowest.sort_values(
            ["sustained", "latency_p99_ms", "created_at"],
            ascending=[False, True, False],
            kind="stable",
        )
        picked.append(order.index[0])
    return AtRate(at_qps, cores, successful(ok.loc[picked]), successful(ok.loc[below]))


def _with_load_columns(ok: pd.DataFrame) -> pd.DataFrame:
    """``ok`` with ``shortfall``, ``sustained`` and ``load_mean_ms`` (kept apart from
    ``latency_mean_ms``, which ``successful`` makes 1 / QPS)."""
    rate = ok["rate"].astype(float)
    shortfall = 1 - ok["qps"].astype(float) / rate
    seconds = pd.to_numeric(ok.get("load_seconds"), errors="coerce")
    noise = 3 / (rate * seconds) ** 0.5
    tolerance = noise.where(noise > RATE_SHORTFALL, RATE_SHORTFALL).fillna(RATE_SHORTFALL)
    unfinished = pd.to_numeric(ok.get("unfinished"), errors="coerce").fillna(0)
    return ok.assign(
        shortfall=shortfall,
        sustained=(shortfall <= tolerance) & (unfinished == 0),
        load_mean_ms=pd.to_numeric(ok["latency_mean_ms"], errors="coerce"),
    )


def recommend_at(
    frame: pd.DataFrame,
    constraints: Constraints,
    optimize: str,
    at_qps: float,
    cores: int,
    top: int = 3,
) -> tuple[Recommendation, AtRate]:
    """The configuration meeting ``constraints`` at ``at_qps`` with the best ``optimize``
    (as ``annbench.results.analysis.recommend``, among the records that vouch for ``at_qps``
    and kept up), and what the records say (``at_rate``). When nothing fits, ``closest``
    lists the nearest misses, those that did not keep up among them."""
    found = at_rate(frame, at_qps, cores)
    rows = found.rows
    result = recommend(rows[rows["sustained"].astype(bool)], constraints, optimize, top)
    if result.choice is None:
        result.closest = _closest(rows, constraints, top)
    return result, found


def _closest(rows: pd.DataFrame, constraints: Constraints, top: int) -> pd.DataFrame:
    ok = successful(rows)
    if ok.empty:
        return ok
    broken = ok.apply(lambda row: _not_kept_up(row) + constraints.violations(row), axis=1)
    missed = ok["shortfall"].clip(lower=RATE_SHORTFALL).where(~ok["sustained"].astype(bool), 0)
    distance = ok.apply(constraints.relative_violation, axis=1) + missed
    closest = ok.assign(
        violations=broken.map("; ".join), n_violations=broken.map(len), distance=distance
    )
    closest = closest.sort_values(
        ["distance", "recall", "qps"], ascending=[True, False, False], kind="stable"
    )
    return closest.head(top)


def _not_kept_up(row: pd.Series) -> list[str]:
    if row["sustained"]:
        return []
    unfinished = row.get("unfinished")
    left = f", {int(unfinished)} queries unanswered" if _given(unfinished) and unfinished else ""
    return [f"served {row['qps']:,.0f} of {row['rate']:,.0f} queries/s offered{left}"]


# --- what the answer says ------------------------------------------------------------------


def near_ceiling(row: pd.Series) -> bool:
    """Whether ``row``'s offered rate sits near the load generator's own ceiling (the rule
    of ``RunRecord.near_generator_ceiling``)."""
    record = RunRecord(
        dataset="",
        dataset_hash="",
        backend=str(row["backend"]),
        build_params={},
        search_params={},
        k=1,
        mode=str(row["mode"]),
        threads=1,
        rate=_number(row.get("rate")),
        qps=_number(row.get("qps")),
        generator_max_qps=_number(row.get("generator_max_qps")),
    )
    return record.near_generator_ceiling


def load_point(row: pd.Series) -> dict[str, Any]:
    """A rate-mode row's load figures as plain values (for ``--json``)."""
    mean = row.get("load_mean_ms", row.get("latency_mean_ms"))
    return {
        "latency_mean_ms": _number(mean),
        "latency_p999_ms": _number(row.get("latency_p999_ms")),
        "offered_qps": _number(row.get("rate")),
        "achieved_qps": _number(row.get("qps")),
        "rate_share": _number(row.get("rate_share")),
        "clients": _whole(row.get("clients")),
        "cores": _whole(row.get("cores")),
        "sustained": bool(row.get("sustained", True)),
        "unfinished": _whole(row.get("unfinished")),
        "generator_max_qps": _number(row.get("generator_max_qps")),
        "near_generator_ceiling": near_ceiling(row),
    }


def describe_load(row: pd.Series, at_qps: float, cores: int) -> str:
    """``'p99 0.800 ms at 2,000 q/s measured with 2 clients on 2 cores'``, saying when the
    rate is above ``at_qps`` (the lowest measured at or above it) and when the figure's core
    count is not this machine's ``cores``."""
    rate = float(row["rate"])
    text = f"p99 {float(row['latency_p99_ms']):.3f} ms at {rate:,.0f} q/s"
    if rate > at_qps * (1 + SAME_RATE):
        text += f" (the lowest rate measured at or above {at_qps:,.0f} q/s)"
    clients, measured_on = _whole(row.get("clients")), _whole(row.get("cores"))
    text += " measured"
    if clients is not None:
        text += f" with {_count(clients, 'client')}"
    if measured_on is None:
        return text + f" on an unrecorded number of cores (this machine has {cores})"
    text += f" on {_count(measured_on, 'core')}"
    if measured_on != cores:
        text += f" (this machine has {cores}: the figure is for {measured_on})"
    return text


def load_figures(row: pd.Series, at_qps: float, cores: int) -> str:
    """A rate-mode row's recall, load figures, memory and build time in one line."""
    memory = row.get("memory_footprint")
    parts = [
        f"recall {row['recall']:.4f}",
        describe_load(row, at_qps, cores),
        f"p50 {_ms(row.get('latency_p50_ms'))} ms",
        f"p99.9 {_ms(row.get('latency_p999_ms'))} ms",
        f"mean {_ms(row.get('load_mean_ms', row.get('latency_mean_ms')))} ms",
        f"{row['qps']:,.0f} q/s achieved",
        f"serving memory {memory / 1e6:.1f} MB" if _given(memory) else "memory not measured",
    ]
    if _given(row.get("build_s")):
        parts.append(f"build {row['build_s']:.2f} s")
    return ", ".join(parts)


def load_warnings(row: pd.Series) -> list[str]:
    """What a reader of a rate-mode figure must also know: a figure near the load
    generator's own ceiling, a rate not kept up with."""
    out = []
    if near_ceiling(row):
        out.append(
            f"the offered rate is near the load generator's own ceiling "
            f"({row['generator_max_qps']:,.0f} q/s): the figure may describe the generator as "
            "much as the index"
        )
    out += _not_kept_up(row)
    return out


def measure_hint(
    dataset: Dataset,
    at_qps: float,
    k: int,
    workload: str,
    backends: list[str],
    found: AtRate | None = None,
    measured: bool = False,
) -> str:
    """Why nothing can answer at ``at_qps``, and the command that measures it (``measured``:
    after ``--measure`` found nothing to measure there, or no time to)."""
    command = [f"annbench run -d {dataset.name}"]
    command += [f"-b {name}" for name in dict.fromkeys(backends or ["hnswlib"])]
    command.append(f"--mode rate --rate {at_qps:.10g}")
    if k != 10:
        command.append(f"--k {k}")
    if workload != PLAIN:
        command.append(f"--filter {workload}")
    below = ""
    if found is not None and len(found.below):
        highest = float(found.below["rate"].max())
        count = len(found.below)
        below = (
            f" ({count} configuration{'s were' if count != 1 else ' was'} measured only below "
            f"it, up to {highest:,.0f} queries/s)"
        )
    more = "give --measure a larger --time-budget" if measured else "add --measure"
    return (
        f"Nothing was measured at {at_qps:,.0f} queries/s or more on {dataset.name}{below}; "
        f"measure it with '{' '.join(command)}', or {more}"
    )


# --- measuring what is missing ---------------------------------------------------------------


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
            f"mean latency within {service_ms:.3g} ms, for {_count(clients, 'client')} on "
            f"{_count(cores, 'core')})"
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
        if record is not None and _whole(record.get("cores")) == found.cores:
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


# --- the whole answer ----------------------------------------------------------------------


def recommend_at_rate(
    dataset: Dataset,
    store: ResultStore,
    constraints: Constraints,
    optimize: str | None,
    *,
    at_qps: float,
    k: int,
    measure: bool,
    backends: list[str] | None,
    overrides: dict[str, list[Any]] | None,
    time_budget_s: float,
    policy: MeasurementPolicy,
    progress: Callable[[str], None] | None,
    workload: str,
    build_threads: int | None,
    started: float | None,
    load: LoadOptions | None,
) -> Outcome:
    """``annbench.recommender.recommend_index`` at an offered rate (see the module's text):
    with ``measure``, first single-query candidates by bisection within ``SINGLE_SHARE`` of
    ``time_budget_s``, then the plausible ones at ``at_qps`` within the rest; the answer
    from the stored rate-mode records (``recommend_at``). Default objective: recall."""
    from annbench.recommender import (
        Outcome,
        check_prepared,
        check_request,
        measured_frame,
        recommend_index,
        records_hash,
    )

    optimize = optimize or "recall"
    check_at_rate(constraints, optimize, at_qps)
    check_request(
        dataset, constraints, optimize, k, "single", None, time_budget_s, policy, build_threads
    )
    load = load or LoadOptions()
    say = progress or log.info
    budget = Budget(time_budget_s) if started is None else Budget(time_budget_s, started)
    cores = available_cores()
    steps: list[Step] = []
    skipped: list[Skip] = []
    spent = 0.0
    if measure:
        service_ms = service_limit_ms(at_qps, cores, cores)
        say(
            f"Candidates: single-query bisection for p99 <= {constraints.max_p99_ms:g} ms and "
            f"mean <= {service_ms:.3g} ms (what {_count(cores, 'client')} on "
            f"{_count(cores, 'core')} serve at {at_qps:,.0f} q/s at "
            f"{PLAUSIBLE_UTILISATION:.0%} utilisation)"
        )
        start = budget.elapsed()
        first = recommend_index(
            dataset,
            store,
            replace(constraints, max_latency_ms=service_ms),
            "recall",
            k=k,
            mode="single",
            measure=True,
            backends=backends,
            overrides=overrides,
            time_budget_s=time_budget_s * SINGLE_SHARE,
            policy=policy,
            progress=say,
            workload=workload,
            build_threads=build_threads,
            started=budget.started,
        )
        steps, skipped = list(first.steps), list(first.skipped)
        dataset_hash = records_hash(dataset, workload)
        say(f"Measuring at {at_qps:,.0f} q/s, {load.seconds:g} s a setting:")
        more, fewer = measure_at_rate(
            dataset,
            store,
            constraints,
            optimize,
            at_qps=at_qps,
            k=k,
            workload=workload,
            dataset_hash=dataset_hash,
            backends=backends,
            budget=budget,
            build_threads=build_threads,
            load=load,
            frame=lambda: measured_frame(store, dataset, dataset_hash, workload, k, "rate", 1),
            say=say,
        )
        steps += more
        skipped += fewer
        spent = budget.elapsed() - start
    else:
        check_prepared(dataset, workload, f" --mode rate --rate {at_qps:.10g}")
    dataset_hash = records_hash(dataset, workload)
    frame = measured_frame(store, dataset, dataset_hash, workload, k, "rate", 1)
    result, found = recommend_at(frame, constraints, optimize, at_qps, cores)
    hint = None
    if found.rows.empty:
        named = list(found.below["backend"]) or list(backends or [])
        if not named:
            stored = store.dataframe(dataset.name, content_hash=dataset.content_hash)
            named = list(stored.loc[stored["dataset_hash"] == dataset_hash, "backend"])
        hint = measure_hint(dataset, at_qps, k, workload, named, found, measure)
    return Outcome(
        result,
        constraints,
        optimize,
        dataset.name,
        dataset_hash,
        k,
        "rate",
        1,
        steps,
        skipped,
        spent,
        time_budget_s if measure else None,
        budget.elapsed(),
        at_qps=at_qps,
        cores=cores,
        hint=hint,
    )


# --- small helpers -------------------------------------------------------------------------


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> float | None:
    return float(value) if _given(value) and not pd.isna(value) else None


def _whole(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _ms(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.3f}"
