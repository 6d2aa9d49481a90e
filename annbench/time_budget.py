"""How ``recommend --measure`` spends its time budget: on the candidates likely to win.

Before a candidate starts, its cost is estimated (worker start, build, serving memory,
searches) from the dataset size, its structure and this machine's rates: a stored build of the
same configuration when there is one, else a model whose rates are calibrated by the builds
stored for this dataset (or by a small timed numpy probe). The store's attempts are the memory
across calls: a configuration whose build timed out is not retried unless the budget gives it
clearly more time, and one whose stored measurements answer its question, or show it cannot
contend with what is stored, is not rebuilt. Candidates run in order of their chance to win,
each with the time it needs; the others are skipped with a reason. Load jobs (``recommend
--at-qps --measure``) are estimated per search setting (``load_estimate``), so a job can be
cut to the settings that fit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from annbench.provenance import cpu_model
from annbench.record import RunRecord, params_label
from annbench.results.analysis import RECALL_TIE, Constraints, recommend, successful
from annbench.results.store import ResultStore
from annbench.sweep import runner
from annbench.sweep.measure import BuildJob, bisect_ladder, max_probes

log = logging.getLogger(__name__)


def clock() -> float:
    """The clock every figure here is read from: ``time.monotonic``, looked up at each call
    (so that a test can replace it)."""
    return time.monotonic()


#: Seconds a worker takes besides building and searching: start, imports, reading the
#: dataset; and saving the index and loading it in a fresh process (serving memory); both
#: grow with the bytes of the base vectors, read at READ_BYTES_S bytes a second.
WORKER_S = 2.0
SERVING_S = 1.5
READ_BYTES_S = 100e6
#: Seconds kept back at the end: picking from the store, printing, exiting.
END_S = 2.0
#: A job's timeout is this many times its estimate, and at least the estimate plus SLACK_S.
TIMEOUT_FACTOR = 2.5
SLACK_S = 20.0
#: A build that timed out after T s is retried only when it can be given this many times T.
RETRY_FACTOR = 2.0
#: Stored figures of a candidate must beat the best stored one by these margins to contend
#: (probes are one repeat: their QPS is noisy).
QPS_MARGIN = 1.25
#: Single-query mode: Python's per-call overhead per query (s).
CALL_S = 20e-6
_TIMED_OUT = re.compile(r"timed out after ([0-9.]+) s")


@dataclass(frozen=True)
class Skip:
    """A candidate not measured, and why."""

    config: str
    reason: str


@dataclass(frozen=True)
class Estimate:
    """Seconds a candidate's job is expected to take, and what the figure rests on."""

    seconds: float  # the whole job: worker start, build, serving memory, searches
    build_s: float
    basis: str


@dataclass
class Budget:
    """The time budget's accounting: started at ``started`` on ``clock``, ``seconds`` long."""

    seconds: float
    started: float = field(default_factory=clock)

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return clock() - self.started

    def left(self) -> float:
        """Seconds left for new work, the end reserve kept back."""
        return self.seconds - self.elapsed() - END_S


def process_started() -> float:
    """The ``clock()`` reading at which this process started when it is the ``annbench``
    command (Python's start-up, imports and reading the dataset count against its time budget
    too), else now (a command run inside another program, e.g. a test or a notebook)."""
    command = Path(sys.argv[0])
    if command.name != "annbench" and command.parent.name != "annbench":
        return clock()
    return clock() - max(_process_age(), 0.0)


def _process_age() -> float:
    """Seconds since this process started: to 10 ms from /proc on Linux, else psutil's
    (whose start time may be a second off)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - psutil.Process().create_time()


@dataclass(frozen=True)
class Structure:
    """What an index is made of, as far as its cost goes."""

    kind: str  # "flat", "ivf", "graph" or "other"
    bits: float = 32.0  # stored bits per dimension that distances are computed on
    nlist: int = 0
    links: int = 0  # graph: links per node (M)
    ef_construction: int = 0
    pq: tuple[int, int] | None = None  # (m, nbits) of product quantization
    opq: bool = False
    refine_bits: float | None = None  # re-ranking storage, bits per dimension
    fast_codes: bool = False  # compressed vectors with their own SIMD distances (usearch)


def structure(backend: str, params: dict[str, Any], d: int) -> Structure:
    """The structure of ``backend`` built with ``params`` (``kind='other'`` when unknown)."""
    if backend == "faiss-factory" and "factory" in params:
        return _factory_structure(str(params["factory"]), d)
    if backend in ("faiss-flat", "brute-force"):
        return Structure("flat")
    if backend in ("faiss-ivf", "faiss-ivfpq"):
        pq = (int(params.get("m", 8)), int(params.get("nbits", 8))) if "ivfpq" in backend else None
        bits = pq[0] * pq[1] / d if pq else 32.0
        return Structure("ivf", bits, nlist=int(params.get("nlist", 1024)), pq=pq)
    if backend in ("faiss-hnsw", "hnswlib", "usearch", "voyager"):
        links = params.get("M", params.get("connectivity", 16))
        efc = params.get("efConstruction", params.get("ef_construction", 40))
        efc = params.get("expansion_add", efc)
        bits = {"i8": 8.0, "f16": 16.0}.get(str(params.get("dtype")), 32.0)
        return Structure(
            "graph", bits, links=int(links), ef_construction=int(efc), fast_codes=bits < 32
        )
    return Structure("other")


def _factory_structure(factory: str, d: int) -> Structure:
    kind, bits, nlist, links, efc = "flat", 32.0, 0, 0, 0
    pq: tuple[int, int] | None = None
    opq, refine = False, None
    for part in factory.replace(" ", "").split(","):
        if found := re.fullmatch(r"OPQ(\d+)(_\d+)?", part):
            opq = True
        elif found := re.fullmatch(r"IVF(\d+)(_HNSW\d+)?", part):
            kind, nlist = "ivf", int(found[1])
        elif found := re.fullmatch(r"HNSW(\d+)", part):
            kind, links, efc = "graph", int(found[1]), 40
        elif found := re.fullmatch(r"PQ(\d+)(?:x(\d+))?(fs|np)?", part):
            pq = (int(found[1]), int(found[2] or 8))
            bits = pq[0] * pq[1] / d
        elif found := re.fullmatch(r"SQ(\d+)", part):
            bits = float(found[1])
        elif part in ("SQfp16", "SQbf16"):
            bits = 16.0
        elif part == "RFlat":
            refine = 32.0
        elif found := re.fullmatch(r"Refine\((\w+)\)", part):
            inner = re.fullmatch(r"SQ(\d+)", found[1])
            refine = float(inner[1]) if inner else 32.0
    return Structure(kind, bits, nlist, links, efc, pq, opq, refine)


@dataclass(frozen=True)
class Rates:
    """Speeds in multiply-adds per second and thread: ``dense`` for BLAS-shaped work (k-means,
    assignment), ``subspace`` for k-means in a product quantizer's few dimensions, ``insert``
    for graph construction, ``scan`` for a query streaming through vectors, ``graph`` for a
    query's distances at random places; ``subquantizer_s``, fixed seconds per sub-quantizer
    trained."""

    dense: float = 4e9
    subspace: float = 0.4e9
    insert: float = 0.7e9
    scan: float = 1.8e9
    graph: float = 1.6e9
    subquantizer_s: float = 0.15


#: Measured with faiss 1.x on this project's 2-core test machines (builds of the bundled
#: dataset); the store's builds on the same CPU scale them (``History.calibration``).
DEFAULT_RATES = Rates()
#: k-means as faiss runs it: iterations, and training points per centroid kept at most.
KMEANS_ITERATIONS = 10
PQ_ITERATIONS = 25
POINTS_PER_CENTROID = 256
#: Seconds any k-means training takes however small (setting up, thread teams).
TRAIN_S = 0.5
#: Stored builds scale the model by at most this factor either way.
CALIBRATION_CLAMP = 4.0
#: OPQ's rotation training: 50 rounds, each a PQ training of 4 iterations.
OPQ_ROUNDS, OPQ_PQ_ITERATIONS = 50, 4


def model_build_s(s: Structure, n: int, d: int, rates: Rates, threads: int) -> float:
    """Modelled build seconds of ``s`` over ``n`` x ``d`` vectors on ``threads`` threads."""
    threads = max(threads, 1)
    seconds = n * d * 4 / 2e9  # copying the vectors in
    if s.nlist or s.pq:
        seconds += TRAIN_S
    if s.nlist:
        train = min(n, POINTS_PER_CENTROID * s.nlist)
        seconds += (train * KMEANS_ITERATIONS + n) * s.nlist * d / (rates.dense * threads)
    if s.pq is not None:
        m, nbits = s.pq
        train = min(n, POINTS_PER_CENTROID * 2**nbits)

        def training(iterations: int) -> float:
            work = train * 2**nbits * iterations * d / max(m, 1)
            return m * (rates.subquantizer_s + work / rates.subspace)

        seconds += training(PQ_ITERATIONS) + n * 2**nbits * d / (rates.dense * threads)
        if s.opq:
            seconds += OPQ_ROUNDS * training(OPQ_PQ_ITERATIONS)
    if s.kind == "graph":
        # each insertion searches with a beam of ef_construction over 2M links a node
        work = n * s.ef_construction * 2 * s.links * d * _bits_cost(s, d)
        seconds += work / (rates.insert * threads)
    if s.kind == "other":
        seconds += n * 200 * 32 * d / (rates.insert * threads)
    return seconds


def _family(s: Structure) -> str:
    """Structures whose builds share their speed: product quantizers, inverted files, graphs."""
    return "pq" if s.pq is not None else s.kind


def _bits_cost(s: Structure, d: int) -> float:
    """Cost of one distance on ``s``'s codes relative to one on float vectors: about the same
    for scalar quantizers (decoding), table look-ups per sub-quantizer for PQ."""
    if s.fast_codes:
        return 0.6
    if s.pq is None:
        return 1.0
    m, nbits = s.pq
    return min(1.0, (0.5 if nbits == 4 else 2.0) * m / d)


def model_query_s(s: Structure, n: int, d: int, rates: Rates, recall: float) -> float:
    """Modelled seconds of one query of ``s`` (one thread) set for about ``recall``."""
    miss = max(1 - min(recall, 0.999), 1e-3)
    if s.kind == "ivf":
        scanned = min(1.0, 0.005 / miss)  # the fraction of the lists probed
        work = s.nlist * d + n * d * scanned * _bits_cost(s, d)
        return work / rates.scan
    if s.kind == "graph":
        ef = min(n, 10 / math.sqrt(miss))
        return min(n, ef * 1.5 * s.links) * d * _bits_cost(s, d) / rates.graph
    return n * d * _bits_cost(s, d) / rates.scan  # flat, and anything unknown


def _top_query_s(job: BuildJob, s: Structure, n: int, d: int, rates: Rates) -> float:
    """Modelled seconds of one query at the top of ``job``'s ladder (the costliest setting)."""
    top = job.search_configs[-1] if job.search_configs else {}
    nprobe = top.get("nprobe")
    ef = next((top[k] for k in ("ef", "efSearch", "expansion_search") if k in top), None)
    if s.kind == "ivf" and isinstance(nprobe, int) and s.nlist:
        work = s.nlist * d + n * d * min(1.0, nprobe / s.nlist) * _bits_cost(s, d)
        return work / rates.scan
    if s.kind == "graph" and isinstance(ef, int):
        return min(n, ef * 1.5 * s.links) * d * _bits_cost(s, d) / rates.graph
    return model_query_s(s, n, d, rates, 0.99)


def prior_recall(s: Structure) -> float:
    """The highest recall ``s`` is expected to reach, from the bits its distances use."""
    bits = s.refine_bits if s.refine_bits is not None else s.bits
    cap = 1 - 0.4 * math.exp(-bits / 2.2)
    return cap - (0.005 if s.kind == "graph" else 0.0)


def estimate(
    job: BuildJob,
    s: Structure,
    n: int,
    nq: int,
    rates: Rates,
    history: History,
    build_threads: int,
) -> Estimate:
    """Seconds ``job`` is expected to take: stored builds of the same configuration, else
    the model scaled by this dataset's stored builds, plus worker start, serving memory and
    the searches its bisection (or grid) measures."""
    d = history.d
    build, basis = build_estimate(job, s, n, rates, history, build_threads)
    call = CALL_S if job.mode == "single" else 0.0
    query = model_query_s(s, n, d, rates, job.target_recall or 0.99) + call
    top = _top_query_s(job, s, n, d, rates) + call
    size = len(job.search_configs)
    if job.adaptive:
        probes = max_probes(size)
        fulls = 2 if job.latency_bound else 1
        search = nq * (top + (probes - 1) * (top + query) / 2)
    else:
        fulls = size
        search = 0.0
    search += fulls * max(job.runs * nq * query, job.min_seconds)
    overhead = WORKER_S + SERVING_S + 2 * n * d * 4 / READ_BYTES_S
    return Estimate(overhead + build + search, build, basis)


def build_estimate(
    job: BuildJob, s: Structure, n: int, rates: Rates, history: History, build_threads: int
) -> tuple[float, str]:
    """Seconds ``job``'s build is expected to take, and what the figure rests on: stored
    builds of the same configuration, else the model scaled by this dataset's stored builds;
    a build that timed out before is given clearly more (``RETRY_FACTOR``)."""
    stored = history.build_seconds(job)
    if stored is not None:
        build, basis = stored, "its stored build"
    else:
        build = model_build_s(s, n, history.d, rates, build_threads)
        scale, count = history.calibration(s, rates, build_threads)
        build *= scale
        basis = f"model calibrated by {count} stored builds" if count else "model"
    earlier = history.timed_out(job)
    if earlier is not None and build < earlier[0]:
        # it took longer than that: retried only when it can be given clearly more
        build = RETRY_FACTOR * earlier[0]
        seconds, when = earlier
        basis = f"its build timed out after {seconds:g} s on an earlier call ({when[:19]})"
    return build, basis


#: Load jobs (rate mode): seconds measuring the load generator's own ceiling once a job;
#: per search setting besides its warm-up and measured window, the recall check and starting
#: the clients, and when the clients are processes, each loading the saved index.
CEILING_S = 3.0
LOAD_SETTING_S = 0.5
PROCESS_CLIENTS_S = 3.0


@dataclass(frozen=True)
class LoadEstimate:
    """Seconds a load job is expected to take: ``fixed_s`` (worker, build, serving memory,
    the generator's ceiling) plus ``per_setting_s`` for each search setting."""

    fixed_s: float
    per_setting_s: float
    build_s: float
    basis: str

    def for_settings(self, count: int) -> Estimate:
        """The whole job's estimate with ``count`` search settings."""
        return Estimate(self.fixed_s + count * self.per_setting_s, self.build_s, self.basis)

    def settings_within(self, seconds: float) -> int:
        """How many search settings fit in ``seconds`` (0: not even one)."""
        if seconds < self.fixed_s + self.per_setting_s:
            return 0
        return int((seconds - self.fixed_s) // self.per_setting_s)


def load_estimate(
    job: BuildJob,
    s: Structure,
    n: int,
    nq: int,
    history: History,
    build_threads: int,
    *,
    process_clients: bool,
    rates: Rates = DEFAULT_RATES,
) -> LoadEstimate:
    """What a rate-mode ``job`` is expected to take (``job.load``: warm-up and measured
    seconds of each setting's load run): build as ``estimate`` has it, worker start, serving
    memory, the generator's ceiling, then per setting its load run, the recall check (one
    batch of ``nq`` queries) and starting its clients (``process_clients``: processes)."""
    build, basis = build_estimate(job, s, n, rates, history, build_threads)
    d = history.d
    overhead = WORKER_S + SERVING_S + 2 * n * d * 4 / READ_BYTES_S
    warmup, seconds = (job.load.warmup, job.load.seconds) if job.load else (0.5, 3.0)
    per_setting = warmup + seconds + LOAD_SETTING_S + nq * _top_query_s(job, s, n, d, rates)
    if process_clients:
        per_setting += PROCESS_CLIENTS_S
    return LoadEstimate(overhead + build + CEILING_S, per_setting, build, basis)


def timeout_for(estimate: Estimate, left: float) -> float:
    """The time a job is given: a margin over its estimate, within what is left."""
    return min(left, max(TIMEOUT_FACTOR * estimate.seconds, estimate.seconds + SLACK_S))


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


class History:
    """The store's attempts on one dataset's content: builds, timeouts and measured points."""

    def __init__(
        self,
        store: ResultStore,
        dataset: str,
        dataset_hash: str,
        shape: tuple[int, int],
        *,
        k: int,
        mode: str,
        threads: int,
        workload: str,
    ) -> None:
        self.store, self.dataset, self.dataset_hash = store, dataset, dataset_hash
        self.n, self.d = shape
        self.k, self.mode, self.threads, self.workload = k, mode, threads, workload
        self.refresh()

    def refresh(self) -> None:
        """Read the attempts again (after measuring)."""
        frame = self.store.dataframe(self.dataset, history=True)
        frame = frame[frame["dataset_hash"] == self.dataset_hash].copy()
        frame["build_key"] = [
            f"{b} {_key(p)} {v}"
            for b, p, v in zip(
                frame["backend"], frame["build_params"], frame["library_version"], strict=True
            )
        ]
        self.attempts = frame

    def _build(self, job: BuildJob) -> pd.DataFrame:
        key = f"{job.backend} {_key(job.build_params)} {job.library_version}"
        return self.attempts[self.attempts["build_key"] == key]

    def _search(self, job: BuildJob) -> pd.DataFrame:
        """Successful attempts (probes too) of ``job``'s build for the figures asked for."""
        rows = self._build(job)
        rows = rows[
            (rows["k"] == self.k)
            & (rows["mode"] == self.mode)
            & (rows["threads"] == self.threads)
            & (rows["workload"].fillna("plain") == self.workload)
        ]
        was_probe = rows["probe"].fillna(False).astype(bool)
        ok = successful(rows.assign(probe=False))
        ok["was_probe"] = was_probe.reindex(ok.index)
        return ok

    def build_seconds(self, job: BuildJob) -> float | None:
        """Median stored build seconds of ``job``'s build configuration on this machine."""
        rows = self._same_machine(self._build(job))
        seconds = rows.loc[rows["status"] == "ok", "build_s"].dropna()
        return float(seconds.median()) if len(seconds) else None

    def timed_out(self, job: BuildJob) -> tuple[float, str] | None:
        """The longest timeout (s, when) of ``job``'s build since it last finished a build."""
        rows = self._build(job)
        ok = rows[(rows["status"] == "ok") & rows["build_s"].notna()]
        if len(ok):
            rows = rows[rows["created_at"] > ok["created_at"].max()]
        found = [
            (float(m[1]), at)
            for error, at in zip(rows["error"].fillna(""), rows["created_at"], strict=True)
            if (m := _TIMED_OUT.search(error))
        ]
        return max(found) if found else None

    def calibration(self, s: Structure, rates: Rates, threads: int) -> tuple[float, int]:
        """How much slower than modelled this dataset's stored builds of the same family
        (flat, inverted file, product quantizer, graph) were on this CPU: the median ratio,
        within CALIBRATION_CLAMP, and over how many builds."""
        rows = self._same_machine(self.attempts)
        rows = rows[(rows["status"] == "ok") & rows["build_s"].notna()]
        rows = rows.drop_duplicates("build_key")
        ratios = []
        for backend, params, seconds in zip(
            rows["backend"], rows["build_params"], rows["build_s"], strict=True
        ):
            other = structure(backend, params, self.d)
            modelled = model_build_s(other, self.n, self.d, rates, threads)
            if _family(other) == _family(s) and modelled >= 1.0:  # not overhead alone
                ratios.append(seconds / modelled)
        if not ratios:
            return 1.0, 0
        ratio = float(np.median(ratios))
        return min(max(ratio, 1 / CALIBRATION_CLAMP), CALIBRATION_CLAMP), len(ratios)

    def _same_machine(self, rows: pd.DataFrame) -> pd.DataFrame:
        cpu = cpu_model()
        same = [not isinstance(p, dict) or p.get("cpu") in (None, cpu) for p in rows["provenance"]]
        return rows[same] if len(rows) else rows

    def settled(
        self,
        job: BuildJob,
        runs: int,
        constraints: Constraints,
        best: pd.Series | None,
        objective: str = "qps",
    ) -> str | None:
        """Why ``job`` need not be built again, from what is stored (``best``: the stored pick
        for ``objective``); None when it must."""
        ok = self._search(job)
        if not len(ok):
            return None
        measured = self._measured_limits(ok, constraints)
        if measured is not None:
            return measured
        # per search setting its latest full measurement, else its latest probe
        ok = ok.sort_values("was_probe", ascending=False, kind="stable")
        latest = {_key(row["search_params"]): row for _, row in ok.iterrows()}
        rungs = [latest.get(_key(p)) for p in job.search_configs]
        if not job.adaptive:
            if all(r is not None and not r["was_probe"] and r["runs"] >= runs for r in rungs):
                return "measured on an earlier call (stored)"
            return None
        answer = _replay(job, rungs, runs)
        if answer is not None:
            return answer
        return _cannot_contend(job, rungs, best, objective)

    def _measured_limits(self, ok: pd.DataFrame, constraints: Constraints) -> str | None:
        """A limit the build breaks whatever the search setting: memory, build time."""
        memory = ok["memory_footprint"].dropna()
        limit = constraints.max_memory_bytes
        if limit is not None and constraints.memory_figure == "serving" and len(memory):
            if memory.min() > limit:
                return (
                    f"cannot contend: measured memory {memory.min() / 1e6:.1f} MB > "
                    f"{limit / 1e6:.1f} MB"
                )
        build = ok["build_s"].dropna()
        if constraints.max_build_s is not None and len(build):
            if build.min() > constraints.max_build_s:
                return (
                    f"cannot contend: measured build {build.min():.1f} s > "
                    f"{constraints.max_build_s:g} s"
                )
        return None


class _Unknown(Exception):
    """A rung the store has no figures for."""


def _fits_latency(row: pd.Series, job: BuildJob) -> bool:
    if job.max_latency_ms is not None and row["latency_mean_ms"] > job.max_latency_ms:
        return False
    p99 = row.get("latency_p99_ms")
    return job.max_p99_ms is None or (p99 is not None and p99 <= job.max_p99_ms)


def _replay(job: BuildJob, rungs: list[pd.Series | None], runs: int) -> str | None:
    """What the job's bisection would find, replayed on stored figures: why it need not run
    (its answer is stored, or it has none), None when a rung it needs was never measured."""

    def known(i: int) -> pd.Series:
        if rungs[i] is None:
            raise _Unknown
        return rungs[i]

    top = job.search_configs[-1]
    try:
        if job.latency_bound:
            too_slow = bisect_ladder(len(rungs), lambda i: not _fits_latency(known(i), job))
            chosen = len(rungs) - 1 if too_slow is None else too_slow - 1
            if chosen < 0:
                first = known(0)
                return (
                    f"cannot contend: no setting fits the latency limit (measured: "
                    f"{params_label(job.search_configs[0])} takes {first['latency_mean_ms']:.3f} ms"
                    f" mean, p99 {first['latency_p99_ms']:.3f} ms)"
                )
        else:
            assert job.target_recall is not None
            chosen = bisect_ladder(len(rungs), lambda i: known(i)["recall"] >= job.target_recall)
            if chosen is None:
                best = known(len(rungs) - 1)
                return (
                    f"cannot contend: its best recall {best['recall']:.4f} (at "
                    f"{params_label(top)}, measured) is below {job.target_recall:g}"
                )
    except _Unknown:
        return None
    row = rungs[chosen]
    if row is not None and not row["was_probe"] and row["runs"] >= runs:
        return (
            f"measured on an earlier call: {params_label(job.search_configs[chosen])} recall "
            f"{row['recall']:.4f}, mean {row['latency_mean_ms']:.3f} ms (stored)"
        )
    return None


def _cannot_contend(
    job: BuildJob, rungs: list[pd.Series | None], best: pd.Series | None, objective: str
) -> str | None:
    """Why the best this job can find is beaten by ``best`` (stored) on recall or QPS
    whatever its unmeasured rungs show, by the monotone ladder; None when it may contend."""
    if best is None or objective not in ("recall", "qps"):
        return None
    if job.latency_bound:
        if objective != "recall":
            return None
        # the answer lies below the lowest rung known too slow: its recall is a ceiling
        slow = [r for r in rungs if r is not None and not _fits_latency(r, job)]
        if slow and slow[0]["recall"] < best["recall"] - RECALL_TIE:
            return (
                f"cannot contend: at most recall {slow[0]['recall']:.4f} within the latency "
                f"limit (measured) against {best['recall']:.4f} stored"
            )
        return None
    if objective != "qps":
        return None
    # the answer lies above the highest rung known to miss the target: its QPS is a ceiling
    miss = [r for r in rungs if r is not None and r["recall"] < (job.target_recall or 0)]
    if miss and miss[-1]["qps"] * QPS_MARGIN < best["qps"]:
        return (
            f"cannot contend: at most {miss[-1]['qps']:,.0f} QPS at recall "
            f">= {job.target_recall:g} (measured) against {best['qps']:,.0f} stored"
        )
    return None


@dataclass
class Planned:
    """A job to measure, in order of its chance to win."""

    label: str
    job: BuildJob
    structure: Structure
    estimate: Estimate
    rank: tuple[float, ...] = ()
    breaks: list[str] = field(default_factory=list)  # limits it is expected to break


def recall_within(s: Structure, n: int, d: int, rates: Rates, latency_s: float) -> float:
    """The recall ``s`` is expected to reach within ``latency_s`` a query (0: none), by
    inverting ``model_query_s``, at most ``prior_recall``."""
    cap = prior_recall(s)
    if s.kind == "ivf" and s.nlist:
        work = latency_s * rates.scan - s.nlist * d
        if work <= 0:
            return 0.0
        scanned = min(1.0, work / (n * d * _bits_cost(s, d)))
        return min(cap, max(0.0, 1 - 0.005 / scanned))
    if s.kind == "graph" and s.links:
        ef = latency_s * rates.graph / (d * _bits_cost(s, d) * 1.5 * s.links)
        return min(cap, max(0.0, 1 - (10 / max(ef, 1e-9)) ** 2))
    return cap if model_query_s(s, n, d, rates, cap) <= latency_s else 0.0


def chance(
    s: Structure,
    estimate_: Estimate,
    constraints: Constraints,
    objective: str,
    n: int,
    d: int,
    rates: Rates,
    budget_s: float = math.inf,
) -> tuple[tuple[float, ...], list[str]]:
    """Sort key, most likely to win first, and the limits ``s`` is expected to break: their
    count, then its expected objective in coarse bands (these are priors; a candidate that
    would take over a quarter of ``budget_s`` drops one band), then its cost."""
    cap = prior_recall(s)
    limits = [constraints.max_latency_ms, (constraints.max_p99_ms or math.inf) / 1.5]
    latency_limit = min(limit for limit in limits if limit is not None) / 1e3
    breaks = []
    if objective == "recall":
        expected = recall_within(s, n, d, rates, latency_limit) if latency_limit < 1 else cap
        if expected <= 0 or expected < (constraints.min_recall or 0):
            breaks.append(f"recall about {expected:.2f} within the latency limit")
        band = -math.floor(expected / 0.02)
    else:
        target = constraints.min_recall or 0.95
        latency = model_query_s(s, n, d, rates, target)
        if cap < target:
            breaks.append(f"its recall ceiling about {cap:.2f} < {target:g}")
        if latency > latency_limit:
            breaks.append(f"about {latency * 1e3:.2f} ms a query at recall {target:g}")
        band = round(math.log2(max(latency * 1e3, 1e-6)))
        if objective == "memory":
            band = round(math.log2(max(s.bits, 1)))
        elif objective == "build":
            band = round(math.log2(max(estimate_.build_s, 0.1)))
    if constraints.max_build_s is not None and estimate_.build_s > constraints.max_build_s:
        breaks.append(f"build about {estimate_.build_s:.0f} s")
    slow = estimate_.seconds > budget_s / 4
    return (len(breaks), band + slow, estimate_.seconds), breaks


def plan(
    jobs: list[tuple[str, BuildJob]],
    history: History,
    constraints: Constraints,
    objective: str,
    *,
    nq: int,
    build_threads: int,
    budget_s: float = math.inf,
    rates: Rates | None = None,
) -> list[Planned]:
    """``jobs`` with their estimates, most likely to win first (``chance``)."""
    rates = rates or DEFAULT_RATES
    n, d = history.n, history.d
    out = []
    for label, job in jobs:
        s = structure(job.backend, job.build_params, d)
        cost = estimate(job, s, n, nq, rates, history, build_threads)
        rank, breaks = chance(s, cost, constraints, objective, n, d, rates, budget_s)
        out.append(Planned(label, job, s, cost, rank, breaks))
    out.sort(key=lambda p: p.rank)
    for number, p in enumerate(out, 1):
        log.info(
            "%d. %s: expected %.0f s (build %.1f s, %s), prior recall %.2f",
            number,
            p.label,
            p.estimate.seconds,
            p.estimate.build_s,
            p.estimate.basis,
            prior_recall(p.structure),
        )
    return out


@dataclass
class Step:
    """One build configuration tried while measuring."""

    label: str
    seconds: float
    outcome: str
    records: list[RunRecord] = field(default_factory=list, repr=False)
    estimate_s: float | None = None  # what it was expected to take
    timed_out: bool = False


def measure_within(
    planned: list[Planned],
    store: ResultStore,
    budget: Budget,
    history: History,
    *,
    runs: int,
    constraints: Constraints,
    objective: str,
    frame: Callable[[], pd.DataFrame],
    say: Callable[[str], None],
) -> tuple[list[Step], list[Skip]]:
    """Measure ``planned`` in order, each with the time it needs while the budget lasts; the
    others skipped with the reason. ``frame()`` gives the stored full measurements."""
    steps: list[Step] = []
    skips: list[Skip] = []
    for number, plan in enumerate(planned, 1):
        best = recommend(frame(), constraints, objective).choice
        reason = history.settled(plan.job, runs, constraints, best, objective)
        if reason is None:
            reason = _no_time(plan, budget.left(), budget.seconds)
        if reason is not None:
            skips.append(Skip(plan.label, reason))
            say(f"[{number}/{len(planned)}] {plan.label}: skipped, {reason}")
            continue
        timeout = timeout_for(plan.estimate, budget.left())
        say(
            f"[{number}/{len(planned)}] {plan.label} (expected {plan.estimate.seconds:.0f} s, "
            f"given {timeout:.0f} s) ..."
        )
        start = clock()
        records = list(kept(runner.run_in_worker(plan.job, timeout), store))
        step = Step(
            plan.label,
            clock() - start,
            _outcome(plan.job, records),
            records,
            plan.estimate.seconds,
            timed_out(records),
        )
        steps.append(step)
        history.refresh()
        say(f"      {step.outcome} ({step.seconds:.1f} s)")
    return steps, skips


def _no_time(plan: Planned, left: float, budget_s: float) -> str | None:
    """Why ``plan`` cannot be given the time it needs out of ``left`` seconds (or, expected
    to break a limit, more than a quarter of ``budget_s``); None if it can."""
    needs = (
        f"needs about {plan.estimate.seconds:.0f} s (build {plan.estimate.build_s:.0f} s: "
        f"{plan.estimate.basis})"
    )
    if plan.estimate.seconds > left:
        return f"{needs}, {max(left, 0):.0f} s left"
    if plan.breaks and plan.estimate.seconds > budget_s / 4:
        return f"expected to break the limits ({'; '.join(plan.breaks)}) and {needs}"
    return None


def timed_out(records: Iterable[RunRecord]) -> bool:
    """Whether a job's worker was stopped by its timeout (its failed records say so)."""
    return any(_TIMED_OUT.search(r.error or "") for r in records)


def kept(records: Iterable[RunRecord], store: ResultStore) -> Iterable[RunRecord]:
    """Store each record (one failure per build: the rest say the same) and pass it on."""
    failed = False
    for record in records:
        if record.status != "ok":
            if failed:
                continue
            failed = True
        store.put(record)
        yield record


def _outcome(job: BuildJob, records: list[RunRecord]) -> str:
    """What a job found, in a few words."""
    failures = [r for r in records if r.status != "ok"]
    full = [r for r in records if r.status == "ok" and not r.probe]
    probes = sum(r.probe for r in records)
    if not full:
        if failures and (failures[0].error or "").startswith("timed out"):
            return f"stopped by the time budget ({failures[0].error})"
        if failures:
            return f"failed: {failures[0].error}"
        if job.latency_bound:
            return f"no setting fits the latency limit ({probes} probes)"
        return f"no setting reaches recall {job.target_recall:g} ({probes} probes)"
    best = full[-1]
    return (
        f"{params_label(best.search_params)}: recall {best.recall:.4f}, "
        f"mean {1e3 / best.qps:.3f} ms, p99 {best.latency_p99_ms or float('nan'):.3f} ms, "
        f"build {best.build_s:.1f} s"
        + (f", file {best.index_bytes / 1e6:.1f} MB" if best.index_bytes else "")
        + (f" ({probes} probes + full measurement)" if probes else " (full measurement)")
    )
