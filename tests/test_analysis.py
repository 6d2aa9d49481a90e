"""Summaries, recommendations and adaptive search, on a store built from a small real sweep."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.errors import AnnbenchError
from annbench.results.analysis import pareto_frontier, parse_bytes, summary
from annbench.results.store import ResultStore
from annbench.sweep.measure import bisect_ladder, max_probes
from annbench.sweep.runner import adaptive_jobs, geometric_ladder, plan_sweep, run_sweep


@pytest.fixture
def swept(tiny_sweep):
    """conftest's shared sweep of tiny (hnswlib, faiss-ivf, faiss-flat), read only."""
    return tiny_sweep


def test_pareto_frontier_keeps_only_unbeaten_points():
    points = pd.DataFrame({"recall": [0.5, 0.6, 0.7, 0.9, 0.9], "qps": [100, 300, 200, 50, 80]})
    front = pareto_frontier(points)
    assert list(zip(front["recall"], front["qps"], strict=True)) == [
        (0.6, 300),
        (0.7, 200),
        (0.9, 80),
    ]


@pytest.mark.slow
def test_summary_best_qps_per_recall_level(swept):
    _, frame = swept
    table = summary(frame, latency_budget_ms=1000)
    assert set(table["backend"]) == {"hnswlib", "faiss-ivf", "faiss-flat"}
    ok = frame[frame["status"] == "ok"]
    for _, row in table.iterrows():
        runs = ok[ok["backend"] == row["backend"]]
        for level in (0.8, 0.9, 0.95, 0.99):
            meeting = runs[runs["recall"] >= level]
            if meeting.empty:
                assert row[f"qps@{level:g}"] is None or pd.isna(row[f"qps@{level:g}"])
            else:
                assert row[f"qps@{level:g}"] == meeting["qps"].max()
        assert row["best_recall_within_budget"] == runs["recall"].max()
    flat = table[table["backend"] == "faiss-flat"].iloc[0]
    assert flat["qps@0.99"] > 0 and flat["memory_MB@0.99"] > 0


def test_bisection_probes_at_most_log_runs():
    for size in range(1, 40):
        for answer in range(size + 1):  # answer == size: unreachable
            probes = []

            def meets(i, answer=answer, probes=probes):
                probes.append(i)
                return i >= answer

            found = bisect_ladder(size, meets)
            assert found == (answer if answer < size else None)
            assert len(probes) <= max_probes(size)


def test_geometric_ladder():
    assert geometric_ladder(1, 10, 1.25) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert geometric_ladder(10, 512, 1.25)[-1] == 512


@pytest.mark.slow
def test_adaptive_search_reaches_target_with_few_runs(tiny, tmp_path):
    jobs = plan_sweep(
        tiny,
        ["hnswlib"],
        runs=2,
        min_seconds=0,
        overrides={"M": [8], "ef_construction": [40], "ef": [1, 200]},
    )
    (job,) = adaptive_jobs(jobs, target_recall=0.97)
    ladder = job.search_configs
    assert len(ladder) > 20
    with ResultStore(tmp_path) as store:
        summary_ = run_sweep([job], store)
        records = store.records()
    assert summary_.stored <= max_probes(len(ladder)) + 1 < len(ladder)
    ok = [r for r in records if r.recall >= 0.97]
    chosen = min(ok, key=lambda r: r.search_params["ef"])
    assert chosen.runs == 2  # re-measured with repeats
    below = [r for r in records if r.search_params["ef"] < chosen.search_params["ef"]]
    assert all(r.recall < 0.97 for r in below)


def test_parse_bytes():
    assert parse_bytes("2GB") == 2e9 and parse_bytes("1.5 MiB") == 1.5 * 2**20
    with pytest.raises(AnnbenchError, match="not understood"):
        parse_bytes("lots")


def test_cli_summary_and_recommend(swept, tiny_path):
    folder, _ = swept
    runner = CliRunner()
    out = runner.invoke(main, ["summary", "--results", str(folder), "--latency-budget-ms", "5"])
    assert out.exit_code == 0, out.output
    assert "QPS@0.9" in out.output and "hnswlib" in out.output
    rec = runner.invoke(
        main,
        [
            "recommend",
            "-d",
            str(tiny_path),
            "--results",
            str(folder),
            "--min-recall",
            "0.95",
            "--max-memory",
            "1GB",
        ],
    )
    assert rec.exit_code == 0, rec.output
    assert rec.output.startswith(
        "Limits: recall >= 0.95, serving memory (the index's own resident pages, fresh process) "
        "<= 1 GB"
    )
    assert "\nRecommended: " in rec.output and "Runners-up:" in rec.output
    none = runner.invoke(
        main,
        [
            "recommend",
            "-d",
            str(tiny_path),
            "--results",
            str(folder),
            "--min-recall",
            "0.99",
            "--max-p99-ms",
            "0.000001",
        ],
    )
    assert none.exit_code == 3 and "meets the constraints" in none.output
    assert "Closest misses, nearest the budget first:" in none.output
    bad = runner.invoke(main, ["recommend", "-d", str(tiny_path), "--min-recall", "1.5"])
    assert bad.exit_code == 2 and "Invalid value for '--min-recall': 1.5" in bad.output


@pytest.mark.slow
def test_cli_recommend_measure(tiny_path, tmp_path):
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "recommend",
            "-d",
            str(tiny_path),
            "--results",
            str(tmp_path),
            "--min-recall",
            "0.9",
            "--measure",
            "-b",
            "faiss-ivf",
            "-g",
            "nlist=16",
            "-g",
            "nprobe=1,16",
            "--runs",
            "2",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "Recommended: faiss-ivf [nlist=16]" in out.output
    with ResultStore(tmp_path) as store:
        assert store.count() <= max_probes(len(geometric_ladder(1, 16, 1.25))) + 1
        assert np.isfinite([r.recall for r in store.records()]).all()


def test_wide_spread_is_flagged_noisy(swept):
    _, frame = swept
    frame = frame.copy()
    frame["qps_spread"] = 0.0
    frame["latency_p99_spread"] = 0.0
    frame.loc[frame.index[0], "qps_spread"] = 0.5
    table = summary(frame)
    noisy_backend = frame["backend"].iloc[0]
    assert table.set_index("backend").loc[noisy_backend, "noisy_runs"] == 1
    assert (table[table["backend"] != noisy_backend]["noisy_runs"] == 0).all()
