"""Serving under load, for the report: latency against offered load (rate mode, open loop) and
throughput against client count (concurrent mode, closed loop), one line per configuration."""

from __future__ import annotations

from typing import Any

import pandas as pd

from annbench.record import CEILING_SHARE, GENERATOR_P99_MULTIPLE, PLAIN, params_label
from annbench.report.colors import backend_color
from annbench.results.analysis import near_ceilings, successful
from annbench.results.columns import numbers

#: Marker of an ordinary load point and of one near the load generator's own limits.
SYMBOL, OVER_CEILING_SYMBOL = "circle", "x"


def latency_load_figure(frame: pd.DataFrame, title: str, most: int = 12) -> Any:
    """A plotly figure of latency (log scale) against offered queries per second for the
    rate-mode runs of ``frame``: per configuration one colour, p99 solid and p50 dashed, points
    in order of offered rate so the knee shows; points offered above half the load
    generator's ceiling are drawn as crosses."""
    import plotly.graph_objects as go

    lines, title = load_lines(frame, "rate", title, most)
    if not lines:
        raise ValueError("no successful rate-mode runs to plot")
    figure = go.Figure()
    for name, color, points in lines:
        over = over_ceiling(points, "rate")
        text = _hover_texts(name, points, over)
        for column, label, dash in (
            ("latency_p99_ms", "p99", "solid"),
            ("latency_p50_ms", "p50", "dash"),
        ):
            figure.add_trace(
                go.Scatter(
                    x=_values(points["rate"]),
                    y=_values(numbers(points, column)),
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=label == "p99",
                    meta=label,
                    line={"color": color, "dash": dash, "width": 2 if label == "p99" else 1.5},
                    marker=_markers(color, over),
                    text=text,
                    hovertemplate=f"%{{text}}<extra>{label}</extra>",
                )
            )
    figure.update_layout(
        _layout(title, lines, "configuration (solid: p99, dashed: p50)"),
        xaxis={"title": {"text": f"Offered load (queries/s){_on_cores(lines)}"}},
        yaxis={"title": {"text": "Latency (ms, log scale) from intended send time"}, "type": "log"},
    )
    return figure


def throughput_clients_figure(frame: pd.DataFrame, title: str, most: int = 12) -> Any:
    """A plotly figure of achieved queries per second against closed-loop client count for
    the concurrent-mode runs of ``frame``, one line per configuration (hover: p50 and p99
    latency), a dotted line at the core count."""
    import plotly.graph_objects as go

    lines, title = load_lines(frame, "concurrent", title, most)
    if not lines:
        raise ValueError("no successful concurrent-mode runs to plot")
    figure = go.Figure()
    for name, color, points in lines:
        over = over_ceiling(points, "concurrent")
        figure.add_trace(
            go.Scatter(
                x=_values(points["clients"]),
                y=_values(points["qps"]),
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": color, "width": 2},
                marker=_markers(color, over),
                text=_hover_texts(name, points, over),
                hovertemplate="%{text}<extra></extra>",
            )
        )
    clients = sorted({int(c) for _, _, points in lines for c in points["clients"]})
    figure.update_layout(
        _layout(title, lines, "configuration"),
        xaxis={"title": {"text": f"Closed-loop clients{_on_cores(lines)}"}, "tickvals": clients},
        yaxis={"title": {"text": "Achieved queries per second"}, "rangemode": "tozero"},
    )
    cores = _cores(lines)
    if len(cores) == 1:
        figure.add_vline(
            x=cores[0],
            line={"dash": "dot", "color": "#999", "width": 1},
            annotation_text=f"{cores[0]} cores",
            annotation_position="top left",
        )
    return figure


def load_lines(
    frame: pd.DataFrame, mode: str, title: str, most: int = 12
) -> tuple[list[tuple[str, str, pd.DataFrame]], str]:
    """The successful ``mode`` runs of ``frame`` as (name, colour, points) per configuration
    (backend, build and search parameters, workload; k, cores and pacing clients where they
    vary), points in order of offered rate or client count; with more than ``most``
    configurations the ``most`` of highest recall, said in the returned title."""
    ok = successful(frame)
    ok = ok[ok["mode"] == mode]
    if ok.empty:
        return [], title
    x = "rate" if mode == "rate" else "clients"
    ok = ok.assign(_line=_line_names(ok, mode))
    groups = [points.sort_values(x, kind="stable") for _, points in ok.groupby("_line", sort=True)]
    if len(groups) > most:
        groups = sorted(groups, key=lambda points: -points["recall"].mean())[:most]
        title += f" ({most} configurations of highest recall)"
    groups = sorted(groups, key=lambda points: points["_line"].iloc[0])
    colors = _colors([(points["_line"].iloc[0], points["backend"].iloc[0]) for points in groups])
    return [(points["_line"].iloc[0], colors[i], points) for i, points in enumerate(groups)], title


def over_ceiling(points: pd.DataFrame, mode: str) -> list[bool]:
    """Per point, whether its figure may describe the load generator as much as the index:
    offered (rate mode) or achieved (concurrent) above ``CEILING_SHARE`` of the generator's
    own ceiling, or a p99 close to the generator's own (``record.near_generator_ceiling``)."""
    return near_ceilings(points.assign(mode=mode))


def _line_names(ok: pd.DataFrame, mode: str) -> list[str]:
    """``hnswlib [M=16] [ef=32]``, then the workload, k, cores and pacing clients where the
    runs differ in them."""
    varying = [c for c in ("k", "cores") if numbers(ok, c).nunique() > 1]
    if mode == "rate" and numbers(ok, "clients").nunique() > 1:
        varying.append("clients")
    names = []
    for _, row in ok.iterrows():
        name = f"{row['backend']} [{params_label(row['build_params'])}]"
        name += f" [{params_label(row['search_params'])}]"
        if row["workload"] != PLAIN:
            name += f" filter {row['workload']}"
        for column in varying:
            name += f" {column}={_whole(row.get(column))}"
        names.append(name)
    return names


def _colors(lines: list[tuple[str, str]]) -> list[str]:
    """One colour per (line, backend): the backend's own colour, in shades from darker to
    lighter where a backend has several configurations."""
    per_backend: dict[str, list[int]] = {}
    for i, (_, backend) in enumerate(lines):
        per_backend.setdefault(backend, []).append(i)
    colors = [""] * len(lines)
    for backend, indices in per_backend.items():
        base = backend_color(backend)
        n = len(indices)
        for j, i in enumerate(indices):
            colors[i] = base if n == 1 else _shade(base, -0.45 + 0.75 * j / (n - 1))
    return colors


def _shade(color: str, amount: float) -> str:
    """``#rrggbb`` blended toward white (``amount`` > 0) or black (< 0) by ``abs(amount)``."""
    target = 255 if amount > 0 else 0
    channels = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (target - c) * abs(amount)):02x}" for c in channels)


def _markers(color: str, over: list[bool]) -> dict[str, Any]:
    return {
        "color": color,
        "symbol": [OVER_CEILING_SYMBOL if bad else SYMBOL for bad in over],
        "size": [11 if bad else 7 for bad in over],
    }


def _layout(title: str, lines: list[tuple[str, str, pd.DataFrame]], legend: str) -> dict[str, Any]:
    over = any(any(over_ceiling(p, p["mode"].iloc[0])) for _, _, p in lines)
    if over:
        title += (
            f"<br><sup>crosses: offered above {CEILING_SHARE:.0%} of the load generator's own "
            f"ceiling, or p99 under {GENERATOR_P99_MULTIPLE:g}x its own: may measure the "
            "generator</sup>"
        )
    return {
        "title": {"text": title, "x": 0.01},
        "template": "plotly_white",
        "height": 480,
        "hovermode": "closest",
        "legend": {"title": {"text": legend + " (click to hide)"}, "font": {"size": 10}},
    }


def _cores(lines: list[tuple[str, str, pd.DataFrame]]) -> list[int]:
    values = pd.concat([numbers(points, "cores") for _, _, points in lines]).dropna()
    return sorted({int(v) for v in values})


def _on_cores(lines: list[tuple[str, str, pd.DataFrame]]) -> str:
    """``, on 2 cores`` (or ``, on 2-8 cores``) for an axis title; '' when unknown."""
    cores = _cores(lines)
    if not cores:
        return ""
    span = str(cores[0]) if len(cores) == 1 else f"{cores[0]}-{cores[-1]}"
    return f", on {span} core{'s' if span != '1' else ''}"


def _hover_texts(name: str, points: pd.DataFrame, over: list[bool]) -> list[str]:
    rows = (row for _, row in points.iterrows())
    return [_hover_text(name, row, bad) for row, bad in zip(rows, over, strict=True)]


def _hover_text(name: str, row: pd.Series, over: bool) -> str:
    """What a point's hover box says: configuration, load point and every figure measured."""
    lines = [f"<b>{name}</b>"]
    if row["mode"] == "rate":
        share = _get(row, "rate_share")
        offered = f"offered {_get(row, 'rate'):,.0f}/s"
        lines.append(offered + (f" ({share:.0%} of saturation)" if share == share else ""))
    lines.append(f"achieved {row['qps']:,.0f} QPS, recall {row['recall']:.4f}")
    lines.append(
        "latency p50 {} ms, p99 {} ms, p99.9 {} ms".format(
            *(_ms(_get(row, c)) for c in ("latency_p50_ms", "latency_p99_ms", "latency_p999_ms"))
        )
    )
    deadline, miss = _get(row, "deadline_ms"), _get(row, "deadline_miss")
    if miss == miss:
        within = f" {deadline:g} ms" if deadline == deadline else ""
        lines.append(f"deadline{within} missed by {miss:.1%}")
    if _get(row, "unfinished") > 0:
        lines.append(f"unfinished {_get(row, 'unfinished'):,.0f}")
    lines.append(f"{_count(row.get('clients'), 'client')}, {_count(row.get('cores'), 'core')}")
    if over:
        ceiling, own = _get(row, "generator_max_qps"), _get(row, "generator_p99_ms")
        limits = f"ceiling {ceiling:,.0f}/s" + (f", its own p99 {own:.3g} ms" if own == own else "")
        lines.append(
            f"<i>near the load generator's own limits ({limits}):"
            "<br>may measure the generator rather than the index</i>"
        )
    return "<br>".join(lines)


def _get(row: pd.Series, column: str) -> float:
    """A number of ``row``; NaN where absent or not a number."""
    value = pd.to_numeric(pd.Series([row.get(column)]), errors="coerce").iloc[0]
    return float(value)


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def _count(value: Any, noun: str) -> str:
    """``1 client``, ``4 clients``, ``? cores`` (unknown)."""
    number = _whole(value)
    return f"{number} {noun}" + ("" if number == "1" else "s")


def _whole(value: Any) -> str:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return "?" if pd.isna(number) else f"{int(number)}"


def _values(series: pd.Series) -> list[Any]:
    return [None if pd.isna(v) else float(v) for v in series]
