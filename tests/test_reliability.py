"""A sweep survives crashes, aborts, hangs, memory blow-ups, kill -9, Ctrl-C and a second
writer, and loses nothing already stored. Real subprocesses and signals."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner
from conftest import PLUGIN_DIR

from annbench.cli import main
from annbench.results.store import ResultStore
from annbench.sweep.runner import plan_sweep, run_sweep

pytestmark = pytest.mark.slow  # sweeps killed and interrupted in subprocesses

SLOW = ["-b", "test-slow", "--mode", "batch", "--runs", "1", "-g", "level=3,4,5,6,7,8,9,10"]


def test_abort_and_memory_blowup_are_recorded_and_the_sweep_goes_on(tiny, tmp_path, test_backends):
    jobs = plan_sweep(
        tiny,
        ["test-abort", "test-memory", "faiss-flat"],
        runs=1,
        min_seconds=0,
        overrides={"level": [1]},
    )
    with ResultStore(tmp_path) as store:
        summary = run_sweep(jobs, store, memory_limit=600e6)
        records = {r.backend: r for r in store.records()}
    assert "SIGABRT" in records["test-abort"].error
    assert "exceeded the memory limit" in records["test-memory"].error
    assert records["faiss-flat"].status == "ok"
    assert len(summary.failed) == 2
    listing = CliRunner().invoke(main, ["results", "--failed", "--results", str(tmp_path)])
    assert "SIGABRT" in listing.output and "memory limit" in listing.output
    assert "faiss-flat" not in listing.output


def annbench(tiny_path, results, *args, **popen):
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR), "ANNBENCH_RESULTS": str(results)}
    return subprocess.Popen(
        [sys.executable, "-m", "annbench.cli", "run", "-d", str(tiny_path), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def stored(results) -> int:
    path = results / "annbench.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def wait_for(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_kill_9_mid_sweep_then_resume_loses_and_duplicates_nothing(tiny_path, tmp_path):
    process = annbench(tiny_path, tmp_path, *SLOW)
    wait_for(lambda: stored(tmp_path) >= 2)
    workers = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait()
    wait_gone(workers)  # an orphaned worker dies at its next write to the closed pipe
    before = stored(tmp_path)
    assert 2 <= before < 8
    with sqlite3.connect(tmp_path / "annbench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = annbench(tiny_path, tmp_path, *SLOW)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert f"Stored {8 - before} results ({before} already stored, 0 failed)" in out
    with ResultStore(tmp_path) as store:
        levels = sorted(r.search_params["level"] for r in store.records())
    assert levels == [3, 4, 5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_says_what_is_stored_and_exits_non_zero(
    tiny_path, tmp_path, signum
):
    process = annbench(tiny_path, tmp_path, *SLOW)
    wait_for(lambda: stored(tmp_path) >= 1)
    children = psutil.Process(process.pid).children(recursive=True)
    workers = [child for child in children if "resource_tracker" not in command(child)]
    assert workers
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    count = stored(tmp_path)
    assert 1 <= count < 8
    assert f"Interrupted: {count} new results stored in" in err
    assert "Traceback" not in err
    assert not [worker for worker in workers if alive(worker)]  # killed before the parent exits
    wait_gone(children)  # multiprocessing's resource tracker ends once the parent is gone


def wait_gone(processes: list[psutil.Process], seconds: float = 30) -> None:
    for process in processes:
        try:
            process.wait(timeout=seconds)
        except psutil.NoSuchProcess:
            pass


def command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return ""


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_two_sweeps_into_one_store_at_once(tiny_path, tmp_path):
    first = annbench(
        tiny_path, tmp_path, "-b", "hnswlib", "--runs", "1", "-g", "M=8,16", "-g", "ef=10,20,40,80"
    )
    second = annbench(
        tiny_path,
        tmp_path,
        "-b",
        "faiss-ivf",
        "--runs",
        "1",
        "-g",
        "nlist=8,16",
        "-g",
        "nprobe=1,2,4,8",
    )
    for process in (first, second):
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    with ResultStore(tmp_path) as store:
        records = store.records()
    assert len(records) == 16 and len({r.key for r in records}) == 16
    assert all(r.status == "ok" for r in records)
    with sqlite3.connect(tmp_path / "annbench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def spawned_workers(process: subprocess.Popen, seconds: float = 60) -> list[psutil.Process]:
    """The measuring workers (spawned) of an annbench process, once one is running."""
    found: list[psutil.Process] = []

    def started() -> bool:
        found[:] = [
            child
            for child in psutil.Process(process.pid).children()
            if "spawn_main" in command(child)
        ]
        return bool(found)

    wait_for(started, seconds)
    return found


def test_worker_exits_at_once_when_its_parent_is_killed(tiny_path, tmp_path):
    # test-hang's search sleeps an hour: without a parent, only the death signal ends it
    process = annbench(tiny_path, tmp_path, "-b", "test-hang", "--runs", "1", "-g", "level=2")
    workers = spawned_workers(process)
    time.sleep(1.5)  # well into the hanging search
    process.send_signal(signal.SIGKILL)
    process.wait()
    start = time.monotonic()
    wait_gone(workers, seconds=10)
    assert not [w for w in workers if alive(w)]
    assert time.monotonic() - start < 10
    err = process.stderr.read()  # the worker shares the pipe: it printed no traceback
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_watchdog_ends_an_orphan_where_no_death_signal_exists(tmp_path):
    """The portable fallback: a thread polling getppid() (prctl disabled here)."""
    marker = tmp_path / "pid"
    code = (
        "import os, time; from annbench.sweep.runner import exit_with_parent; "
        "exit_with_parent(os.getppid(), death_signal=False); "
        f"open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    shell = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -c "{code}" & sleep 30'], stdout=subprocess.DEVNULL
    )
    wait_for(lambda: marker.exists() and marker.read_text() != "", 60)
    orphan = psutil.Process(int(marker.read_text()))
    shell.kill()
    shell.wait()
    orphan.wait(timeout=10)  # raises TimeoutExpired if the orphan lives on


@pytest.mark.parametrize("delay", [0.0, 0.2, 0.5, 1.0])
def test_ctrl_c_shortly_after_a_worker_starts_always_stops_the_sweep(tiny_path, tmp_path, delay):
    process = annbench(tiny_path, tmp_path, *SLOW, start_new_session=True)
    workers = spawned_workers(process)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal does: the whole process group
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    wait_gone(workers, seconds=10)
    assert not [w for w in workers if alive(w)]
