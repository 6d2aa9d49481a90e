"""Size ladders end to end: ``annbench run --sizes`` builds on nested subsets, keys each size,
resumes an interrupted ladder, and refuses bad sizes with exit status 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import annbench
from annbench.api import Interrupted
from annbench.cli import main
from annbench.data.format import read_dataset
from annbench.data.subsets import nested_rows
from annbench.progress import Progress
from annbench.results.store import ResultStore

pytestmark = pytest.mark.slow  # each size builds in a worker process


@pytest.fixture
def tiny_path(tiny_path, tmp_path_factory):
    """A copy of the shared tiny dataset: a ladder stores each size's ground truth in it."""
    return Path(shutil.copy(tiny_path, tmp_path_factory.mktemp("ladder") / "tiny.hdf5"))


def _run(tiny_path, results, **options):
    return annbench.run(
        ["faiss-flat", "hnswlib"],
        dataset=tiny_path,
        grid=["M=8", "ef_construction=40", "ef=10,40"],
        runs=1,
        min_time=0,
        results=results,
        **{"progress": False, "sizes": "1/4,1/2,1", **options},
    )


def test_each_size_is_its_own_measurement_on_a_nested_subset(tiny_path, tmp_path):
    frame = _run(tiny_path, tmp_path)
    assert len(frame) == 3 * 3 and (frame["status"] == "ok").all()
    sizes = frame["base_size"].map(lambda v: None if v != v else int(v))
    assert sorted(sizes.dropna().unique()) == [500, 1000]
    assert sizes.isna().sum() == 3  # the whole base keeps the plain key
    flat = frame[frame["backend"] == "faiss-flat"]
    assert (flat["recall"] == 1.0).all()  # exact search against each size's own truth
    with ResultStore(tmp_path) as store:
        records = [r for r in store.records(with_raw=True) if r.backend == "faiss-flat"]
    assert len({r.key for r in records}) == len({r.dataset_hash for r in records}) == 3
    data = read_dataset(tiny_path)
    for record in records:
        size = record.base_size or len(data.train)
        allowed = set(nested_rows(len(data.train), size).tolist())
        assert set(record.ids.ravel().tolist()) <= allowed  # stored as base ids
    hnsw = frame[frame["backend"] == "hnswlib"]
    assert hnsw.groupby("base_size", dropna=False)["recall"].max().min() > 0.8
    again = _run(tiny_path, tmp_path)
    assert again.attrs["sweep"]["stored"] == 0 and again.attrs["sweep"]["skipped"] == 9


class _StopAfter(Progress):
    def __init__(self, count: int) -> None:
        self.left = count

    def update(self, n: int = 1) -> None:
        self.left -= n
        if self.left <= 0:
            raise KeyboardInterrupt


def test_an_interrupted_ladder_resumes_where_it_stopped(tiny_path, tmp_path):
    with pytest.raises(Interrupted):
        _run(tiny_path, tmp_path, progress=_StopAfter(4))
    with ResultStore(tmp_path) as store:
        kept = {r.key for r in store.records()}
    assert 4 <= len(kept) < 9
    frame = _run(tiny_path, tmp_path)
    assert frame.attrs["sweep"]["skipped"] == len(kept)
    assert frame.attrs["sweep"]["stored"] == 9 - len(kept)
    assert len(frame) == 9 and (frame["status"] == "ok").all()


@pytest.mark.parametrize(
    "sizes", ["0", "1/2,1/4", "4000", "abc", "1/2,", "1/0", "500,500", "-1", "1/4,nan"]
)
def test_bad_sizes_exit_2_with_one_line_and_store_nothing(tiny_path, tmp_path, sizes):
    result = CliRunner().invoke(
        main,
        ["run", "-b", "faiss-flat", "-d", str(tiny_path), "--sizes", sizes, "-q"],
        env={"ANNBENCH_RESULTS": str(tmp_path)},
    )
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "--sizes" in result.output
    assert not (tmp_path / "annbench.sqlite").exists() or not ResultStore(tmp_path).count()


def test_a_ladder_measures_plain_searches_only(tiny_path, tmp_path):
    result = CliRunner().invoke(
        main,
        ["run", "-b", "faiss-flat", "-d", str(tiny_path), "--sizes", "1/2,1", "--filter", "label"],
        env={"ANNBENCH_RESULTS": str(tmp_path)},
    )
    assert result.exit_code == 2 and "plain searches" in result.output


def test_the_whole_base_rung_reuses_an_ordinary_run(tiny_path, tmp_path):
    plain = annbench.run(
        "faiss-flat", dataset=tiny_path, runs=1, min_time=0, results=tmp_path, progress=False
    )
    ladder = annbench.run(
        "faiss-flat",
        dataset=tiny_path,
        runs=1,
        min_time=0,
        results=tmp_path,
        progress=False,
        sizes="1/2,1",
    )
    assert ladder.attrs["sweep"]["skipped"] == len(plain)
    assert np.isnan(ladder["base_size"]).sum() == len(plain)


def test_scale_fits_checks_and_predicts_from_a_ladder(tiny_path, tmp_path):
    _run(tiny_path, tmp_path, sizes="1/8,1/4,1/2,1")
    runner = CliRunner()
    env = {"ANNBENCH_RESULTS": str(tmp_path)}
    fits = runner.invoke(main, ["scale", "-d", str(tiny_path)], env=env)
    assert fits.exit_code == 0, fits.output
    assert "held-out" in fits.output and "at 2,000" in fits.output
    assert "PREDICTED" not in fits.output
    with ResultStore(tmp_path) as store:
        assert store.predictions().empty
    told = runner.invoke(main, ["scale", "-d", str(tiny_path), "--at-size", "1M"], env=env)
    assert told.exit_code == 0, told.output
    assert told.output.startswith("PREDICTED at 1,000,000 vectors")
    assert "x500" in told.output  # the extrapolation factor beside every prediction
    with ResultStore(tmp_path) as store:
        stored = store.predictions()
    assert len(stored) and (stored["at_size"] == 1_000_000).all()
    assert set(stored["backend"]) == {"faiss-flat", "hnswlib"}
    picked = runner.invoke(
        main,
        ["recommend", "-d", str(tiny_path), "--at-size", "1M", "--max-memory", "10GB"],
        env=env,
    )
    assert picked.exit_code == 0, picked.output
    assert picked.output.startswith("PREDICTED for 1,000,000 vectors") and "Pick:" in picked.output
    nothing = runner.invoke(
        main, ["recommend", "-d", str(tiny_path), "--at-size", "1M", "--max-memory", "1MB"], env=env
    )
    assert nothing.exit_code == 3 and "Nothing is predicted" in nothing.output
    budget = ["scale", "-d", str(tiny_path), "--at-size", "10M", "--memory-budget"]
    fits = runner.invoke(main, [*budget, "100GB"], env=env)
    assert fits.exit_code == 0, fits.output
    assert "[yes] faiss-flat" in fits.output and "B/vector" in fits.output
    assert "[no] faiss-flat" in runner.invoke(main, [*budget, "100MB"], env=env).output
    alone = runner.invoke(main, ["scale", "-d", str(tiny_path), "--memory-budget", "1GB"], env=env)
    assert alone.exit_code == 2 and "--at-size" in alone.output
    clash = runner.invoke(main, ["recommend", "--at-size", "1M", "--measure"], env=env)
    assert clash.exit_code == 2 and "--measure" in clash.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--at-size", "0"], "--at-size"),
        (["--at-size", "lots"], "--at-size"),
        (["--targets", "0.9,x"], "--targets"),
        (["--targets", "1.5"], "recall targets"),
        ([], "run a size ladder first"),
    ],
)
def test_scale_refuses_bad_input_and_missing_ladders_with_one_line(tiny_path, tmp_path, args, says):
    annbench.run(
        "faiss-flat", dataset=tiny_path, runs=1, min_time=0, results=tmp_path, progress=False
    )
    result = CliRunner().invoke(
        main, ["scale", "-d", str(tiny_path), *args], env={"ANNBENCH_RESULTS": str(tmp_path)}
    )
    assert result.exit_code == 2, result.output
    assert says in result.output and len(result.output.strip().splitlines()) == 1
