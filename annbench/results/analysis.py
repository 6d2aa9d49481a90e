"""Answers from stored results: pareto frontiers, per-backend summaries, recommendations.

Pure functions on the DataFrame that ``ResultStore.dataframe`` returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from annbench.errors import AnnbenchError, BadUsage
from annbench.record import LOAD_MODES, mode_label, near_generator_ceiling, params_label
from annbench.results.columns import numbers

RECALL_LEVELS = (0.8, 0.9, 0.95, 0.99)
#: A run whose repeats spread more than this fraction of the median QPS is flagged noisy.
NOISY_SPREAD = 0.15
OBJECTIVES = {
    # objective: (column, higher is better)
    "recall": ("recall", True),
    "qps": ("qps", True),
    "memory": ("memory_footprint", False),
    "build": ("build_s", False),
    "latency": ("latency_p99_ms", False),
}
#: Near-ties where a figure has no repeats to measure its spread: recall within one neighbour
#: in a thousand, memory within 1%, build time within 10% (one build, timed once).
RECALL_TIE = 0.001
MEMORY_TIE = 0.01
BUILD_TIE = 0.10


def successful(frame: pd.DataFrame, subsets: bool = False) -> pd.DataFrame:
    """Only runs that succeeded, with derived columns the analyses use; runs on a size
    ladder's subsets of the base only with ``subsets`` (they describe a smaller base, so
    summaries, frontiers and picks of the dataset leave them to ``annbench scale``)."""
    ok = frame[(frame["status"] == "ok") & frame["recall"].notna() & frame["qps"].notna()].copy()
    if not subsets and "base_size" in ok:
        ok = ok[ok["base_size"].isna()]
    if "probe" in ok:  # short measurements taken while searching are not results
        ok = ok[~ok["probe"].fillna(False).astype(bool)]
    p99_spread = ok["latency_p99_spread"] if "latency_p99_spread" in ok else None
    ok["p99_spread"] = pd.Series(p99_spread, index=ok.index, dtype=float)  # NaN: one repeat
    ok["qps_noisy"] = ok["qps_spread"].fillna(0) > NOISY_SPREAD
    ok["p99_noisy"] = ok["p99_spread"] > NOISY_SPREAD
    ok["noisy"] = ok["qps_noisy"] | ok["p99_noisy"]
    ok["interference"] = host_interference(ok)
    per_query = 1e3 / ok["qps"]  # single mode: per query; batch: amortized
    if "latency_mean_ms" in ok:  # load modes measured theirs, queueing included
        per_query = ok["latency_mean_ms"].where(ok["mode"].isin(LOAD_MODES), per_query)
    ok["latency_mean_ms"] = per_query
    ok["memory_footprint"] = memory_footprint(ok)
    ok["config"] = [
        f"{b} [{params_label(bp)}] [{params_label(sp)}]"
        for b, bp, sp in zip(ok["backend"], ok["build_params"], ok["search_params"], strict=True)
    ]
    return ok


#: How ``summary`` names the exact search over a filter's allowed rows (``filter_strategy``
#: ``brute``), whichever backend's sweep measured it.
BRUTE_FORCE = "brute force"


def brute_force_apart(ok: pd.DataFrame) -> pd.DataFrame:
    """``ok`` (from ``successful``) with the runs of ``filter_strategy=brute`` under the
    backend name ``BRUTE_FORCE``: brute force searches no index, so it is a series of its own
    in tables and recall/QPS plots, not the best result of whichever backend's sweep ran it."""
    brute = [params.get("filter_strategy") == "brute" for params in ok["search_params"]]
    return ok.assign(
        backend=ok["backend"].where(~pd.Series(brute, index=ok.index, dtype=bool), BRUTE_FORCE)
    )


#: Single-mode runs whose wall time exceeds their thread CPU time by more than this, summed
#: over the queries or at the 99th percentile, were measured while the host took the core
#: away (other processes, stalls): their wall figures describe the host as much as the index.
INTERFERENCE_MEAN = 1.10
INTERFERENCE_P99 = 1.50


def host_interference(frame: pd.DataFrame) -> pd.Series:
    """Whether each run's wall time shows host interference against its CPU time (False
    where no CPU times were measured: batch mode, runs stored before them)."""
    flagged = pd.Series(False, index=frame.index)
    for column, limit in (
        ("wall_cpu_ratio", INTERFERENCE_MEAN),
        ("wall_cpu_p99_ratio", INTERFERENCE_P99),
    ):
        if column in frame:
            flagged |= pd.to_numeric(frame[column], errors="coerce").fillna(0) > limit
    return flagged


def describe_interference(row: pd.Series) -> str:
    """``row``'s wall-to-CPU ratios in words, e.g. 'wall time 1.9x CPU time (p99 3.2x)'."""
    mean, p99 = row.get("wall_cpu_ratio"), row.get("wall_cpu_p99_ratio")
    parts = []
    if mean is not None and pd.notna(mean):
        parts.append(f"wall time {mean:.2f}x CPU time")
    if p99 is not None and pd.notna(p99):
        parts.append(f"p99 {p99:.2f}x")
    return ", ".join(parts)


def memory_footprint(frame: pd.DataFrame) -> pd.Series:
    """Bytes an index needs to serve: its serving memory (its file loaded in a fresh process),
    else its file size, else the memory its build added (runs stored before either existed)."""
    found = pd.Series(float("nan"), index=frame.index)
    for column in ("serving_memory_bytes", "index_bytes", "memory_bytes"):
        if column in frame:
            found = found.fillna(pd.to_numeric(frame[column], errors="coerce"))
    return found


def pareto_frontier(points: pd.DataFrame, x: str = "recall", y: str = "qps") -> pd.DataFrame:
    """Rows not beaten on both ``x`` and ``y`` (higher is better for both), by ascending ``x``."""
    ordered = points.sort_values([x, y], ascending=[False, False])
    best = float("-inf")
    keep = []
    for index, value in ordered[y].items():
        if value > best:
            keep.append(index)
            best = value
    return points.loc[keep].sort_values(x)


def summary(
    frame: pd.DataFrame,
    levels: tuple[float, ...] = RECALL_LEVELS,
    latency_budget_ms: float | None = None,
) -> pd.DataFrame:
    """Per dataset and backend: best QPS at each recall level (with that point's build time
    and memory) and, given a budget, the best recall whose p99 latency fits it. Load-mode
    runs are left out: their throughput is what was offered, not what the index can do."""
    ok = brute_force_apart(successful(frame))
    ok = ok[~ok["mode"].isin(LOAD_MODES)]
    rows = []
    groups = ok.groupby(["dataset", "workload", "backend", "mode", "k"])
    for (dataset, workload, backend, mode, k), runs in groups:
        row: dict[str, object] = {
            "dataset": dataset,
            "workload": workload,
            "selectivity": runs["selectivity"].mean(),
            "backend": backend,
            "mode": mode,
            "k": k,
        }
        for level in levels:
            meeting = runs[runs["recall"] >= level]
            tag = f"@{level:g}"
            if meeting.empty:
                row.update(
                    {
                        f"qps{tag}": None,
                        f"build_s{tag}": None,
                        f"memory_MB{tag}": None,
                        f"config{tag}": None,
                    }
                )
                continue
            best = meeting.loc[meeting["qps"].idxmax()]
            row.update(
                {
                    f"qps{tag}": best["qps"],
                    f"build_s{tag}": best["build_s"],
                    f"memory_MB{tag}": best["memory_footprint"] / 1e6,
                    f"config{tag}": best["config"],
                }
            )
        if latency_budget_ms is not None:
            fits = runs[runs["latency_p99_ms"] <= latency_budget_ms]
            best = fits.loc[fits["recall"].idxmax()] if len(fits) else None
            row["best_recall_within_budget"] = None if best is None else best["recall"]
            row["config_within_budget"] = None if best is None else best["config"]
        row["noisy_runs"] = int(runs["noisy"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def serving_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration measured under load (concurrent or rate mode) and core count: its
    recall, saturation throughput, and at each load point (``1 clients``, ``2,000/s``,
    ``50%``) the achieved QPS and p99 latency, as ``"QPS / p99 ms"`` text."""
    ok = successful(frame)
    ok = ok[ok["mode"].isin(LOAD_MODES)]
    rows = []
    keys = ["dataset", "workload", "k", "cores", "mode", "backend", "config"]
    for (dataset, workload, k, cores, mode, backend, config), runs in ok.groupby(keys):
        row: dict[str, object] = {
            "dataset": dataset,
            "workload": workload,
            "k": k,
            "cores": int(cores),
            "mode": mode,
            "backend": backend,
            "config": config,
            "recall": runs["recall"].mean(),
            "saturation_qps": runs["saturation_qps"].max(),
        }
        order = runs.sort_values("clients" if mode == "concurrent" else "rate")
        for run in order.itertuples():
            if mode == "concurrent":
                point = f"{int(run.clients)} clients"
            elif pd.notna(run.rate_share):
                point = f"{run.rate_share:.0%}"
            else:
                point = f"{run.rate:,.0f}/s"
            row[point] = f"{run.qps:,.0f} / {run.latency_p99_ms:.3g}"
        rows.append(row)
    return pd.DataFrame(rows)


_UNITS = {
    "b": (1, "bytes"),
    "kb": (1e3, "kB"),
    "mb": (1e6, "MB"),
    "gb": (1e9, "GB"),
    "tb": (1e12, "TB"),
    "kib": (2**10, "KiB"),
    "mib": (2**20, "MiB"),
    "gib": (2**30, "GiB"),
    "tib": (2**40, "TiB"),
}


#: recall levels at which a database is set beside its engine
ENGINE_LEVELS = (0.9, 0.95)


def engine_comparison(
    frame: pd.DataFrame, engines: dict[str, str], levels: tuple[float, ...] = ENGINE_LEVELS
) -> pd.DataFrame:
    """Each database beside the library it is built on (``engines``: database backend ->
    engine backend), per dataset, workload, mode, load point and k, at each recall level: the
    best QPS reaching it on each side, their ratio (database / engine), the recall and p99
    of those points, and memory and load (build) time. Only cells both sides reached."""
    ok = brute_force_apart(successful(frame))
    ok = ok.assign(point=[
        mode_label(*values)
        for values in zip(ok["mode"], *(ok[c] for c in _POINT_COLUMNS), strict=True)
    ])  # fmt: skip
    rows = []
    for (dataset, workload, point, k), runs in ok.groupby(["dataset", "workload", "point", "k"]):
        for database, engine in engines.items():
            ours, theirs = runs[runs["backend"] == database], runs[runs["backend"] == engine]
            if ours.empty or theirs.empty:
                continue
            for level in levels:
                best = [side[side["recall"] >= level] for side in (ours, theirs)]
                if any(side.empty for side in best):
                    continue
                db, lib = (side.loc[side["qps"].idxmax()] for side in best)
                rows.append(
                    {
                        "dataset": dataset,
                        "workload": workload,
                        "mode": point,
                        "k": k,
                        "database": database,
                        "engine": engine,
                        "recall_level": level,
                        "qps_ratio": db["qps"] / lib["qps"],
                        "database_qps": db["qps"],
                        "engine_qps": lib["qps"],
                        "database_recall": db["recall"],
                        "engine_recall": lib["recall"],
                        "database_p99_ms": db["latency_p99_ms"],
                        "engine_p99_ms": lib["latency_p99_ms"],
                        "database_memory_MB": db["memory_footprint"] / 1e6,
                        "engine_memory_MB": lib["memory_footprint"] / 1e6,
                        "database_build_s": db["build_s"],
                        "engine_build_s": lib["build_s"],
                        "database_config": db["config"],
                        "engine_config": lib["config"],
                    }
                )
    return pd.DataFrame(rows)


_POINT_COLUMNS = ("clients", "rate", "rate_share", "cores")


def parse_bytes(text: str) -> float:
    """``'2GB'`` -> 2e9, ``'512MiB'`` -> 536870912, ``'1000'`` -> 1000 (MB = 10^6, MiB = 2^20)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _UNITS):
        raise AnnbenchError(f"Memory size '{text}' not understood; use e.g. 500MB, 2GB or 1.5GiB")
    value = float(match.group(1)) * _UNITS[unit or "b"][0]
    if not 0 < value < 2**60:
        raise AnnbenchError(f"Memory size '{text}' must be positive and finite, e.g. 500MB")
    return value


def describe_bytes(text: str) -> str:
    """What a memory size means, in both units: ``'12MB'`` -> ``'12 MB (12,000,000 bytes =
    11.44 MiB)'``."""
    value = parse_bytes(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = _UNITS[match.group(2).lower() or "b"][1]
    other = f"{value / 2**20:,.2f} MiB" if "i" not in unit else f"{value / 1e6:,.2f} MB"
    return f"{match.group(1)} {unit} ({value:,.0f} bytes = {other})"


#: Which time a latency budget means: the wall clock (what a caller waits) or the thread's
#: CPU time (the index's own work, without the host's interference; single mode only).
CLOCKS = ("wall", "cpu")
#: Which memory a budget means: serving memory (the index's own resident pages in a fresh
#: process) or the fresh process's whole resident set gain (library code pages too).
MEMORY_FIGURES = ("serving", "rss")


@dataclass
class Constraints:
    """What a deployment needs; None means unconstrained. Latencies are per query in ms
    (``max_latency_ms`` the mean, ``max_p99_ms`` the 99th percentile) on ``clock``; memory is
    in bytes, of ``memory_figure``."""

    min_recall: float | None = None
    max_p99_ms: float | None = None
    max_memory_bytes: float | None = None
    max_build_s: float | None = None
    max_latency_ms: float | None = None
    clock: str = "wall"
    memory_figure: str = "serving"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise BadUsage(f"Clock '{self.clock}' not valid. Use one of: {', '.join(CLOCKS)}")
        if self.memory_figure not in MEMORY_FIGURES:
            raise BadUsage(
                f"Memory figure '{self.memory_figure}' not valid. Use one of: "
                f"{', '.join(MEMORY_FIGURES)}"
            )

    def limits(self) -> list[tuple[str, str, float, bool]]:
        """``(name, column, limit, is_floor)`` of every constraint set."""
        cpu = self.clock == "cpu"
        out = []
        for name, column, limit, floor in (
            ("recall", "recall", self.min_recall, True),
            ("latency", "cpu_mean_ms" if cpu else "latency_mean_ms", self.max_latency_ms, False),
            ("p99", "cpu_p99_ms" if cpu else "latency_p99_ms", self.max_p99_ms, False),
            ("memory", MEMORY_COLUMNS[self.memory_figure], self.max_memory_bytes, False),
            ("build", "build_s", self.max_build_s, False),
        ):
            if limit is not None:
                out.append((name, column, float(limit), floor))
        return out

    def violations(self, row: pd.Series) -> list[str]:
        """Human-readable constraints ``row`` breaks (a missing figure breaks its limit)."""
        out = []
        for name, column, limit, floor in self.limits():
            value = row.get(column)
            if value is not None and not pd.isna(value):
                if (value >= limit) if floor else (value <= limit):
                    continue
            out.append(_violation(name, value, limit, self.clock, self.memory_figure))
        return out

    def relative_violation(self, row: pd.Series) -> float:
        """How far ``row`` is from fitting: the sum over limits of the fraction each is broken
        by (0 when it fits; infinite when a constrained figure was not measured)."""
        total = 0.0
        for _, column, limit, floor in self.limits():
            value = row.get(column)
            if value is None or pd.isna(value):
                return float("inf")
            total += max(0.0, (limit - value) / limit if floor else (value - limit) / limit)
        return total


#: The column each memory figure is read from.
MEMORY_COLUMNS = {"serving": "memory_footprint", "rss": "serving_rss_bytes"}


def _violation(
    name: str, value: float | None, limit: float, clock: str = "wall", memory: str = "serving"
) -> str:
    time = "CPU " if clock == "cpu" else ""
    what = {
        "latency": f"mean {time}latency",
        "p99": f"{time}p99",
        "memory": "memory" if memory == "serving" else "process RSS gain",
    }.get(name, name)
    if value is None or pd.isna(value):
        return f"{what} not measured"
    if name == "recall":
        return f"recall {value:.4f} < {limit:g}"
    if name in ("latency", "p99"):
        return f"{what} {value:.3f} ms > {limit:g} ms"
    if name == "memory":
        return f"{what} {value / 1e6:.1f} MB > {limit / 1e6:.1f} MB"
    return f"build {value:.1f} s > {limit:g} s"


@dataclass
class Recommendation:
    """The chosen configuration, why, and what else came close."""

    choice: pd.Series | None
    runners_up: pd.DataFrame
    binding: list[str] = field(default_factory=list)  # constraints that shaped the choice
    closest: pd.DataFrame | None = None  # when nothing fits: nearest the budget first
    objective: str = "qps"
    candidates: int = 0  # configurations meeting every constraint
    #: fitting configurations within the measured spread of the best objective, of which the
    #: choice is the simplest and smallest (empty when the best is clearly best)
    indistinguishable: pd.DataFrame | None = None
    best_by_objective: pd.Series | None = None  # the strictly best objective, if not chosen


def recommend(
    frame: pd.DataFrame, constraints: Constraints, optimize: str = "qps", top: int = 3
) -> Recommendation:
    """The configuration meeting every constraint with the best ``optimize`` objective.

    Points whose objective is within the measured spread of the best (QPS interquartile
    ranges or p99 spreads that overlap; recall, memory and build within ``RECALL_TIE``,
    ``MEMORY_TIE``, ``BUILD_TIE``) are ties: the simplest, smallest index among them wins and
    the others are listed as indistinguishable. When nothing meets the constraints,
    ``closest`` lists the points nearest the budget, by how far relative to each limit they
    break it. Probes (short measurements taken while searching) are never picked.
    """
    check_objective(optimize, constraints)
    column, higher = OBJECTIVES[optimize]
    ok = successful(frame)
    if ok.empty:
        return Recommendation(None, ok, objective=optimize, closest=ok)
    broken = ok.apply(constraints.violations, axis=1)
    fits = ok[broken.map(len) == 0]
    if fits.empty:
        distance = ok.apply(constraints.relative_violation, axis=1)
        closest = ok.assign(
            violations=broken.map("; ".join), n_violations=broken.map(len), distance=distance
        )
        closest = closest.sort_values(
            ["distance", "recall", "qps"], ascending=[True, False, False], kind="stable"
        )
        return Recommendation(None, fits, objective=optimize, closest=closest.head(top))
    fits = fits.assign(
        complexity=[
            complexity(b, p) for b, p in zip(fits["backend"], fits["build_params"], strict=True)
        ]
    )
    ordered = fits.sort_values(
        [column, "recall", "memory_footprint", "complexity"],
        ascending=[not higher, False, True, True],
        kind="stable",
    )
    best = ordered.iloc[0]
    tied = ordered[[_tied(optimize, best, row) for _, row in ordered.iterrows()]]
    simplest = tied.sort_values(
        ["complexity", "memory_footprint", "qps"], ascending=[True, True, False], kind="stable"
    )
    choice = simplest.iloc[0]
    others = ordered.drop(index=choice.name)
    binding = _binding(choice, ok, broken, column, higher)
    return Recommendation(
        choice,
        others.head(top),
        binding,
        objective=optimize,
        candidates=len(fits),
        indistinguishable=tied.drop(index=choice.name),
        best_by_objective=None if best.name == choice.name else best,
    )


def check_objective(optimize: str, constraints: Constraints) -> None:
    """Raise AnnbenchError unless ``optimize`` is an objective ``constraints`` can rank by
    (every objective but recall needs a recall target)."""
    if optimize not in OBJECTIVES:
        raise BadUsage(f"Objective '{optimize}' not valid. Use one of: {', '.join(OBJECTIVES)}")
    if optimize != "recall" and constraints.min_recall is None:
        raise BadUsage(
            f"--optimize {optimize} needs a recall target (--min-recall R), "
            "or use --optimize recall to get the best recall within the other limits"
        )


def _tied(objective: str, best: pd.Series, row: pd.Series) -> bool:
    """Whether ``row`` is within the measured spread of ``best`` on ``objective``."""
    if objective == "qps":
        return (
            _interval(row["qps"], row.get("qps_spread"))[1]
            >= _interval(best["qps"], best.get("qps_spread"))[0]
        )
    if objective == "latency":
        return (
            _interval(row["latency_p99_ms"], row["p99_spread"])[0]
            <= _interval(best["latency_p99_ms"], best["p99_spread"])[1]
        )
    if objective == "recall":
        return row["recall"] >= best["recall"] - RECALL_TIE
    if objective == "memory":
        return row["memory_footprint"] <= best["memory_footprint"] * (1 + MEMORY_TIE)
    return row["build_s"] <= best["build_s"] * (1 + BUILD_TIE)


def _interval(value: float, spread: float | None) -> tuple[float, float]:
    """``value`` plus and minus half its relative spread."""
    half = 0.0 if spread is None or pd.isna(spread) else float(spread) / 2
    return value * (1 - half), value * (1 + half)


def complexity(backend: str, build_params: dict) -> int:
    """How many moving parts an index has: components of a faiss factory string (a flat
    index is 1), else the build parameters it takes, plus one."""
    factory = build_params.get("factory") if isinstance(build_params, dict) else None
    if isinstance(factory, str):
        return len(re.findall(r"[A-Za-z]+", factory.replace("Flat", "")) or []) + 1
    return len(build_params or {}) + 1


def _binding(
    choice: pd.Series, ok: pd.DataFrame, broken: pd.Series, column: str, higher: bool
) -> list[str]:
    """Constraints that shaped the answer: relaxing one alone would allow a better objective."""
    out = []
    better = ok[column] > choice[column] if higher else ok[column] < choice[column]
    for name in ("recall", "mean latency", "p99", "memory", "build"):
        only_this = broken.map(lambda v, n=name: len(v) == 1 and v[0].startswith(n))
        gain = ok[only_this & better]
        if len(gain):
            best = gain.sort_values(column, ascending=not higher).iloc[0]
            reason = broken[best.name][0]
            out.append(
                f"{name}: {best['config']} would give {_show(column, best[column])} but {reason}"
            )
    return out


def _show(column: str, value: float) -> str:
    """An objective's value with its unit."""
    if column == "qps":
        return f"{value:,.0f} QPS"
    if column == "recall":
        return f"recall {value:.4f}"
    if column == "memory_footprint":
        return f"{value / 1e6:,.1f} MB of memory"
    if column == "build_s":
        return f"a {value:.2f} s build"
    return f"p99 {value:.3f} ms"


def near_ceilings(frame: pd.DataFrame) -> list[bool]:
    """Per row, whether its load figure may describe the load generator as much as the index
    (``record.near_generator_ceiling``); False for single and batch rows."""
    figures = ("rate", "qps", "generator_max_qps", "latency_p99_ms", "generator_p99_ms")
    columns = [numbers(frame, name) for name in figures]  # NaN: unknown, which flags nothing
    return [
        near_generator_ceiling(str(mode), *values)
        for mode, *values in zip(frame["mode"], *columns, strict=True)
    ]
