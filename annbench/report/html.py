"""A self-contained HTML report: interactive plotly plots (JavaScript inlined once, so the page
works offline from file://), summary tables that fit a 1280 px screen, every run.

Plotly rather than bokeh: one call writes a figure whose JavaScript can be inlined, and hover
templates, legend toggling and axis-switching buttons need no custom JavaScript.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from annbench import __version__
from annbench.paths import write_text_file
from annbench.progress import Progress
from annbench.record import LOAD_MODES, PLAIN, mode_label, params_label
from annbench.results.analysis import (
    INTERFERENCE_MEAN,
    INTERFERENCE_P99,
    NOISY_SPREAD,
    RECALL_LEVELS,
    host_interference,
    successful,
    summary,
)
from annbench.results.columns import numbers

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px;
       padding: 0 12px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { margin-top: 1.6em; }
table.data { border-collapse: collapse; font-size: 0.8em; margin: 0.6em 0 1.2em; }
table.data th, table.data td { border: 1px solid #ddd; padding: 2px 5px; text-align: right;
       vertical-align: top; }
table.data th { background: #f3f3f3; position: sticky; top: 0; text-align: center; }
table.data td.text { text-align: left; max-width: 22em; overflow-wrap: anywhere; }
table.sortable td, table.sortable th { white-space: nowrap; }
.wide { overflow-x: auto; max-width: 100%; }
table.sortable td.text { max-width: none; }
table.data td.noisy { background: #fff4e0; } table.data td.interfered { background: #f0e8ff; }
table.data td.failed { color: #a00; }
.levels { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr));
          gap: 0 1.5em; }
.levels h4 { margin: 0.8em 0 0; }
.plot { min-height: 480px; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
nav a { margin-right: 1em; }
"""

# Records on <body> how many plots rendered and table rows exist, so a headless browser (or a
# curious reader's devtools) can confirm the page works.
_SELF_CHECK = """
window.addEventListener('load', function () {
  var plots = document.querySelectorAll('.plotly-graph-div');
  var rendered = Array.prototype.filter.call(plots, function (p) {
    return p.querySelector('.main-svg') !== null && p.data && p.data.length > 0;
  });
  document.body.dataset.plots = plots.length;
  document.body.dataset.plotsRendered = rendered.length;
  document.body.dataset.tables = document.querySelectorAll('table.data tbody tr').length;
});
"""

# Sortable tables: DataTables, as itables packages it for pages that work offline, made to
# sort and search each table of class "sortable" in place (numbers by value, the thousands
# separator understood), with no paging; cells never wrap, the table scrolls sideways instead.
_SORTABLE = """
(async () => {
  const library = window[%(name)s];
  if (!library) return;
  const { default: DataTable } = await library;
  document.querySelectorAll('table.sortable').forEach(function (table) {
    new DataTable(table, {
      paging: false, info: false, order: [], autoWidth: false,
      language: { search: 'Filter:' }
    });
  });
  document.body.dataset.sortable = document.querySelectorAll('table.sortable.dataTable').length;
})();
"""


def datatables_loader() -> str:
    """The script that brings DataTables (with jQuery) into the page, inlined from the itables
    package (nothing is fetched), and the one that makes the sortable tables sortable."""
    import re

    from itables import options
    from itables.javascript import _itables_underscore_version, generate_init_offline_itables_html

    loader = generate_init_offline_itables_html(options.dt_bundle)
    loader = re.sub(r"<noscript>.*?</noscript>", "", loader, flags=re.S)  # links to its site
    name = json.dumps(_itables_underscore_version())
    return loader + f'<script type="module">{_SORTABLE % {"name": name}}</script>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head><body>
<h1>{{ title }}</h1>
<p class="note">{{ note }}</p>
{% if links %}<nav>{% for href, text in links %}
<a href="{{ href }}">{{ text }}</a>{% endfor %}
</nav>{% endif %}
{% for section in sections %}{{ section }}
{% endfor %}
{{ datatables }}
<script>{{ self_check }}</script>
</body></html>
"""

_SECTION = """<h2 id="{{ anchor }}">{{ name }}</h2>
{% if not groups and not runbooks and not serving %}<p>No successful runs of this dataset yet.</p>
{% endif %}
{% for group in groups %}
<h3>{{ group.label }}</h3>
{% if group.plot %}<div class="plot">{{ group.plot }}</div>
<p class="note">Buttons switch the y axis (QPS, p99 latency, build time, serving memory; log
scales); lines are each backend's pareto frontier, faint points every run; hover a point for
its parameters; click a legend entry to hide a backend, double-click to show only it.</p>{% endif %}
{% if group.levels %}<h3>Best QPS at each recall level ({{ group.label }})</h3>
<div class="levels">{% for title, table in group.levels %}
<div><h4>{{ title }}</h4>{{ table }}</div>{% endfor %}
</div>
{% endif %}
{% if group.budget %}<h3>Best recall with p99 latency within {{ budget_ms }} ms</h3>
{{ group.budget }}{% endif %}
<h3>Every run ({{ group.label }})</h3>
{{ group.runs }}
{% endfor %}
{{ scaling }}
{{ serving }}
{% if engines %}<h3 id="engines-{{ anchor }}">Databases beside their engines</h3>
<p class="note">Each database next to the library it is built on, measured the same way (mode,
load point, k): at each recall level, the best QPS either reached, and their ratio (database /
library): what the database layer costs at the same recall.</p>
{{ engines }}{% endif %}
{{ runbooks }}
"""


def environment() -> Any:
    """The jinja2 environment of the report's pages (HTML escaped unless marked safe)."""
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def write_report(
    frame: pd.DataFrame,
    out_dir: Path,
    latency_budget_ms: float = 1.0,
    extra_links: list[tuple[str, str]] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write ``out_dir/index.html`` for every dataset in ``frame`` (linking ``extra_links``,
    (href, text) pairs); ``progress`` hears of each dataset done. Returns its path."""
    from markupsafe import Markup

    from annbench.results.columns import with_dicts

    frame = with_dicts(frame)
    env = environment()
    state = {"plotlyjs": True}  # the plotly library is inlined once, with the first plot
    datasets = sorted(frame["dataset"].unique())
    shown = progress or Progress()
    sections = []
    for name in datasets:
        shown.status(f"plots and tables of {name}")
        part = frame[frame["dataset"] == name]
        sections.append(Markup(_dataset_section(env, name, part, latency_budget_ms, state)))
        shown.update(1)
    if not datasets:
        sections.append(Markup("<p>No results stored yet.</p>"))
    links = [(f"#{name}", name) for name in datasets] + list(extra_links or [])
    note = (
        f"annbench {__version__}, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "Recall is annbench recall@k (ties counted, duplicates are misses); QPS and latencies "
        "are medians over repeats; runs whose QPS spread (interquartile range over repeats) is "
        f"above {NOISY_SPREAD:.0%} of the median are shaded as noisy (orange); single-mode runs "
        "whose wall time exceeds the search thread's CPU time by more than "
        f"{INTERFERENCE_MEAN - 1:.0%} (or {INTERFERENCE_P99 - 1:.0%} at p99) were measured under "
        "host interference and are shaded violet: their CPU columns describe the index. "
        "Memory: serving (resident "
        "memory of the index loaded in a fresh process), build peak (peak resident memory of the "
        "building worker) and file (saved index size)."
    )
    page = env.from_string(_PAGE).render(
        title="annbench report",
        style=Markup(_STYLE),
        note=note,
        links=links,
        sections=sections,
        datatables=Markup(datatables_loader()),
        self_check=Markup(_SELF_CHECK),
    )
    return write_text_file(out_dir / "index.html", page, "Report page")


def _dataset_section(
    env: Any, name: str, frame: pd.DataFrame, latency_budget_ms: float, state: dict[str, bool]
) -> str:
    from markupsafe import Markup

    from annbench.report.scale_plot import scale_section
    from annbench.results.runbook_analysis import without_runbooks

    static = without_runbooks(frame)  # runbook steps are no static sweep
    load = static["mode"].isin(LOAD_MODES)  # load points are no recall/cost trade-off
    # figures drawn in page order: the plotly library is inlined with the first
    groups = _static_groups(name, static[~load], latency_budget_ms, state)
    scaling = scale_section(name, static[~load], lambda fig, div: _figure_html(fig, div, state))
    serving = Markup(_load_section(env, name, static[load], state))
    runbooks = Markup(_runbook_sections(env, name, frame, state))
    return env.from_string(_SECTION).render(
        anchor=name,
        name=name,
        groups=groups,
        budget_ms=f"{latency_budget_ms:g}",
        scaling=Markup(scaling),
        serving=serving,
        engines=Markup(_engine_table(name, static)),
        runbooks=runbooks,
    )


def _engine_table(name: str, frame: pd.DataFrame) -> str:
    """Databases beside their engines ('' when no database was measured with its engine)."""
    from annbench.registry import database_engines
    from annbench.results.analysis import engine_comparison

    table = engine_comparison(frame, database_engines(frame["backend"])) if len(frame) else None
    if table is None or table.empty:
        return ""
    view = pd.DataFrame(
        {
            "workload": table["workload"],
            "mode": table["mode"],
            "database": table["database"],
            "engine": table["engine"],
            "recall ≥": table["recall_level"],
            "QPS ratio": table["qps_ratio"],
            "database QPS": table["database_qps"],
            "engine QPS": table["engine_qps"],
            "database recall": table["database_recall"],
            "engine recall": table["engine_recall"],
            "database p99 ms": table["database_p99_ms"],
            "engine p99 ms": table["engine_p99_ms"],
            "database MB": table["database_memory_MB"],
            "engine MB": table["engine_memory_MB"],
            "database build s": table["database_build_s"],
            "engine build s": table["engine_build_s"],
            "database config": table["database_config"],
            "engine config": table["engine_config"],
        }
    )
    decimals = {"QPS ratio": 2, "database QPS": 0, "engine QPS": 0}
    return html_table(view, f"engines-{name}", decimals=decimals, sortable=True)


def _static_groups(
    name: str, frame: pd.DataFrame, latency_budget_ms: float, state: dict[str, bool]
) -> list[dict[str, Any]]:
    """Per (workload, mode, k) of a static sweep: the recall/cost plot, the tables of best
    QPS per recall level and within the latency budget, and every run."""
    from markupsafe import Markup

    from annbench.report.plot import interactive_figure, interactive_threads_figure

    ok = successful(frame)
    groups = []
    # one group per workload: the unfiltered sweep first, then each filter beside it
    keys = ["workload", "mode", "k"]
    for (workload, mode, k), runs in sorted(frame.groupby(keys), key=_plain_first):
        label = f"{mode} mode, k={k}"
        tag = f"{mode}-{k}"
        if workload != PLAIN:
            label += f", filter {workload} (selectivity {runs['selectivity'].mean():.3g})"
            tag += "-" + "".join(c if c.isalnum() else "-" for c in workload)
        good = ok[(ok["workload"] == workload) & (ok["mode"] == mode) & (ok["k"] == k)]
        plot = None
        if len(good):
            figure = interactive_figure(good, f"{name}, {label}: recall against cost")
            plot = Markup(_figure_html(figure, f"plot-{name}-{tag}", state))
            if mode == "batch" and good.groupby("config")["threads"].nunique().max() > 1:
                scaling = interactive_threads_figure(
                    good, f"{name}, {label}: QPS vs search threads"
                )
                plot += Markup(_figure_html(scaling, f"threads-{name}-{tag}", state))
        table = summary(runs, latency_budget_ms=latency_budget_ms)
        groups.append(
            {
                "label": label,
                "plot": plot,
                "levels": _level_tables(table) if len(table) else [],
                "budget": _budget_table(table) if len(table) else None,
                "runs": Markup(_runs_table(runs)),
            }
        )
    return [g for g in groups if g["plot"] is not None or len(g["runs"])]


def _plain_first(group: tuple[tuple[str, str, int], pd.DataFrame]) -> tuple[bool, str, str, int]:
    (workload, mode, k), _ = group
    return workload != PLAIN, workload, mode, k


_RUNBOOK = """{% for part in parts %}
<h3>Runbook {{ part.runbook }} ({{ part.label }})</h3>
<div class="plot">{{ part.plot }}</div>
<p class="note">Recall and QPS at each search step of the runbook, one line per configuration;
hover a point for its step, live rows and figures. Inserts and deletes per second exclude the
initial build and include rebuilds from the live rows where the backend cannot add or remove.
</p>
{{ part.table }}
{% endfor %}
"""


def _runbook_sections(env: Any, name: str, frame: pd.DataFrame, state: dict[str, bool]) -> str:
    """Per runbook: recall and QPS against step, and a table of insert and delete throughput
    and recall at the last step per configuration ('' when there are no runbook runs)."""
    from markupsafe import Markup

    from annbench.report.plot import interactive_runbook_figure
    from annbench.results.runbook_analysis import runbook_rows, runbook_summary

    parts = []
    for (runbook, mode, k), runs in runbook_rows(frame).groupby(["runbook", "mode", "k"]):
        table = runbook_summary(runs)
        if table.empty:
            continue
        label = f"{mode} mode, k={k}"
        figure = interactive_runbook_figure(runs, f"{name}, runbook {runbook}, {label}")
        view = pd.DataFrame(
            {
                "backend": table["backend"],
                "build": table["build"],
                "search": table["search"],
                "inserts/s": table["insert_per_s"],
                "deletes/s": table["delete_per_s"],
                "rebuilds": table["rebuilds"].astype(float),
                "build s": table["build_s"],
                "worst recall": table["worst_recall"],
                "at step": table["worst_step"].astype(float),
                "recall at last step": table["last_recall"],
                "QPS at last step": table["last_qps"],
                "memory MB at end": table["last_memory_MB"],
            }
        )
        div = f"runbook-{name}-{runbook}-{mode}-{k}"
        parts.append(
            {
                "runbook": runbook,
                "label": label,
                "plot": Markup(_figure_html(figure, div, state)),
                "table": Markup(html_table(view, div + "-table")),
            }
        )
    return env.from_string(_RUNBOOK).render(parts=parts) if parts else ""


_LOAD = """<h3 id="load-{{ anchor }}">Serving under load</h3>
<p class="note">Rate mode (open loop): queries arrive at the offered rate on a seeded schedule
and latency counts from each query's intended send time, so queueing shows; p99 solid, p50
dashed, in order of offered rate: where p99 turns up is the knee. Concurrent mode (closed
loop): each client sends its next query when the last returns; the dotted line is the core
count. Crosses: offered above half the load generator's own ceiling (measured against a no-op
index), where the figure may describe the generator rather than the index.</p>
{% for plot in plots %}<div class="plot">{{ plot }}</div>
{% endfor %}<h3>Every load run</h3>
{{ runs }}
"""


def _load_section(env: Any, name: str, frame: pd.DataFrame, state: dict[str, bool]) -> str:
    """Latency against offered load (rate mode), throughput against clients (concurrent
    mode) and every load run with its load point ('' when there are no load runs)."""
    from markupsafe import Markup

    from annbench.report.load_plot import latency_load_figure, throughput_clients_figure

    if frame.empty:
        return ""
    ok = successful(frame)
    plots = []
    for mode, draw, tag, what in (
        ("rate", latency_load_figure, "latency", "latency against offered load"),
        ("concurrent", throughput_clients_figure, "clients", "throughput against clients"),
    ):
        if (ok["mode"] == mode).any():
            figure = draw(frame, f"{name}: {what}")
            plots.append(Markup(_figure_html(figure, f"load-{tag}-{name}", state)))
    order = frame.assign(
        _build=frame["build_params"].map(params_label),
        _search=frame["search_params"].map(params_label),
    ).sort_values(["mode", "backend", "_build", "_search", "clients", "rate"], kind="stable")
    runs = frame.loc[order.index]
    return env.from_string(_LOAD).render(anchor=name, plots=plots, runs=Markup(_runs_table(runs)))


def _figure_html(figure: Any, div_id: str, state: dict[str, bool]) -> str:
    """The figure as a div and script; the plotly library itself only the first time."""
    import plotly.io as pio

    include = state["plotlyjs"]
    state["plotlyjs"] = False
    return pio.to_html(
        figure,
        include_plotlyjs=include,
        full_html=False,
        div_id=div_id,
        default_height="480px",
        config={"displaylogo": False, "responsive": True},
    )


def _level_tables(table: pd.DataFrame) -> list[tuple[str, Any]]:
    """One narrow table per recall level: backend, best QPS, its build time, memory and
    configuration."""
    from markupsafe import Markup

    out = []
    for level in RECALL_LEVELS:
        tag = f"@{level:g}"
        view = pd.DataFrame(
            {
                "backend": table["backend"],
                "QPS": table[f"qps{tag}"],
                "build s": table[f"build_s{tag}"],
                "memory MB": table[f"memory_MB{tag}"],
                "configuration": table[f"config{tag}"].map(_without_backend),
            }
        ).sort_values("QPS", ascending=False, na_position="last")
        view["QPS"] = view["QPS"].astype(float)
        places = {"QPS": 0, "build s": 2, "memory MB": 1}
        table_html = html_table(view, f"level-{level:g}", decimals=places)
        out.append((f"recall ≥ {level:g}", Markup(table_html)))
    return out


def _budget_table(table: pd.DataFrame) -> Any:
    from markupsafe import Markup

    if "best_recall_within_budget" not in table:
        return None
    view = pd.DataFrame(
        {
            "backend": table["backend"],
            "recall": table["best_recall_within_budget"].astype(float),
            "configuration": table["config_within_budget"].map(_without_backend),
        }
    )
    return Markup(html_table(view, "budget", decimals={"recall": 4}))


def _without_backend(config: Any) -> str:
    """``'hnswlib [M=8] [ef=10]'`` -> ``'[M=8] [ef=10]'`` (the backend is its own column)."""
    if not isinstance(config, str):
        return ""
    return config.split(" ", 1)[1] if " " in config else config


#: Decimals of each column of the table of every run: one precision per column.
_DECIMALS = {
    "recall": 4,
    "ann-b. recall": 4,
    "label acc": 4,
    "label prec@k": 4,
    "label mAP": 4,
    "QPS": 0,
    "spread %": 0,
    "p50 ms": 3,
    "p99 ms": 3,
    "CPU p99 ms": 3,
    "wall/CPU": 2,
    "build s": 2,
    "inserts/s": 0,
    "index s": 2,
    "ready s": 2,
    "serving MB": 1,
    "build peak MB": 1,
    "file MB": 1,
    "offered /s": 0,
    "saturation QPS": 0,
    "p99.9 ms": 3,
    "max ms": 3,
    "deadline miss %": 2,
    "unfinished": 0,
    "lag p99 ms": 3,
    "generator max QPS": 0,
}


def _runs_table(frame: pd.DataFrame) -> str:
    """Every run, one row each, sortable and searchable in the page (DataTables), numbers at
    one precision per column; a note says which runs failed, were noisy or interfered with."""
    serving = frame.get("serving_memory_bytes", pd.Series(None, index=frame.index, dtype=float))
    interfered = host_interference(frame)
    view = pd.DataFrame(
        {
            "backend": frame["backend"],
            "build": frame["build_params"].map(params_label),
            "search": frame["search_params"].map(params_label),
            "threads": frame["threads"],
            "recall": frame["recall"],
            "ann-b. recall": frame["ann_benchmarks_recall"],
            "label acc": frame["label_top_k_accuracy"],
            "label prec@k": frame["label_precision"],
            "label mAP": frame["label_map"],
            "QPS": frame["qps"],
            "spread %": frame["qps_spread"] * 100,
            "p50 ms": frame["latency_p50_ms"],
            "p99 ms": frame["latency_p99_ms"],
            "CPU p99 ms": frame["cpu_p99_ms"],
            "wall/CPU": frame["wall_cpu_ratio"],
            "build s": frame["build_s"],
            "inserts/s": numbers(frame, "inserts_per_s"),
            "index s": numbers(frame, "index_build_s"),
            "ready s": numbers(frame, "ready_s"),
            "serving MB": serving / 1e6,
            "build peak MB": frame["peak_rss_bytes"] / 1e6,
            "file MB": frame["index_bytes"] / 1e6,
            "note": [
                _run_note(status, spread, bad, mode in LOAD_MODES)
                for status, spread, bad, mode in zip(
                    frame["status"], frame["qps_spread"], interfered, frame["mode"], strict=True
                )
            ],
            "error": frame["error"],
        },
        index=frame.index,
    )
    if frame["mode"].isin(LOAD_MODES).any():
        view = _with_load_columns(view, frame)
    for column in (
        "ann-b. recall",
        "label acc",
        "label prec@k",
        "label mAP",
        "p50 ms",
        "p99 ms",
        "CPU p99 ms",
        "wall/CPU",
        "inserts/s",
        "index s",
        "ready s",
        "error",
    ):
        if view[column].isna().all():
            view = view.drop(columns=column)
    if not view["note"].astype(bool).any():
        view = view.drop(columns="note")
    if (
        "ann-b. recall" in view
        and (view["ann-b. recall"].round(4) == view["recall"].round(4)).all()
    ):
        view = view.drop(columns="ann-b. recall")  # shown only where the definitions differ
    if view["threads"].nunique() == 1:
        view = view.drop(columns="threads")
    view = view.astype({c: float for c in view.columns if _numeric(view[c])})
    classes = [
        "failed" if status != "ok" else "interfered" if bad else "noisy" if noisy else ""
        for status, bad, noisy in zip(
            frame["status"], interfered, frame["qps_spread"].fillna(0) > NOISY_SPREAD, strict=True
        )
    ]
    decimals = {c: d for c, d in _DECIMALS.items() if c in view}
    return html_table(view, "runs", classes, decimals=decimals, sortable=True)


def _with_load_columns(view: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``view`` with the load point of each run after its search parameters (``rate 2,000/s
    2 clients, 2 cores``) and the figures of load runs after p99, those measured at all."""
    from annbench.report.load_plot import over_ceiling

    point = [
        mode_label(mode, clients, rate, share, cores)
        for mode, clients, rate, share, cores in zip(
            frame["mode"],
            numbers(frame, "clients"),
            numbers(frame, "rate"),
            numbers(frame, "rate_share"),
            numbers(frame, "cores"),
            strict=True,
        )
    ]
    at = list(view.columns).index("search") + 1
    view.insert(at, "load point", point)
    extra = {
        "offered /s": numbers(frame, "rate"),
        "saturation QPS": numbers(frame, "saturation_qps"),
        "p99.9 ms": numbers(frame, "latency_p999_ms"),
        "max ms": numbers(frame, "latency_max_ms"),
        "deadline ms": numbers(frame, "deadline_ms"),
        "deadline miss %": numbers(frame, "deadline_miss") * 100,
        "unfinished": numbers(frame, "unfinished"),
        "lag p99 ms": numbers(frame, "lag_p99_ms"),
        "generator max QPS": numbers(frame, "generator_max_qps"),
    }
    at = list(view.columns).index("p99 ms") + 1 if "p99 ms" in view else len(view.columns)
    for offset, (name, values) in enumerate(
        item for item in extra.items() if item[1].notna().any()
    ):
        view.insert(at + offset, name, values)
    if view["spread %"].isna().all():
        view = view.drop(columns="spread %")  # a load run is one measured window
    near = pd.Series(False, index=frame.index)
    for mode, rows in frame[frame["mode"].isin(LOAD_MODES)].groupby("mode"):
        near[rows.index] = over_ceiling(rows, mode)
    view["note"] = [
        ", ".join(n for n in (note, "near generator ceiling" if bad else "") if n)
        if note != "failed"
        else note
        for note, bad in zip(view["note"], near, strict=True)
    ]
    return view


def _run_note(status: str, spread: float | None, interfered: bool, load: bool = False) -> str:
    """What to know about a run's figures, in words a table filter finds (a ``load`` run is
    one measured window: it has no spread over repeats)."""
    if status != "ok":
        return "failed"
    notes = []
    if not load and (spread is None or pd.isna(spread)):
        notes.append("spread unknown (one repeat)")
    elif spread is not None and spread > NOISY_SPREAD:
        notes.append("noisy")
    if interfered:
        notes.append("host interference")
    return ", ".join(notes)


def _numeric(column: pd.Series) -> bool:
    values = column.dropna()
    return len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )


def _number(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def html_table(
    view: pd.DataFrame,
    css_id: str,
    row_classes: list[str] | None = None,
    *,
    decimals: dict[str, int] | None = None,
    sortable: bool = False,
) -> str:
    """``view`` as an HTML table through pandas' Styler: numbers right-aligned and rounded
    (``decimals``: fixed decimals per column, thousands separated), text escaped and
    left-aligned, optional CSS classes per row; ``sortable``: sorted and searched in the page
    by DataTables (see ``datatables_loader``)."""
    view = view.reset_index(drop=True)
    numeric = [c for c in view.columns if pd.api.types.is_numeric_dtype(view[c])]
    text = [c for c in view.columns if c not in numeric]
    classes = pd.DataFrame("", index=view.index, columns=view.columns)
    for column in text:
        classes[column] = "text"
    if row_classes:
        for i, css in enumerate(row_classes):
            if css:
                classes.iloc[i] = classes.iloc[i] + " " + css
    styler = view.style.hide(axis="index").format(_number, subset=numeric, na_rep="")
    for column, places in (decimals or {}).items():
        styler = styler.format(f"{{:,.{places}f}}", subset=[column], na_rep="")
    styler = (
        styler.format(
            lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v),
            subset=text,
            escape="html",
        )
        .set_td_classes(classes)
        .set_table_attributes('class="data sortable"' if sortable else 'class="data"')
    )
    table = styler.set_uuid(css_id).to_html(doctype_html=False)
    return f'<div class="wide">{table}</div>' if sortable else table
