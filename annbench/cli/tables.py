"""Text tables the commands print: stored runs, summaries, runbooks, engine comparisons."""

from __future__ import annotations

from typing import Any

import pandas as pd

from annbench.record import LOAD_MODES, PLAIN, mode_label, params_label
from annbench.results.analysis import NOISY_SPREAD, near_ceilings


def params_of(value: Any) -> dict[str, Any]:
    """A parameter dict, whether the frame holds dicts or their JSON text."""
    from annbench.results.columns import as_dict

    return as_dict(value)


def missing(value: Any) -> bool:
    """True for None and NaN: a figure a table shows blank or as '?'."""
    return value is None or (isinstance(value, float) and value != value)


def num(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, blank where missing."""
    return "" if value is None or pd.isna(value) else format(value, spec)


def _spread(value: Any, status: str = "ok") -> str:
    """QPS spread as a percentage, with ``!`` when the run is noisy; 'unknown' for a run with a
    single repeat (no spread to measure: not the same as a stable 0%)."""
    text = num(value, ".0%")
    if not text:
        return "unknown" if status == "ok" else ""
    return text + "!" if value > NOISY_SPREAD else text


def summary_table(rows: pd.DataFrame, latency_budget_ms: float | None) -> str:
    """Summary rows: best QPS, build time and memory at each recall level."""
    from annbench.results.analysis import RECALL_LEVELS

    view = pd.DataFrame({"backend": rows["backend"]})
    for level in RECALL_LEVELS:
        tag = f"@{level:g}"
        view[f"QPS{tag}"] = rows[f"qps{tag}"].map(lambda v: num(v, ",.0f") or "-")
        view[f"build_s{tag}"] = rows[f"build_s{tag}"].map(lambda v: num(v, ".2f") or "-")
        view[f"MB{tag}"] = rows[f"memory_MB{tag}"].map(lambda v: num(v, ".1f") or "-")
    if latency_budget_ms is not None:
        view[f"recall@p99<={latency_budget_ms:g}ms"] = rows["best_recall_within_budget"].map(
            lambda v: num(v, ".4f") or "-"
        )
    view["noisy"] = rows["noisy_runs"]
    return view.to_string(index=False)


def engine_table(rows: pd.DataFrame) -> str:
    """Engine comparison rows: each database beside the library it is built on."""
    view = pd.DataFrame(
        {
            "dataset": rows["dataset"],
            "mode": rows["mode"],
            "database": rows["database"],
            "engine": rows["engine"],
            "recall>=": rows["recall_level"].map(lambda v: f"{v:g}"),
            "qps_ratio": rows["qps_ratio"].map(lambda v: num(v, ".2f")),
            "db_qps": rows["database_qps"].map(lambda v: num(v, ",.0f")),
            "engine_qps": rows["engine_qps"].map(lambda v: num(v, ",.0f")),
            "db_recall": rows["database_recall"].map(lambda v: num(v, ".4f")),
            "engine_recall": rows["engine_recall"].map(lambda v: num(v, ".4f")),
            "db_p99_ms": rows["database_p99_ms"].map(lambda v: num(v, ".3f")),
            "engine_p99_ms": rows["engine_p99_ms"].map(lambda v: num(v, ".3f")),
            "db_MB": rows["database_memory_MB"].map(lambda v: num(v, ".1f")),
            "engine_MB": rows["engine_memory_MB"].map(lambda v: num(v, ".1f")),
        }
    )
    if rows["workload"].ne(PLAIN).any():
        view.insert(1, "workload", rows["workload"])
    return view.to_string(index=False)


def runbook_table(rows: pd.DataFrame) -> str:
    """Runbook summary rows: worst and last recall per search setting, update costs."""
    view = pd.DataFrame(
        {
            "backend": rows["backend"],
            "build": rows["build"],
            "search": rows["search"],
            "worst_recall": rows["worst_recall"].map(lambda v: num(v, ".4f")),
            "at_step": rows["worst_step"],
            "last_recall": rows["last_recall"].map(lambda v: num(v, ".4f")),
            "median_qps": rows["median_qps"].map(lambda v: num(v, ",.0f")),
            "insert/s": rows["insert_per_s"].map(lambda v: num(v, ",.0f") or "-"),
            "delete/s": rows["delete_per_s"].map(lambda v: num(v, ",.0f") or "-"),
            "rebuilds": rows["rebuilds"],
            "build_s": rows["build_s"].map(lambda v: num(v, ".2f")),
        }
    )
    return view.to_string(index=False)


def _megabytes(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` of byte counts in MB, blank where missing."""
    return (pd.to_numeric(frame[column], errors="coerce") / 1e6).map(lambda v: num(v, ".1f"))


def _mode_labels(frame: pd.DataFrame) -> list[str]:
    """Each row's mode with its load point (clients, rate, cores)."""
    columns = [frame.get(c, pd.Series(None, index=frame.index)) for c in _LOAD_COLUMNS]
    return [mode_label(*values) for values in zip(frame["mode"], *columns, strict=True)]


_LOAD_COLUMNS = ("clients", "rate", "rate_share", "cores")


def _near_ceiling(frame: pd.DataFrame) -> list[bool]:
    """Whether each load row's figure may describe the load generator as much as the index
    (``record.near_generator_ceiling``)."""
    return near_ceilings(frame)


def _share(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.1%}"


def results_table(frame: pd.DataFrame) -> str:
    """Stored runs, one line each, with the columns that say something for these runs."""
    view = pd.DataFrame(
        {
            "dataset": frame["dataset"],
            "backend": frame["backend"],
            "build": frame["build_params"].map(lambda p: params_label(params_of(p))),
            "search": frame["search_params"].map(lambda p: params_label(params_of(p))),
            "k": frame["k"],
            "mode": _mode_labels(frame),
            "status": frame["status"],
            "recall": frame["recall"].map(lambda v: num(v, ".4f")),
            "ab_recall": frame["ann_benchmarks_recall"].map(lambda v: num(v, ".4f")),
            "label_precision": frame["label_precision"].map(lambda v: num(v, ".4f")),
            "qps": frame["qps"].map(lambda v: num(v, ",.0f")),
            "spread": [
                "" if mode in LOAD_MODES else _spread(v, s)  # one load run: its tail shows
                for v, s, mode in zip(
                    frame["qps_spread"], frame["status"], frame["mode"], strict=True
                )
            ],
            "p50_ms": frame["latency_p50_ms"].map(lambda v: num(v, ".3f")),
            "p99_ms": frame["latency_p99_ms"].map(lambda v: num(v, ".3f")),
            "build_s": frame["build_s"].map(lambda v: num(v, ".2f")),
            "index_MB": (frame["index_bytes"] / 1e6).map(lambda v: num(v, ".1f")),
            "serving_MB": _megabytes(frame, "serving_memory_bytes"),
            "build_peak_MB": _megabytes(frame, "peak_rss_bytes"),
        }
    )
    if "base_size" in frame and frame["base_size"].notna().any():  # size ladders
        view.insert(
            1, "base", frame["base_size"].map(lambda v: "whole" if pd.isna(v) else f"{int(v):,}")
        )
    if frame["step"].notna().any():  # runbook steps: say which
        view.insert(2, "workload", frame["workload"])
        view.insert(3, "step", frame["step"].map(lambda v: "" if pd.isna(v) else int(v)))
    if "last_failure" in frame and frame["last_failure"].notna().any():
        view["last_failure"] = frame["last_failure"].fillna("")
    if "probe" in frame and frame["probe"].any():
        view["probe"] = frame["probe"].map(lambda v: "probe" if v else "")
    if len(frame) and (frame["workload"] != PLAIN).any():
        view.insert(2, "workload", frame["workload"])
        view.insert(3, "selectivity", frame["selectivity"].map(lambda v: num(v, ".3g")))
    if not frame["label_precision"].notna().any():
        view = view.drop(columns="label_precision")  # shown for datasets with labels
    if frame["cpu_p99_ms"].notna().any():  # single mode: CPU time beside wall time
        from annbench.results.analysis import host_interference

        at = view.columns.get_loc("p99_ms") + 1
        view.insert(at, "cpu_p99_ms", frame["cpu_p99_ms"].map(lambda v: num(v, ".3f")))
        flagged = host_interference(frame)
        view.insert(
            at + 1,
            "wall/cpu",
            [
                num(v, ".2f") + ("!" if bad else "")
                for v, bad in zip(frame["wall_cpu_ratio"], flagged, strict=True)
            ],
        )
    if "inserts_per_s" in frame and frame["inserts_per_s"].notna().any():  # databases
        at = view.columns.get_loc("build_s") + 1
        for offset, (name, column, spec) in enumerate(
            (
                ("inserts/s", "inserts_per_s", ",.0f"),
                ("index_s", "index_build_s", ".2f"),
                ("ready_s", "ready_s", ".2f"),
            )
        ):
            view.insert(at + offset, name, frame[column].map(lambda v, f=spec: num(v, f)))
    if frame["mode"].isin(LOAD_MODES).any():  # under load: the tail, deadlines, the ceiling
        at = view.columns.get_loc("p99_ms") + 1
        view.insert(at, "p999_ms", frame["latency_p999_ms"].map(lambda v: num(v, ".3f")))
        if frame["deadline_miss"].notna().any():
            view.insert(at + 1, "past_deadline", frame["deadline_miss"].map(_share))
        view["generator_max_qps"] = [
            num(v, ",.0f") + ("!" if near else "")
            for v, near in zip(frame["generator_max_qps"], _near_ceiling(frame), strict=True)
        ]
    if (view["recall"] == view["ab_recall"]).all():
        view = view.drop(columns="ab_recall")  # shown only where the two definitions differ
    if len(frame) and (frame["status"] != "ok").any():
        view["error"] = frame["error"].fillna("")
    if "last_failure" not in frame:  # history: when each attempt was made
        view.insert(0, "at", frame["created_at"].str.slice(0, 19))
    return view.to_string(index=False)
