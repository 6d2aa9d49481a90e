"""One broken plugin cannot break the others: import errors, bad grids, raising constructors,
bad search results and reused backend names each become one line naming the plugin."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import annbench.registry
from annbench.backends.faiss_backend import FaissFlat
from annbench.cli import main
from annbench.data.format import read_dataset
from annbench.errors import AnnbenchError, BackendUnavailable
from annbench.index import Neighbors, check_neighbors
from annbench.param_grid import Grid
from annbench.registry import (
    capability_table,
    default_grid,
    load_backend,
    plugin_problems,
    runnable_backends,
)
from annbench.results.store import ResultStore
from annbench.sweep.measure import run_build_job
from annbench.sweep.runner import plan_sweep
from annbench.testing import check_backend

PACKAGE = "annbench-broken-plugins"

#: An exact backend and variants that misbehave, in a module every plugin below can import.
GOOD = """
import sys

import numpy as np

from annbench.index import Index, Neighbors
from annbench.metrics import Metric


class Exact(Index):
    default_grid = {"build": {}, "search": {}}

    def __init__(self, metric: Metric) -> None:
        super().__init__(metric)

    def build(self, xb):
        self.xb = np.asarray(xb, dtype=np.float32)

    def search(self, xq, k):
        d = ((xq[:, None, :] - self.xb[None, :, :]) ** 2).sum(axis=2)
        ids = np.argsort(d, axis=1, kind="stable")[:, :k].astype(np.int64)
        return Neighbors(np.take_along_axis(d, ids, axis=1), ids)


class RaiseInInit(Exact):
    def __init__(self, metric: Metric) -> None:
        raise RuntimeError("constructor refused")


class ExitInBuild(Exact):
    def build(self, xb):
        sys.exit(4)


class FloatIds(Exact):
    def search(self, xq, k):
        result = super().search(xq, k)
        return Neighbors(result.distances, result.ids.astype(np.float64))


class NaNIds(Exact):
    def search(self, xq, k):
        result = super().search(xq, k)
        ids = result.ids.astype(np.float64)
        ids[:, -1] = np.nan
        return Neighbors(result.distances, ids)


class OutOfRange(Exact):
    def search(self, xq, k):
        result = super().search(xq, k)
        return Neighbors(result.distances, result.ids + len(self.xb))


class OneTooMany(Exact):
    def search(self, xq, k):
        return super().search(xq, k + 1)


class NoGrid(Exact):
    default_grid = None
"""


def _write_plugin(
    root: Path, package: str, entries: dict[str, str], files: dict[str, object]
) -> None:
    """A fake installed distribution ``package`` under ``root``: its dist-info folder
    registering ``entries`` as annbench backends, and ``files`` (sources, grids) beside it."""
    info = root / f"{package.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("[annbench.backends]\n" + "\n".join(lines) + "\n")
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(str(content)))


MODULES = ("plugin_good", "plugin_boom", "plugin_quitter", "plugin_quitter.backend", "shadow")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Put a folder of fake plugin distributions on the path, here and in worker processes."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    monkeypatch.setattr(annbench.registry, "_told", set())

    def install(package: str, entries: dict[str, str], files: dict[str, object]) -> None:
        _write_plugin(root, package, entries, files)
        importlib.invalidate_caches()

    yield install
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def broken(plugins):
    """Plugins that raise at import, exit at import, and ship a grid that is not text."""
    plugins(
        PACKAGE,
        {
            "broken-boom": "plugin_boom:Anything",
            "broken-exit": "plugin_quitter.backend:Anything",
            "broken-grid": "plugin_good:NoGrid",
            "fine": "plugin_good:Exact",
        },
        {
            "plugin_good.py": GOOD,
            "plugin_boom.py": "raise RuntimeError('boom at import')\n",
            "plugin_quitter/__init__.py": "import sys\nsys.exit(3)\n",
            "plugin_quitter/backend.py": "",
            "broken-grid.yaml": b"\xff\xfe\x00\x81 build: {}\n",
        },
    )


def test_backends_lists_every_backend_with_one_row_per_broken_plugin(broken):
    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == 0, result.output
    assert "unexpected" not in result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.split()}
    assert "RuntimeError: boom at import" in rows["broken-boom"]
    assert "SystemExit: 3" in rows["broken-exit"]
    assert "not UTF-8 text" in rows["broken-grid"]
    for name in ("broken-boom", "broken-exit", "broken-grid"):
        assert f"'{PACKAGE}'" in rows[name], rows[name]
    assert " yes " in rows["fine"] and " yes " in rows["hnswlib"]


def test_all_skips_broken_plugins_naming_them_and_keeps_the_rest(broken):
    names, skipped = runnable_backends()
    assert "fine" in names and {"hnswlib", "faiss-flat"} <= set(names)
    assert set(skipped) >= {"broken-boom", "broken-exit", "broken-grid"}
    for name in ("broken-boom", "broken-exit", "broken-grid"):
        assert f"'{PACKAGE}'" in skipped[name] and name in skipped[name], skipped[name]
        assert "\n" not in skipped[name]


def test_loading_a_broken_plugin_is_one_error_naming_it_and_its_package(broken):
    with pytest.raises(BackendUnavailable, match=f"'broken-boom'.*'{PACKAGE}'.*boom at import"):
        load_backend("broken-boom")
    with pytest.raises(BackendUnavailable, match=f"'broken-exit'.*'{PACKAGE}'.*SystemExit: 3"):
        load_backend("broken-exit")
    with pytest.raises(AnnbenchError, match=f"broken-grid.*'{PACKAGE}'.*not UTF-8 text"):
        default_grid("broken-grid")
    assert default_grid("broken-exit") == Grid()  # finding its folder imports the package
    result = CliRunner().invoke(main, ["run", "-b", "broken-boom", "-b", "fine"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert "broken-boom" in line and PACKAGE in line and "unexpected" not in line


@pytest.mark.slow
def test_capability_table_survives_every_broken_plugin(broken):
    table = capability_table().set_index("backend")
    assert table.loc["fine", "installed"] == "yes" and table.loc["fine", "grid"] == 1
    assert table.loc["broken-boom", "installed"].startswith("no: ")


@pytest.fixture
def misbehaving(plugins):
    classes = ("RaiseInInit", "ExitInBuild", "FloatIds", "NaNIds", "OutOfRange", "OneTooMany")
    plugins(
        PACKAGE,
        {f"bad-{name.lower()}": f"plugin_good:{name}" for name in classes}
        | {"fine": "plugin_good:Exact"},
        {"plugin_good.py": GOOD},
    )


@pytest.mark.slow
def test_a_raising_constructor_or_build_is_a_failed_run_naming_the_backend(
    misbehaving, tiny_path, tmp_path
):
    results = tmp_path / "results"
    args = ["run", "-d", str(tiny_path), "--runs", "1", "--min-time", "0", "--results"]
    args += [str(results), "-b", "bad-raiseininit", "-b", "bad-exitinbuild", "-b", "fine"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "unexpected" not in result.output
    with ResultStore(results) as store:
        records = {r.backend: r for r in store.records()}
    assert records["fine"].status == "ok" and records["fine"].recall == 1.0
    ctor, build = records["bad-raiseininit"], records["bad-exitinbuild"]
    assert ctor.status == "failed" and build.status == "failed"
    assert ctor.error == "bad-raiseininit raised RuntimeError: constructor refused"
    assert build.error == "bad-exitinbuild raised SystemExit: 4"


def test_the_conformance_kit_names_a_backend_whose_constructor_raises(misbehaving):
    with pytest.raises(AssertionError, match="bad-raiseininit .*RuntimeError: constructor refused"):
        check_backend(load_backend("bad-raiseininit"))


@pytest.mark.parametrize(
    "name, reason, short",
    [
        pytest.param(
            "floatids",
            "returned ids of dtype float64; search must return int64 ids in [-1, 2000)",
            "returned ids of dtype float64; search",
            id="float",
        ),
        pytest.param(
            "nanids",
            "returned ids of dtype float64",
            "returned ids of dtype float64; search",
            id="nan",
        ),
        pytest.param(
            "outofrange",
            "; search must return int64 ids in [-1, 2000)",
            "returned ids from 2",
            id="range",
        ),
        pytest.param(
            "onetoomany",
            "returned ids of shape (100, 11); search must return (100, 10) int64 ids",
            "returned ids of shape (",
            id="shape",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["batch", "single"])
@pytest.mark.parametrize("workload", ["plain", "label"])
def test_bad_search_results_are_failed_runs_with_the_reason(
    misbehaving, tiny_path, tmp_path, name, reason, short, mode, workload
):
    path = tmp_path / "tiny.hdf5"
    shutil.copy(tiny_path, path)  # a filter's ground truth is stored in the file
    data = read_dataset(path, probe=False)  # a copy of a good file: no child process to probe it
    (job,) = plan_sweep(
        data, [f"bad-{name}"], mode=mode, runs=1, min_seconds=0, workloads=[workload]
    )
    records = []
    run_build_job(job, records.append)
    assert records and all(r.status == "failed" for r in records), [r.error for r in records]
    if mode == "single" or workload == "label":  # one query at a time, or more than k asked
        reason = short
    for record in records:
        assert record.error.startswith(f"bad-{name} ") and reason in record.error, record.error


def test_check_neighbors_accepts_what_the_interface_promises():
    ids = np.array([[0, 1, -1], [2, 3, 4]], dtype=np.int64)
    assert check_neighbors(Neighbors(np.zeros((2, 3)), ids), 2, 3, 5, "x") is not None
    check_neighbors(np.array([4, 0], dtype=np.uint64), None, 3, 5, "x")  # search_one: up to k
    check_neighbors([1, 2, 3], None, 3, 5, "x")
    for bad, match in [
        (Neighbors(None, None), "returned no ids"),
        (ids.astype(bool), "returned ids of dtype bool"),
        (ids[:1], r"returned ids of shape \(1, 3\)"),
        (ids + 4, "returned ids from 3 to 8"),
        (np.array([[0, 1, -2], [2, 3, 4]]), "returned ids from -2 to 4"),
    ]:
        with pytest.raises(AnnbenchError, match=f"^x {match}"):
            check_neighbors(bad, 2, 3, 5, "x")
    with pytest.raises(AnnbenchError, match=r"search_one must return up to 3"):
        check_neighbors([1, 2, 3, 4], None, 3, 5, "x")


SHADOW = """
from annbench.index import Index


class Fake(Index):
    def build(self, xb):
        raise RuntimeError("the plugin's faiss-flat must not be used")

    def search(self, xq, k):
        raise RuntimeError("the plugin's faiss-flat must not be used")
"""

SHADOWS = (
    "Plugin package 'annbench-shadow' registers backend 'faiss-flat', which annbench itself "
    "provides; annbench's is used (rename the plugin's entry point)"
)


@pytest.fixture
def shadowing(plugins):
    plugins("annbench-shadow", {"faiss-flat": "shadow:Fake", "twin": "shadow:Fake"}, {})
    plugins("annbench-other", {"twin": "shadow:Fake"}, {"shadow.py": SHADOW})


@pytest.mark.slow
def test_a_plugin_reusing_a_built_in_name_is_named_on_one_line(shadowing):
    assert load_backend("faiss-flat") is FaissFlat
    problems = plugin_problems()
    assert SHADOWS in problems and len(problems) == 2
    assert any("'twin'" in p and "annbench-other" in p and "annbench-shadow" in p for p in problems)
    cli = Path(sys.executable).parent / "annbench"  # a real process: logging is not captured
    result = subprocess.run([str(cli), "backends"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines().count(SHADOWS) == 1, result.stderr
    assert SHADOWS not in result.stdout and "faiss-flat" in result.stdout


@pytest.mark.slow
def test_run_names_a_plugin_reusing_a_built_in_name(shadowing, tiny_path, tmp_path):
    args = ["run", "-b", "faiss-flat", "-d", str(tiny_path), "--runs", "1", "--min-time", "0"]
    result = CliRunner().invoke(main, [*args, "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines().count(SHADOWS) == 1, result.stderr
    with ResultStore(tmp_path / "r") as store:
        (record,) = store.records()
    assert record.status == "ok" and record.recall == 1.0


def test_api_users_hear_of_a_reused_name_once_through_logging(shadowing, caplog):
    with caplog.at_level("WARNING", logger="annbench.registry"):
        load_backend("faiss-flat")
        load_backend("hnswlib")
    assert caplog.text.count(SHADOWS) == 1
