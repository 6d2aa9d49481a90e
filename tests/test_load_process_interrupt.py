"""Ctrl-C during a load run served by client processes: one line of output, no client left.

A terminal sends SIGINT to the whole process group: the CLI, its sweep worker and the load
clients the worker starts. The CLI stops the worker at once, so whatever a client is doing then
(still starting, loading, running) it must end without a traceback, and nothing it shared with
the worker may be left for multiprocessing's resource tracker to report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from annbench.data.synthetic import create_synthetic
from annbench.metrics import Metric

#: seconds after the first load client appears: while clients start, load and run
DELAYS = (0.0, 0.05, 0.3, 1.0)
#: environment variable naming every process of one run, so a straggler can be found
MARK = "ANNBENCH_TEST_INTERRUPT_MARK"


@pytest.fixture(scope="module")
def queries_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 x 96 vectors with 400 queries: over 64 KB of queries, a pipe's capacity."""
    path = tmp_path_factory.mktemp("interrupt") / "wide.hdf5"
    return create_synthetic(
        path, n=1500, nq=400, d=96, metric=Metric.EUCLIDEAN, n_clusters=12, seed=11
    )


@pytest.mark.slow
@pytest.mark.parametrize("delay", DELAYS)
def test_ctrl_c_while_load_clients_start_or_run_prints_one_line(queries_path, tmp_path, delay):
    pytest.importorskip("voyager")  # holds the GIL: its load clients are spawned processes
    mark = uuid.uuid4().hex
    env = {**os.environ, "ANNBENCH_RESULTS": str(tmp_path), MARK: mark}
    grid = ["-g", "M=8", "-g", "ef_construction=40", "-g", "ef=8,16,32,64"]
    process = subprocess.Popen(
        [sys.executable, "-m", "annbench.cli", "run", "-d", str(queries_path), "-b", "voyager"]
        + [*grid, "--mode", "concurrent", "--clients", "2", "--load-seconds", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_a_load_client(process, deadline=time.monotonic() + 240)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal does: the whole process group
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert "leaked" not in err, err
    assert err.strip().splitlines()[-1].startswith("Interrupted: "), err
    assert _stragglers(mark, wait=20) == []


def _wait_for_a_load_client(process: subprocess.Popen, deadline: float) -> None:
    """Return once the sweep worker has started a spawned process: a load client."""
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            family = psutil.Process(process.pid).children(recursive=True)
            if any(p.ppid() != process.pid and "spawn_main" in _cmdline(p) for p in family):
                return
        except psutil.Error:
            pass
        time.sleep(0.005)
    pytest.fail("no load client process started in time")


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _stragglers(mark: str, wait: float) -> list[psutil.Process]:
    """Processes of the run marked ``mark`` still alive after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for candidate in psutil.process_iter():
            try:
                if (
                    candidate.environ().get(MARK) == mark
                    and candidate.status() != psutil.STATUS_ZOMBIE
                ):
                    alive.append(candidate)
            except psutil.Error:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)
