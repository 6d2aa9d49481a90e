"""A self-contained static HTML report: plots inlined as PNG, tables, summaries; no network."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from annbench import __version__
from annbench.analysis import NOISY_SPREAD, RECALL_LEVELS, successful, summary
from annbench.plot import (
    figure_png,
    recall_cost_figure,
    recall_qps_figure,
    runbook_figure,
    threads_figure,
)
from annbench.record import params_label

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text { text-align: left; } tr.noisy td { background: #fff4e0; } tr.failed td { color: #a00; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots img { max-width: 100%; width: 580px; }
.note { color: #666; font-size: 0.9em; }
"""


# Records on <body> how many plots decoded and tables rendered, so a headless browser (or a
# curious reader's devtools) can confirm the page works.
_SELF_CHECK = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.querySelectorAll('img.plot'));
  document.body.dataset.plotsRendered = images.filter(function (i) {
    return i.complete && i.naturalWidth > 0;
  }).length;
  document.body.dataset.plots = images.length;
  document.body.dataset.tables = document.querySelectorAll('table tbody tr').length;
});
</script>"""


def write_report(frame: pd.DataFrame, out_dir: Path, latency_budget_ms: float = 1.0) -> Path:
    """Write ``out_dir/index.html`` for every dataset in ``frame``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>annbench report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>annbench report</h1>",
        f"<p class='note'>annbench {__version__}, written "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Recall is annbench recall@k (ties "
        "counted, duplicates are misses); QPS and latencies are medians over repeats; rows with "
        f"a QPS spread (interquartile range over repeats) above {NOISY_SPREAD:.0%} of the "
        "median are marked noisy.</p>",
    ]
    datasets = sorted(frame["dataset"].unique())
    if not datasets:
        parts.append("<p>No results stored yet.</p>")
    for name in datasets:
        parts.append(_dataset_section(name, frame[frame["dataset"] == name], latency_budget_ms))
    parts.append(_SELF_CHECK)
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _dataset_section(name: str, frame: pd.DataFrame, latency_budget_ms: float) -> str:
    from annbench.runbook_analysis import without_runbooks

    anchor = html.escape(name)
    out = [f"<h2 id='{anchor}'>{anchor}</h2>"]
    runbooks = _runbook_sections(name, frame)
    frame = without_runbooks(frame)
    ok = successful(frame)
    for (mode, k), runs in ok.groupby(["mode", "k"]):
        label = f"{name}, {mode} mode, k={k}"
        figures = [
            recall_qps_figure(runs, f"{label}: recall vs QPS"),
            recall_cost_figure(runs, "build_s", "Build time (s)", f"{label}: recall vs build time"),
            recall_cost_figure(
                runs.assign(memory_MB=runs["memory_footprint"] / 1e6),
                "memory_MB",
                "Index size / memory (MB)",
                f"{label}: recall vs index size",
            ),
        ]
        if mode == "batch" and runs.groupby("config")["threads"].nunique().max() > 1:
            figures.append(threads_figure(runs, f"{label}: QPS vs search threads"))
        out.append(f"<h3>{html.escape(label)}</h3><div class='plots'>")
        for figure in figures:
            data = base64.b64encode(figure_png(figure)).decode()
            alt = html.escape(figure.axes[0].get_title())
            out.append(f"<img class='plot' alt='{alt}' src='data:image/png;base64,{data}'>")
        out.append("</div>")
    table = summary(frame, latency_budget_ms=latency_budget_ms)
    if len(table):
        out.append("<h3>Best QPS at each recall level</h3>")
        out.append(_html_table(_summary_view(table), "summary"))
        budget = table[
            ["backend", "mode", "k", "best_recall_within_budget", "config_within_budget"]
        ]
        out.append(f"<h3>Best recall with p99 latency within {latency_budget_ms:g} ms</h3>")
        out.append(
            _html_table(
                budget.rename(
                    columns={
                        "best_recall_within_budget": "recall",
                        "config_within_budget": "configuration",
                    }
                ),
                "budget",
            )
        )
    out.append("<h3>Every run</h3>")
    out.append(_runs_table(frame))
    out.extend(runbooks)
    return "\n".join(out)


def _runbook_sections(name: str, frame: pd.DataFrame) -> list[str]:
    """Per runbook: recall and QPS against step, and a table of update throughput and recall
    at the last step per configuration."""
    from annbench.runbook_analysis import runbook_rows, runbook_summary

    out = []
    rows = runbook_rows(frame)
    for (runbook, mode, k), runs in rows.groupby(["runbook", "mode", "k"]):
        table = runbook_summary(runs)
        if table.empty:
            continue
        label = f"{name}, runbook {runbook}, {mode} mode, k={k}"
        figure = runbook_figure(runs, f"{label}: recall and QPS per step")
        data = base64.b64encode(figure_png(figure)).decode()
        alt = html.escape(figure.axes[0].get_title())
        out.append(f"<h3>{html.escape(label)}</h3><div class='plots'>")
        out.append(f"<img class='plot' alt='{alt}' src='data:image/png;base64,{data}'></div>")
        view = table[
            [
                "backend",
                "build",
                "search",
                "insert_per_s",
                "delete_per_s",
                "rebuilds",
                "build_s",
                "worst_recall",
                "worst_step",
                "last_recall",
                "last_qps",
                "last_memory_MB",
            ]
        ].rename(
            columns={
                "insert_per_s": "inserts/s",
                "delete_per_s": "deletes/s",
                "worst_recall": "worst recall",
                "worst_step": "at step",
                "last_recall": "recall at last step",
                "last_qps": "QPS at last step",
                "last_memory_MB": "memory MB at end",
            }
        )
        out.append(_html_table(view, f"runbook-{html.escape(runbook)}"))
        out.append(
            "<p class='note'>Inserts/deletes per second exclude the initial build and include "
            "rebuilds from the live rows where the backend cannot add or remove.</p>"
        )
    return out


def _summary_view(table: pd.DataFrame) -> pd.DataFrame:
    columns = ["backend", "mode", "k"]
    for level in RECALL_LEVELS:
        tag = f"@{level:g}"
        columns += [f"qps{tag}", f"build_s{tag}", f"memory_MB{tag}", f"config{tag}"]
    return table[columns]


def _runs_table(frame: pd.DataFrame) -> str:
    view = pd.DataFrame(
        {
            "backend": frame["backend"],
            "build": frame["build_params"].map(params_label),
            "search": frame["search_params"].map(params_label),
            "k": frame["k"],
            "mode": frame["mode"],
            "status": frame["status"],
            "recall": frame["recall"],
            "ann-benchmarks recall": frame["ann_benchmarks_recall"],
            "label top-k acc": frame["label_top_k_accuracy"],
            "label precision": frame["label_precision"],
            "label mAP": frame["label_map"],
            "QPS": frame["qps"],
            "QPS spread": frame["qps_spread"],
            "p50 ms": frame["latency_p50_ms"],
            "p99 ms": frame["latency_p99_ms"],
            "build s": frame["build_s"],
            "index MB": frame["index_bytes"] / 1e6,
            "memory MB": frame["memory_bytes"] / 1e6,
            "error": frame["error"],
        }
    )
    if view["label top-k acc"].isna().all():
        view = view.drop(columns=["label top-k acc", "label precision", "label mAP"])
    classes = [
        "failed" if status != "ok" else "noisy" if (spread or 0) > NOISY_SPREAD else ""
        for status, spread in zip(frame["status"], frame["qps_spread"], strict=True)
    ]
    return _html_table(view, "runs", classes)


def _number(value: float) -> str:
    if pd.isna(value):
        return ""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _html_table(view: pd.DataFrame, css_id: str, row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in view.columns)
    rows = []
    for i, (_, row) in enumerate(view.iterrows()):
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(f"<td>{_number(value)}</td>")
            else:
                text = (
                    ""
                    if value is None or (not isinstance(value, str) and pd.isna(value))
                    else value
                )
                cells.append(f"<td class='text'>{html.escape(str(text))}</td>")
        css = f" class='{row_classes[i]}'" if row_classes and row_classes[i] else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return (
        f"<table id='{css_id}'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
