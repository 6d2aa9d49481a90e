"""A third-party backend package, pip-installed into the venv, conforms and runs via the CLI."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from annbench.backends.faiss_backend import FaissHNSW
from annbench.backends.hnswlib_backend import Hnswlib
from annbench.errors import AnnbenchError
from annbench.index import Index, Neighbors
from annbench.metrics import Metric
from annbench.registry import capability_table, load_backend, runnable_backends
from annbench.sweep.grids import (
    check_grid,
    check_overrides,
    default_grid,
    parse_grid,
    parse_override,
    with_overrides,
)
from annbench.testing import check_backend

PACKAGE = Path(__file__).parent / "plugin_package"


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--no-input", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plugin installed (not editable) from a copy of tests/plugin_package."""
    source = tmp_path_factory.mktemp("plugin") / "plugin_package"
    shutil.copytree(PACKAGE, source)  # the build leaves its files in the copy
    _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source))
    importlib.invalidate_caches()
    yield
    _pip("uninstall", "-y", "annbench-rproj")
    sys.modules.pop("annbench_rproj", None)
    importlib.invalidate_caches()


@pytest.mark.slow
def test_installed_plugin_conforms_with_its_shipped_grid(installed):
    cls = load_backend("rproj")
    grid = default_grid("rproj")  # the YAML resource installed beside the module
    assert grid.build == {"n_bits": [16, 32]} and len(grid.search_configs()) == 5
    check_backend(cls)


@pytest.mark.slow
def test_installed_plugin_is_listed_and_runnable(installed):
    names, skipped = runnable_backends()
    assert "rproj" in names and "rproj" not in skipped
    row = capability_table().set_index("backend").loc["rproj"]
    assert (row["installed"], row["metrics"], row["grid"]) == ("yes", "angular,euclidean", 10)


@pytest.mark.slow
def test_installed_plugin_runs_through_the_cli(installed, tiny_path, tmp_path):
    cli = Path(sys.executable).parent / "annbench"
    results = tmp_path / "results"
    run = subprocess.run(
        [
            str(cli),
            "run",
            "-b",
            "rproj",
            "-d",
            str(tiny_path),
            "--runs",
            "1",
            "-g",
            "n_bits=32",
            "-g",
            "n_candidates=50,500",
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    listed = subprocess.run(
        [str(cli), "results", "--results", str(results)], capture_output=True, text=True
    )
    rows = [line for line in listed.stdout.splitlines() if " rproj " in f" {line} "]
    assert len(rows) == 2 and all(" ok " in row for row in rows), listed.stdout


class _Needy(Index):
    default_grid = {"build": {"size": [1, 2]}, "search": {"level": [1, 2, 3]}}

    def __init__(self, metric: Metric, *, size: int, width: int, depth: int = 1) -> None:
        super().__init__(metric, size=size, width=width, depth=depth)

    def build(self, xb):
        pass

    def set_search_params(self, *, level: int, effort: int = 1) -> None:
        pass

    def search(self, xq, k):
        return Neighbors(None, None)


def test_a_grid_can_ship_as_a_class_attribute():
    grid = default_grid("needy", _Needy)
    assert grid.build_configs() == [{"size": 1}, {"size": 2}]
    assert grid.size() == 6


def test_missing_keys_are_named_together_and_defaults_may_be_omitted():
    grid = parse_grid({"build": {"depth": 2}, "search": {}}, "needy")
    with pytest.raises(
        AnnbenchError, match="needs parameters size, width, level that its grid"
    ) as e:
        check_grid("needy", _Needy, grid)
    assert "--grid size=VALUE --grid width=VALUE --grid level=VALUE" in str(e.value)
    check_grid(
        "needy",
        _Needy,
        parse_grid({"build": {"size": 1, "width": 2}, "search": {"level": 1}}, "needy"),
    )


def test_a_key_another_backend_spells_differently_gets_a_hint():
    classes = {"hnswlib": Hnswlib, "faiss-hnsw": FaissHNSW}
    with pytest.raises(
        AnnbenchError,
        match="applies to faiss-hnsw only: hnswlib spells it "
        "'ef_construction'; add --grid ef_construction=...",
    ):
        check_overrides(classes, {"efConstruction": [100]})
    check_overrides(classes, {"efConstruction": [100], "ef_construction": [100]})
    with pytest.raises(
        AnnbenchError,
        match="'EF_construction' is not a parameter of hnswlib; "
        "hnswlib spells it 'ef_construction'",
    ):
        check_overrides({"hnswlib": Hnswlib}, {"EF_construction": [100]})


def test_grid_blocks_sweep_their_own_search_parameters():
    cls = load_backend("faiss-factory")
    grid = parse_grid(
        [
            {"build": {"factory": ["IVF64,Flat", "IVF64,SQ8"]}, "search": {"nprobe": [1, 4]}},
            {"build": {"factory": "HNSW16"}, "search": {"efSearch": [16, 32, 64]}},
        ],
        "faiss-factory",
    )
    assert grid.size() == 7
    assert grid.search_configs({"factory": "HNSW16"}) == [
        {"efSearch": 16},
        {"efSearch": 32},
        {"efSearch": 64},
    ]
    swept = with_overrides(grid, cls, {"nprobe": [8]})  # only where nprobe is swept
    assert swept.search_configs({"factory": "IVF64,SQ8"}) == [{"nprobe": 8}]
    assert len(swept.search_configs({"factory": "HNSW16"})) == 3
    key, values = parse_override('factory="HNSW32,SQ8"')
    one = with_overrides(grid, cls, {key: values, "efSearch": [8]})  # a new string: one block
    assert one.build_configs() == [{"factory": "HNSW32,SQ8"}]
    assert one.search_configs({"factory": "HNSW32,SQ8"}) == [{"efSearch": 8}]


@pytest.mark.slow
def test_all_skips_backends_without_a_grid_or_library_and_says_why(test_backends):
    names, skipped = runnable_backends()
    assert {"faiss-factory", "hnswlib", "annoy"} <= set(names)
    assert skipped["test-missing"] == "pip install a-library-that-is-not-installed"
    assert skipped["test-crash"] == "its default grid lacks level"


@pytest.mark.slow
def test_run_all_names_what_it_skips_on_one_line(test_backends, tiny_path, monkeypatch):
    from click.testing import CliRunner

    import annbench.registry
    from annbench.cli import main

    names, skipped = runnable_backends()
    monkeypatch.setattr(annbench.registry, "runnable_backends", lambda: (["faiss-flat"], skipped))
    monkeypatch.setattr("annbench.cli.run.runnable_backends", lambda: (["faiss-flat"], skipped))
    result = CliRunner().invoke(main, ["run", "-b", "all", "-d", str(tiny_path), "--runs", "1"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("'all' skipped 8 backends: "), result.output
    assert "test-missing (pip install a-library-that-is-not-installed)" in lines[0]
    assert "test-crash (its default grid lacks level)" in lines[0]
    assert "faiss-flat" in result.output.split(lines[0])[-1]  # the results table


@pytest.mark.slow
def test_backends_prints_one_capability_table(test_backends):
    from click.testing import CliRunner

    from annbench.cli import main

    lines = CliRunner().invoke(main, ["backends"]).output.splitlines()
    assert lines[0].split()[:5] == ["backend", "installed", "kind", "library", "version"]
    rows = {line.split()[0]: line for line in lines[1:] if line.split()}
    assert "no: pip install a-library-that-is-not-installed" in rows["test-missing"]
    assert " native " in rows["hnswlib"] and " post only " in rows["annoy"]
