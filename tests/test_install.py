"""The wheel ships the grids: an installed annbench works from any directory."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: an in-tree build leaves build/ and annbench.egg-info in the checkout,
    # whose stale entry points would then hide backends registered later
    source = tmp_path_factory.mktemp("source") / "annbench"
    shutil.copytree(ROOT, source, ignore=_not_sources)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.mktemp("cwd"),
    )
    (found,) = out.glob("annbench-*.whl")
    return found


def _not_sources(folder: str, names: list[str]) -> set[str]:
    """What a wheel is not built from: VCS, venv, build output, results, cached datasets."""
    skipped = set(
        shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache")(
            folder, names
        )
    )
    if Path(folder) == ROOT:  # the top-level results and docs folders (not annbench/results)
        skipped |= {"results", "docs"} & set(names)
    if Path(folder) == ROOT / "datasets":  # only the bundled data ships
        skipped |= {name for name in names if name not in ("bundled", "README.md")}
    return skipped


def test_wheel_contains_every_grid_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for grid in (ROOT / "backends").glob("*.yaml"):
        assert f"annbench/default_grids/{grid.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    assert "annbench/bundled/debian-packages-384-angular.hdf5" in names
    assert "annbench/bundled/debian-packages.tsv.gz" in names
    shipped = list((ROOT / "annbench" / "runbook_files").glob("*.yaml"))
    assert shipped and all(f"annbench/runbook_files/{rb.name}" in names for rb in shipped)


def test_installed_wheel_loads_grids_from_elsewhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import annbench, annbench.sweep.grids as g, annbench.registry as r\n"
        f"assert annbench.__file__.startswith({str(target)!r}), annbench.__file__\n"
        "for name in ['faiss-flat','faiss-ivf','faiss-ivfpq','faiss-hnsw','hnswlib','annoy']:\n"
        "    r.load_backend(name); grid = g.default_grid(name)\n"
        "    assert name == 'faiss-flat' or grid.search, name\n"
        "from annbench.data.datasets import DEFAULT_DATASET, read_dataset, resolve_dataset\n"
        f"path = resolve_dataset(DEFAULT_DATASET); assert str(path).startswith({str(target)!r})\n"
        "assert read_dataset(path).train.shape == (21000, 384)\n"
        "print('ok')\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme
    assert "pytest" in command
