"""A third-party backend package, pip-installed into the venv, conforms and runs via the CLI."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from annbench.grids import default_grid
from annbench.registry import capability_table, load_backend, runnable_backends
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


def test_installed_plugin_conforms_with_its_shipped_grid(installed):
    cls = load_backend("rproj")
    grid = default_grid("rproj")  # the YAML resource installed beside the module
    assert grid.build == {"n_bits": [16, 32]} and len(grid.search_configs()) == 5
    check_backend(cls)


def test_installed_plugin_is_listed_and_runnable(installed):
    names, skipped = runnable_backends()
    assert "rproj" in names and "rproj" not in skipped
    row = capability_table().set_index("backend").loc["rproj"]
    assert (row["installed"], row["metrics"], row["grid"]) == ("yes", "angular,euclidean", 10)


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
