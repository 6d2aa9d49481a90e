"""Shared fixtures: isolated data/results folders and tiny datasets with exact ground truth;
and the fast default run: tests marked ``slow`` are left out unless ``--full`` is given, and
the rest runs on several processes (pytest-xdist) when the whole suite is asked for."""

from __future__ import annotations

import os
import signal
import sys
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annbench.data.format import read_dataset
from annbench.data.synthetic import create_synthetic
from annbench.metrics import Metric

PLUGIN_DIR = Path(__file__).parent / "plugin"
#: The checkout's datasets/ folder (the data cache) must not shadow the ``datasets`` package
#: that libraries look for (LanceDB registers Hugging Face datasets when ``datasets`` is
#: imported): ``python -m pytest`` puts the working directory on sys.path.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

#: Test files slow as a whole that are marked here rather than in the file (the databases'
#: tests start servers and sweep them through worker processes).
SLOW_FILES = ("test_db_*.py",)

#: How a test file says it is slow as a whole (a line of its own, after the imports, with an
#: optional comment saying why).
SLOW_FILE_LINE = "pytestmark = pytest.mark.slow"

#: At most this many processes run the fast subset (each test file stays on one of them).
FAST_WORKERS = 4

_LEFT_OUT = pytest.StashKey[int]()
_FILES_LEFT_OUT = pytest.StashKey[set]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="Run the complete suite, slow tests included (what .ci/run runs); without it, "
        "tests marked slow are left out unless their file is named on the command line.",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C works in the tests even when pytest was started with it ignored (a shell without
    job control ignores SIGINT in a command it starts in the background with ``&``; every
    process a test starts would inherit that, and the Ctrl-C tests would fail)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The fast subset of the whole suite runs on one process per core, up to FAST_WORKERS,
    each test file on one process (``--dist loadfile``). The complete suite (``--full``),
    named files, ``-n`` given, ``--pdb`` and ``--collect-only`` run as asked, and so does a
    machine with one core or without pytest-xdist."""
    option = config.option
    if (
        not config.pluginmanager.hasplugin("xdist")
        or hasattr(config, "workerinput")  # an xdist worker itself
        or option.numprocesses is not None
        or _runs_slow_tests(config)
        or config.getoption("usepdb", False)
        or option.collectonly
        or _arguments(config)[0]
        or (os.cpu_count() or 1) < 2
    ):
        return
    option.numprocesses, option.maxprocesses, option.dist = "auto", FAST_WORKERS, "loadfile"


def pytest_report_header(config: pytest.Config) -> str:
    if _runs_slow_tests(config):
        return "annbench: slow tests included"
    workers = getattr(config.option, "numprocesses", None)
    where = f", on {workers} processes (-n 0 runs in one)" if workers else ""
    return f"annbench: the fast subset{where}; tests marked slow are left out (--full: all)"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without --full, a file slow as a whole is not even imported (torch, database clients),
    unless it is named on the command line."""
    if not collection_path.name.startswith("test_") or collection_path.suffix != ".py":
        return None
    if _runs_slow_tests(config) or not _slow_file(collection_path):
        return None
    path = collection_path.resolve()
    named, folders = _arguments(config)
    if path in named or not any(folder in path.parents for folder in folders):
        return None  # asked for by name, or not asked for at all
    config.stash.setdefault(_FILES_LEFT_OUT, set()).add(collection_path.name)
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark SLOW_FILES slow, then leave slow tests out of a run without --full, except those
    of files named on the command line (``pytest tests/test_report.py`` runs all of it)."""
    for item in items:
        if any(fnmatch(item.path.name, pattern) for pattern in SLOW_FILES):
            item.add_marker(pytest.mark.slow)
    if _runs_slow_tests(config):
        return
    named, _ = _arguments(config)
    keep, slow = [], []
    for item in items:
        left_out = item.get_closest_marker("slow") and item.path.resolve() not in named
        (slow if left_out else keep).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = keep
    config.stash[_LEFT_OUT] = len(slow)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands what it left out to the controller, which prints the summary."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        stash = session.config.stash
        output["annbench_left_out"] = (
            stash.get(_LEFT_OUT, 0),
            sorted(stash.get(_FILES_LEFT_OUT, ())),
        )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """(xdist, controller) What a worker left out; every worker collects the same suite."""
    tests, files = getattr(node, "workeroutput", {}).get("annbench_left_out", (0, []))
    stash = node.config.stash
    stash[_LEFT_OUT] = max(stash.get(_LEFT_OUT, 0), tests)
    stash.setdefault(_FILES_LEFT_OUT, set()).update(files)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    tests, files = config.stash.get(_LEFT_OUT, 0), sorted(config.stash.get(_FILES_LEFT_OUT, ()))
    if tests or files:
        what = [f"{tests} slow tests"] if tests else []
        what += [f"{len(files)} files slow as a whole ({', '.join(files)})"] if files else []
        terminalreporter.write_line(
            f"annbench: left out {' and '.join(what)}; "
            "'python -m pytest --full' runs the complete suite, as .ci/run does"
        )


def _runs_slow_tests(config: pytest.Config) -> bool:
    """--full, or a -m expression that asks about slow tests (``-m slow``)."""
    return config.getoption("--full") or "slow" in (config.getoption("markexpr") or "")


def _slow_file(path: Path) -> bool:
    if any(fnmatch(path.name, pattern) for pattern in SLOW_FILES):
        return True
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False  # pytest will say what is wrong with it
    return any(line.partition("#")[0].strip() == SLOW_FILE_LINE for line in lines)


def _arguments(config: pytest.Config) -> tuple[set[Path], set[Path]]:
    """The files and the folders given on the command line (or by testpaths)."""
    files, folders = set(), set()
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path.is_file():
            files.add(path)
        elif path.is_dir():
            folders.add(path)
    return files, folders


@pytest.fixture(scope="module", autouse=True)
def no_server_outlives_its_module(request: pytest.FixtureRequest):
    """A database server a test file starts is stopped by the end of that file: a leak fails
    here, naming the file, instead of surfacing later as another test's stray child process."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and _is_server(p)
    ]
    for process in left:
        process.kill()
    assert not left, f"{request.node.name} left database servers running: {left}"


def _is_server(process) -> bool:
    import psutil

    try:
        return process.name().endswith("-server") or "annbench.backends.server" in " ".join(
            process.cmdline()
        )
    except psutil.Error:
        return False


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own data and results folders."""
    root = tmp_path_factory.mktemp("annbench")
    monkeypatch.setenv("ANNBENCH_DATA", str(root / "data"))
    monkeypatch.setenv("ANNBENCH_RESULTS", str(root / "results"))
    return root


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 x 32 clustered euclidean vectors, 100 held-out queries."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.hdf5"
    return create_synthetic(
        path, n=2000, nq=100, d=32, metric=Metric.EUCLIDEAN, n_clusters=16, seed=3
    )


@pytest.fixture(scope="session")
def tiny(tiny_path: Path):
    return read_dataset(tiny_path)


#: The grid of ``tiny_sweep``: two build configurations of hnswlib and of faiss-ivf, four search
#: settings each, and faiss-flat.
TINY_SWEEP_GRID = {
    "M": [8, 16],
    "ef_construction": [40],
    "ef": [10, 20, 40, 80],
    "nlist": [16, 32],
    "nprobe": [1, 2, 4, 16],
}


@pytest.fixture(scope="session")
def tiny_sweep(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A real sweep of ``tiny`` (hnswlib, faiss-ivf and faiss-flat over TINY_SWEEP_GRID, three
    repeats, no minimum timed total): its store folder and its DataFrame. Shared by the files
    that analyse stored results, which only read it (copy the frame before changing it)."""
    from annbench.results.store import ResultStore
    from annbench.sweep.runner import plan_sweep, run_sweep

    folder = tmp_path_factory.mktemp("tiny-sweep")
    jobs = plan_sweep(
        tiny,
        ["hnswlib", "faiss-ivf", "faiss-flat"],
        runs=3,
        min_seconds=0.0,
        overrides=TINY_SWEEP_GRID,
    )
    with ResultStore(folder) as store:
        run_sweep(jobs, store)
        frame = store.dataframe()
    return folder, frame


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def test_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the misbehaving plugin backends in tests/plugin, for this process and workers."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setenv("PYTHONPATH", str(PLUGIN_DIR))
    yield
    for name in ("annbench_test_backends", "annbench_test_backends_missing"):
        sys.modules.pop(name, None)
