"""Load clients in processes, each serving a saved index file: for libraries that hold the GIL.

Threads in one interpreter only search in parallel when the library releases the GIL. For
the others each client is a process of its own (``multiprocessing`` spawn) that loads the
saved index with the backend's ``load``, so any registered backend, plugins included, is
served without code of its own. ``annbench.sweep.load`` drives these processes; its callers
pass a ``SavedIndex`` where they would pass a search function.

Every timestamp is ``time.monotonic_ns`` (CLOCK_MONOTONIC on Linux: one clock for every
process of the machine), so the parent's start time and the schedule mean the same instant in
each client.

The parent and its clients share only pipes and one flag in shared memory, never a
``multiprocessing`` lock, queue or event: those are named semaphores, which a parent killed by
Ctrl-C (the sweep kills its worker at once) leaves for the resource tracker to report. What a
client runs (index, queries, plan) goes through its pipe once it has started, not in the spawn
payload, so a parent killed while a client starts cannot leave it unpickling a truncated
payload, with a traceback.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection, resource_tracker
from pathlib import Path
from typing import Any

import numpy as np

from annbench.errors import AnnbenchError, one_line_error

log = logging.getLogger(__name__)

#: queries each client process runs after loading, before it says it is ready
WARMUP_QUERIES = 8
#: the start instant is set this far ahead, so every client is waiting for it
START_AHEAD_NS = 50_000_000
#: longest a client sleeps before it looks at the stop flag again
_NAP_S = 0.05
_PR_SET_TIMERSLACK = 29  # prctl option, linux/prctl.h


@dataclass(frozen=True)
class SavedIndex:
    """An index saved by ``Index.save`` and how to serve it: what a client process loads.

    ``queries (nq, d)`` are raw query vectors (each client prepares them with the backend's
    ``prepare_queries``); a client runs query ``i`` as ``search_one(queries[i], k)`` under
    ``search_params`` with ``threads`` library threads. With a filter ``workload`` of the
    dataset at ``dataset_path`` (``filtering``: its strategy and overfetch), query ``i`` is
    searched under its own filter, as ``annbench.sweep.filtering.FilteredSearch.one`` does.
    """

    backend: str
    metric: str
    build_params: dict[str, Any]
    search_params: dict[str, Any]
    path: Path
    queries: np.ndarray
    k: int = 10
    threads: int = 1
    dataset_path: str | None = None
    workload: str | None = None
    filtering: dict[str, Any] | None = None

    @property
    def nq(self) -> int:
        """Number of queries."""
        return len(self.queries)


@dataclass
class Rows:
    """Raw timings of one client or worker, ``time.*_ns`` clock; one entry per query run.

    ``sent_ns`` is the intended send time (open loop) or the actual one (closed loop);
    ``lag_ns`` how late the generator started a query it could have started on time (open
    loop); ``unfinished_ns`` lower bounds of the latencies of scheduled queries abandoned at
    the drain limit.
    """

    queries: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)
    end_ns: list[int] = field(default_factory=list)
    lag_ns: list[int] = field(default_factory=list)
    unfinished_ns: list[int] = field(default_factory=list)
    ids: list[np.ndarray] | None = None


def open_saved(spec: SavedIndex) -> tuple[Callable[[int], Any], int, Callable[[], None]]:
    """Load ``spec``'s index as its backend does and return ``(search(i), nq, close)``;
    ``close()`` releases what the index holds (a database's private copy or server)."""
    from annbench.metrics import Metric
    from annbench.registry import load_backend

    index = load_backend(spec.backend)(Metric.parse(spec.metric), **spec.build_params)
    index.load(Path(spec.path))
    index.set_search_params(**spec.search_params)
    index.set_num_threads(spec.threads)
    if spec.workload is not None:
        return (*_open_filtered(spec, index), index.close)
    xq, k = index.prepare_queries(spec.queries), spec.k

    def search(i: int) -> Any:
        return index.search_one(xq[i], k)

    return search, len(xq), index.close


def _open_filtered(spec: SavedIndex, index: Any) -> tuple[Callable[[int], Any], int]:
    from annbench.data.format import read_dataset
    from annbench.data.workloads import load_workload
    from annbench.sweep.filtering import FilteredSearch

    dataset = read_dataset(Path(str(spec.dataset_path)), probe=False)
    workload = load_workload(dataset, str(spec.workload))
    searcher = FilteredSearch(
        index, workload, dataset.train, dataset.metric, spec.k, **(spec.filtering or {})
    )
    xq = searcher.prepare_queries(spec.queries)

    def search(i: int) -> Any:
        return searcher.one(i, xq[i])

    return search, len(xq)


def precise_sleep() -> None:
    """Let this thread's sleeps end on time (Linux): a timer slack of 1 ns instead of the
    default 50 us, which would add up to that much to every paced query's latency."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: sleeps keep the default slack
        return


def run_closed(
    search: Callable[[int], Any],
    order: Callable[[], int],
    begin: int,
    end: int,
    stop: Callable[[], bool],
    keep_ids: bool,
    now: Callable[[], int],
) -> Rows:
    """One closed-loop client: query ``order()`` back to back until ``end``; rows for the
    queries sent at or after ``begin`` (before it: warm-up)."""
    rows = Rows(ids=[] if keep_ids else None)
    while not stop():
        sent = now()
        if sent >= end:
            break
        i = order()
        found = search(i)
        done = now()
        if sent >= begin:
            rows.queries.append(i)
            rows.sent_ns.append(sent)
            rows.end_ns.append(done)
            if rows.ids is not None:
                rows.ids.append(np.asarray(found))
    rows.start_ns = rows.sent_ns
    return rows


def run_arrivals(
    search: Callable[[int], Any],
    arrivals: Sequence[tuple[int, int]],
    begin: int,
    give_up: int,
    stop: Callable[[], bool],
    keep_ids: bool,
) -> Rows:
    """One open-loop process client: serve ``arrivals`` ``(query, due_ns)`` in order, each at
    its due time or as soon as the previous one is done; rows for those due at or after
    ``begin``. Past ``give_up`` the rest are abandoned (their latency lower bounds kept)."""
    now = time.monotonic_ns
    rows = Rows(ids=[] if keep_ids else None)
    previous_end = 0
    for n, (i, due) in enumerate(arrivals):
        if stop():
            break
        current = now()
        if current > give_up:
            rows.unfinished_ns.extend(current - d for _, d in arrivals[n:] if d >= begin)
            break
        while due > current:
            time.sleep(min((due - current) / 1e9, _NAP_S))
            if stop():
                return rows
            current = now()
        found = search(i)
        done = now()
        if due >= begin:
            rows.queries.append(i)
            rows.sent_ns.append(due)
            rows.start_ns.append(current)
            rows.end_ns.append(done)
            rows.lag_ns.append(max(0, current - max(due, previous_end)))
            if rows.ids is not None:
                rows.ids.append(np.asarray(found))
        previous_end = done
    return rows


def _client(slot: int, control: Any, report: Any, stop: Any, parent: int) -> None:
    """A client process: receive ``(spec, plan, keep_ids)`` on ``control``, load, report ready
    on ``report``, wait for the start instant, run ``plan`` until done or ``stop`` is set."""
    from annbench.sweep.runner import exit_with_parent

    exit_with_parent(parent)  # a killed load run leaves no client behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, after Ctrl-C too
    if hasattr(signal, "pthread_sigmask"):  # started with SIGINT blocked (_start): undo it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    precise_sleep()
    try:
        spec, plan, keep_ids = control.recv()
    except (EOFError, OSError):  # the parent stopped the run before it sent the work
        return
    close: Callable[[], None] = lambda: None  # noqa: E731 - replaced once the index loads
    try:
        search, nq, close = open_saved(spec)
        for i in range(min(nq, WARMUP_QUERIES)):
            search(i)
    except BaseException as exc:  # anything a backend raises is reported, not a traceback
        _send(report, one_line_error(exc))
        close()
        return
    try:
        _run_plan(search, nq, slot, plan, keep_ids, control, report, stop)
    finally:
        close()  # a database's private copy of the index goes with the client


def _run_plan(
    search: Callable[[int], Any],
    nq: int,
    slot: int,
    plan: tuple[Any, ...],
    keep_ids: bool,
    control: Any,
    report: Any,
    stop: Any,
) -> None:
    """A loaded client: report ready, wait for the start instant, run ``plan``."""
    if not _send(report, None):
        return
    try:
        t0 = control.recv()  # the start instant, sent to every client at once
    except (EOFError, OSError):  # stopped before the start
        return
    if stop.value:
        return
    while (wait := t0 - time.monotonic_ns()) > 0:
        time.sleep(wait / 1e9)

    def stopped() -> bool:
        return bool(stop.value)

    try:
        if plan[0] == "closed":
            _, warmup_ns, seconds_ns, clients = plan
            sequence = iter(range(slot, 2**62, clients))
            rows = run_closed(
                search,
                lambda: next(sequence) % nq,
                t0 + warmup_ns,
                t0 + warmup_ns + seconds_ns,
                stopped,
                keep_ids,
                time.monotonic_ns,
            )
        else:
            _, warmup_ns, give_up_ns, queries, offsets = plan
            arrivals = [(int(i), t0 + int(o)) for i, o in zip(queries, offsets, strict=True)]
            rows = run_arrivals(
                search, arrivals, t0 + warmup_ns, t0 + give_up_ns, stopped, keep_ids
            )
    except BaseException as exc:
        _send(report, one_line_error(exc))
        return
    _send(report, rows)


def _send(pipe: Any, message: Any) -> bool:
    """Send ``message`` on ``pipe``; False if the other end is gone (the run was stopped, or
    a client died, which the parent reports when it reads that client's pipe)."""
    try:
        pipe.send(message)
    except OSError:
        return False
    return True


def run_processes(
    spec: SavedIndex,
    plans: list[tuple[Any, ...]],
    keep_ids: bool,
    load_timeout: float,
    run_timeout: float,
) -> tuple[int, list[Rows]]:
    """Start one spawned client process per plan, wait until every one has loaded ``spec``,
    start them together and collect their rows: ``(start_ns, rows)``. Every exit path (an
    error, a timeout, KeyboardInterrupt) stops and reaps them all."""
    context = multiprocessing.get_context("spawn")
    stop = context.RawValue("b", 0)  # shared memory: no semaphore to leak
    controls = [context.Pipe(duplex=False) for _ in plans]  # (client reads, parent writes)
    reports = [context.Pipe(duplex=False) for _ in plans]  # (parent reads, client writes)
    writers = [writer for _, writer in controls]
    readers = [reader for reader, _ in reports]
    theirs = [control for control, _ in controls] + [report for _, report in reports]
    processes = [
        context.Process(
            target=_client,
            args=(slot, controls[slot][0], reports[slot][1], stop, os.getpid()),
            daemon=True,
            name=f"annbench-load-client-{slot}",
        )
        for slot in range(len(plans))
    ]
    try:
        _start(processes)
        for pipe in theirs:  # a client's death now closes its report pipe: the parent sees it
            pipe.close()
        log.info("load: %d client processes loading %s", len(processes), spec.path)
        for writer, plan in zip(writers, plans, strict=True):
            _send(writer, (spec, plan, keep_ids))
        _gather(readers, processes, load_timeout, "load the index", spec.backend)
        start_ns = time.monotonic_ns() + START_AHEAD_NS
        for writer in writers:
            _send(writer, start_ns)
        log.info("load: %d client processes running", len(processes))
        return start_ns, _gather(readers, processes, run_timeout, "run", spec.backend)
    finally:
        stop.value = 1
        for pipe in (*writers, *readers, *theirs):  # wakes a client waiting on or writing one
            pipe.close()
        _reap(processes)


def _start(processes: list[Any]) -> None:
    """Start ``processes`` with Ctrl-C ignored, so each starts ignoring it: a Ctrl-C reaching
    the process group while a client starts up cannot end it with a traceback (the parent
    stops its clients). In the main thread SIGINT is also blocked meanwhile, so a Ctrl-C during
    the start is held, and raised here once the parent's handler is back."""
    if threading.current_thread() is not threading.main_thread():
        for process in processes:
            process.start()
        return
    blocking = hasattr(signal, "pthread_sigmask")
    if blocking:
        resource_tracker.ensure_running()  # starting the tracker would unblock SIGINT
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for process in processes:
            process.start()
    finally:
        if previous is not None:  # None: a handler not set from Python, left as it is now
            signal.signal(signal.SIGINT, previous)
        if blocking:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _gather(
    readers: list[Any], processes: list[Any], timeout: float, doing: str, backend: str
) -> list[Any]:
    """One message from every client, each on its own pipe in ``readers``; an AnnbenchError
    if one reports an error, dies first or ``timeout`` seconds pass."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(readers):
        waiting = {reader: slot for slot, reader in enumerate(readers) if slot not in got}
        left = deadline - time.monotonic()
        if left <= 0:
            raise AnnbenchError(
                f"Load client processes did not {doing} with {backend} within "
                f"{timeout:g} s; raise the timeout or use a smaller index"
            )
        # a short wait, so an interrupt of the main thread is seen at once
        for reader in connection.wait(list(waiting), min(left, _NAP_S * 4)):
            slot = waiting[reader]
            try:
                message = reader.recv()
            except (EOFError, OSError):  # its end closed: the client is gone
                processes[slot].join(1.0)
                raise AnnbenchError(
                    f"Load client process {slot} died (exit code {processes[slot].exitcode}) "
                    f"before it could {doing} with {backend}; run the backend's "
                    "conformance check (annbench.testing.check_backend)"
                ) from None
            if isinstance(message, str):
                raise AnnbenchError(
                    f"A load client process could not {doing} with {backend}: {message}"
                )
            got[slot] = message
    return [got[slot] for slot in range(len(readers))]


def _reap(processes: list[Any], grace: float = 2.0) -> None:
    """Wait ``grace`` seconds for every started process to end, then terminate, then kill."""
    started = [p for p in processes if p.pid is not None]
    deadline = time.monotonic() + grace
    for process in started:
        process.join(max(deadline - time.monotonic(), 0))
    for process in started:
        if process.is_alive():
            process.terminate()
    for process in started:
        process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join()
