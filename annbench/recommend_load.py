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
budget), keeps the search settings whose single-query figures make the rate plausible,
and measures those at the rate: one build job per build configuration with its likeliest
settings, never started unless it fits in what is left of the time budget
(``annbench.rate_candidates``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from annbench.data.format import Dataset
from annbench.errors import BadUsage
from annbench.record import GENERATOR_P99_MULTIPLE, PLAIN, RunRecord
from annbench.results.analysis import Constraints, Recommendation, recommend, successful
from annbench.results.store import ResultStore
from annbench.sweep.load import MAX_RATE, LoadOptions, available_cores
from annbench.time_budget import Budget, Skip, Step

if TYPE_CHECKING:
    from annbench.recommender import MeasurementPolicy, Outcome

log = logging.getLogger(__name__)

#: An offered rate is met when the achieved throughput falls short of it by at most this
#: share, or by three standard deviations of a Poisson arrival count if that is more (a
#: short run at a low rate: 1 s at 200 queries/s offers 200 +- 14 arrivals).
RATE_SHORTFALL = 0.05
#: ``--measure``: the share of the time budget the single-query search for candidates may use.
SINGLE_SHARE = 0.5
#: Offered rates this close (relative) are the same rate.
SAME_RATE = 1e-6


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
        latency_p99_ms=_number(row.get("latency_p99_ms")),
        generator_p99_ms=_number(row.get("generator_p99_ms")),
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
        "clients": whole(row.get("clients")),
        "cores": whole(row.get("cores")),
        "sustained": bool(row.get("sustained", True)),
        "unfinished": whole(row.get("unfinished")),
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
    clients, measured_on = whole(row.get("clients")), whole(row.get("cores"))
    text += " measured"
    if clients is not None:
        text += f" with {plural(clients, 'client')}"
    if measured_on is None:
        return text + f" on an unrecorded number of cores (this machine has {cores})"
    text += f" on {plural(measured_on, 'core')}"
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
    p99, own = _number(row.get("latency_p99_ms")), _number(row.get("generator_p99_ms"))
    if near_ceiling(row.drop(["latency_p99_ms", "generator_p99_ms"], errors="ignore")):
        out.append(
            f"the offered rate is near the load generator's own ceiling "
            f"({row['generator_max_qps']:,.0f} q/s): the figure may describe the generator as "
            "much as the index"
        )
    elif near_ceiling(row):
        out.append(
            f"the p99 ({p99:.3g} ms) is under {GENERATOR_P99_MULTIPLE:g}x the load generator's "
            f"own p99 at this load ({own:.3g} ms): the figure may describe the generator as "
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
    from annbench.rate_candidates import (
        PLAUSIBLE_UTILISATION,
        measure_at_rate,
        service_limit_ms,
    )
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
            f"mean <= {service_ms:.3g} ms (what {plural(cores, 'client')} on "
            f"{plural(cores, 'core')} serve at {at_qps:,.0f} q/s at "
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
            overrides=overrides,
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


def whole(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def plural(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _ms(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.3f}"
