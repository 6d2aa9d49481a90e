"""Answers from stored results: pareto frontiers, per-backend summaries, recommendations.

Pure functions on the DataFrame that ``ResultStore.dataframe`` returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from annbench.errors import AnnbenchError
from annbench.record import params_label

RECALL_LEVELS = (0.8, 0.9, 0.95, 0.99)
#: A run whose repeats spread more than this fraction of the median QPS is flagged noisy.
NOISY_SPREAD = 0.15
OBJECTIVES = {
    # objective: (column, higher is better)
    "qps": ("qps", True),
    "memory": ("memory_footprint", False),
    "build": ("build_s", False),
    "latency": ("latency_p99_ms", False),
}


def successful(frame: pd.DataFrame) -> pd.DataFrame:
    """Only runs that succeeded, with derived columns the analyses use."""
    ok = frame[(frame["status"] == "ok") & frame["recall"].notna() & frame["qps"].notna()].copy()
    ok["noisy"] = ok["qps_spread"].fillna(0) > NOISY_SPREAD
    ok["memory_footprint"] = ok[["index_bytes", "memory_bytes"]].max(axis=1)
    ok["config"] = [
        f"{b} [{params_label(bp)}] [{params_label(sp)}]"
        for b, bp, sp in zip(ok["backend"], ok["build_params"], ok["search_params"], strict=True)
    ]
    return ok


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
    and memory) and, given a budget, the best recall whose p99 latency fits it."""
    ok = successful(frame)
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


_UNITS = {
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str) -> float:
    """``'2GB'`` -> 2e9, ``'512MiB'`` -> 536870912, ``'1000'`` -> 1000."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _UNITS):
        raise AnnbenchError(f"Memory size '{text}' not understood; use e.g. 500MB, 2GB or 1.5GiB")
    return float(match.group(1)) * _UNITS.get(unit or "b")


@dataclass
class Constraints:
    """What a deployment needs; None means unconstrained."""

    min_recall: float
    max_p99_ms: float | None = None
    max_memory_bytes: float | None = None
    max_build_s: float | None = None

    def violations(self, row: pd.Series) -> list[str]:
        """Human-readable constraints ``row`` breaks."""
        out = []
        if row["recall"] < self.min_recall:
            out.append(f"recall {row['recall']:.4f} < {self.min_recall}")
        if self.max_p99_ms is not None and not row["latency_p99_ms"] <= self.max_p99_ms:
            out.append(f"p99 {row['latency_p99_ms']:.3f} ms > {self.max_p99_ms} ms")
        if self.max_memory_bytes is not None and row["memory_footprint"] > self.max_memory_bytes:
            used, limit = row["memory_footprint"] / 1e6, self.max_memory_bytes / 1e6
            out.append(f"memory {used:.1f} MB > {limit:.1f} MB")
        if self.max_build_s is not None and row["build_s"] > self.max_build_s:
            out.append(f"build {row['build_s']:.1f} s > {self.max_build_s} s")
        return out


@dataclass
class Recommendation:
    """The chosen configuration, why, and what else came close."""

    choice: pd.Series | None
    runners_up: pd.DataFrame
    binding: list[str] = field(default_factory=list)  # constraints that shaped the choice
    closest: pd.DataFrame | None = None  # when nothing fits: least-violating points
    objective: str = "qps"
    candidates: int = 0  # configurations meeting every constraint


def recommend(
    frame: pd.DataFrame, constraints: Constraints, optimize: str = "qps", top: int = 3
) -> Recommendation:
    """The configuration meeting every constraint with the best ``optimize`` objective.

    Ties on the objective are broken by higher recall, then smaller memory. When nothing
    meets the constraints, ``closest`` lists the points that break the fewest, by how far.
    """
    column, higher = OBJECTIVES[optimize]
    ok = successful(frame)
    if ok.empty:
        return Recommendation(None, ok, objective=optimize, closest=ok)
    broken = ok.apply(constraints.violations, axis=1)
    fits = ok[broken.map(len) == 0]
    if fits.empty:
        closest = ok.assign(violations=broken.map("; ".join), n_violations=broken.map(len))
        closest = closest.sort_values(
            ["n_violations", "recall", "qps"], ascending=[True, False, False]
        )
        return Recommendation(None, fits, objective=optimize, closest=closest.head(top))
    ordered = fits.sort_values(
        [column, "recall", "memory_footprint"], ascending=[not higher, False, True]
    )
    choice = ordered.iloc[0]
    binding = _binding(choice, ok, broken, column, higher)
    return Recommendation(
        choice, ordered.iloc[1 : 1 + top], binding, objective=optimize, candidates=len(fits)
    )


def _binding(
    choice: pd.Series, ok: pd.DataFrame, broken: pd.Series, column: str, higher: bool
) -> list[str]:
    """Constraints that shaped the answer: relaxing one alone would allow a better objective."""
    out = []
    better = ok[column] > choice[column] if higher else ok[column] < choice[column]
    for name in ("recall", "p99", "memory", "build"):
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
    if column == "memory_footprint":
        return f"{value / 1e6:,.1f} MB of memory"
    if column == "build_s":
        return f"a {value:.2f} s build"
    return f"p99 {value:.3f} ms"
