"""The server lifecycle every server backend uses: real processes, real ports, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from annbench.backends import server as server_module
from annbench.backends.server import Server, ServerError, free_port, remove_stale_folders


def http_server(port: int, folder: Path) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
            "--directory", str(folder)]  # fmt: skip


def answers(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
        return reply.status == 200


def gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def listening_addresses(pid: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


def test_a_server_starts_healthy_on_loopback_and_stops_without_a_trace():
    server = Server("test-http", http_server, answers).start()
    pid, folder = server.process.pid, server.folder
    assert server.running and folder.is_dir()
    assert answers(server.port)
    assert listening_addresses(pid) == {"127.0.0.1"}
    server.stop()
    assert gone(pid) and not folder.exists()
    server.stop()  # twice is harmless


def test_a_taken_port_is_tried_again_on_another(monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1], free_port()])
    monkeypatch.setattr(server_module, "free_port", lambda: next(ports))
    try:
        with Server("test-http", http_server, answers) as server:
            assert server.port != taken.getsockname()[1] and answers(server.port)
    finally:
        taken.close()


def test_a_server_that_exits_is_one_line_with_its_log_and_leaves_nothing():
    def failing(port: int, folder: Path) -> list[str]:
        return [sys.executable, "-c", "import sys; print('no such table: vectors'); sys.exit(3)"]

    before = set(Path(tempfile.gettempdir()).glob("annbench-test-fail-*"))
    with pytest.raises(ServerError) as excinfo:
        Server("test-fail", failing, answers).start()
    message = str(excinfo.value)
    assert "\n" not in message
    assert "exited with code 3" in message and "no such table: vectors" in message
    assert set(Path(tempfile.gettempdir()).glob("annbench-test-fail-*")) == before


def test_a_server_never_healthy_times_out_and_is_stopped():
    started: list[int] = []

    def sleeper(port: int, folder: Path) -> list[str]:
        return [sys.executable, "-c", "print('loading'); import time; time.sleep(600)"]

    server = Server("test-slow", sleeper, lambda port: False, startup_timeout=1.0)
    with pytest.raises(ServerError, match="not healthy within 1 s: loading"):
        try:
            server.start()
        finally:
            started.append(server.process.pid if server.process else -1)
    assert server.process is None and server.folder is not None and not server.folder.exists()


def test_a_server_that_dies_mid_run_says_so_with_its_log():
    with Server("test-http", http_server, answers) as server:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=20)  # reaped, so the object knows its exit code
        problem = server.problem()
    assert problem is not None and "test-http server died (exit code -9)" in problem, problem


def test_stale_folders_of_dead_owners_are_removed_and_live_ones_kept():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix="annbench-test-stale-"))
    (stale / "annbench-owner.pid").write_text(str(dead.pid))
    live = Path(tempfile.mkdtemp(prefix="annbench-test-stale-"))
    (live / "annbench-owner.pid").write_text(str(os.getpid()))
    try:
        removed = remove_stale_folders("test-stale")
        assert stale in removed and not stale.exists()
        assert live.exists()
    finally:
        import shutil

        shutil.rmtree(live, ignore_errors=True)


OWNER = """
import sys, time
from pathlib import Path
from annbench.backends.server import Server
sys.path.insert(0, {tests!r})
from test_server import answers, http_server
server = Server("test-owner", http_server, answers).start()
print(server.process.pid, server.folder, flush=True)
time.sleep(600)
"""


def test_a_killed_owner_leaves_no_server_and_no_folder(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(OWNER.format(tests=str(Path(__file__).parent))))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pid, folder = owner.stdout.readline().split()
    assert Path(folder).is_dir() and answers_pid(int(pid))
    owner.kill()  # SIGKILL: no finally, no atexit
    owner.wait()
    assert gone(int(pid))
    deadline = time.monotonic() + 20
    while Path(folder).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(folder).exists()


def answers_pid(pid: int) -> bool:
    return psutil.pid_exists(pid)
