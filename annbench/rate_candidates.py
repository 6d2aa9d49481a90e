"""Which configurations ``recommend --at-qps --measure`` measures at the offered rate, and
measuring them within the time budget.

The candidates are stored single-mode figures (found by the single-query bisection of
``annbench.recommender`` or stored by earlier sweeps) whose p99 fits the limit and whose mean
latency keeps the load clients under ``PLAUSIBLE_UTILISATION`` at the rate. Each build
configuration becomes one rate-mode build job with its ``SETTINGS_PER_BUILD`` likeliest
settings (so each index is built once), run through the same worker as ``annbench run``;
a job starts only with as many settings as fit in what is left of the time budget
(``annbench.time_budget.load_estimate``).

A build none of whose settings fits at the rate, because those measured were too slow (in
single-query mode or at the rate), is not given up while the budget lasts: its cheapest search
setting reaching ``--min-recall`` is found by single-query probes (a recall bisection of the
grid's ladder below the too-slow setting) and measured at the rate, then, for the recall
objective, the settings between the fastest that fits and the slowest that does not, by
bisection (``_Cheaper``). Only when the cheapest setting reaching the recall floor is too slow
at the rate, or the budget ran out, does the build have nothing to offer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    DEFAULT_RATES,
    Budget,
    Estimate,
    History,
    LoadEstimate,
    Skip,
    Step,
    Structure,
    clock,
    estimate,
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
    overrides: dict[str, list[Any]] | None = None,
) -> tuple[list[Step], list[Skip]]:
    """Measure at ``at_qps`` the stored single-mode configurations (of ``backends``, when
    named) that make it plausible, one build job each with its likeliest settings, then the
    cheaper settings of builds found too slow, while the budget lasts; ``frame()`` gives the
    stored rate-mode records, ``overrides`` the grid overrides the search ladders come from.
    Returns what was measured and what was skipped, with the reason."""
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
    run = _Runs(
        dataset=dataset,
        store=store,
        constraints=constraints,
        optimize=optimize,
        at_qps=at_qps,
        k=k,
        workload=workload,
        dataset_hash=dataset_hash,
        budget=budget,
        build_threads=build_threads,
        load=load,
        frame=frame,
        say=say,
        history=history,
        cores=cores,
        service_ms=service_ms,
    )
    single = run.single(backends)
    candidates = plausible(single, constraints, at_qps, service_ms)
    builds = _builds(candidates, optimize)
    if not builds:
        reason = (
            f"no stored configuration's single-query figures make {run.rate_text} with p99 <= "
            f"{constraints.max_p99_ms:g} ms plausible (single-query p99 within the limit and "
            f"mean latency within {service_ms:.3g} ms, for {plural(clients, 'client')} on "
            f"{plural(cores, 'core')})"
        )
        say(f"At {run.rate_text}: {reason}")
        run.skips.append(Skip(f"at {run.rate_text}", reason))
    for number, build in enumerate(builds, 1):
        label = f"{build.label} at {run.rate_text}"
        prefix = f"[{number}/{len(builds)}] {label}"
        found = at_rate(frame(), at_qps, cores)
        todo = _unsettled(build.settings, found, constraints)[:SETTINGS_PER_BUILD]
        reason = None
        if not len(todo):
            reason = "measured at this rate on an earlier call (stored)"
        else:
            reason = _cannot_contend(todo, found, constraints, optimize)
        if reason is not None:
            run.skips.append(Skip(label, reason))
            say(f"{prefix}: skipped, {reason}")
            continue
        configs = tuple(dict(p) for p in todo["search_params"])
        run.at_rate(label, prefix, build, configs, lambda fit, c=configs: c[:fit])
    _Cheaper(run, overrides).measure(_builds(successful(single.assign(probe=False)), optimize))
    return run.steps, run.skips


@dataclass
class _Runs:
    """What measuring at the rate shares: the question, the budget, the store's history, and
    the steps taken and skipped so far."""

    dataset: Dataset
    store: ResultStore
    constraints: Constraints
    optimize: str
    at_qps: float
    k: int
    workload: str
    dataset_hash: str
    budget: Budget
    build_threads: int | None
    load: LoadOptions
    frame: Callable[[], pd.DataFrame]
    say: Callable[[str], None]
    history: History
    cores: int
    service_ms: float
    steps: list[Step] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)

    @property
    def rate_text(self) -> str:
        return f"{self.at_qps:,.0f} q/s"

    def single(self, backends: list[str] | None = None) -> pd.DataFrame:
        """Stored single-mode attempts (probes too, failures too) for this question."""
        self.history.refresh()
        single = self.history.attempts
        single = single[
            (single["mode"] == "single")
            & (single["k"] == self.k)
            & (single["threads"] == 1)
            & (single["workload"].fillna(PLAIN) == self.workload)
        ]
        if backends:
            single = single[single["backend"].isin(backends)]
        return single

    def job(self, build: _Build, mode: str, configs: tuple[dict[str, Any], ...]) -> BuildJob:
        """A job measuring ``configs`` of ``build``: at the rate (``mode`` rate), or a
        single-query recall bisection (``mode`` single, probes)."""
        from annbench.registry import load_backend

        fields: dict[str, Any] = dict(clients=(self.cores,), rates=(self.at_qps,), load=self.load)
        if mode == "single":
            fields = dict(target_recall=self.constraints.min_recall)
        return BuildJob(
            dataset_path=str(self.dataset.path),
            dataset=self.dataset.name,
            dataset_hash=self.dataset_hash,
            backend=build.backend,
            build_params=build.build_params,
            search_configs=configs,
            k=self.k,
            mode=mode,
            runs=1,
            threads=(1,),
            build_threads=self.build_threads,
            library_version=load_backend(build.backend).library_version(),
            workload=self.workload,
            cores=self.cores if mode == "rate" else None,
            **fields,
        )

    def load_cost(self, job: BuildJob) -> LoadEstimate:
        """What the rate-mode ``job`` is expected to take."""
        from annbench.registry import load_backend
        from annbench.sweep.load import executor_for

        process = executor_for(load_backend(job.backend)) == "process"
        s, n, nq, threads = self._sizes(job)
        return load_estimate(job, s, n, nq, self.history, threads, process_clients=process)

    def single_cost(self, job: BuildJob) -> Estimate:
        """What the single-mode ``job`` (a probe bisection) is expected to take."""
        s, n, nq, threads = self._sizes(job)
        return estimate(job, s, n, nq, DEFAULT_RATES, self.history, threads)

    def _sizes(self, job: BuildJob) -> tuple[Structure, int, int, int]:
        """What an estimate of ``job`` is computed from: the index structure, base and query
        counts, and the threads building it."""
        s = structure(job.backend, job.build_params, self.dataset.train.shape[1])
        n, nq = len(self.dataset.train), len(self.dataset.test)
        return s, n, nq, self.build_threads or available_cores()

    def at_rate(
        self,
        label: str,
        prefix: str,
        build: _Build,
        configs: tuple[dict[str, Any], ...],
        pick: Callable[[int], tuple[dict[str, Any], ...]],
    ) -> list[RunRecord] | None:
        """Measure at the rate the settings ``pick(fit)`` chooses of ``configs`` when ``fit``
        of them fit in what is left of the budget (at least one, else skipped, None)."""
        from annbench.sweep import runner

        job = self.job(build, "rate", configs)
        cost = self.load_cost(job)
        left = self.budget.left()
        fit = min(cost.settings_within(left), len(configs), SETTINGS_PER_BUILD)
        if fit < 1:
            one = cost.for_settings(1)
            reason = (
                f"needs about {one.seconds:.0f} s for one setting (build {one.build_s:.0f} s: "
                f"{one.basis}), {max(left, 0):.0f} s left"
            )
            self.skips.append(Skip(label, reason))
            self.say(f"{prefix}: skipped, {reason}")
            return None
        job = replace(job, search_configs=pick(fit))
        expected = cost.for_settings(len(job.search_configs))
        timeout = timeout_for(expected, left)
        settings = ", ".join(params_label(p) for p in job.search_configs)
        self.say(
            f"{prefix}: {settings} (expected {expected.seconds:.0f} s, given {timeout:.0f} s) ..."
        )
        start = clock()
        records = list(kept(runner.run_in_worker(job, timeout), self.store))
        step = Step(
            label,
            clock() - start,
            _outcome(records, self.constraints),
            records,
            expected.seconds,
            timed_out(records),
        )
        self.steps.append(step)
        self.say(f"      {step.outcome} ({step.seconds:.1f} s)")
        return records


@dataclass
class _Ladder:
    """What the store says of one build's search ladder (one integer parameter, ``name``,
    cost and recall growing with it) at the rate: the lowest value too slow (single-query
    figures or at the rate), the highest that fits at the rate, the highest known to miss
    the recall floor and the lowest known to reach it (None: none known)."""

    name: str
    values: list[int]  # the grid's ladder, increasing
    slow: int | None = None
    slow_recall: float | None = None
    fit: int | None = None
    short: int | None = None
    reach: int | None = None
    over_limits: bool = False  # a figure of the build breaks the memory or build-time limit

    def rungs(self) -> list[int]:
        """The ladder's values still worth measuring: above those known to fit or to miss
        the recall floor, below the lowest known too slow."""
        assert self.slow is not None
        low = max((v for v in (self.short, self.fit) if v is not None), default=-math.inf)
        return [v for v in self.values if low < v < self.slow]


#: ``--measure``: rounds (a probe job or a load job each) spent on one build's cheaper settings.
CHEAPER_ROUNDS = 6


@dataclass
class _Cheaper:
    """Cheaper settings of builds whose measured settings were too slow at the rate."""

    run: _Runs
    overrides: dict[str, list[Any]] | None

    def measure(self, builds: list[_Build]) -> None:
        """Each of ``builds`` (most promising first) with a setting known too slow and none
        known to fit, while the budget lasts; for the recall objective, then the settings
        between the fastest that fits and the slowest that does not."""
        for build in builds:
            ladder = self._ladder(build)
            if ladder is None:
                continue
            label = f"{build.label} at {self.run.rate_text}"
            known = self._known(build, ladder.name, ladder.values)
            if known.slow is None or known.fit is not None or known.over_limits:
                continue  # nothing measured too slow, or a setting fits: the stored answer
            for _ in range(CHEAPER_ROUNDS):
                if not self._round(build, known, label):
                    break
                known = self._known(build, ladder.name, ladder.values)

    def _round(self, build: _Build, known: _Ladder, label: str) -> bool:
        """One probe or load job towards the build's best setting that fits, from what is
        ``known``; False when there is none to run (found, none can fit, no time left, or a
        job failed)."""
        run, constraints, name = self.run, self.run.constraints, known.name
        if known.slow is None or known.over_limits:
            return False
        rungs = known.rungs()
        slow = f"{name}={known.slow}"
        if known.fit is not None and (run.optimize != "recall" or not rungs):
            return False
        if not rungs:
            reason = (
                f"{slow} is too slow at {run.rate_text} and no cheaper {name} reaches recall "
                f"{constraints.min_recall:g}"
                if known.short is not None
                else f"{slow} is too slow at {run.rate_text}, the cheapest {name} of its grid"
            )
            run.skips.append(Skip(label, reason))
            run.say(f"{label}: nothing fits, {reason}")
            return False
        reason = self._cannot_contend(known)
        if reason is not None:
            run.skips.append(Skip(label, reason))
            run.say(f"{label}: cheaper than {slow} skipped, {reason}")
            return False
        floor = constraints.min_recall
        if known.fit is None and floor is not None:
            unknown = [v for v in rungs if known.reach is None or v < known.reach]
            if unknown:
                return self._probe(build, name, unknown, known, label)
        configs = tuple({name: v} for v in rungs)
        if known.fit is None:  # the cheapest reaching the floor, then points above it

            def pick(fit: int) -> tuple[dict[str, Any], ...]:
                more = _spread(configs[1:], fit - 1) if run.optimize == "recall" else ()
                return (configs[0], *more)

        else:  # bisect between the fastest that fits and the slowest that does not

            def pick(fit: int) -> tuple[dict[str, Any], ...]:
                return _spread(configs, fit)

        prefix = f"{label}, cheaper than {slow}"
        records = run.at_rate(label, prefix, build, configs, pick)
        return bool(records) and any(r.status == "ok" for r in records)

    def _probe(
        self, build: _Build, name: str, unknown: list[int], known: _Ladder, label: str
    ) -> bool:
        """Find by single-query probes (a recall bisection, stored as probes) the cheapest
        of ``unknown`` reaching the recall floor."""
        from annbench.sweep import runner

        run = self.run
        floor = run.constraints.min_recall
        job = run.job(build, "single", tuple({name: v} for v in unknown))
        expected = run.single_cost(job)
        at_rate_job = run.job(build, "rate", ({name: unknown[-1]},))
        one = run.load_cost(at_rate_job).for_settings(1)
        left = run.budget.left()
        slow = f"{name}={known.slow}"
        if expected.seconds + one.seconds > left:
            reason = (
                f"{slow} is too slow at {run.rate_text}; finding the cheapest {name} reaching "
                f"recall {floor:g} and measuring it at the rate needs about "
                f"{expected.seconds + one.seconds:.0f} s (build {expected.build_s:.0f} s: "
                f"{expected.basis}), {max(left, 0):.0f} s left"
            )
            run.skips.append(Skip(label, reason))
            run.say(f"{label}: skipped, {reason}")
            return False
        timeout = timeout_for(expected, left - one.seconds)
        run.say(
            f"{label}: {slow} is too slow; the cheapest {name} from {unknown[0]} to "
            f"{unknown[-1]} reaching recall {floor:g}, by single-query probes (expected "
            f"{expected.seconds:.0f} s, given {timeout:.0f} s) ..."
        )
        start = clock()
        records = list(kept(map(_as_probe, runner.run_in_worker(job, timeout)), run.store))
        ok = [r for r in records if r.status == "ok" and r.recall is not None]
        reached = [r for r in ok if r.recall >= floor]
        if not ok:
            outcome = _outcome(records, run.constraints) if records else "nothing measured"
        elif reached:
            best = min(reached, key=lambda r: r.search_params[name])
            outcome = f"{params_label(best.search_params)}: recall {best.recall:.4f}"
        else:
            outcome = f"no {name} up to {unknown[-1]} reaches recall {floor:g}"
        step = Step(
            f"{label}: cheapest {name} reaching recall {floor:g}",
            clock() - start,
            f"{outcome} ({len(records)} probes)" if ok else outcome,
            records,
            expected.seconds,
            timed_out(records),
        )
        run.steps.append(step)
        run.say(f"      {step.outcome} ({step.seconds:.1f} s)")
        return bool(ok)

    def _ladder(self, build: _Build) -> _Ladder | None:
        """The build's search ladder from its grid (with the overrides), as the single-query
        bisection has it, when its settings vary one integer parameter; else None."""
        from annbench.registry import default_grid, load_backend
        from annbench.sweep.grids import with_overrides
        from annbench.sweep.runner import search_ladder

        names = {tuple(sorted(p)) for p in build.settings["search_params"]}
        if len(names) != 1 or len(next(iter(names))) != 1:
            return None  # a filter strategy besides, or several parameters
        cls = load_backend(build.backend)
        over = {key: [value] for key, value in build.build_params.items()}
        grid = default_grid(build.backend).for_metric(self.run.dataset.metric)
        grid = with_overrides(grid, cls, dict(self.overrides or {}) | over)
        ladder = search_ladder(tuple(grid.search_configs(build.build_params)))
        if ladder is None or {tuple(p) for p in ladder} != names:
            return None
        (name,) = next(iter(names))
        return _Ladder(name, [p[name] for p in ladder])

    def _known(self, build: _Build, name: str, values: list[int]) -> _Ladder:
        """What the store says now of ``build``'s ladder at the rate."""
        run, constraints = self.run, self.run.constraints
        known = _Ladder(name, values)
        single = run.single()
        single = successful(single.assign(probe=False))
        found = at_rate(run.frame(), run.at_qps, run.cores)
        rows = [
            (row, "single")
            for _, row in single.iterrows()
            if row["backend"] == build.backend and row["build_params"] == build.build_params
        ]
        rows += [
            (row, "rate")
            for _, row in found.rows.iterrows()
            if row["backend"] == build.backend and row["build_params"] == build.build_params
        ]
        latest = {}  # single mode: the latest attempt of each setting says whether it is slow
        for row, mode in rows:
            value = _value(row, name)
            if value is None:
                continue
            if _breaks_build_limits(row, constraints):
                known.over_limits = True
            recall = float(row["recall"])
            if constraints.min_recall is not None and recall < constraints.min_recall:
                known.short = max(value, known.short if known.short is not None else value)
            elif constraints.min_recall is not None:
                known.reach = min(value, known.reach if known.reach is not None else value)
            if mode == "single":
                if value not in latest or row["created_at"] >= latest[value]["created_at"]:
                    latest[value] = row
                continue
            if whole(row.get("cores")) != run.cores:
                continue
            fits = bool(row["sustained"]) and not constraints.violations(row)
            at_it = float(row["rate"]) <= run.at_qps * (1 + SAME_RATE)
            slow = at_it and (
                not bool(row["sustained"]) or float(row["latency_p99_ms"]) > constraints.max_p99_ms
            )
            if fits:
                known.fit = max(value, known.fit if known.fit is not None else value)
            elif slow:
                known = _slower(known, value, recall)
        for value, row in latest.items():
            p99, qps = float(row["latency_p99_ms"]), float(row["qps"])
            if p99 > constraints.max_p99_ms or 1e3 / qps > run.service_ms:
                known = _slower(known, value, float(row["recall"]))
        return known

    def _cannot_contend(self, known: _Ladder) -> str | None:
        """Why no setting below the lowest too slow can beat the stored answer at the rate
        (objective recall: their recall is at most that setting's)."""
        run = self.run
        if run.optimize != "recall" or known.slow_recall is None:
            return None
        rows = at_rate(run.frame(), run.at_qps, run.cores).rows
        best = recommend(rows[rows["sustained"].astype(bool)], run.constraints, "recall").choice
        if best is None or known.slow_recall > best["recall"]:
            return None
        return (
            f"cannot beat: recall below {known.slow_recall:.4f} against {best['recall']:.4f} "
            f"stored at {run.rate_text} ({best['config']})"
        )


def _slower(known: _Ladder, value: int, recall: float) -> _Ladder:
    """``known`` with ``value`` (of ``recall``) known too slow."""
    if known.slow is None or value < known.slow:
        return replace(known, slow=value, slow_recall=recall)
    return known


def _value(row: pd.Series, name: str) -> int | None:
    """The ladder value of ``row``'s search setting (None: not a setting of the ladder)."""
    params = row["search_params"]
    value = params.get(name) if isinstance(params, dict) and len(params) == 1 else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _breaks_build_limits(row: pd.Series, constraints: Constraints) -> bool:
    """Whether ``row`` measured a memory or build time over its limit (the same for every
    search setting of its build; a figure not measured breaks nothing here)."""
    for name, column, limit, _ in constraints.limits():
        value = pd.to_numeric(row.get(column), errors="coerce")
        if name in ("memory", "build") and not pd.isna(value) and value > limit:
            return True
    return False


def _spread(configs: tuple[dict[str, Any], ...], count: int) -> tuple[dict[str, Any], ...]:
    """``count`` of ``configs`` evenly spaced inside them (bisection points; all of them
    when there are no more)."""
    if count >= len(configs):
        return configs
    step = len(configs) / (count + 1)
    picks = sorted({min(len(configs) - 1, int(step * (i + 1))) for i in range(count)})
    return tuple(configs[i] for i in picks)


def _as_probe(record: RunRecord) -> RunRecord:
    """``record`` flagged as a probe: a short measurement taken while searching."""
    record.probe = True
    return record


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
