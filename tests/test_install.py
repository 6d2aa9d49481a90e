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


@pytest.mark.slow
def test_wheel_contains_every_grid_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for grid in (ROOT / "backends").glob("*.yaml"):
        assert f"annbench/default_grids/{grid.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    assert "annbench/bundled/debian-packages-384-angular.hdf5" in names
    assert "annbench/bundled/debian-packages.tsv.gz" in names
    shipped = list((ROOT / "annbench" / "runbook_files").glob("*.yaml"))
    assert shipped and all(f"annbench/runbook_files/{rb.name}" in names for rb in shipped)
    for package in (ROOT / "annbench").rglob("__init__.py"):  # every subpackage ships
        assert package.relative_to(ROOT).as_posix() in names


@pytest.mark.slow
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
        "import annbench, annbench.registry as r\n"
        f"assert annbench.__file__.startswith({str(target)!r}), annbench.__file__\n"
        "for name in ['faiss-flat','faiss-ivf','faiss-ivfpq','faiss-hnsw','hnswlib','annoy']:\n"
        "    r.load_backend(name); grid = r.default_grid(name)\n"
        "    assert name == 'faiss-flat' or grid.search, name\n"
        "from annbench.data.catalog import DEFAULT_DATASET, resolve_dataset\n"
        "from annbench.data.format import read_dataset\n"
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


# ---------------------------------------------------------------------------------------------
# A core install (``pip install -e .``) has what the core commands import


PROBE = """
import importlib.abc, importlib.util, sys

BLOCKED = set({blocked!r})


class NotInstalled(importlib.abc.MetaPathFinder):
    # as on a core install: modules of other distributions cannot be imported
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not a core requirement)")
        return None


sys.meta_path.insert(0, NotInstalled())
_find_spec = importlib.util.find_spec


def find_spec(name, package=None):
    # as on a core install: asking whether such a module exists answers no (itables asks
    # for google.colab), where the finder above makes importing it fail
    if name.partition(".")[0] in BLOCKED:
        return None
    return _find_spec(name, package)


importlib.util.find_spec = find_spec
from annbench.cli import main

for args in {commands!r}:
    try:
        main.main(args, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
"""


def core_requirements() -> set[str]:
    """Distributions a core install brings: setup.cfg's install_requires and, recursively,
    what they require (extras excluded)."""
    import configparser
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    todo = [Requirement(line).name for line in lines if line.strip() and not line.startswith("#")]
    seen: set[str] = set()
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        for text in needs:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.mark.slow
def test_core_commands_run_without_anything_but_core_requirements(tmp_path, monkeypatch):
    """The jinja2 slip (imported by the report, installed here by an extra, missing from a core
    install) fails here: the core commands run with every module of a distribution that is not
    a core requirement made unimportable, as on a core install."""
    from importlib.metadata import packages_distributions

    core = core_requirements() | {"annbench"}
    blocked = sorted(
        module
        for module, owners in packages_distributions().items()
        if module not in sys.stdlib_module_names
        and not {_canonical(owner) for owner in owners} & core
    )
    assert {"hypothesis", "dask", "usearch"} <= set(blocked)  # extras installed for the tests
    monkeypatch.setenv("ANNBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ANNBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    commands = [
        ["datasets", "create", "probe", "--n", "3000", "--nq", "40", "--d", "16"]
        + ["--random-attr", "u"],
        ["run", "-d", "probe", "-b", "faiss-hnsw", "--filter", "none", "--filter", "range:0.1"]
        + ["--grid", "M=8", "--grid", "efSearch=16", "--quiet"],
        ["results", "--csv", str(tmp_path / "results.csv")],
        ["summary", "-d", "probe"],
        ["recommend", "-d", "probe", "--min-recall", "0.5"],
        ["plot", "-d", "probe", "--out", str(tmp_path / "plot.png")],
        ["report", "-d", "probe", "--out", str(tmp_path / "report")],
    ]
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(blocked=blocked, commands=commands)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "report" / "index.html").is_file() and (tmp_path / "plot.png").is_file()
