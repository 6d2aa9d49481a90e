"""Trade-off plots: one pareto-frontier line per backend, for the PNG command and the report."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from annbench.analysis import pareto_frontier, successful


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
    return _tradeoff(ok, "qps", "Queries per second (log scale)", True, title)


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
    shown = shown or y
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.add_subplot()
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
    return figure


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


def runbook_figure(frame: pd.DataFrame, title: str, most: int = 12) -> Figure:
    """Recall (top) and QPS (bottom) against runbook step, one line per configuration; with
    more than ``most`` configurations, one per build configuration: its fastest search
    setting whose worst recall over the runbook is >= 0.9 (else its most accurate)."""
    from annbench.runbook_analysis import runbook_rows, runbook_summary

    table = runbook_summary(frame)
    if table.empty:
        raise ValueError("no successful runbook search steps to plot")
    if len(table) > most:
        table = (
            table.assign(good=table["worst_recall"] >= 0.9)
            .sort_values(["good", "median_qps", "worst_recall"], ascending=False)
            .groupby(["backend", "build"], sort=False)
            .head(1)
        )
        title += " (per build: fastest setting with worst recall >= 0.9)"
    rows = runbook_rows(frame)
    rows = rows[(rows["step_kind"] == "search") & (rows["status"] == "ok")]
    figure = Figure(figsize=(8, 7.5), layout="constrained")
    recall_axes, qps_axes = figure.subplots(2, 1, sharex=True)
    for config in sorted(table["config"]):
        runs = rows[rows["config"] == config].sort_values("step")
        line = recall_axes.plot(runs["step"], runs["recall"], marker="o", ms=3, label=config)
        qps_axes.plot(runs["step"], runs["qps"], marker="o", ms=3, color=line[0].get_color())
    k = int(rows["k"].iloc[0]) if rows["k"].nunique() == 1 else None
    recall_axes.set_ylabel(f"Recall@{k}" if k else "Recall@k")
    recall_axes.set_title(title)
    recall_axes.grid(True, alpha=0.3)
    recall_axes.legend(fontsize="x-small", title="configuration")
    qps_axes.set_yscale("log")
    qps_axes.set_ylabel("Queries per second (log scale)")
    qps_axes.set_xlabel("Runbook step")
    qps_axes.grid(True, which="both", alpha=0.3)
    return figure
