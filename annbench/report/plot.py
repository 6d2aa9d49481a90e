"""Trade-off plots: one pareto-frontier line per backend, for the PNG command and the report."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from annbench.errors import AnnbenchError
from annbench.paths import output_file
from annbench.record import PLAIN
from annbench.report.colors import PALETTE, backend_color
from annbench.results.analysis import brute_force_apart, pareto_frontier, successful


def save_png(figure: Figure, out: Path) -> Path:
    """Write ``figure`` as a PNG file (through the output guard: never over a store or a
    dataset, and a failed write leaves ``out`` as it was)."""
    with output_file(out, "PNG file") as temp:
        figure.savefig(temp, dpi=120, format="png")
    return Path(out)


def recall_qps_figure(frame: pd.DataFrame, title: str) -> Figure:
    """Recall vs queries per second: every run faint, each backend's frontier drawn."""
    ok = brute_force_apart(successful(frame))
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
        color = backend_color(backend)
        axes.scatter(points["recall"], points[shown], s=10, alpha=0.25, color=color)
        front = pareto_frontier(points, "recall", y)
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


#: The y axes the interactive plot switches between, all against recall:
#: (key, axis title, column, higher is better, log scale)
AXES = (
    ("qps", "Queries per second", "qps", True, True),
    ("p99", "p99 latency (ms)", "latency_p99_ms", False, True),
    ("build", "Build time (s)", "build_s", False, True),
    ("memory", "Serving memory (MB)", "memory_MB", False, True),
)
_HOVER = (
    "<b>%{customdata[0]}</b><br>build: %{customdata[1]}<br>search: %{customdata[2]}<br>"
    "recall %{customdata[3]:.4f}<br>QPS %{customdata[4]:,.0f}<br>p99 %{customdata[5]} ms<br>"
    "serving memory %{customdata[6]}<br>build peak %{customdata[7]}<br>"
    "file %{customdata[8]}<br>build %{customdata[9]:.2f} s<extra></extra>"
)


def interactive_figure(frame: pd.DataFrame, title: str) -> Any:
    """A plotly figure of recall against QPS, with buttons switching the y axis to p99
    latency, build time or serving memory: every run of a backend as faint points (hover
    shows its parameters and figures) and its pareto frontier as a line; a legend entry
    hides or shows a backend."""
    import plotly.graph_objects as go

    ok = _interactive_columns(brute_force_apart(successful(frame)))
    if ok.empty:
        raise ValueError("no successful runs to plot")
    figure = go.Figure()
    per_axis: dict[str, tuple[list[Any], list[Any]]] = {key: ([], []) for key, *_ in AXES}
    for backend, points in sorted(ok.groupby("backend"), key=lambda g: g[0]):
        color = backend_color(backend)
        first = AXES[0]
        figure.add_trace(
            go.Scatter(
                x=points["recall"],
                y=points[first[2]],
                mode="markers",
                marker={"color": color, "size": 7, "opacity": 0.35},
                name=backend,
                legendgroup=backend,
                showlegend=False,
                customdata=_hover_data(points),
                hovertemplate=_HOVER,
            )
        )
        front = _frontier(points, first[2], first[3])
        figure.add_trace(
            go.Scatter(
                x=front["recall"],
                y=front[first[2]],
                mode="lines+markers",
                line={"color": color, "width": 2},
                marker={"color": color, "size": 6},
                name=backend,
                legendgroup=backend,
                customdata=_hover_data(front),
                hovertemplate=_HOVER,
            )
        )
        for key, _, column, higher, _ in AXES:
            front = _frontier(points, column, higher)
            xs, ys = per_axis[key]
            xs += [points["recall"].tolist(), front["recall"].tolist()]
            ys += [_values(points[column]), _values(front[column])]
    k = int(ok["k"].iloc[0]) if ok["k"].nunique() == 1 else None
    buttons = [
        {
            "label": label,
            "method": "update",
            "args": [
                {"x": per_axis[key][0], "y": per_axis[key][1]},
                {"yaxis.title.text": label, "yaxis.type": "log" if log else "linear"},
            ],
        }
        for key, label, _, _, log in AXES
    ]
    figure.update_layout(
        title={"text": title, "x": 0.01, "y": 0.98, "yanchor": "top"},
        template="plotly_white",
        height=500,
        margin={"l": 70, "r": 20, "t": 100, "b": 50},
        hovermode="closest",
        legend={"title": {"text": "backend (click to hide)"}},
        xaxis={"title": {"text": f"Recall@{k}" if k else "Recall@k"}},
        yaxis={"title": {"text": AXES[0][1]}, "type": "log"},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "buttons": buttons,
                "x": 0.0,
                "xanchor": "left",
                "y": 1.03,
                "yanchor": "bottom",
                "pad": {"r": 4, "t": 0},
                "showactive": True,
            }
        ],
    )
    return figure


def _interactive_columns(ok: pd.DataFrame) -> pd.DataFrame:
    """Derived columns the interactive plot shows: serving memory in MB, where measured."""
    serving = ok["serving_memory_bytes"] if "serving_memory_bytes" in ok else None
    memory = ok["memory_footprint"] if serving is None else serving.fillna(ok["memory_footprint"])
    return ok.assign(memory_MB=memory / 1e6)


def _frontier(points: pd.DataFrame, column: str, higher: bool) -> pd.DataFrame:
    """Pareto frontier of recall (higher better) against ``column``."""
    usable = points[points[column].notna()]
    if usable.empty:
        return usable
    if higher:
        return pareto_frontier(usable, "recall", column)
    front = pareto_frontier(usable.assign(_neg=-usable[column]), "recall", "_neg")
    return front.drop(columns="_neg")


def _values(series: pd.Series) -> list[Any]:
    return [None if pd.isna(v) else float(v) for v in series]


def _hover_data(points: pd.DataFrame) -> list[list[Any]]:
    from annbench.record import params_label

    def size(value: Any) -> str:
        return "-" if value is None or pd.isna(value) else f"{value / 1e6:,.1f} MB"

    def ms(value: Any) -> str:
        return "-" if value is None or pd.isna(value) else f"{value:.3f}"

    serving = points.get("serving_memory_bytes", pd.Series(None, index=points.index))
    return [
        [
            row.backend,
            params_label(row.build_params),
            params_label(row.search_params),
            row.recall,
            row.qps,
            ms(row.latency_p99_ms),
            size(serving[index]),
            size(row.peak_rss_bytes),
            size(row.index_bytes),
            row.build_s if row.build_s is not None and not pd.isna(row.build_s) else 0.0,
        ]
        for index, row in zip(points.index, points.itertuples(), strict=True)
    ]


def interactive_threads_figure(frame: pd.DataFrame, title: str, most: int = 8) -> Any:
    """A plotly figure of QPS against search threads for each configuration measured at
    several thread counts, with its ideal linear scaling dashed."""
    import plotly.graph_objects as go

    ok = successful(frame)
    ok = ok[ok["mode"] == "batch"]
    curves = [runs for _, runs in ok.groupby("config") if runs["threads"].nunique() > 1]
    if not curves:
        raise ValueError("no configuration measured at several thread counts")
    curves = sorted(curves, key=lambda runs: -runs["recall"].max())[:most]
    figure = go.Figure()
    for i, runs in enumerate(curves):
        runs = runs.sort_values("threads")
        color = PALETTE[i % len(PALETTE)]
        name = f"{runs['config'].iloc[0]} (recall {runs['recall'].iloc[0]:.3f})"
        figure.add_trace(
            go.Scatter(
                x=runs["threads"],
                y=runs["qps"],
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": color},
                hovertemplate="%{x} threads: %{y:,.0f} QPS<extra>" + name + "</extra>",
            )
        )
        base = runs.iloc[0]
        figure.add_trace(
            go.Scatter(
                x=runs["threads"],
                y=base["qps"] * runs["threads"] / base["threads"],
                mode="lines",
                line={"color": color, "dash": "dash", "width": 1},
                name="linear scaling",
                legendgroup=name,
                showlegend=False,
                hoverinfo="skip",
            )
        )
    figure.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=420,
        xaxis={"title": {"text": "Search threads"}, "dtick": 1},
        yaxis={"title": {"text": "Queries per second (batch)"}},
        legend={"title": {"text": "configuration (dashed: linear scaling)"}, "font": {"size": 10}},
    )
    return figure


def runbook_figure(frame: pd.DataFrame, title: str, most: int = 12) -> Figure:
    """Recall (top) and QPS (bottom) against runbook step, one line per configuration (see
    ``runbook_lines`` for which when there are more than ``most``)."""
    lines, title = runbook_lines(frame, title, most)
    figure = Figure(figsize=(8, 7.5), layout="constrained")
    recall_axes, qps_axes = figure.subplots(2, 1, sharex=True)
    for config, runs in lines:
        line = recall_axes.plot(runs["step"], runs["recall"], marker="o", ms=3, label=config)
        qps_axes.plot(runs["step"], runs["qps"], marker="o", ms=3, color=line[0].get_color())
    k = _single_k(lines)
    recall_axes.set_ylabel(f"Recall@{k}" if k else "Recall@k")
    recall_axes.set_title(title)
    recall_axes.grid(True, alpha=0.3)
    recall_axes.legend(fontsize="x-small", title="configuration")
    qps_axes.set_yscale("log")
    qps_axes.set_ylabel("Queries per second (log scale)")
    qps_axes.set_xlabel("Runbook step")
    qps_axes.grid(True, which="both", alpha=0.3)
    return figure


def interactive_runbook_figure(frame: pd.DataFrame, title: str, most: int = 12) -> Any:
    """A plotly figure of recall (top) and QPS (bottom) against runbook step, one line per
    configuration; hover shows the step, live rows, recall, QPS and p99 latency; a legend
    entry hides or shows a configuration in both panels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    lines, title = runbook_lines(frame, title, most)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    hover = (
        "<b>%{customdata[0]}</b><br>step %{x} (%{customdata[1]:,} live rows)<br>"
        "recall %{customdata[2]:.4f}<br>QPS %{customdata[3]:,.0f}<br>"
        "p99 %{customdata[4]} ms<extra></extra>"
    )
    for i, (config, runs) in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        data = [
            [config, int(live), recall, qps, "-" if pd.isna(p99) else f"{p99:.3f}"]
            for live, recall, qps, p99 in zip(
                runs["live_size"], runs["recall"], runs["qps"], runs["latency_p99_ms"], strict=True
            )
        ]
        for row, column in ((1, "recall"), (2, "qps")):
            figure.add_trace(
                go.Scatter(
                    x=_values(runs["step"]),
                    y=_values(runs[column]),
                    mode="lines+markers",
                    name=config,
                    legendgroup=config,
                    showlegend=row == 1,
                    line={"color": color},
                    marker={"size": 5},
                    customdata=data,
                    hovertemplate=hover,
                ),
                row=row,
                col=1,
            )
    k = _single_k(lines)
    figure.update_yaxes(title_text=f"Recall@{k}" if k else "Recall@k", row=1, col=1)
    figure.update_yaxes(title_text="Queries per second", type="log", row=2, col=1)
    figure.update_xaxes(title_text="Runbook step", row=2, col=1)
    figure.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=560,
        legend={"title": {"text": "configuration"}, "font": {"size": 10}},
    )
    return figure


def runbook_lines(
    frame: pd.DataFrame, title: str, most: int = 12
) -> tuple[list[tuple[str, pd.DataFrame]], str]:
    """The search steps of each configuration to draw, by step, and the title: every
    configuration, or with more than ``most`` one per build configuration (its fastest search
    setting whose worst recall over the runbook is >= 0.9, else its most accurate)."""
    from annbench.results.runbook_analysis import runbook_rows, runbook_summary

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
    table = table.sort_values(["backend", "build", "worst_recall"])
    lines = [
        (config, rows[rows["config"] == config].sort_values("step"))
        for config in dict.fromkeys(table["config"])
    ]
    return lines, title


def _single_k(lines: list[tuple[str, pd.DataFrame]]) -> int | None:
    ks = {int(k) for _, runs in lines for k in runs["k"]}
    return ks.pop() if len(ks) == 1 else None


def write_plot(
    frame: pd.DataFrame,
    dataset: str,
    store_path: Path,
    mode: str = "single",
    k: int | None = None,
    threads: bool = False,
    runbook: str | None = None,
    out: Path | None = None,
) -> Path:
    """Write the PNG ``annbench plot`` writes from ``frame`` (a store's rows of ``dataset``,
    parameters as dicts): recall vs QPS with each backend's frontier in ``mode``, QPS vs
    search threads of batch runs (``threads``), or recall and QPS per step of ``runbook``; at
    ``k`` (default: the most common), to ``out`` or a file named after them beside the store
    ``store_path``. Returns the file written."""
    from annbench.results.runbook_analysis import without_runbooks

    mode = "batch" if threads else mode
    if runbook is not None:
        return _write_runbook_plot(frame, dataset, runbook, mode, k, out, store_path)
    frame = without_runbooks(frame)
    frame = frame[(frame["mode"] == mode) & (frame["status"] == "ok")]
    if frame.empty:
        raise AnnbenchError(
            f"No successful {mode}-mode results for dataset '{dataset}' in {store_path}; "
            f"run 'annbench run -d {dataset} -b ...' first"
        )
    k = k or int(frame["k"].mode().iloc[0])
    frame = frame[frame["k"] == k]
    if frame.empty:
        raise AnnbenchError(f"No results with k={k} for dataset '{dataset}'")
    if threads:
        try:
            figure = threads_figure(frame, f"{dataset}: QPS vs threads (k={k})")
        except ValueError as exc:
            raise AnnbenchError(str(exc)) from exc
        out = out or store_path.parent / f"{dataset}-threads-k{k}.png"
    else:
        figure = recall_qps_figure(frame, f"{dataset}: recall@{k} vs QPS ({mode} mode)")
        out = out or store_path.parent / f"{dataset}-{mode}-k{k}.png"
    return save_png(figure, out)


def _write_runbook_plot(
    frame: pd.DataFrame,
    dataset: str,
    runbook: str,
    mode: str,
    k: int | None,
    out: Path | None,
    store_path: Path,
) -> Path:
    frame = frame[(frame["workload"] == f"runbook:{runbook}") & (frame["mode"] == mode)]
    k = k or (int(frame["k"].mode().iloc[0]) if len(frame) else 10)
    try:
        figure = runbook_figure(
            frame[frame["k"] == k], f"{dataset}: runbook {runbook} (k={k}, {mode} mode)"
        )
    except ValueError as exc:
        raise AnnbenchError(
            f"No successful {mode}-mode runs of runbook {runbook} on '{dataset}' in "
            f"{store_path}; run 'annbench run -d {dataset} --runbook {runbook} -b ...' first"
        ) from exc
    out = out or store_path.parent / f"{dataset}-runbook-{runbook}-k{k}.png"
    return save_png(figure, out)
