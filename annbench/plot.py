"""Recall-vs-speed plots: one pareto-frontier line per backend."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from annbench.analysis import pareto_frontier


def plot_recall_qps(frame: pd.DataFrame, out: Path, title: str) -> Path:
    """Write a PNG of recall (x) vs QPS (y, log) with one frontier per backend."""
    ok = frame[(frame["status"] == "ok") & frame["recall"].notna() & frame["qps"].notna()]
    if ok.empty:
        raise ValueError("no successful runs to plot")
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.add_subplot()
    for backend, points in sorted(ok.groupby("backend"), key=lambda item: item[0]):
        axes.scatter(points["recall"], points["qps"], s=10, alpha=0.25)
        front = pareto_frontier(points)
        color = axes.collections[-1].get_facecolor()[0][:3]
        axes.plot(front["recall"], front["qps"], marker="o", ms=4, color=color, label=backend)
    axes.set_yscale("log")
    k = int(ok["k"].iloc[0]) if ok["k"].nunique() == 1 else None
    axes.set_xlabel(f"Recall@{k}" if k else "Recall@k")
    axes.set_ylabel("Queries per second (log scale)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="backend (pareto frontier)")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out
