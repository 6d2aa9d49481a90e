"""``annbench scale``: how each configuration measured on a size ladder grows with the base,
checked against the largest size measured, and what it is predicted to cost at a target size."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import pandas as pd

from annbench.cli import types
from annbench.cli.base import results_option
from annbench.cli.tables import missing, num
from annbench.data.catalog import DEFAULT_DATASET


@click.command(
    "scale",
    epilog="""\b
Examples:
  annbench run -b hnswlib -b faiss-ivf --sizes 1/16,1/8,1/4,1/2,1
  annbench scale
  annbench scale --at-size 50M --memory-budget 64GB
""",
)
@click.option("--dataset", "-d", default=DEFAULT_DATASET, show_default=True)
@click.option(
    "--at-size",
    default=None,
    metavar="N",
    help="Predict every figure at this base size (50000000, 50M); stored as predictions.",
)
@click.option(
    "--targets",
    default="0.9,0.95,0.99",
    show_default=True,
    metavar="LIST",
    help="Recall targets of the search effort and QPS curves.",
)
@click.option(
    "--memory-budget",
    default=None,
    metavar="SIZE",
    help="With --at-size: will each configuration fit in this much memory (64GB)? From its "
    "family's bytes-per-vector model, validated against the builds stored.",
)
@click.option("--backend", "-b", "backends", multiple=True, help="Only these backends.")
@click.option("--k", default=10, show_default=True, type=types.K, help="k of the runs.")
@click.option(
    "--confidence",
    default=0.9,
    show_default=True,
    type=types.FiniteFloat(0, 1, min_open=True, max_open=True),
    help="Confidence of the prediction intervals.",
)
@results_option
def scale_command(
    dataset: str,
    at_size: str | None,
    memory_budget: str | None,
    targets: str,
    backends: tuple[str, ...],
    k: int,
    confidence: float,
    results_path: Path | None,
) -> None:
    """Fit how build time, memory, search effort and QPS grow with the base size, check each
    law by predicting the largest size measured from the smaller ones, and predict them at
    --at-size."""
    from annbench import api
    from annbench.errors import BadUsage

    if memory_budget is not None and at_size is None:
        raise BadUsage("--memory-budget asks about a size: add --at-size, e.g. --at-size 50M")
    try:
        recall_targets = [float(t) for t in targets.split(",")]
    except ValueError:
        raise BadUsage(f"--targets takes recalls separated by commas, got '{targets}'") from None
    table = api.scale(
        dataset,
        results=results_path,
        at_size=at_size,
        targets=recall_targets,
        backends=backends or None,
        k=k,
        confidence=confidence,
    )
    if memory_budget is not None:
        fits = api.memory_fit(at_size, memory_budget, dataset, results=results_path)
        if backends:
            fits = fits[fits["backend"].isin(backends)]
        click.echo(memory_text(fits))
        if not len(table):
            return
        click.echo("")
    elif not len(table):
        raise BadUsage(
            f"No configuration of {dataset} is measured at two sizes or more; run a size "
            "ladder first, e.g. annbench run -b hnswlib --sizes 1/8,1/4,1/2,1"
        )
    click.echo(scale_text(table, confidence))


def memory_text(fits: pd.DataFrame) -> str:
    """``scale --memory-budget``'s answer: one line per configuration, and its model."""
    lines = ["Will it fit? Serving memory PREDICTED by each family's bytes-per-vector model:"]
    for row in fits.to_dict("records"):
        if row.get("verdict") is None or missing(row.get("verdict")):
            lines.append(f"  {row['config']}: {row['answer']}")
            continue
        lines.append(f"  [{row['verdict']}] {row['answer']}")
        lines.append(f"      model: {row['model']}")
    return "\n".join(lines)


def scale_text(table: pd.DataFrame, confidence: float = 0.9) -> str:
    """The growth table as text, one block per configuration; predictions labelled so."""
    lines = []
    predicted = "predicted" in table
    if predicted:
        size = int(table["at_size"].iloc[0])
        lines.append(
            f"PREDICTED at {size:,} vectors: extrapolated from the sizes measured, not "
            f"measured ({confidence:.0%} prediction intervals). Each prediction's law is "
            "checked by predicting the largest size measured from the smaller ones "
            "('held-out')."
        )
    for config, group in table.groupby("config", sort=False):
        sizes = sorted({s for fitted in group["fitted_sizes"] for s in fitted})
        lines += ["", f"{config}  (sizes {', '.join(f'{s:,}' for s in sizes)})"]
        rows = []
        for row in group.to_dict("records"):
            shown = {
                "figure": row["label"],
                "law": row["formula"],
                "fit": f"max residual {row['max_residual']:.1%}",
                "held-out": _held_out(row),
            }
            if predicted and missing(row.get("predicted")):
                shown |= {"predicted": "none: needs 3 sizes", "interval": "", "beyond": ""}
            elif predicted:
                shown["predicted"] = format_value(row["predicted"], row["unit"])
                shown["interval"] = _interval(row)
                shown["beyond"] = f"x{row['extrapolation']:,.0f}"
            rows.append(shown)
        lines.append(pd.DataFrame(rows).to_string(index=False))
    return "\n".join(lines)


def _held_out(row: dict[str, Any]) -> str:
    if missing(row.get("held_out_error")):
        return "needs 3 sizes"
    verdict = "ok" if row["held_out_passed"] else f"FAILED (>{row['tolerance']:.0%} or outside)"
    return f"{row['held_out_error']:+.1%} at {int(row['held_out_size']):,} {verdict}"


def _interval(row: dict[str, Any]) -> str:
    if missing(row.get("low")) or missing(row.get("high")):
        return "none (needs 3 sizes)"
    return f"[{format_value(row['low'], row['unit'])}, {format_value(row['high'], row['unit'])}]"


def format_value(value: float, unit: str) -> str:
    """``value`` in ``unit`` (B, s, q/s or none) for people: ``86.9 GB``, ``48.9 h``."""
    if math.isinf(value):
        return "unbounded"
    if unit == "B":
        for scale, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= scale:
                return f"{value / scale:,.3g} {name}"
        return f"{value:,.0f} B"
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:,.3g} h"
        if value >= 60:
            return f"{value / 60:,.3g} min"
        return f"{value:,.3g} s"
    if unit == "q/s":
        return f"{num(value, ',.0f' if value >= 10 else '.3g')} q/s"
    return f"{value:,.3g}"
