"""Answers from stored runbook results: per configuration, the worst recall over the runbook,
the recall at its last step, and what its inserts and deletes cost.

Pure functions on the DataFrame that ``ResultStore.dataframe`` returns.
"""

from __future__ import annotations

import pandas as pd

from annbench.data.runbooks import WORKLOAD_PREFIX
from annbench.record import params_label

#: What identifies one replayed configuration in the store.
CONFIG = ["dataset", "workload", "backend", "build", "mode", "k"]


def runbook_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Only records of runbooks, with ``build``/``search`` labels and a ``config`` column."""
    rows = frame[frame["workload"].fillna("").str.startswith(WORKLOAD_PREFIX)].copy()
    if rows.empty:
        return rows.assign(build="", search="", config="", runbook="")
    rows["build"] = rows["build_params"].map(params_label)
    rows["search"] = rows["search_params"].map(params_label)
    rows["config"] = rows["backend"] + " [" + rows["build"] + "] [" + rows["search"] + "]"
    rows["runbook"] = rows["workload"].str.slice(len(WORKLOAD_PREFIX))
    return rows


def runbook_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per runbook x configuration x search setting x threads: worst recall over the
    search steps (and at which step), recall and QPS at the last step, median QPS, and the
    configuration's insert and delete throughput, rebuild count and total update time."""
    rows = runbook_rows(frame)
    searches = rows[(rows["step_kind"] == "search") & (rows["status"] == "ok")]
    updates = rows[(rows["step_kind"] != "search") & (rows["status"] == "ok")]
    if searches.empty:
        return pd.DataFrame()
    costs = _update_costs(updates)
    out = []
    for _, runs in searches.groupby([*CONFIG, "search", "threads"], sort=True):
        runs = runs.sort_values("step")
        worst = runs.loc[runs["recall"].idxmin()]
        last = runs.iloc[-1]
        row = {
            **{key: last[key] for key in [*CONFIG, "runbook", "search", "threads", "config"]},
            "search_steps": len(runs),
            "worst_recall": float(worst["recall"]),
            "worst_step": int(worst["step"]),
            "last_recall": float(last["recall"]),
            "last_qps": float(last["qps"]),
            "median_qps": float(runs["qps"].median()),
            "last_p99_ms": last["latency_p99_ms"],
            "not_live": int(runs["not_live"].fillna(0).sum()),
        }
        row.update(costs.get(tuple(last[key] for key in CONFIG), {}))
        out.append(row)
    return pd.DataFrame(out)


def _update_costs(updates: pd.DataFrame) -> dict[tuple, dict[str, float]]:
    out = {}
    for key, steps in updates.groupby(CONFIG, sort=False):
        later = steps[steps["build_s"].isna()]  # the first insert is the initial build
        inserts = later[later["step_kind"] == "insert"]
        deletes = later[later["step_kind"] == "delete"]
        out[key] = {
            "build_s": float(steps["build_s"].dropna().iloc[0])
            if steps["build_s"].notna().any()
            else float("nan"),
            "insert_per_s": _rate(inserts),
            "delete_per_s": _rate(deletes),
            "rebuilds": int(steps["rebuilt"].fillna(False).astype(bool).sum()),
            "update_s": float(later["update_s"].sum()),
            "last_memory_MB": float(steps.sort_values("step")["memory_bytes"].iloc[-1]) / 1e6,
        }
    return out


def _rate(steps: pd.DataFrame) -> float:
    """Rows changed per second over all ``steps`` together (nan when there are none)."""
    seconds = steps["update_s"].sum()
    if steps.empty or not seconds > 0:
        return float("nan")
    return float((steps["vectors_per_s"] * steps["update_s"]).sum() / seconds)


def without_runbooks(frame: pd.DataFrame) -> pd.DataFrame:
    """Records that are not runbook steps (plain sweeps, filters)."""
    return frame[~frame["workload"].fillna("").str.startswith(WORKLOAD_PREFIX)]
