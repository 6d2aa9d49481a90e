"""The public Python API, called exactly as the documentation (docs/guides/python.md) shows it."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import annbench
from annbench import api
from annbench.errors import AnnbenchError

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "python.md"
GRID = {"M": 8, "ef": [10, 40], "nlist": 16, "nprobe": [1, 8]}


def guide_example() -> str:
    return re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.S).group(1)


@pytest.mark.slow
def test_guide_example_runs_as_written(isolated_folders):
    scope: dict = {"__name__": "__main__"}  # the example runs under the __main__ guard
    exec(compile(guide_example(), str(GUIDE), "exec"), scope)
    runs = scope["runs"]
    assert set(runs["backend"]) == {"hnswlib", "faiss-ivf"} and len(runs) == 4
    assert runs.loc[runs["backend"] == "hnswlib", "build.M"].tolist() == [16, 16]
    assert runs.loc[runs["backend"] == "hnswlib", "build.nlist"].isna().all()
    assert list(scope["data"].train.shape) == [10000, 64]
    assert len(scope["everything"]) == 4
    summary = annbench.summary(runs)
    assert set(summary["backend"]) == {"hnswlib", "faiss-ivf"}
    best = scope["best"]
    assert best is None or best["recall"] >= 0.9


@pytest.fixture(scope="module")
def swept(tiny_path, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    frame = annbench.run(
        ["hnswlib", "faiss-ivf"],
        dataset=tiny_path,
        grid=GRID,
        runs=1,
        min_time=0,
        results=results,
        progress=False,
    )
    return frame, results


@pytest.mark.slow
def test_run_returns_this_sweeps_records_with_flat_parameter_columns(swept):
    frame, _ = swept
    assert len(frame) == 4 and (frame["status"] == "ok").all()
    assert frame.attrs["sweep"]["stored"] == 4 and frame.attrs["sweep"]["failed"] == 0
    columns = list(frame.columns)
    flat = ["build.M", "build.ef_construction", "build.nlist", "search.ef", "search.nprobe"]
    assert set(flat) <= set(columns)
    # the flat columns follow the parameter dicts, whole numbers stay whole
    assert columns.index("search_params") < columns.index("build.M")
    assert str(frame["search.ef"].dtype) == "Int64"
    hnsw = frame[frame["backend"] == "hnswlib"]
    assert sorted(hnsw["search.ef"]) == [10, 40] and hnsw["search.nprobe"].isna().all()
    for text in frame["build_params"]:
        assert isinstance(json.loads(text), dict)  # JSON, not a Python repr
    assert json.loads(frame["provenance"].iloc[0])


def test_a_second_run_resumes_and_returns_the_stored_records(swept, tiny_path):
    frame, results = swept
    again = annbench.run(
        "hnswlib",
        dataset=tiny_path,
        grid={"M": 8, "ef": [10, 40]},
        runs=1,
        min_time=0,
        results=results,
        progress=False,
    )
    assert again.attrs["sweep"]["stored"] == 0 and again.attrs["sweep"]["skipped"] == 2
    assert sorted(again["search.ef"]) == [10, 40]
    assert again["qps"].tolist() == frame.loc[again.index, "qps"].tolist() or len(again) == 2


def test_load_results_and_the_analyses(swept, tmp_path):
    _, results = swept
    frame = annbench.load_results(results)
    assert len(frame) == 4 and "build.nlist" in frame
    assert annbench.load_results(results, dataset="nope").empty
    front = annbench.pareto_frontier(frame[frame["backend"] == "hnswlib"])
    assert 1 <= len(front) <= 2 and front["recall"].is_monotonic_increasing
    table = annbench.summary(frame, latency_budget_ms=100)
    assert set(table["backend"]) == {"hnswlib", "faiss-ivf"}
    assert "best_recall_within_budget" in table
    choice = annbench.recommend(frame, min_recall=0.5, max_memory="1GB").choice
    assert choice is not None and choice["recall"] >= 0.5
    assert annbench.recommend(frame, min_recall=1.0, max_p99_ms=1e-9).choice is None
    with pytest.raises(AnnbenchError, match=r"min_recall must be in \(0, 1\]"):
        annbench.recommend(frame, min_recall=0)
    mixed = frame.assign(workload=["plain", "label"] * (len(frame) // 2))
    with pytest.raises(AnnbenchError, match=r"several workload values \(label, plain\)"):
        annbench.recommend(mixed, min_recall=0.5)


def test_csv_and_parquet_exports_carry_the_same_columns(swept, tmp_path):
    from click.testing import CliRunner

    from annbench.cli import main

    _, results = swept
    out_csv, out_parquet = tmp_path / "r.csv", tmp_path / "r.parquet"
    result = CliRunner().invoke(
        main,
        [
            "results",
            "--results",
            str(results),
            "--csv",
            str(out_csv),
            "--parquet",
            str(out_parquet),
        ],
    )
    assert result.exit_code == 0, result.output
    from_csv, from_parquet = pd.read_csv(out_csv), pd.read_parquet(out_parquet)
    assert list(from_csv.columns) == list(from_parquet.columns)
    assert {"build.M", "search.nprobe"} <= set(from_csv.columns)
    for value in from_csv["search_params"]:
        assert isinstance(json.loads(value), dict)
    assert from_parquet["provenance"].map(json.loads).map(type).eq(dict).all()


def test_load_dataset(tiny_path):
    data = annbench.load_dataset(tiny_path)
    assert data.train.shape == (2000, 32) and data.neighbors.shape[0] == 100
    with pytest.raises(AnnbenchError, match="Unknown dataset 'nope'"):
        annbench.load_dataset("nope")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backends": []}, "Name at least one backend"),
        ({"timeout": float("nan")}, "timeout must be a positive number"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"memory_limit": "-1GB"}, "not understood"),
        ({"memory_limit": 0}, "memory size must be a positive"),
        ({"workers": 0}, "workers must be a whole number"),
        ({"scheduler": "udp://x"}, "scheduler must be 'local' or tcp://"),
        ({"min_time": float("nan")}, "minimum timing seconds must be 0 or more"),
        ({"runs": 0}, "runs must be at least 1"),
        ({"grid": {"ef": [[1]]}}, "must be a scalar or a list of scalars"),
        ({"grid": ["ef"]}, "must look like key=value"),
        ({"progress": "yes"}, "progress must be True, False"),
    ],
)
def test_bad_arguments_are_one_line_errors_before_any_work(kwargs, message, tiny_path):
    args = {"backends": "hnswlib", "dataset": tiny_path, "progress": False} | kwargs
    with pytest.raises(AnnbenchError, match=message):
        annbench.run(**args)


@pytest.mark.slow
def test_import_is_cheap_and_exports_the_api():
    code = (
        "import sys, annbench; "
        "heavy = [m for m in ('numpy', 'pandas', 'h5py', 'faiss', 'annbench.api') "
        "if m in sys.modules]; print(heavy); "
        "print(sorted(n for n in annbench.__all__ if callable(getattr(annbench, n))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, names = out.stdout.splitlines()
    assert heavy == "[]"
    for name in ("load_dataset", "load_results", "pareto_frontier", "recommend", "run", "summary"):
        assert name in names
    assert annbench.MIN_SECONDS == 1.0 == api.MIN_SECONDS


def run_script(tmp_path, tiny_path, guarded):
    call = (
        f"annbench.run('faiss-flat', dataset={str(tiny_path)!r}, runs=1, min_time=0, "
        "progress=False)"
    )
    if guarded:
        body = f"import annbench\n\nif __name__ == '__main__':\n    {call}\n    print('ok')\n"
    else:
        body = f"import annbench\n\n{call}\n"
    script = tmp_path / "sweep.py"
    script.write_text(body)
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


@pytest.mark.slow
def test_a_script_without_the_main_guard_is_told_so(tmp_path, tiny_path):
    result = run_script(tmp_path, tiny_path, guarded=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert 'if __name__ == "__main__":' in last and "sweep.py:3" in last, result.stderr
    assert "worker exited" not in result.stderr


@pytest.mark.slow
def test_a_guarded_script_runs(tmp_path, tiny_path):
    result = run_script(tmp_path, tiny_path, guarded=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_guard_check_reads_the_script(tmp_path):
    tree = tmp_path / "x.py"
    tree.write_text("import annbench\nif '__main__' == __name__:\n    pass\n")
    import ast

    test = ast.parse(tree.read_text()).body[1].test
    assert api._is_main_test(test)
    assert not api._is_main_test(ast.parse("__name__ != '__main__'").body[0].value)


@pytest.mark.slow
def test_results_are_found_by_content_under_any_name(tmp_path, monkeypatch):
    """A dataset whose content is stored under another name: run, results, summary, plot and
    report find those results (they are keyed by content), named as asked."""
    import shutil

    from click.testing import CliRunner

    from annbench.cli import main
    from annbench.data.synthetic import create_synthetic
    from annbench.metrics import Metric

    data = tmp_path / "data"
    monkeypatch.setenv("ANNBENCH_DATA", str(data))
    monkeypatch.setenv("ANNBENCH_RESULTS", str(tmp_path / "results"))
    create_synthetic(data / "first.hdf5", n=500, nq=20, d=8, metric=Metric.EUCLIDEAN, seed=2)
    runner = CliRunner()
    sweep = ["-b", "faiss-flat", "--runs", "1", "--min-time", "0", "-q"]
    assert runner.invoke(main, ["run", "-d", "first", *sweep]).exit_code == 0
    shutil.copy(data / "first.hdf5", data / "again.hdf5")
    again = runner.invoke(main, ["run", "-d", "again", *sweep])
    assert again.exit_code == 0, again.output
    assert "Stored 0 results (1 already stored" in again.output and "again" in again.output
    listed = runner.invoke(main, ["results", "-d", "again"])
    assert listed.exit_code == 0 and "faiss-flat" in listed.output, listed.output
    frame = annbench.load_results(dataset="again")
    assert len(frame) == 1 and frame["dataset"].tolist() == ["again"]
    assert len(annbench.load_results(dataset=str(data / "again.hdf5"))) == 1
    summary = runner.invoke(main, ["summary", "-d", "again"])
    assert summary.exit_code == 0 and "faiss-flat" in summary.output, summary.output
    plot = runner.invoke(main, ["plot", "-d", "again", "--out", str(tmp_path / "p.png")])
    assert plot.exit_code == 0, plot.output
    assert len(annbench.load_results(dataset="first")) == 1  # the first name still has them
