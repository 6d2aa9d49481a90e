"""Growth curves of measured index configurations: from a size ladder's records to fitted
laws, held-out checks and predictions at a target size.

For each index configuration (backend, build parameters, library version) measured at two or
more base sizes, each quantity gets one value per size:

- ``build_s``, ``build_cpu_s`` (the build's CPU seconds, all threads: its work without the
  time a busy host took the cores away), ``index_bytes`` (file size) and
  ``serving_memory_bytes`` as measured;
- at each recall target ``t``: ``effort@t``, the search parameter that reaches recall ``t``
  (interpolated between the swept settings on a log scale, when one numeric search parameter
  is swept), ``qps@t``, the throughput at that setting (interpolated the same way; with
  several search parameters, the best QPS among settings reaching ``t``), and ``cpu_qps@t``,
  queries per CPU-second of one core there (single mode), which host interference leaves
  alone.

Each quantity has one model (``QUANTITIES``): linear with an intercept for memory and file
size, a power law for time, effort and QPS. The held-out check (the largest size predicted
from the smaller ones) goes with every fit and every prediction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from annbench.errors import AnnbenchError
from annbench.record import PLAIN, params_label
from annbench.scaling.growth import (
    CONFIDENCE,
    MIN_SIZES_HELD_OUT,
    GrowthFit,
    HeldOut,
    Prediction,
    best_model,
    fit_growth,
    held_out_check,
    passes,
)

if TYPE_CHECKING:
    import pandas as pd

    from annbench.data.format import Dataset

#: Recall targets of ``effort@t`` and ``qps@t`` unless given.
TARGETS = (0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Quantity:
    """How one quantity is modelled: the candidate models (``models``; the first unless a
    ladder can choose, see ``fit_quantity``), the held-out error it should keep within, its
    unit and what it is called in tables. ``per_query``: a throughput, fitted as the time per
    query (1 / value), which grows from a fixed cost by a part that scales with N."""

    models: tuple[str, ...]
    tolerance: float
    unit: str
    label: str
    per_query: bool = False

    @property
    def model(self) -> str:
        """The model used when the ladder is too short to choose (fewer than 4 sizes)."""
        return self.models[0]


#: The quantities of every configuration (``effort@t``, ``qps@t`` and ``cpu_qps@t`` are
#: added per recall target). Memory is linear in N by construction; time and effort are a
#: power law or a line with an intercept (an IVF build trains on a fixed sample, then adds).
QUANTITIES = {
    "index_bytes": Quantity(("linear",), 0.10, "B", "file size"),
    "serving_memory_bytes": Quantity(("linear",), 0.10, "B", "serving memory"),
    "build_s": Quantity(("power", "linear"), 0.25, "s", "build time"),
    "build_cpu_s": Quantity(("power", "linear"), 0.25, "s", "build CPU time"),
}


def quantity(name: str) -> Quantity:
    """The model of quantity ``name`` (``build_s``, ``qps@0.95``, ...)."""
    if name in QUANTITIES:
        return QUANTITIES[name]
    kind, _, target = name.partition("@")
    both = ("power", "linear")
    if kind == "effort":
        return Quantity(both, 0.25, "", f"search effort for recall {target}")
    if kind == "qps":
        return Quantity(both, 0.25, "q/s", f"QPS at recall {target}", per_query=True)
    if kind == "cpu_qps":
        label = f"QPS per core-second at recall {target}"
        return Quantity(both, 0.25, "q/s", label, per_query=True)
    raise AnnbenchError(f"Quantity '{name}' not known; use one of {', '.join(QUANTITIES)}")


@dataclass(frozen=True)
class QuantityFit:
    """A quantity's law over N: the chosen model's fit (of 1 / value for a ``per_query``
    quantity) with ``band``, ``predict``, ``formula`` and ``residuals`` in the quantity's own
    units, and the held-out check of that model (None below 3 sizes)."""

    name: str
    model: str
    fit: GrowthFit
    held_out: HeldOut | None
    per_query: bool

    @property
    def sizes(self) -> tuple[float, ...]:
        """The sizes fitted, ascending."""
        return self.fit.sizes

    @property
    def residuals(self) -> tuple[float, ...]:
        """Relative residuals of the fitted law, measured / fitted - 1 in the fitted space."""
        return self.fit.residuals

    def formula(self, unit: str = "") -> str:
        """The law as text (``per query: ...`` for a throughput, fitted as time per query)."""
        if self.per_query:
            return f"per query: {self.fit.formula('s')}"
        return self.fit.formula(unit)

    def band(
        self, sizes: np.ndarray, confidence: float = CONFIDENCE
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Value, low and high at ``sizes`` (see ``GrowthFit.band``), in the quantity's units."""
        value, low, high = self.fit.band(sizes, confidence)
        if not self.per_query:  # every quantity is positive: a line's interval stops at 0
            return value, np.maximum(low, 0.0), high
        with np.errstate(divide="ignore", invalid="ignore"):
            # a time per query whose interval reaches 0 leaves the throughput unbounded above
            return 1 / value, 1 / high, np.where(low > 0, 1 / low, np.inf)

    def predict(self, n: float, confidence: float = CONFIDENCE) -> Prediction:
        """The prediction at ``n`` (see ``GrowthFit.predict``), in the quantity's units."""
        prediction = self.fit.predict(n, confidence)
        if self.per_query:
            return _inverted(prediction)
        if prediction.low is not None and prediction.low < 0:  # every quantity is positive
            return replace(prediction, low=0.0)
        return prediction


def fit_quantity(
    name: str, sizes: np.ndarray, values: np.ndarray, confidence: float = CONFIDENCE
) -> QuantityFit:
    """Fit quantity ``name`` measured at ``sizes``. With 4 sizes or more the model is chosen
    among the quantity's candidates by predicting the largest size below the held-out one
    from the smaller ones, so the held-out size itself never takes part in the choice."""
    spec = quantity(name)
    sizes, values = np.asarray(sizes, dtype=float), np.asarray(values, dtype=float)
    fitted = 1 / values if spec.per_query else values
    model = spec.model
    inner = sizes < sizes.max()
    if len(spec.models) > 1 and len(np.unique(sizes[inner])) >= MIN_SIZES_HELD_OUT:
        model = best_model(sizes[inner], fitted[inner], spec.models, confidence).model
    check = held_out_check(sizes, fitted, model, confidence, spec.tolerance)
    if check is not None and spec.per_query:
        prediction = _inverted(check.prediction)
        error = prediction.value / (1 / check.measured) - 1
        check = replace(
            check,
            prediction=prediction,
            measured=1 / check.measured,
            error=error,
            passed=passes(error, check.inside, spec.tolerance),
        )
    return QuantityFit(name, model, fit_growth(sizes, fitted, model), check, spec.per_query)


def _inverted(prediction: Prediction) -> Prediction:
    """A prediction of time per query as one of throughput: the interval's ends swap."""
    low = None if prediction.high is None else 1 / prediction.high
    high = None
    if prediction.low is not None:  # an interval reaching 0 s per query: no upper bound
        high = 1 / prediction.low if prediction.low > 0 else math.inf
    return replace(prediction, value=1 / prediction.value, low=low, high=high)


def ladder_records(frame: pd.DataFrame, dataset: Dataset | None = None) -> pd.DataFrame:
    """The successful plain full measurements of ``frame`` (store columns, parameters as
    dicts) with ``size`` (rows indexed) set; with ``dataset``, only records measured on its
    content at each size (a ladder's subsets are keyed on their own ground truth)."""
    from annbench.results.analysis import successful

    ok = successful(frame, subsets=True)
    if "workload" in ok:
        ok = ok[ok["workload"].fillna(PLAIN) == PLAIN]
    if "step" in ok:
        ok = ok[ok["step"].isna()]
    base = ok["base_size"] if "base_size" in ok else np.nan
    whole = len(dataset.train) if dataset is not None else None
    ok = ok.assign(size=base)
    if dataset is None:
        return ok[ok["size"].notna()].assign(size=lambda f: f["size"].astype(np.int64))
    ok["size"] = ok["size"].fillna(whole).astype(np.int64)
    expected = {whole: dataset.content_hash}
    for size in sorted(set(ok["size"]) - {whole}):
        expected[size] = _size_hash(dataset, int(size))
    keep = [expected.get(int(s)) == h for s, h in zip(ok["size"], ok["dataset_hash"], strict=True)]
    return ok[np.asarray(keep, dtype=bool)]


def _size_hash(dataset: Dataset, size: int) -> str | None:
    from annbench.data.subsets import TRUTH, size_hash, size_workload
    from annbench.data.workloads import workload_holder

    if not 0 < size < len(dataset.train):
        return None
    if workload_holder(dataset, size_workload(size), TRUTH) is None:
        return None  # no records can be of a size whose ground truth was never computed
    return size_hash(dataset, size)


def size_points(ok: pd.DataFrame, targets: Sequence[float] = TARGETS) -> pd.DataFrame:
    """One row per configuration, size and quantity: ``config``, ``backend``,
    ``build_params``, ``library_version``, ``k``, ``mode``, ``size``, ``quantity``, ``value``,
    ``setting`` (how an effort or QPS value was reached)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for config, group in _configurations(ok):
        swept = _swept_parameter(group["search_params"])
        for size, at in group.groupby("size"):
            for name in QUANTITIES:
                if name in at and at[name].notna().any():
                    value = float(at[name].dropna().median())
                    if value > 0:
                        rows.append(config | {"size": int(size), "quantity": name, "value": value})
            for target in targets:
                found = _at_recall(at, float(target), swept)
                for name, value, setting in found:
                    rows.append(
                        config
                        | {
                            "size": int(size),
                            "quantity": f"{name}@{target:g}",
                            "value": value,
                            "setting": setting,
                        }
                    )
    columns = ["config", "backend", "build_params", "library_version", "k", "mode", "size"]
    return pd.DataFrame(rows, columns=[*columns, "quantity", "value", "setting"])


def growth_table(
    points: pd.DataFrame,
    at_size: int | None = None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Per configuration and quantity with two or more sizes: the fitted law, its largest
    residual, the held-out check (3 sizes or more) and, with ``at_size``, the prediction
    there with its interval and extrapolation factor (only where the held-out check ran)."""
    import pandas as pd

    rows = []
    for (config, name), group in points.groupby(["config", "quantity"], sort=False):
        spec = quantity(name)
        sizes, values = group["size"].to_numpy(float), group["value"].to_numpy(float)
        if len(np.unique(sizes)) < 2:
            continue
        law = fit_quantity(name, sizes, values, confidence)
        first = group.iloc[0]
        row: dict[str, Any] = {
            "config": config,
            "backend": first["backend"],
            "build_params": first["build_params"],
            "library_version": first["library_version"],
            "k": first["k"],
            "mode": first["mode"],
            "quantity": name,
            "label": _label(spec, group),
            "unit": spec.unit,
            "model": law.model,
            "formula": law.formula(spec.unit),
            "fitted_sizes": tuple(sorted(set(int(s) for s in sizes))),
            "largest": int(sizes.max()),
            "max_residual": float(np.max(np.abs(law.residuals))),
            "tolerance": spec.tolerance,
        }
        check = law.held_out
        row |= {
            "held_out_size": None if check is None else int(check.prediction.size),
            "held_out_predicted": None if check is None else check.prediction.value,
            "held_out_measured": None if check is None else check.measured,
            "held_out_error": None if check is None else check.error,
            "held_out_inside": None if check is None else check.inside,
            "held_out_passed": None if check is None else check.passed,
        }
        if at_size is not None:  # never a prediction without its held-out check beside it
            prediction = law.predict(at_size, confidence) if check is not None else None
            row |= {
                "at_size": int(at_size),
                "predicted": None if prediction is None else prediction.value,
                "low": None if prediction is None else prediction.low,
                "high": None if prediction is None else prediction.high,
                "confidence": confidence,
                "extrapolation": float(at_size) / sizes.max(),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def _label(spec: Quantity, group: pd.DataFrame) -> str:
    """``ef for recall 0.95`` rather than ``search effort for recall 0.95`` when the swept
    parameter is known."""
    if not spec.label.startswith("search effort") or "setting" not in group:
        return spec.label
    names = {str(s).split("=")[0] for s in group["setting"].dropna()}
    return spec.label.replace("search effort", names.pop()) if len(names) == 1 else spec.label


def prediction_rows(
    table: pd.DataFrame, dataset: str, dataset_hash: str | None
) -> list[dict[str, Any]]:
    """``growth_table`` rows with a prediction, as rows of the store's predictions table."""
    from annbench import __version__

    now = datetime.now(timezone.utc).isoformat()
    rows = []
    for row in table.to_dict("records"):
        if row.get("at_size") is None or _missing(row.get("predicted")):
            continue
        rows.append(
            {
                "created_at": now,
                "dataset": dataset,
                "dataset_hash": dataset_hash,
                "backend": row["backend"],
                "build_params": json.dumps(row["build_params"], sort_keys=True),
                "library_version": row["library_version"],
                "k": int(row["k"]),
                "mode": row["mode"],
                "quantity": row["quantity"],
                "model": row["model"],
                "formula": row["formula"],
                "fitted_sizes": json.dumps(list(row["fitted_sizes"])),
                "at_size": int(row["at_size"]),
                "predicted": row["predicted"],
                "low": _none(row.get("low")),
                "high": _none(row.get("high")),
                "confidence": row["confidence"],
                "extrapolation": row["extrapolation"],
                "held_out_size": _none(row.get("held_out_size")),
                "held_out_predicted": _none(row.get("held_out_predicted")),
                "held_out_measured": _none(row.get("held_out_measured")),
                "held_out_error": _none(row.get("held_out_error")),
                "held_out_passed": _none(row.get("held_out_passed")),
                "annbench_version": __version__,
            }
        )
    return rows


def _configurations(ok: pd.DataFrame):
    keys = ["backend", "build_key", "library_version", "k", "mode"]
    frame = ok.assign(
        build_key=[json.dumps(p, sort_keys=True) for p in ok["build_params"]],
        library_version=ok["library_version"].fillna("") if "library_version" in ok else "",
    )
    for (backend, build_key, version, k, mode), group in frame.groupby(keys, sort=True):
        params = json.loads(build_key)
        config = {
            "config": f"{backend} [{params_label(params)}]"
            + ("" if mode == "single" else f" {mode}"),
            "backend": backend,
            "build_params": params,
            "library_version": version or None,
            "k": int(k),
            "mode": mode,
        }
        yield config, group


def _swept_parameter(searches: pd.Series) -> str | None:
    """The one numeric search parameter that varies across ``searches`` (None if not one)."""
    values: dict[str, set[Any]] = {}
    for params in searches:
        for key, value in params.items():
            values.setdefault(key, set()).add(value)
    varied = [key for key, seen in values.items() if len(seen) > 1]
    if len(varied) != 1:
        return None
    key = varied[0]
    numeric = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values[key]
    )
    return key if numeric else None


def _at_recall(at: pd.DataFrame, target: float, swept: str | None) -> list[tuple[str, float, str]]:
    """``[("effort", value, how), ("qps", ...), ("cpu_qps", ...)]`` at recall ``target`` for
    one configuration at one size; empty when no setting reaches it."""
    at = at.assign(cpu_qps=1e3 / at["cpu_mean_ms"] if "cpu_mean_ms" in at else math.nan)
    reached = at[at["recall"] >= target]
    if not len(reached):
        return []
    if swept is None:
        best = reached.loc[reached["qps"].idxmax()]
        how = params_label(best["search_params"])
        return [(name, float(best[name]), how) for name in RATES if best[name] > 0]
    ladder = at.assign(effort=[float(p.get(swept, math.nan)) for p in at["search_params"]])
    ladder = (
        ladder.dropna(subset=["effort"])
        .groupby("effort", as_index=False)
        .agg(recall=("recall", "median"), qps=("qps", "median"), cpu_qps=("cpu_qps", "median"))
    )
    ladder = ladder.sort_values("effort")
    recall = np.maximum.accumulate(ladder["recall"].to_numpy())  # more effort, no less recall
    effort = ladder["effort"].to_numpy()
    above = int(np.argmax(recall >= target))
    if above == 0:  # the effort needed is at most the smallest swept: no point for its curve
        how = f"{swept}={effort[0]:g} (the smallest swept) already reaches it"
        return [(n, float(ladder[n].iloc[0]), how) for n in RATES if ladder[n].iloc[0] > 0]
    lo, hi = above - 1, above
    share = (target - recall[lo]) / (recall[hi] - recall[lo])
    value = math.exp(_between(np.log(effort), lo, hi, share))
    how = f"{swept}={value:.4g}, between {effort[lo]:g} and {effort[hi]:g}"
    found = [("effort", value, how)]
    for name in RATES:  # the throughput at that setting, interpolated on a log scale too
        rates = ladder[name].to_numpy(dtype=float)
        if rates[lo] > 0 and rates[hi] > 0:
            found.append((name, math.exp(_between(np.log(rates), lo, hi, share)), how))
    return found


#: The throughputs of ``_at_recall``: wall-clock QPS, and queries per CPU-second of one core.
RATES = ("qps", "cpu_qps")


def _between(values: np.ndarray, lo: int, hi: int, share: float) -> float:
    return float(values[lo] + share * (values[hi] - values[lo]))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _none(value: Any) -> Any:
    if _missing(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class SizedPick:
    """``pick_at_size``'s answer: the chosen row of the growth table's predictions (None when
    nothing fits), every candidate with why it was kept or left out, and what was asked."""

    choice: dict[str, Any] | None
    candidates: pd.DataFrame
    at_size: int
    targets: tuple[float, ...]


def pick_at_size(
    table: pd.DataFrame,
    max_memory_bytes: float | None = None,
    min_recall: float | None = None,
    max_latency_ms: float | None = None,
    max_build_s: float | None = None,
) -> SizedPick:
    """From a growth table with predictions (``growth_table(..., at_size=N)``): per
    configuration and recall target, the predicted QPS, serving memory (file size where
    serving memory was not measured) and build time at N; the pick reaches the highest recall
    target (``min_recall``: that one) with the best predicted QPS, memory and build time kept
    within their limits at the interval's high end, latency (1 / QPS) at the point value;
    configurations whose laws all held their held-out check come first."""
    import pandas as pd

    if "predicted" not in table or not len(table):
        raise AnnbenchError("No predictions to choose from: give a size (--at-size)")
    rows = []
    for config, group in table.groupby("config", sort=False):
        by = group.set_index("quantity")
        memory = _figure(by, "serving_memory_bytes")
        if memory is None:
            memory = _figure(by, "index_bytes")
        build = _figure(by, "build_s")
        for name in by.index:
            if not name.startswith("qps@") or _figure(by, name) is None:
                continue
            target = float(name.partition("@")[2])
            if min_recall is not None and not math.isclose(target, min_recall):
                continue
            qps = by.loc[name]
            effort = _figure(by, f"effort@{name.partition('@')[2]}")
            row = {
                "config": config,
                "backend": qps["backend"],
                "build_params": qps["build_params"],
                "recall": target,
                "qps": qps["predicted"],
                "qps_low": qps["low"],
                "qps_high": qps["high"],
                "qps_held_out_error": qps["held_out_error"],
                "latency_ms": 1e3 / qps["predicted"],
                "effort": None if effort is None else effort["predicted"],
                "effort_label": None if effort is None else effort["label"],
                "memory_bytes": None if memory is None else memory["predicted"],
                "memory_high": None if memory is None else _high(memory),
                "memory_figure": None if memory is None else memory["label"],
                "memory_held_out_error": None if memory is None else memory["held_out_error"],
                "build_s": None if build is None else build["predicted"],
                "build_high": None if build is None else _high(build),
                "build_held_out_error": None if build is None else build["held_out_error"],
                "extrapolation": qps["extrapolation"],
                "held_out_passed": bool(
                    all(
                        f is None or f["held_out_passed"] is not False for f in (qps, memory, build)
                    )
                ),
            }
            row["problem"] = _problem(row, max_memory_bytes, max_latency_ms, max_build_s)
            rows.append(row)
    candidates = pd.DataFrame(rows)
    targets = tuple(sorted({r["recall"] for r in rows}))
    at_size = int(table["at_size"].iloc[0])
    if not len(candidates):
        return SizedPick(None, candidates, at_size, targets)
    fitting = candidates[candidates["problem"].isna()]
    if not len(fitting):
        return SizedPick(None, candidates, at_size, targets)
    # laws that held their held-out check first: a failed law's prediction is a guess
    order = ["held_out_passed", "recall", "qps"]
    best = fitting.sort_values(order, ascending=[False, False, False]).iloc[0]
    return SizedPick(best.to_dict(), candidates, at_size, targets)


def _figure(by: pd.DataFrame, name: str) -> pd.Series | None:
    if name not in by.index or _missing(by.loc[name, "predicted"]):
        return None
    return by.loc[name]


def _failed(row: pd.Series | None) -> bool:
    """Whether a law's held-out check ran and failed (not run: not failed)."""
    if row is None or _missing(row["held_out_passed"]):
        return False
    return not bool(row["held_out_passed"])


def _high(row: pd.Series) -> float:
    return row["predicted"] if _missing(row["high"]) else row["high"]


def _problem(
    row: dict[str, Any],
    max_memory_bytes: float | None,
    max_latency_ms: float | None,
    max_build_s: float | None,
) -> str | None:
    if max_memory_bytes is not None:
        if row["memory_high"] is None:
            return "memory not measured at 2 sizes"
        if row["memory_high"] > max_memory_bytes:
            return f"memory up to {row['memory_high'] / 1e9:,.1f} GB"
    if max_latency_ms is not None and row["latency_ms"] > max_latency_ms:
        return f"latency {row['latency_ms']:.3g} ms"
    if max_build_s is not None:
        if row["build_high"] is None:
            return "build time not measured at 2 sizes"
        if row["build_high"] > max_build_s:
            return f"build up to {row['build_high']:,.0f} s"
    return None
