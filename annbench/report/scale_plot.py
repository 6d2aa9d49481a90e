"""Scaling, for the report: how each configuration measured on a size ladder grows with the
base size N, one log-log figure per quantity (build time, file size, serving memory, and at
each recall target the search effort and the QPS there).

Per configuration a figure draws the measured points, the law fitted on every size (solid
over the sizes measured), its continuation to ``REACH`` times the largest size with the
prediction interval around it (dashed, in a shaded region labelled PREDICTED), and the
held-out check: the largest size's value predicted from the smaller sizes, with its interval
as an error bar, labelled with its error against the measured value. A law is only extended
where the held-out check exists (3 sizes or more), so no prediction is drawn without its
error beside it. The numbers come from ``annbench.scaling``, as ``annbench scale`` prints
them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from annbench.errors import AnnbenchError
from annbench.record import LOAD_MODES
from annbench.report.load_plot import _colors
from annbench.scaling.curves import (
    QUANTITIES,
    TARGETS,
    QuantityFit,
    fit_quantity,
    ladder_records,
    quantity,
    size_points,
)
from annbench.scaling.growth import CONFIDENCE, NEGLIGIBLE, HeldOut

if TYPE_CHECKING:
    from annbench.data.format import Dataset

log = logging.getLogger(__name__)

#: The fitted laws are drawn on to this many times the largest size measured.
REACH = 10.0
#: At most this many configurations per figure (those measured at the most sizes).
MOST = 12
#: Points of each drawn curve (log-spaced).
_CURVE_POINTS = 60
#: How values of each unit are drawn: (divisor, axis unit).
_SHOWN = {"B": (1e6, "MB"), "s": (1.0, "s"), "q/s": (1.0, "queries/s"), "": (1.0, "")}
#: Marker of the held-out prediction (the measured value is an ordinary point beside it).
HELD_OUT_SYMBOL = "diamond-open"
#: How the models are called in the section's note.
_MODEL_NAMES = {"linear": "a line with an intercept", "power": "a power law"}
#: An interval without an upper end (a throughput whose time per query may reach 0) is drawn
#: up to this many times its value.
_UNBOUNDED_DRAWN = 100.0


@dataclass(frozen=True)
class Curve:
    """One configuration's growth in one quantity: the measured (size, value) points (sorted by
    size, ``settings`` saying how effort and QPS values were reached) and the law fitted on all
    of them as ``annbench scale`` fits it (``curves.fit_quantity``), with its held-out check."""

    config: str
    backend: str
    sizes: tuple[int, ...]
    values: tuple[float, ...]
    settings: tuple[str, ...]
    law: QuantityFit

    @property
    def held_out(self) -> HeldOut | None:
        """The law's held-out check (None below 3 sizes)."""
        return self.law.held_out

    @property
    def largest(self) -> int:
        """The largest size measured."""
        return self.sizes[-1]


def stored_dataset(name: str) -> Dataset | None:
    """The dataset called ``name`` where annbench finds it without generating or fetching
    anything (the data folder, a bundled file), read to know its whole base size and the
    hashes its ladder records are keyed on; None when it is not there."""
    from annbench.data.catalog import BUILTIN, resolve_dataset
    from annbench.data.format import read_dataset
    from annbench.paths import data_dir

    try:
        if name in BUILTIN and not (data_dir() / f"{name}.hdf5").is_file():
            return None  # resolve_dataset would generate it
        return read_dataset(resolve_dataset(name), probe=False, verify=False)
    except AnnbenchError as exc:
        log.info("Scaling section of %s without its dataset file: %s", name, exc)
        return None


def ladder_points(
    frame: pd.DataFrame, dataset: Dataset | None = None, targets: Sequence[float] = TARGETS
) -> pd.DataFrame:
    """The measured points of every configuration of ``frame`` (store columns, parameters as
    dicts) per base size and quantity, as ``annbench.scaling.curves.size_points`` gives them;
    load-mode runs left out, and ``k=..`` added to the configuration where k varies. With
    ``dataset`` the whole-base runs join the ladder at its size; without, only runs carrying
    a base size."""
    ok = ladder_records(frame, dataset)
    ok = ok[~ok["mode"].isin(LOAD_MODES)]
    parts = []
    for k, runs in ok.groupby("k", sort=True):
        points = size_points(runs, targets)
        if ok["k"].nunique() > 1:
            points["config"] = points["config"] + f" k={int(k)}"
        parts.append(points)
    if not parts:
        return size_points(ok, targets)
    return pd.concat(parts, ignore_index=True)


def growth_curves(
    points: pd.DataFrame, name: str, confidence: float = CONFIDENCE, most: int = MOST
) -> list[Curve]:
    """The configurations of ``points`` measured at 2 or more sizes in quantity ``name``
    (``build_s``, ``qps@0.95``, ...), each with its fitted law and held-out check; with more
    than ``most``, the ``most`` measured at the most sizes. Sorted by configuration."""
    curves = []
    for config, group in points[points["quantity"] == name].groupby("config", sort=True):
        group = group.sort_values("size", kind="stable")
        sizes, values = group["size"].to_numpy(float), group["value"].to_numpy(float)
        if len(np.unique(sizes)) < 2:
            continue
        settings = group["setting"] if "setting" in group else pd.Series("", index=group.index)
        curves.append(
            Curve(
                config=str(config),
                backend=str(group["backend"].iloc[0]),
                sizes=tuple(int(s) for s in sizes),
                values=tuple(float(v) for v in values),
                settings=tuple("" if pd.isna(s) else str(s) for s in settings),
                law=fit_quantity(name, sizes, values, confidence),
            )
        )
    if len(curves) > most:
        curves = sorted(curves, key=lambda c: (-len(set(c.sizes)), c.config))[:most]
        curves.sort(key=lambda c: c.config)
    return curves


def quantities(points: pd.DataFrame, targets: Sequence[float] = TARGETS) -> list[str]:
    """The quantities of ``points`` in the order the report shows them: those measured per
    build (``curves.QUANTITIES``: memory, file size, build time), then per recall target the
    search effort, the QPS and the QPS per core-second there, then any other."""
    order = list(QUANTITIES)
    order += [f"{kind}@{t:g}" for t in targets for kind in ("effort", "qps", "cpu_qps")]
    present = set(points["quantity"])
    return [name for name in order if name in present] + sorted(present - set(order))


def growth_figure(
    curves: list[Curve],
    name: str,
    title: str,
    confidence: float = CONFIDENCE,
    reach: float = REACH,
) -> Any:
    """A plotly figure of quantity ``name`` against N, both axes log: per configuration the
    measured points, the fitted law, its continuation to ``reach`` times the largest size with
    its ``confidence`` prediction band (labelled predicted) and the held-out prediction of the
    largest size (error bar: its interval; text: its error)."""
    import plotly.graph_objects as go

    if not curves:
        raise ValueError(f"no configuration measured at two sizes or more in {name}")
    spec = quantity(name)
    divisor, unit = _SHOWN.get(spec.unit, (1.0, spec.unit))
    largest = max(c.largest for c in curves)
    far = largest * reach
    colors = _colors([(c.config, c.backend) for c in curves])
    figure = go.Figure()
    for curve, color in zip(curves, colors, strict=True):
        _add_curve(figure, curve, name, color, far, confidence, divisor)
    if any(c.held_out is not None for c in curves):
        figure.add_vrect(
            x0=largest, x1=far, fillcolor="#eeeeee", opacity=0.5, line_width=0, layer="below"
        )
        figure.add_annotation(
            x=float(np.log10(np.sqrt(largest * far))),  # log axis: annotations take log10(x)
            y=1,
            yref="paper",
            yanchor="bottom",
            text=f"PREDICTED (beyond the largest size measured, {largest:,})",
            showarrow=False,
            font={"size": 11, "color": "#555"},
        )
    axis = _label(spec.label, curves) + (f" ({unit}, log scale)" if unit else " (log scale)")
    figure.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=460,
        hovermode="closest",
        legend={"title": {"text": "configuration (click to hide)"}, "font": {"size": 10}},
        xaxis={"title": {"text": "Base size N (vectors, log scale)"}, "type": "log"},
        yaxis={"title": {"text": axis}, "type": "log"},
    )
    return figure


def _add_curve(
    figure: Any,
    curve: Curve,
    name: str,
    color: str,
    far: float,
    confidence: float,
    divisor: float,
) -> None:
    """Draw one configuration: band, fitted law, its predicted continuation, measured points,
    held-out prediction; one legend entry toggles them all."""
    import plotly.graph_objects as go

    spec = quantity(name)
    group = {"legendgroup": curve.config, "showlegend": False}
    check = _check_text(curve.held_out)
    law = f"law ({curve.law.model}): {curve.law.formula(spec.unit)}"
    predicted = curve.held_out is not None and far > curve.largest
    if predicted:
        beyond = np.geomspace(curve.largest, far, _CURVE_POINTS)
        value, low, high = curve.law.band(beyond, confidence)
        if curve.law.fit.has_interval:
            drawn = np.minimum(high, value * _UNBOUNDED_DRAWN)  # no upper end: drawn to 100x
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([beyond, beyond[::-1]]),
                    y=np.concatenate([drawn, low[::-1]]) / divisor,
                    fill="toself",
                    fillcolor=_rgba(color, 0.15),
                    line={"width": 0},
                    hoverinfo="skip",
                    name=f"{curve.config}: {confidence:.0%} prediction interval (predicted)",
                    meta="band",
                    **group,
                )
            )
        texts = [
            f"<b>PREDICTED</b>, not measured: {curve.config}<br>N = {n:,.0f} "
            f"(x{n / curve.largest:.3g} the largest size measured)<br>"
            f"{_shown(v, spec.unit)}{_interval(lo, hi, spec.unit, confidence)}<br>{law}<br>{check}"
            for n, v, lo, hi in zip(beyond, value, low, high, strict=True)
        ]
        figure.add_trace(
            go.Scatter(
                x=beyond,
                y=value / divisor,
                mode="lines",
                line={"color": color, "dash": "dash", "width": 1.5},
                name=f"{curve.config}: predicted",
                meta="predicted",
                text=texts,
                hovertemplate="%{text}<extra></extra>",
                **group,
            )
        )
    inside = np.geomspace(curve.sizes[0], curve.largest, _CURVE_POINTS)
    fitted, _, _ = curve.law.band(inside)
    figure.add_trace(
        go.Scatter(
            x=inside,
            y=fitted / divisor,
            mode="lines",
            line={"color": color, "width": 2},
            name=f"{curve.config}: fitted",
            meta="fitted",
            text=[
                f"{curve.config}<br>fitted at N = {n:,.0f}: {_shown(v, spec.unit)}"
                for n, v in zip(inside, fitted, strict=True)
            ],
            hovertemplate=f"%{{text}}<br>{law}<br>{check}<extra></extra>",
            **group,
        )
    )
    figure.add_trace(
        go.Scatter(
            x=list(curve.sizes),
            y=[v / divisor for v in curve.values],
            mode="markers",
            marker={"color": color, "size": 8},
            name=curve.config,
            meta="measured",
            legendgroup=curve.config,
            showlegend=True,
            text=[
                f"<b>{curve.config}</b><br>measured at N = {n:,}: {_shown(v, spec.unit)}"
                + (f"<br>{s}" if s else "")
                for n, v, s in zip(curve.sizes, curve.values, curve.settings, strict=True)
            ],
            hovertemplate="%{text}<extra></extra>",
        )
    )
    if curve.held_out is not None:
        _add_held_out(figure, curve, name, color, divisor, group)


def _add_held_out(
    figure: Any, curve: Curve, name: str, color: str, divisor: float, group: dict[str, Any]
) -> None:
    """The largest size predicted from the smaller ones: a hollow diamond with its interval
    as an error bar, labelled with its error against the measured value."""
    import plotly.graph_objects as go

    spec = quantity(name)
    held = curve.held_out
    assert held is not None
    guess = held.prediction
    bar = {"visible": False}
    if guess.low is not None and guess.high is not None:
        bar = {
            "type": "data",
            "symmetric": False,
            "array": [(min(guess.high, guess.value * _UNBOUNDED_DRAWN) - guess.value) / divisor],
            "arrayminus": [(guess.value - guess.low) / divisor],
            "color": color,
            "thickness": 1.5,
            "width": 6,
        }
    smaller = [s for s in dict.fromkeys(curve.sizes) if s < curve.largest]
    figure.add_trace(
        go.Scatter(
            x=[guess.size],
            y=[guess.value / divisor],
            mode="markers+text",
            marker={"color": color, "size": 11, "symbol": HELD_OUT_SYMBOL, "line": {"width": 2}},
            error_y=bar,
            text=[f"held out {held.error:+.1%}" + ("" if held.passed else " FAILED")],
            textposition="middle right",
            textfont={"size": 10, "color": color if held.passed else "#b00"},
            name=f"{curve.config}: held-out check",
            meta="held-out",
            hovertext=[
                f"<b>held-out check</b>, {curve.config}<br>N = {held.prediction.size:,.0f} "
                f"PREDICTED from N = {', '.join(f'{s:,}' for s in smaller)}: "
                f"{_shown(guess.value, spec.unit)}"
                f"{_interval(guess.low, guess.high, spec.unit, guess.confidence)}<br>"
                f"measured {_shown(held.measured, spec.unit)}: {_check_text(held)}"
            ],
            hovertemplate="%{hovertext}<extra></extra>",
            **group,
        )
    )


def growth_rows(
    curves: list[Curve], name: str, confidence: float = CONFIDENCE, reach: float = REACH
) -> pd.DataFrame:
    """The table beside a figure: per configuration its law, the sizes it was fitted on, the
    held-out check and the PREDICTED value at ``reach`` times the largest size measured."""
    spec = quantity(name)
    far = max(c.largest for c in curves) * reach if curves else 0.0
    rows = []
    for curve in curves:
        held = curve.held_out
        row = {
            "configuration": curve.config,
            "model": curve.law.model,
            "law": curve.law.formula(spec.unit),
            "sizes": ", ".join(f"{s:,}" for s in dict.fromkeys(curve.sizes)),
            "max residual %": float(np.max(np.abs(curve.law.residuals))) * 100,
            "held-out error %": held.error * 100 if held else None,
            "held-out check": _verdict(held),
            f"PREDICTED at {far:,.0f}": "",
        }
        if held is not None:
            guess = curve.law.predict(far, confidence)
            row[f"PREDICTED at {far:,.0f}"] = _shown(guess.value, spec.unit) + _interval(
                guess.low, guess.high, spec.unit, confidence
            )
        else:
            row[f"PREDICTED at {far:,.0f}"] = "none (needs 3 sizes)"
        rows.append(row)
    return pd.DataFrame(rows)


_SECTION = """<h3 id="scaling-{{ anchor }}">Scaling</h3>
<p class="note">Configurations measured on a size ladder (<code>annbench run --sizes</code>):
each quantity against the base size N, both axes log. Dots are measurements; the solid line is
the law fitted on every size ({{ models }}; with 4 sizes or more the model is
chosen by which predicts the second largest size best; a throughput is fitted as the time per
query); the dashed line carries it on to {{ reach }}x the
largest size measured, inside the shaded region: those values are PREDICTED, not measured, the
band around them is the {{ confidence }} prediction interval for a new measurement. The hollow
diamond is the held-out check: the largest size measured, predicted from the smaller sizes
alone (error bar: its interval), labelled with its error against the measured dot beside it
(FAILED beyond {{ tolerances }}, or outside its interval unless within {{ negligible }}). A
law is only carried on where that check exists (3 sizes or more). <code>annbench scale
--at-size N</code> prints the predictions at any size.{% if note %} {{ note }}{% endif %}</p>
{% for part in parts %}<div class="plot">{{ part.plot }}</div>
{{ part.table }}
{% endfor %}"""


def scale_section(
    name: str,
    frame: pd.DataFrame,
    figure_html: Callable[[Any, str], str],
    dataset: Dataset | None = None,
    targets: Sequence[float] = TARGETS,
    confidence: float = CONFIDENCE,
) -> str:
    """The report's Scaling section of dataset ``name`` from its runs ``frame`` (store columns,
    parameters as dicts): per quantity a figure (drawn to HTML by ``figure_html(figure,
    div_id)``) and the table of its laws; '' when no configuration has runs at 2 sizes or
    more. The whole-base runs join the ladder when ``dataset`` (else the file found by
    ``stored_dataset``) tells the base size."""
    from markupsafe import Markup

    from annbench.report.html import environment, html_table

    if "base_size" not in frame or frame["base_size"].isna().all():
        return ""  # no ladder: nothing measured at a size of its own
    data = dataset if dataset is not None else stored_dataset(name)
    if data is not None and ladder_records(frame, data)["base_size"].isna().all():
        data = None  # a file of that name, but not the one the ladder measured
    points = ladder_points(frame, data, targets)
    parts = []
    for quantity_name in quantities(points, targets):
        curves = growth_curves(points, quantity_name, confidence, MOST)
        if not curves:
            continue
        label = _label(quantity(quantity_name).label, curves)
        title = f"{name}: {label} against base size"
        laddered = points[points["quantity"] == quantity_name].groupby("config")["size"]
        if (total := int((laddered.nunique() > 1).sum())) > len(curves):
            title += f" ({len(curves)} of {total} configurations: those measured at most sizes)"
        tag = "".join(c if c.isalnum() else "-" for c in quantity_name)
        figure = growth_figure(curves, quantity_name, title, confidence)
        table = growth_rows(curves, quantity_name, confidence)
        decimals = {"max residual %": 1, "held-out error %": 1}
        parts.append(
            {
                "plot": Markup(figure_html(figure, f"scale-{name}-{tag}")),
                "table": Markup(html_table(table, f"scale-{name}-{tag}-laws", decimals=decimals)),
            }
        )
    if not parts:
        return ""
    note = ""
    if data is None and _has_whole_base_runs(frame):
        note = (
            f"Runs on the whole base are left out: the dataset file {name} the ladder measured "
            "was not found here to tell its size (set ANNBENCH_DATA to the folder holding it)."
        )
    return (
        environment()
        .from_string(_SECTION)
        .render(
            anchor=name,
            models=_grouped(lambda q: " or ".join(_MODEL_NAMES.get(m, m) for m in q.models)),
            reach=f"{REACH:g}",
            confidence=f"{confidence:.0%}",
            tolerances=_grouped(lambda q: f"{q.tolerance:.0%}"),
            negligible=f"{NEGLIGIBLE:.0%}",
            note=note,
            parts=parts,
        )
    )


def _grouped(what: Callable[[Any], str]) -> str:
    """``linear for file size and serving memory; power or linear for build time, ...``:
    ``what`` of each quantity's spec, the quantities sharing one named together."""
    named = {q.label: q for q in QUANTITIES.values()}
    named |= {"search effort": quantity("effort@1"), "QPS": quantity("qps@1")}
    named |= {"QPS per core-second": quantity("cpu_qps@1")}
    groups: dict[str, list[str]] = {}
    for label, spec in named.items():
        groups.setdefault(what(spec), []).append(label)
    return "; ".join(f"{value} for {_and(labels)}" for value, labels in groups.items())


def _and(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _has_whole_base_runs(frame: pd.DataFrame) -> bool:
    whole = frame[frame["base_size"].isna() & (frame["status"] == "ok")]
    return bool(len(whole))


def _label(label: str, curves: list[Curve]) -> str:
    """``ef for recall 0.95`` for ``search effort for recall 0.95`` when every configuration
    sweeps ``ef``; ``search effort (ef, nprobe) ...`` when they differ."""
    if not label.startswith("search effort"):
        return label
    swept = sorted({s.split("=")[0] for c in curves for s in c.settings if "=" in s})
    if len(swept) == 1:
        return label.replace("search effort", swept[0])
    if swept:
        return label.replace("search effort", f"search effort ({', '.join(swept)})")
    return label


def _verdict(held: HeldOut | None) -> str:
    if held is None:
        return "needs 3 sizes"
    if held.passed:
        return "ok" if held.inside is not False else "ok (outside a needle-thin interval)"
    why = [f"over {held.tolerance:.0%}"] if abs(held.error) > held.tolerance else []
    why += ["outside its interval"] if held.inside is False else []
    return f"FAILED: {', '.join(why)}"


def _check_text(held: HeldOut | None) -> str:
    if held is None:
        return "no held-out check (needs 3 sizes): not extrapolated"
    return (
        f"held-out check: N = {held.prediction.size:,.0f} predicted from the smaller sizes "
        f"errs {held.error:+.1%} ({_verdict(held)})"
    )


def _shown(value: float, unit: str) -> str:
    """``12.3 MB``, ``4.56 s``, ``1,234 queries/s``, ``38.2``."""
    divisor, shown = _SHOWN.get(unit, (1.0, unit))
    number = value / divisor
    text = f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.3g}"
    return f"{text} {shown}".strip()


def _interval(low: float | None, high: float | None, unit: str, confidence: float) -> str:
    if low is None or high is None or not np.isfinite(low) or np.isnan(high):
        return ""
    top = _shown(high, unit) if np.isfinite(high) else "unbounded"
    return f" [{_shown(low, unit)}, {top}] ({confidence:.0%} interval)"


def _rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` as ``rgba(r, g, b, alpha)``."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"
