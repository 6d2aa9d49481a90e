"""The default test run (tests/conftest.py): plain ``pytest`` runs the fast subset on several
processes and says what it left out; named files and ``--full`` run whole, in one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each case starts pytest itself, and xdist's workers

CONFTEST = Path(__file__).with_name("conftest.py")

FAST = """
def test_one():
    assert True

def test_two():
    assert True
"""

SLOW = """
import pytest

@pytest.mark.slow
def test_slow():
    assert True

def test_quick():
    assert True
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A copy of annbench's conftest beside a fast file and a file with one slow test."""
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(CONFTEST, tests / "conftest.py")
    (tests / "test_fast.py").write_text(FAST)
    (tests / "test_slow.py").write_text(SLOW)
    (tmp_path / "setup.cfg").write_text(
        "[tool:pytest]\ntestpaths = tests\nmarkers =\n    slow: slow\n"
    )
    return tmp_path


def _pytest(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_whole_suite_runs_its_fast_subset_on_several_processes(suite: Path):
    output = _pytest(suite)
    assert "3 passed" in output
    assert "left out 1 slow tests" in output and "--full" in output
    if (os.cpu_count() or 1) >= 2:
        assert "created: 2/2 workers" in output or "workers [3 items]" in output
        assert "annbench: the fast subset, on" in output
    else:
        assert "workers" not in output


def test_named_files_and_the_full_suite_run_in_one_process(suite: Path):
    named = _pytest(suite, "tests/test_slow.py")
    assert "2 passed" in named and "workers" not in named  # slow tests of a named file run
    full = _pytest(suite, "--full")
    assert "4 passed" in full and "workers" not in full and "left out" not in full
    serial = _pytest(suite, "-n", "0")
    assert "3 passed" in serial and "workers" not in serial and "left out 1 slow" in serial
