"""A database server that annbench owns, for the backends whose ``kind`` is ``"server"``.

``Server(name, command, healthy).start()`` runs ``command(port, folder)`` listening on
127.0.0.1 on a free port, with a fresh temporary data folder (or a given one), and returns once
``healthy(port)`` says the server answers. It is stopped, its whole process group, and its
temporary folder removed, on every exit path:

* ``stop()`` (also at interpreter exit, and when the object is garbage collected);
* the process that started it dying, even by SIGKILL (a worker killed for a timeout, a
  memory limit or Ctrl-C): the server gets SIGKILL through the kernel's parent-death signal
  (Linux), and a small watchdog process, started beside it, removes the folder;
* a start that fails: the server exits, never turns healthy within ``startup_timeout``, or
  cannot bind its port (tried again on another port, up to ``PORT_TRIES`` times). The
  error is one line with the tail of the server's log.

Folders a killed run left behind (their owner process gone) are removed at the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import psutil

from annbench.errors import AnnbenchError

log = logging.getLogger(__name__)

#: ports a start tries (a free port can be taken by another process before the server binds)
PORT_TRIES = 3
#: lines of the server's log an error quotes
LOG_TAIL_LINES = 5
#: seconds a server has to stop after SIGTERM before it gets SIGKILL
STOP_GRACE_S = 10.0
#: the file in an owned temporary folder naming the process that owns it
OWNER_FILE = "annbench-owner.pid"
_PR_SET_PDEATHSIG = 1


class ServerError(AnnbenchError):
    """A server that would not start, or died: one line, with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts_connections(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``: the simplest health
    check, for servers with no better one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class Server:
    """One server process and its data folder (see the module documentation)."""

    def __init__(
        self,
        name: str,
        command: Callable[[int, Path], list[str]],
        healthy: Callable[[int], bool],
        *,
        startup_timeout: float = 60.0,
        env: dict[str, str] | None = None,
        data_folder: Path | None = None,
    ) -> None:
        self.name = name
        self.command, self.healthy = command, healthy
        self.startup_timeout = startup_timeout
        self.env = env
        self.given_folder = data_folder
        self.port: int | None = None
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self._log: Path | None = None
        self._finalizer: weakref.finalize | None = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> Server:
        """Start the server and wait until it is healthy; ServerError (one line, the log's
        tail) when it cannot. Nothing is left behind by a failed start."""
        remove_stale_folders(self.name)
        self.folder = owned_folder(self.name) if self.given_folder is None else None
        data = self.folder if self.folder is not None else Path(str(self.given_folder))
        logs = self.folder or Path(tempfile.mkdtemp(prefix=f"annbench-{self.name}-log-"))
        self._log = logs / "server.log"
        self._finalizer = weakref.finalize(self, _cleanup, None, None, self.folder, self._log)
        try:
            for attempt in range(1, PORT_TRIES + 1):
                self.port = free_port()
                self._launch(data)
                problem = self._wait_healthy()
                if problem is None:
                    log.info("%s server on 127.0.0.1:%d (pid %d)", self.name, self.port,
                             self.process.pid)  # fmt: skip
                    return self
                self._kill()
                if attempt == PORT_TRIES or "in use" not in problem.lower():
                    raise ServerError(problem)
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def _launch(self, data: Path) -> None:
        assert self._log is not None and self.port is not None
        argv = self.command(self.port, data)
        with self._log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=data,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # its own process group: stopped whole, spared Ctrl-C
                preexec_fn=_die_with_parent,
            )
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "annbench.backends.server", str(os.getpid()),
             str(self.process.pid), str(self.folder or ""), str(self._log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        assert self._finalizer is not None
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, _cleanup, self.process, self._watchdog, self.folder, self._log
        )

    def _wait_healthy(self) -> str | None:
        """None once healthy; else why not (the process exited, or the time ran out)."""
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                return (
                    f"{self.name} server exited with code {code} while starting: {self.log_tail()}"
                )
            with contextlib.suppress(Exception):  # a server half up may answer anything
                if self.healthy(self.port):
                    return None
            if time.monotonic() > deadline:
                return (
                    f"{self.name} server was not healthy within {self.startup_timeout:g} s: "
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server's processes (for its resident memory)."""
        return [self.process.pid] if self.running and self.process is not None else []

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log, on one line."""
        if self._log is None or not self._log.exists():
            return "(no log)"
        text = self._log.read_bytes()[-8192:].decode("utf-8", "replace")
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(empty log)"

    def problem(self) -> str | None:
        """Why the server cannot serve (it died, with the log's tail); None while it runs."""
        if self.process is None or self.running:
            return None
        return f"{self.name} server died (exit code {self.process.returncode}): {self.log_tail()}"

    def stop(self) -> None:
        """Stop the server's process group and remove its temporary folder; safe to call
        again."""
        if self._finalizer is not None:
            self._finalizer()
        self.process = self._watchdog = None

    def _kill(self) -> None:
        """Stop the process of a failed start, keep the folder for the next try."""
        if self.process is not None:
            _stop_group(self.process)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()


def _die_with_parent() -> None:
    """In the server process before exec: SIGKILL when the process that started it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group of ``process``, SIGKILL it after ``STOP_GRACE_S``."""
    if process.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # stragglers of a dead leader
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _cleanup(
    process: subprocess.Popen | None,
    watchdog: subprocess.Popen | None,
    folder: Path | None,
    log_file: Path | None,
) -> None:
    if process is not None:
        _stop_group(process)
    if watchdog is not None:
        with contextlib.suppress(OSError):
            watchdog.kill()
            watchdog.wait(5)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    elif log_file is not None:  # a given data folder is kept; the log's own folder is ours
        shutil.rmtree(log_file.parent, ignore_errors=True)


def owned_folder(name: str) -> Path:
    """A new temporary folder ``annbench-<name>-*`` marked with this process as its owner,
    after removing those of ``name`` whose owner is gone (a killed run's); the caller removes
    it when done. For embedded databases' private copies as well as servers' data."""
    remove_stale_folders(name)
    folder = Path(tempfile.mkdtemp(prefix=f"annbench-{name}-"))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    return folder


def wait_until(
    ready: Callable[[], bool],
    timeout_s: float,
    describe: Callable[[], str],
    *,
    progress: Callable[[], object] | None = None,
    poll_s: float = 0.05,
) -> None:
    """Call ``ready`` every ``poll_s`` seconds until it says True (a database's own word that
    its index is built or loaded); AnnbenchError with the one line ``describe()`` once
    ``timeout_s`` seconds pass without it. Given ``progress`` (what the last poll saw), the
    seconds count from its last change: a stall, not a deadline. ``ready`` may raise to stop
    at once (a dead server, rows that failed to index)."""
    last, since = None, time.monotonic()
    while True:
        if ready():
            return
        if progress is not None and (seen := progress()) != last:
            last, since = seen, time.monotonic()
        elif time.monotonic() - since > timeout_s:
            raise AnnbenchError(describe())
        time.sleep(poll_s)


def remove_stale_folders(name: str) -> list[Path]:
    """Remove the temporary folders of ``name`` (``"*"``: every name) whose owner process is
    gone (a run killed before it could clean up); the removed folders."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"annbench-{name}-*"):
        owner = folder / OWNER_FILE
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            continue
        if not psutil.pid_exists(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _watch(owner: int, server: int, folder: str, log_file: str) -> None:
    """The watchdog: once ``owner`` is gone, stop the ``server`` group and remove ``folder``;
    once the server is gone by itself, end."""
    while True:
        if not psutil.pid_exists(owner) or _zombie(owner):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while psutil.pid_exists(server) and not _zombie(server):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(server, signal.SIGKILL)
                    break
                time.sleep(0.1)
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                shutil.rmtree(Path(log_file).parent, ignore_errors=True)
            return
        if not psutil.pid_exists(server) or _zombie(server):  # stopped: the owner cleans up
            return
        time.sleep(0.5)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


if __name__ == "__main__":
    _watch(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
