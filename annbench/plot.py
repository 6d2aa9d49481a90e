"""Trade-off plots: one pareto-frontier line per backend, for the PNG command and the report."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from annbench.analysis import pareto_frontier, successful
from annbench.record import PLAIN


def save_png(figure: Figure, out: Path) -> Path:
    """Write ``figure`` as a PNG file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out


def recall_qps_figure(frame: pd.DataFrame, title: str) -> Figure:
    """Recall vs queries per second: every run faint, each backend's frontier drawn."""
    ok = successful(frame)
    if ok.empty:
        raise ValueError("no successful runs to plot")
    workloads = sorted(ok["workload"].unique(), key=lambda w: (w != PLAIN, w))
    if len(workloads) == 1:
        return _tradeoff(ok, "qps", "Queries per second (log scale)", True, title)
    # one panel per workload, the unfiltered one first, on the same axes ranges
    columns = min(3, len(workloads))
    rows = -(-len(workloads) // columns)
    figure = Figure(figsize=(5 * columns, 4.2 * rows), layout="constrained")
    first = None
    for i, workload in enumerate(workloads):
        axes = figure.add_subplot(rows, columns, i + 1, sharex=first, sharey=first)
        first = first or axes
        points = ok[ok["workload"] == workload]
        selectivity = points["selectivity"].mean()
        name = "unfiltered" if workload == PLAIN else f"{workload} (selectivity {selectivity:.3g})"
        _draw(axes, points, "qps", "Queries per second (log scale)", True, name)
    figure.suptitle(title)
    return figure


def recall_cost_figure(frame: pd.DataFrame, cost: str, label: str, title: str) -> Figure:
    """Best recall of each build configuration vs a build cost (``build_s``,
    ``memory_footprint``...): lower cost and higher recall are better."""
    ok = successful(frame)
    keys = ["backend", ok["build_params"].map(str)]
    best = ok.loc[ok.groupby(keys)["recall"].idxmax()]
    best = best.assign(neg_cost=-best[cost])
    return _tradeoff(best, "neg_cost", label, False, title, shown=cost)


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _tradeoff(
    ok: pd.DataFrame, y: str, ylabel: str, logy: bool, title: str, shown: str | None = None
) -> Figure:
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    _draw(figure.add_subplot(), ok, y, ylabel, logy, title, shown)
    return figure


def _draw(
    axes: Any,
    ok: pd.DataFrame,
    y: str,
    ylabel: str,
    logy: bool,
    title: str,
    shown: str | None = None,
) -> None:
    shown = shown or y
    for backend, points in sorted(ok.groupby("backend"), key=lambda item: item[0]):
        axes.scatter(points["recall"], points[shown], s=10, alpha=0.25)
        front = pareto_frontier(points, "recall", y)
        color = axes.collections[-1].get_facecolor()[0][:3]
        axes.plot(front["recall"], front[shown], marker="o", ms=4, color=color, label=backend)
    if logy:
        axes.set_yscale("log")
    k = int(ok["k"].iloc[0]) if ok["k"].nunique() == 1 else None
    axes.set_xlabel(f"Recall@{k}" if k else "Recall@k")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="backend (pareto frontier)")


def threads_figure(frame: pd.DataFrame, title: str, most: int = 8) -> Figure:
    """QPS vs search threads for each configuration measured at several thread counts, with
    the ideal linear scaling of its one-thread QPS dashed."""
    ok = successful(frame)
    ok = ok[ok["mode"] == "batch"]
    curves = [runs for _, runs in ok.groupby("config") if runs["threads"].nunique() > 1]
    if not curves:
        raise ValueError(
            "no configuration measured at several thread counts (run --mode batch "
            "--threads 1,2,...)"
        )
    curves = sorted(curves, key=lambda runs: -runs["recall"].max())[:most]
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.add_subplot()
    for runs in curves:
        runs = runs.sort_values("threads")
        line = axes.plot(
            runs["threads"],
            runs["qps"],
            marker="o",
            ms=4,
            label=f"{runs['config'].iloc[0]} (recall {runs['recall'].iloc[0]:.3f})",
        )
        base = runs.iloc[0]
        axes.plot(
            runs["threads"],
            base["qps"] * runs["threads"] / base["threads"],
            ls="--",
            color=line[0].get_color(),
            alpha=0.4,
        )
    axes.set_xlabel("Search threads")
    axes.set_ylabel("Queries per second (batch)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", title="configuration (dashed: linear scaling)")
    return figure
