"""Serving under load: closed-loop concurrent clients and open-loop arrivals at a fixed rate.

One load generator drives any index. Its target is either a search function ``search(i)``
that runs query ``i`` (``lambda i: index.search_one(xq[i], k)``, a filtered search, anything)
and is driven by threads, or a ``SavedIndex`` (backend name, metric, parameters, saved file,
queries) served by client processes that each load the file: threads for libraries whose
search releases the GIL (``Index.releases_gil``), processes for the others
(``executor_for``).

* ``closed_loop``: ``clients`` clients each send one query after another for ``seconds``;
  latency runs from send to answer. ``saturation`` steps the client count up until the
  throughput stops growing.
* ``open_loop``: queries arrive on a seeded schedule (Poisson, or evenly spaced) at ``rate``
  per second whatever the index does, and each latency runs from the query's *intended* send
  time, so a stall delays every query scheduled during it, as it would delay real users (no
  coordinated omission, as in wrk2). Each of ``workers`` clients (threads or processes: the
  server's concurrency) owns every Nth arrival and paces it itself, sleeping until its send
  time, as wrk2 paces each connection: no hand-off between threads adds to the latency. How
  late a client started a query it was free to start on time is reported as generator lag.

Latencies go into an HDR histogram (the ``hdrhistogram`` package, nanoseconds, 3 significant
digits) kept in the result base64-encoded, so any percentile can be recomputed later
(``decode_histogram``). ``generator_ceiling`` measures the generator itself against a no-op
search; ``measure_gil_release`` tells by measurement whether a search runs in parallel in
threads.

Example::

    >>> import time
    >>> result = closed_loop(lambda i: time.sleep(0.002), clients=1, seconds=0.2, nq=10)
    >>> result.mode, result.clients, 50 < result.qps < 600
    ('concurrent', 1, True)
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from annbench.errors import BadUsage
from annbench.sweep.load_process import (
    Rows,
    SavedIndex,
    precise_sleep,
    run_arrivals,
    run_closed,
    run_processes,
)

log = logging.getLogger(__name__)

__all__ = [
    "GeneratorCeiling",
    "GilMeasurement",
    "LoadOptions",
    "LoadResult",
    "SavedIndex",
    "Saturation",
    "arrival_schedule",
    "available_cores",
    "check_clients",
    "closed_loop",
    "decode_histogram",
    "executor_for",
    "generator_ceiling",
    "measure_gil_release",
    "open_loop",
    "parse_rates",
    "saturation",
]

SearchFn = Callable[[int], Any]
Target = SearchFn | SavedIndex

SCHEDULES = ("poisson", "uniform")
#: most clients (threads or processes) or open-loop workers one run may start
MAX_CLIENTS = 1024
#: highest offered rate, queries per second: far above what one Python client can pace
MAX_RATE = 1_000_000.0
#: most arrivals one open-loop schedule may hold (8 bytes each)
MAX_ARRIVALS = 20_000_000
#: longest run, seconds
MAX_SECONDS = 86_400.0
#: latencies the histogram tracks: 1 ns to one hour, 3 significant digits
HISTOGRAM_RANGE_NS = (1, 3_600 * 10**9)
HISTOGRAM_DIGITS = 3
#: a start later than this after its intended time counts as late (generator lag)
LATE_NS = 1_000_000
_JOIN_S = 5.0


@dataclass(frozen=True)
class LoadResult:
    """One load run: throughput, latency percentiles (from the HDR histogram) and raw timings.

    ``mode`` is ``"concurrent"`` (closed loop, ``clients`` clients) or ``"rate"`` (open loop,
    ``rate`` offered queries/s on ``schedule`` drawn with ``seed``, served by ``clients``
    workers). Latencies in ms; for ``"rate"`` from each query's intended send time.
    ``unfinished`` scheduled queries were abandoned at the drain limit: they count in the
    histogram at a lower bound of their latency and as past the deadline. Generator lag:
    how late a client started queries it could have started on time.
    """

    mode: str
    executor: str  # "thread" or "process"
    clients: int
    rate: float | None
    schedule: str | None
    seed: int | None
    seconds: float  # measured window
    count: int  # queries answered in the window
    qps: float  # achieved throughput
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    deadline_ms: float | None
    deadline_miss: float | None  # share of queries past the deadline
    unfinished: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    late_share: float  # share of queries started over LATE_NS after their intended time
    histogram: str  # base64 HDR histogram of latencies in ns
    queries: np.ndarray = field(repr=False)  # (count,) query number of each answer
    sent_ns: np.ndarray = field(repr=False)  # (count,) intended (rate) or actual send time
    latency_ns: np.ndarray = field(repr=False)  # (count,) answer time - sent_ns
    service_ns: np.ndarray = field(repr=False)  # (count,) time inside search
    ids: list[np.ndarray] | None = field(default=None, repr=False)  # found ids, if kept

    def decoded_histogram(self) -> HdrHistogram:
        """The latency histogram (ns) as an ``HdrHistogram``."""
        return decode_histogram(self.histogram)

    def percentile_ms(self, percentile: float) -> float:
        """Latency at ``percentile`` (0-100) in ms, recomputed from the histogram."""
        return self.decoded_histogram().get_value_at_percentile(percentile) / 1e6

    def summary(self) -> dict[str, Any]:
        """The scalar fields and the encoded histogram, for a record (no raw arrays)."""
        skip = {"queries", "sent_ns", "latency_ns", "service_ns", "ids"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


@dataclass(frozen=True)
class LoadOptions:
    """How each load run of a sweep is driven: ``seconds`` measured after ``warmup`` seconds,
    open-loop arrivals on ``schedule`` drawn with ``seed``, the share of queries past
    ``deadline_ms`` counted, client processes given ``load_timeout`` s to load the index."""

    seconds: float = 3.0
    warmup: float = 0.5
    schedule: str = "poisson"
    seed: int = 0
    deadline_ms: float | None = None
    load_timeout: float = 600.0

    def __post_init__(self) -> None:
        _seconds(self.seconds)
        _seconds(self.warmup, "warmup", zero=True)
        _schedule(self.schedule)
        _deadline(self.deadline_ms)
        _seconds(self.load_timeout, "load_timeout")
        if self.warmup + self.seconds > MAX_SECONDS:
            raise BadUsage(
                f"A load run of {self.seconds:g} s after {self.warmup:g} s of warm-up lasts "
                f"over {MAX_SECONDS:.0f} s; shorten --load-seconds"
            )

    def check_rate(self, rate: float) -> None:
        """BadUsage when a run at ``rate`` queries/s (warm-up included) would schedule more
        than MAX_ARRIVALS queries: said before anything is built."""
        total = self.warmup + self.seconds
        if rate * total > MAX_ARRIVALS:
            raise BadUsage(
                f"A load run of {total:g} s at {rate:g} queries/s schedules "
                f"{rate * total:.3g} queries, over {MAX_ARRIVALS:,}; lower the rate or "
                "--load-seconds"
            )


def decode_histogram(encoded: str | bytes) -> HdrHistogram:
    """An ``HdrHistogram`` (ns) from ``LoadResult.histogram``."""
    return HdrHistogram.decode(encoded.encode() if isinstance(encoded, str) else encoded)


def executor_for(cls: type) -> str:
    """``"thread"`` when the Index class declares ``releases_gil``, else ``"process"``."""
    return "thread" if getattr(cls, "releases_gil", False) else "process"


def arrival_schedule(
    rate: float, seconds: float, schedule: str = "poisson", seed: int = 0
) -> np.ndarray:
    """Intended send times in ns from the start, ascending, all before ``seconds``: Poisson
    arrivals (exponential gaps, seeded) or evenly spaced ones (``"uniform"``) at ``rate``/s."""
    rate, seconds = _rate(rate), _seconds(seconds)
    schedule = _schedule(schedule)
    expected = rate * seconds
    if expected > MAX_ARRIVALS:
        raise BadUsage(
            f"A load run of {seconds:g} s at {rate:g} queries/s schedules {expected:.3g} "
            f"queries, over {MAX_ARRIVALS}; lower the rate or the duration"
        )
    if schedule == "uniform":
        times = np.arange(math.ceil(expected)) / rate
    else:
        rng = np.random.default_rng(seed)
        size = int(expected + 6 * math.sqrt(expected) + 16)
        times = np.cumsum(rng.exponential(1 / rate, size))
        while times[-1] < seconds:
            times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1 / rate, size))])
    return (times[times < seconds] * 1e9).astype(np.int64)


def closed_loop(
    target: Target,
    clients: int,
    seconds: float,
    *,
    nq: int | None = None,
    warmup: float = 0.0,
    deadline_ms: float | None = None,
    keep_ids: bool = False,
    load_timeout: float = 600.0,
    thread_setup: Callable[[], None] | None = None,
) -> LoadResult:
    """``clients`` clients each run one query after another for ``seconds`` (after ``warmup``
    seconds not measured), cycling through queries ``0..nq-1``; threads calling ``target(i)``
    or, for a ``SavedIndex``, processes that each load it (within ``load_timeout`` s).
    ``thread_setup()`` runs first in each client thread: per-thread library settings go there
    (OpenMP's thread count is per thread: ``lambda: index.set_num_threads(1)``).

    Example::

        >>> closed_loop(lambda i: None, clients=2, seconds=0.1, nq=5).count > 0
        True
    """
    clients = _clients(clients, "clients")
    seconds, warmup = _seconds(seconds), _seconds(warmup, "warmup", zero=True)
    deadline_ms = _deadline(deadline_ms)
    nq = _nq(target, nq)
    if isinstance(target, SavedIndex):
        plans = [("closed", _ns(warmup), _ns(seconds), clients)] * clients
        t0, rows = run_processes(
            target, plans, keep_ids, load_timeout, warmup + seconds + load_timeout
        )
        executor = "process"
    else:
        t0, rows = _closed_threads(target, nq, clients, seconds, warmup, keep_ids, thread_setup)
        executor = "thread"
    return _result(
        "concurrent", executor, clients, None, None, None, seconds, deadline_ms,
        t0 + _ns(warmup), rows, keep_ids,
    )  # fmt: skip


def open_loop(
    target: Target,
    rate: float,
    seconds: float,
    *,
    nq: int | None = None,
    schedule: str = "poisson",
    seed: int = 0,
    workers: int | None = None,
    warmup: float = 0.0,
    deadline_ms: float | None = None,
    drain: float | None = None,
    keep_ids: bool = False,
    load_timeout: float = 600.0,
    thread_setup: Callable[[], None] | None = None,
) -> LoadResult:
    """Queries arrive at ``rate``/s on a seeded ``schedule`` for ``seconds`` (after ``warmup``
    seconds not measured), query ``j`` of the schedule being ``j % nq``; latency counts from
    the intended send time. ``workers`` threads (default: the CPUs this process may use) or,
    for a ``SavedIndex``, processes serve them. Queries still waiting ``drain`` seconds after
    the schedule ends (default: ``max(1, seconds)``) are abandoned and counted as unfinished.
    ``thread_setup()`` runs first in each worker thread, as for ``closed_loop``.

    Example::

        >>> r = open_loop(lambda i: None, rate=200, seconds=0.2, nq=5, seed=1)
        >>> r.mode, r.rate, r.count == len(arrival_schedule(200, 0.2, seed=1))
        ('rate', 200.0, True)
    """
    rate, seconds = _rate(rate), _seconds(seconds)
    warmup = _seconds(warmup, "warmup", zero=True)
    workers = _clients(available_cores() if workers is None else workers, "workers")
    deadline_ms = _deadline(deadline_ms)
    drain = max(1.0, seconds) if drain is None else _seconds(drain, "drain", zero=True)
    nq = _nq(target, nq)
    offsets = arrival_schedule(rate, warmup + seconds, schedule, seed)
    queries = np.arange(len(offsets)) % nq
    give_up = _ns(warmup + seconds + drain)
    if isinstance(target, SavedIndex):
        plans = [
            ("open", _ns(warmup), give_up, queries[w::workers], offsets[w::workers])
            for w in range(workers)
        ]
        t0, rows = run_processes(target, plans, keep_ids, load_timeout, give_up / 1e9 + 30)
        executor = "process"
    else:
        t0, rows = _open_threads(
            target, queries, offsets, workers, warmup, give_up, keep_ids, thread_setup
        )
        executor = "thread"
    return _result(
        "rate", executor, workers, rate, schedule, seed, seconds, deadline_ms,
        t0 + _ns(warmup), rows, keep_ids,
    )  # fmt: skip


# --- threads -------------------------------------------------------------------------------


def _closed_threads(
    search: SearchFn,
    nq: int,
    clients: int,
    seconds: float,
    warmup: float,
    keep_ids: bool,
    setup: Callable[[], None] | None,
) -> tuple[int, list[Rows]]:
    """Closed loop in ``clients`` threads: (start_ns, rows per client)."""
    now = time.perf_counter_ns
    stop = threading.Event()
    counter = itertools.count()
    order = lambda: next(counter) % nq  # noqa: E731 - next() on a count is atomic
    barrier = threading.Barrier(clients + 1)
    window: list[int] = []
    rows: list[Rows] = [Rows() for _ in range(clients)]
    errors: list[BaseException] = []

    def client(slot: int) -> None:
        try:
            if setup is not None:
                setup()
            barrier.wait()
            begin = window[0] + _ns(warmup)
            rows[slot] = run_closed(
                search, order, begin, begin + _ns(seconds), stop.is_set, keep_ids, now
            )
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:  # reported in the driving thread
            errors.append(exc)
            stop.set()

    threads = _start(client, clients, "client")
    try:
        window.append(now())
        barrier.wait()
        end = time.monotonic() + warmup + seconds
        while not stop.wait(min(max(end - time.monotonic(), 0), 0.1)):  # short: Ctrl-C is seen
            if time.monotonic() >= end:
                break
        _join(threads, until=lambda: not errors)
        if errors:
            raise errors[0]
        return window[0], rows
    finally:
        stop.set()
        barrier.abort()
        _join(threads)


def _open_threads(
    search: SearchFn,
    queries: np.ndarray,
    offsets: np.ndarray,
    workers: int,
    warmup: float,
    give_up: int,
    keep_ids: bool,
    setup: Callable[[], None] | None,
) -> tuple[int, list[Rows]]:
    """Open loop in ``workers`` threads, each pacing its own share of the arrivals (every
    ``workers``-th) as a process client does: (start_ns, rows per worker)."""
    now = time.monotonic_ns
    stop = threading.Event()
    barrier = threading.Barrier(workers + 1)
    start: list[int] = []
    rows = [Rows() for _ in range(workers)]
    errors: list[BaseException] = []
    finished, count, left = threading.Event(), threading.Lock(), [workers]

    def worker(slot: int) -> None:
        try:
            pace(slot)
        finally:
            with count:
                left[0] -= 1
                if left[0] == 0:
                    finished.set()

    def pace(slot: int) -> None:
        try:
            precise_sleep()
            if setup is not None:
                setup()
            barrier.wait()
            t0 = start[0]
            mine = queries[slot::workers].tolist(), offsets[slot::workers].tolist()
            arrivals = [(i, t0 + offset) for i, offset in zip(*mine, strict=True)]
            rows[slot] = run_arrivals(
                search, arrivals, t0 + _ns(warmup), t0 + give_up, stop.is_set, keep_ids
            )
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:  # reported in the driving thread
            errors.append(exc)
            stop.set()

    threads = _start(worker, workers, "worker")
    try:
        start.append(now() + 2_000_000)  # every worker is waiting by then
        barrier.wait()
        deadline = time.monotonic() + (give_up + _ns(_JOIN_S)) / 1e9
        # waiting on an event, not in join(): a Ctrl-C that lands inside Thread.join can
        # leave a finished thread listed as alive (CPython 3.11)
        while not finished.wait(0.1) and not errors and time.monotonic() < deadline:
            pass
        if errors:
            raise errors[0]
        return start[0], rows
    finally:
        stop.set()
        barrier.abort()
        _join(threads)


def _start(body: Callable[[int], None], n: int, role: str) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=body, args=(slot,), name=f"annbench-load-{role}-{slot}")
        for slot in range(n)
    ]
    for thread in threads:
        thread.daemon = True  # a search that never returns must not keep Python alive
        thread.start()
    return threads


def _join(
    threads: list[threading.Thread],
    deadline: int | None = None,
    until: Callable[[], bool] | None = None,
) -> None:
    """Join ``threads``: until the perf_counter_ns ``deadline`` (default: ``_JOIN_S`` from
    now), in short waits so Ctrl-C is seen, and while ``until()`` holds."""
    end = deadline if deadline is not None else time.perf_counter_ns() + _ns(_JOIN_S)
    for thread in threads:
        while thread.is_alive() and (until is None or until()):
            left = (end - time.perf_counter_ns()) / 1e9
            if left <= 0:
                break
            thread.join(min(left, 0.1))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck and deadline is None and until is None:
        log.warning("load: %s still inside a search after %g s", ", ".join(stuck), _JOIN_S)


# --- results -------------------------------------------------------------------------------


def _result(
    mode: str,
    executor: str,
    clients: int,
    rate: float | None,
    schedule: str | None,
    seed: int | None,
    seconds: float,
    deadline_ms: float | None,
    begin: int,
    rows: list[Rows],
    keep_ids: bool,
) -> LoadResult:
    """A LoadResult from the raw rows of every client or worker."""
    queries = np.array([i for r in rows for i in r.queries], dtype=np.int64)
    sent = np.array([t for r in rows for t in r.sent_ns], dtype=np.int64)
    start = np.array([t for r in rows for t in r.start_ns], dtype=np.int64)
    end = np.array([t for r in rows for t in r.end_ns], dtype=np.int64)
    lags = np.array([t for r in rows for t in r.lag_ns], dtype=np.int64)
    unfinished = np.array([t for r in rows for t in r.unfinished_ns], dtype=np.int64)
    order = np.argsort(sent, kind="stable")
    ids = [a for r in rows for a in (r.ids or [])] if keep_ids else None
    latency, service = (end - sent)[order], (end - start)[order]
    histogram = HdrHistogram(*HISTOGRAM_RANGE_NS, HISTOGRAM_DIGITS)
    low, high = HISTOGRAM_RANGE_NS
    for value in np.clip(np.concatenate([latency, unfinished]), low, high).tolist():
        histogram.record_value(value)
    window = max((int(end.max()) - begin) / 1e9 if len(end) else 0.0, seconds)
    total = len(latency) + len(unfinished)
    missed = None
    if deadline_ms is not None:
        late = int((latency > deadline_ms * 1e6).sum()) + len(unfinished)
        missed = late / total if total else 0.0

    def pct(p: float) -> float:
        return histogram.get_value_at_percentile(p) / 1e6 if total else math.nan

    return LoadResult(
        mode=mode,
        executor=executor,
        clients=clients,
        rate=rate,
        schedule=schedule,
        seed=seed,
        seconds=window,
        count=len(latency),
        qps=len(latency) / window,
        mean_ms=histogram.get_mean_value() / 1e6 if total else math.nan,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        p999_ms=pct(99.9),
        max_ms=histogram.get_max_value() / 1e6 if total else math.nan,
        deadline_ms=deadline_ms,
        deadline_miss=missed,
        unfinished=len(unfinished),
        lag_p50_ms=float(np.percentile(lags, 50)) / 1e6 if len(lags) else 0.0,
        lag_p99_ms=float(np.percentile(lags, 99)) / 1e6 if len(lags) else 0.0,
        lag_max_ms=float(lags.max()) / 1e6 if len(lags) else 0.0,
        late_share=float((lags > LATE_NS).mean()) if len(lags) else 0.0,
        histogram=histogram.encode().decode("ascii"),
        queries=queries[order],
        sent_ns=sent[order],
        latency_ns=latency,
        service_ns=service,
        ids=[ids[i] for i in order.tolist()] if ids is not None else None,
    )


# --- saturation, the generator's ceiling, GIL release --------------------------------------


@dataclass(frozen=True)
class Saturation:
    """Closed-loop runs at growing client counts; ``qps`` is the highest throughput seen."""

    qps: float
    clients: int  # the client count that reached it
    results: list[LoadResult]


def saturation(
    target: Target,
    seconds: float,
    *,
    clients: Sequence[int] = (1, 2, 4, 8, 16, 32),
    min_gain: float = 0.05,
    patience: int = 2,
    **options: Any,
) -> Saturation:
    """Saturation throughput: ``closed_loop`` at each client count in turn, stopping once the
    throughput has grown by less than ``min_gain`` (a share) ``patience`` times in a row;
    ``options`` go to ``closed_loop``."""
    counts = [_clients(c, "clients") for c in clients]
    if not counts:
        raise BadUsage("saturation needs at least one client count, e.g. clients=(1, 2, 4)")
    results: list[LoadResult] = []
    best: LoadResult | None = None
    flat = 0
    for count in counts:
        result = closed_loop(target, count, seconds, **options)
        results.append(result)
        log.info("load: %d clients: %.0f queries/s", count, result.qps)
        if best is not None and result.qps < best.qps * (1 + min_gain):
            flat += 1
        else:
            flat = 0
        if best is None or result.qps > best.qps:
            best = result
        if flat >= patience:
            break
    assert best is not None
    return Saturation(best.qps, best.clients, results)


@dataclass(frozen=True)
class GeneratorCeiling:
    """What the load generator can do against a search that does nothing.

    ``closed``: one client back to back (its qps is the most one client can send, its p50
    the cost of one round trip); ``open``: runs at increasing rates on an evenly spaced
    schedule; ``max_rate``: the highest of them the generator kept up with (achieved within
    5 % of offered, median generator lag under 1 ms); ``added_ms``: p50 latency at each such
    rate, what the generator adds (each run's p99 and lag show its tail).
    """

    closed: LoadResult
    open: list[LoadResult]
    max_rate: float
    added_ms: dict[float, float]

    def p99_at(self, rate: float) -> float:
        """The generator's own p99 (ms) at ``rate``: that of the slowest open-loop run at or
        below it (the lowest run's when ``rate`` is below them all)."""
        below = [run for run in self.open if run.rate <= rate] or self.open[:1]
        return max(run.p99_ms for run in below)


def generator_ceiling(
    seconds: float = 1.0,
    rates: Sequence[float] = (1_000, 10_000, 50_000, 100_000, 200_000, 500_000),
    workers: int = 2,
) -> GeneratorCeiling:
    """Measure the generator against a no-op search: one closed-loop client, then open loop at
    each of ``rates`` (in order, stopping at the first it cannot keep up with)."""

    def noop(i: int) -> None:
        return None

    closed = closed_loop(noop, 1, seconds, nq=1)
    runs: list[LoadResult] = []
    max_rate = 0.0
    added: dict[float, float] = {}
    for rate in rates:
        result = open_loop(noop, rate, seconds, nq=1, workers=workers, schedule="uniform")
        runs.append(result)
        if result.qps < 0.95 * rate or result.lag_p50_ms >= 1.0:
            break
        max_rate = float(rate)
        added[float(rate)] = result.p50_ms
    return GeneratorCeiling(closed, runs, max_rate, added)


@dataclass(frozen=True)
class GilMeasurement:
    """Whether a search holds the GIL, told by a probe thread, with thread throughputs.

    While one thread runs the search back to back, a probe thread sleeps ``PROBE_NAP_S`` again
    and again; waking, it needs the GIL. A search that releases it lets the probe in at once;
    one that holds it keeps the probe waiting until the interpreter's switch interval (set to
    ``PROBE_SWITCH_S`` meanwhile, far above what a busy CPU delays a wake-up by) forces a
    hand-over. ``probe_ms`` is the probe's median wake-up delay, ``held_share`` the share of
    wake-ups delayed over ``HELD_NS`` (roughly the share of time the GIL is held);
    ``control_*`` the same beside hashing a buffer, which releases the GIL: what this host
    shows for a releasing call. Unlike a throughput speedup this holds on a busy host.
    ``releases`` is ``probe_ms`` under ``HELD_NS``; over it, False when the control's is
    under, None when both are over (the host is too busy to tell). ``qps_1``/``qps_2``:
    throughput in 1 and 2 closed-loop threads, and their ratio ``speedup``, which needs free
    cores to show anything.
    """

    probe_ms: float
    held_share: float
    control_probe_ms: float
    control_held_share: float
    qps_1: float
    qps_2: float
    speedup: float
    releases: bool | None


#: the probe thread's sleep between wake-ups
PROBE_NAP_S = 0.001
#: the interpreter's switch interval while probing: how long a held GIL keeps the probe out
PROBE_SWITCH_S = 0.02
#: a wake-up delayed more than this found the GIL held
HELD_NS = 5_000_000


def measure_gil_release(
    search: SearchFn,
    nq: int,
    *,
    seconds: float = 0.5,
    thread_setup: Callable[[], None] | None = None,
) -> GilMeasurement:
    """Whether ``search(i)`` releases the GIL (see ``GilMeasurement``), each of the four
    measurements taking ``seconds``; ``thread_setup()`` runs first in each searching thread
    (give the library one thread there)."""
    seconds = _seconds(seconds)
    nq = _nq(search, nq)
    buffer = os.urandom(1 << 18)

    def control(i: int) -> bytes:
        return hashlib.sha256(buffer).digest()

    control_ms, control_held = _probe(control, 1, seconds)
    probe_ms, held = _probe(search, nq, seconds, thread_setup)
    qps_1 = closed_loop(search, 1, seconds, nq=nq, thread_setup=thread_setup).qps
    qps_2 = closed_loop(search, 2, seconds, nq=nq, thread_setup=thread_setup).qps
    releases: bool | None = True  # a held GIL keeps the probe out for PROBE_SWITCH_S
    if probe_ms >= HELD_NS / 1e6:
        releases = False if control_ms < HELD_NS / 1e6 else None
    return GilMeasurement(
        probe_ms, held, control_ms, control_held, qps_1, qps_2, qps_2 / qps_1, releases
    )


def _probe(
    search: SearchFn, nq: int, seconds: float, setup: Callable[[], None] | None = None
) -> tuple[float, float]:
    """(median wake-up delay in ms, share over HELD_NS) of a thread napping while another
    runs ``search`` back to back."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def busy(slot: int) -> None:
        i = 0
        try:
            if setup is not None:
                setup()
            while not stop.is_set():
                search(i % nq)
                i += 1
        except BaseException as exc:  # reported in the driving thread
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(PROBE_SWITCH_S)
    threads = _start(busy, 1, "gil-probe")
    delays: list[int] = []
    try:
        time.sleep(0.02)
        end = time.perf_counter_ns() + _ns(seconds)
        nap = _ns(PROBE_NAP_S)
        while (now := time.perf_counter_ns()) < end and not errors:
            time.sleep(PROBE_NAP_S)
            delays.append(time.perf_counter_ns() - now - nap)
    finally:
        stop.set()
        _join(threads)
        sys.setswitchinterval(switch)
    if errors:
        raise errors[0]
    values = np.array(delays)
    return float(np.median(values)) / 1e6, float((values > HELD_NS).mean())


# --- checks --------------------------------------------------------------------------------


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_clients(value: Any) -> int:
    """``value`` as a client count: a whole number from 1 to MAX_CLIENTS, else BadUsage."""
    return _clients(value, "clients")


#: highest share of the saturation throughput a rate may be given as
MAX_RATE_SHARE = 10.0


def parse_rates(values: Sequence[float | str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Offered rates as ``(queries per second, shares of saturation)``: numbers (or numeric
    text) are queries per second, ``"50%"`` is half the saturation throughput; each checked
    (BadUsage), repeats dropped."""
    rates: list[float] = []
    shares: list[float] = []
    for value in values:
        text = value.strip() if isinstance(value, str) else None
        if text is not None and text.endswith("%"):
            try:
                share = float(text[:-1]) / 100
            except ValueError:
                share = math.nan
            if not (math.isfinite(share) and 0 < share <= MAX_RATE_SHARE):
                raise BadUsage(
                    f"A rate given as a share of saturation must be above 0% and at most "
                    f"{MAX_RATE_SHARE:.0%}, got {value!r}; pass e.g. --rate 25%,50%,90%"
                )
            shares.append(share)
            continue
        if text is not None:
            try:
                value = float(text)
            except ValueError:
                raise BadUsage(
                    f"Not a rate: {value!r}; pass queries per second (--rate 500,1000) or "
                    "shares of saturation (--rate 25%,50%)"
                ) from None
        rates.append(_rate(value))
    return tuple(dict.fromkeys(rates)), tuple(dict.fromkeys(shares))


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return float(value)


def _clients(value: Any, name: str) -> int:
    number = _number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        ok = False
    else:
        ok = 1 <= number <= MAX_CLIENTS
    if not ok:
        raise BadUsage(
            f"Load {name} must be a whole number from 1 to {MAX_CLIENTS}, got {value!r}; "
            f"pass e.g. {name}=4"
        )
    return int(number)


def _rate(value: Any) -> float:
    number = _number(value)
    if number is None or not math.isfinite(number) or not 0 < number <= MAX_RATE:
        raise BadUsage(
            f"The offered rate must be a number of queries per second above 0 and at most "
            f"{MAX_RATE:.0f}, got {value!r}; pass e.g. rate=100"
        )
    return number


def _seconds(value: Any, name: str = "seconds", zero: bool = False) -> float:
    number = _number(value)
    low_ok = number is not None and (number >= 0 if zero else number > 0)
    if number is None or not math.isfinite(number) or not low_ok or number > MAX_SECONDS:
        bound = "0 or more" if zero else "above 0"
        raise BadUsage(
            f"Load {name} must be a number of seconds {bound} and at most {MAX_SECONDS:.0f}, "
            f"got {value!r}; pass e.g. {name}=10"
        )
    return number


def _deadline(value: Any) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise BadUsage(
            f"deadline_ms must be a number of milliseconds above 0, got {value!r}; "
            "pass e.g. deadline_ms=10, or None for no deadline"
        )
    return number


def _schedule(value: Any) -> str:
    if value not in SCHEDULES:
        raise BadUsage(f"Unknown arrival schedule {value!r}; use one of: {', '.join(SCHEDULES)}")
    return value


def _nq(target: Any, nq: Any) -> int:
    if isinstance(target, SavedIndex):
        if nq is not None and nq != target.nq:
            raise BadUsage(f"nq={nq!r} but the SavedIndex holds {target.nq} queries; leave nq out")
        nq = target.nq
    elif not callable(target):
        raise BadUsage(
            f"The load target must be a search function search(i) or a SavedIndex, got "
            f"{type(target).__name__}"
        )
    number = _number(nq)
    if number is None or not math.isfinite(number) or number != int(number) or number < 1:
        raise BadUsage(
            f"nq must be the number of queries search(i) takes (1 or more), got {nq!r}; "
            "pass nq=len(xq)"
        )
    return int(number)
