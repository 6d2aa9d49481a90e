"""ann-benchmarks result files: readable as its tools read them, with the same recall."""

import re

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.results.store import ResultStore


def ann_benchmarks_recall(dataset_distances, run_distances, count, epsilon=1e-3):
    """ann-benchmarks' knn recall, restated from its plotting metrics."""
    recalls = []
    for true, found in zip(dataset_distances, run_distances, strict=True):
        threshold = true[count - 1] + epsilon
        recalls.append(sum(1 for d in found[:count] if d <= threshold))
    return np.mean(recalls) / count


@pytest.mark.slow
def test_export_layout_and_recall(tiny_path, tiny, tmp_path):
    runner = CliRunner()
    results = tmp_path / "store"
    for mode in ("single", "batch"):
        ran = runner.invoke(
            main,
            [
                "run",
                "-d",
                str(tiny_path),
                "-b",
                "hnswlib",
                "--runs",
                "1",
                "--mode",
                mode,
                "-g",
                "M=8",
                "-g",
                "ef=10,40",
                "--results",
                str(results),
            ],
        )
        assert ran.exit_code == 0, ran.output
    out = tmp_path / "ab"
    exported = runner.invoke(
        main,
        [
            "results",
            "--export",
            "ann-benchmarks",
            "-d",
            str(tiny_path),
            "--out",
            str(out),
            "--results",
            str(results),
        ],
    )
    assert exported.exit_code == 0, exported.output
    files = sorted(out.rglob("*.hdf5"))
    assert len(files) == 4
    assert {f.parent.relative_to(out).as_posix() for f in files} == {
        "tiny/10/hnswlib",
        "tiny/10/hnswlib-batch",
    }
    with ResultStore(results) as store:
        stored = {(r.mode, r.search_params["ef"]): r for r in store.records()}
    for path in files:
        with h5py.File(path) as f:
            attrs = dict(f.attrs)
            assert {
                "algo",
                "name",
                "build_time",
                "index_size",
                "best_search_time",
                "candidates",
                "batch_mode",
                "distance",
                "count",
                "dataset",
                "run_count",
            } <= set(attrs)
            assert f["times"].shape == (100,) and f["neighbors"].shape == (100, 10)
            recall = ann_benchmarks_recall(tiny.distances, f["distances"][()], 10)
            ef = int(re.search(r"_ef=(\d+)", attrs["name"]).group(1))
            record = stored[("batch" if attrs["batch_mode"] else "single", ef)]
            assert abs(recall - record.ann_benchmarks_recall) < 1e-9
            assert attrs["best_search_time"] > 0 and (f["times"][()] > 0).all()


def test_export_needs_dataset_and_out(tmp_path):
    result = CliRunner().invoke(main, ["results", "--export", "ann-benchmarks"])
    assert result.exit_code == 2 and "needs --dataset NAME and --out DIR" in result.output
