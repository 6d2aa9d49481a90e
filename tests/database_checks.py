"""Checks every database backend shares, for the tests/test_db_*.py files: one rate-mode sweep
through the pipeline, the missing-library message, private folders removed on close and after
a killed owner, saved indexes loaded by several processes at once and written only through
private copies, and no network; with the small helpers they need (recall against the exact
top k, owned folders, a built index for a module fixture)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from annbench import api
from annbench.backends.server import OWNER_FILE
from annbench.errors import BackendUnavailable
from annbench.index import Index
from annbench.registry import load_backend

#: the fields a load-phase build times, each > 0
PHASES = ("insert_s", "index_build_s", "ready_s")


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth (nq, k)`` found in the same row of ``ids``."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth, strict=True)]))


def owned_folders(name: str, pids: set[int]) -> list[Path]:
    """Temporary folders ``annbench-<name>-*`` (server.owned_folder) owned by one of ``pids``."""
    found = []
    for folder in Path(tempfile.gettempdir()).glob(f"annbench-{name}-*"):
        owner = folder / OWNER_FILE
        if owner.is_file() and int(owner.read_text() or -1) in pids:
            found.append(folder)
    return found


def dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def built_index(index: Index, xb: np.ndarray) -> Iterator[Index]:
    """For a module fixture (``yield from``): ``index`` built on ``xb``, closed afterwards."""
    try:
        index.build(xb)
        yield index
    finally:
        index.close()


def check_pipeline(
    backend: str,
    dataset: Path,
    results: Path,
    *,
    executor: str,
    rows: int | None,
    grid: Mapping[str, Any] | None = None,
    filters: str | None = None,
    min_recall: float | None = None,
    best_recall: float | None = None,
) -> pd.DataFrame:
    """One rate-mode sweep of ``grid`` through ``annbench.api.run`` at 100 queries/s: ``rows``
    records (None: any number but none), all ok and answered (qps > 0); the load phases
    timed apart (``PHASES`` > 0, within ``build_s``); the saved index sized and loaded cold
    in a fresh process (``index_bytes``, ``serving_memory_bytes``, ``load_s`` > 0); load
    clients run by ``executor`` ("thread" or "process"); every recall above ``min_recall``,
    the best at least ``best_recall``. Returns the records for the backend's own checks."""
    frame = api.run(
        backend,
        dataset=dataset,
        grid=grid,
        runs=1,
        results=results,
        progress=False,
        filters=filters,
        mode="rate",
        rates=[100],
        load=api.LoadOptions(seconds=0.3, warmup=0.1),
    )
    assert len(frame) > 0 and (rows is None or len(frame) == rows), len(frame)
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    check_phases(frame)
    for field in ("load_s", "qps"):
        assert (frame[field] > 0).all(), field
    provenance = [p if isinstance(p, dict) else json.loads(p) for p in frame["provenance"]]
    assert {p["load_executor"] for p in provenance} == {executor}
    if min_recall is not None:
        assert (frame["recall"] > min_recall).all(), frame["recall"].tolist()
    if best_recall is not None:
        assert frame["recall"].max() >= best_recall, frame["recall"].tolist()
    return frame


def check_phases(frame: pd.DataFrame) -> None:
    """Records of a sweep time the load phases apart and measure the saved index."""
    for field in (*PHASES, "index_bytes", "serving_memory_bytes"):
        assert frame[field].notna().all() and (frame[field] > 0).all(), field
    assert (frame["build_s"] >= frame["insert_s"] + frame["index_build_s"]).all()
    assert (frame["inserts_per_s"] * frame["insert_s"]).round().nunique() == 1  # rows / time


def check_missing_library(backend: str, module: str, extra: str) -> None:
    """With ``module`` not importable, ``load_backend(backend)`` names the package and the
    extra that installs it, in one line; once it is back, the backend loads as before."""
    cls = load_backend(backend)
    with pytest.MonkeyPatch.context() as patch:
        patch.delitem(sys.modules, cls.__module__)
        for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
            patch.setitem(sys.modules, name, None)  # importing it now fails
        patch.setitem(sys.modules, module, None)
        with pytest.raises(BackendUnavailable) as caught:
            load_backend(backend)
    package = module.replace("_", "-")
    assert str(caught.value) == (
        f'Install {package} to use the {backend} backend (pip install "annbench[{extra}]")'
    )
    assert load_backend(backend) is cls


def check_private_folders(
    make: Callable[[], Index],
    xb: np.ndarray,
    name: str,
    folder_of: Callable[[Index], Path],
    database_file: str,
) -> None:
    """An index built by ``make`` keeps its database (``database_file``) in a private folder
    ``annbench-<name>-*`` that close() removes (twice is fine); a folder whose owner was
    killed goes with the next build."""
    index = make()
    index.build(xb)
    folder = folder_of(index)
    assert (folder / database_file).is_file()
    index.close()
    index.close()
    assert not folder.exists()
    stale = Path(tempfile.mkdtemp(prefix=f"annbench-{name}-"))
    (stale / OWNER_FILE).write_text(str(dead_pid()))
    other = make()
    try:
        other.build(xb)
        assert not stale.exists()
    finally:
        other.close()
        shutil.rmtree(stale, ignore_errors=True)


def check_private_copy(
    loaded: Index, saved: Path, before: bytes, xq: np.ndarray, expected: np.ndarray
) -> None:
    """Writes to ``loaded``, an index loaded from the file ``saved`` (which held ``before``),
    go to a private copy (``loaded._path``) that close() removes, twice is fine: rows
    removed (each query's first in ``expected (nq, k)``) never return, rows added (the
    queries ``xq`` themselves) are found first, and ``saved`` stays as it was."""
    prepared = loaded.prepare_queries(xq)
    gone = np.unique(expected[:, 0])
    loaded.remove(gone)
    assert not np.isin(loaded.search(prepared, expected.shape[1]).ids, gone).any()
    new = np.arange(10_000, 10_000 + len(xq))
    loaded.add(xq, new)
    assert (loaded.search(prepared, 1).ids[:, 0] == new).all()
    private = loaded._path
    assert private.parent != saved.parent and private.is_file()
    loaded.close()
    loaded.close()
    assert not private.parent.exists() and saved.read_bytes() == before


def answers_of_processes(
    script: str, *args: object, count: int = 2, timeout: float = 120
) -> dict[int, Any]:
    """Run the Python ``script`` with ``args`` in ``count`` processes at once; process id ->
    the JSON each printed last (each must exit 0)."""
    loaders = [
        subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    answers = {}
    for loader in loaders:
        out, err = loader.communicate(timeout=timeout)
        assert loader.returncode == 0, err[-2000:]
        answers[loader.pid] = json.loads(out.splitlines()[-1])
    return answers


def check_offline(script: str, tmp_path: Path) -> str:
    """Run the Python ``script`` under strace with ``HOME`` in ``tmp_path / "home"``: it exits
    0, and no socket of any thread or child connects beyond the machine (every connect()
    traced; an AF_UNIX probe after the script shows that the trace sees them). Returns its
    output; skips where strace is missing or may not trace."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    if subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True).returncode:
        pytest.skip("strace may not trace here")
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        ["strace", "-f", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
         sys.executable, "-c", script + _PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]
    calls = trace.read_text().splitlines()
    assert any("annbench-probe" in call for call in calls)
    network = [call for call in calls if "AF_INET" in call]  # AF_INET6 too
    assert not network, network[:5]
    return done.stdout


_PROBE = """
import socket as _socket

_probe = _socket.socket(_socket.AF_UNIX)
try:
    _probe.connect("/nonexistent/annbench-probe")
except OSError:
    pass
print("done")
"""
