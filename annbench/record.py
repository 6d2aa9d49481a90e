"""The one result record that flows from runner to store to report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

#: single: one query per call on one thread; batch: all queries in one call; concurrent: N
#: closed-loop clients at once; rate: queries arriving on a seeded schedule (open loop)
MODES = ("single", "batch", "concurrent", "rate")
#: the modes that drive the index under load (annbench.sweep.load)
LOAD_MODES = ("concurrent", "rate")
#: The workload of an ordinary k-NN sweep; filters (``label``, ``range:0.01``) and runbooks
#: (``runbook:sliding-window``) name theirs.
PLAIN = "plain"


@dataclass
class RunRecord:
    """One measured (or failed) run: a dataset, a backend, build and search parameters, k, mode.

    Timing figures are medians over ``runs`` timed repeats; the latency percentiles come from
    the repeat whose QPS is the median, so QPS and latencies describe the same repeat.
    """

    dataset: str
    dataset_hash: str
    backend: str
    build_params: dict[str, Any]
    search_params: dict[str, Any]
    k: int
    mode: str
    threads: int
    workload: str = PLAIN  # "plain", a filter ("label", "range:0.01") or "runbook:NAME"
    library_version: str | None = None  # version of the backend's library: part of the key
    step: int | None = None  # runbooks: index of the step this record measures
    probe: bool = False  # a short measurement taken while searching, not a full result
    #: load modes: closed-loop clients (concurrent) or the clients pacing arrivals (rate)
    clients: int | None = None
    rate: float | None = None  # rate mode: offered queries per second
    rate_share: float | None = None  # rate mode: offered rate as a share of saturation_qps
    cores: int | None = None  # load modes: CPUs the measuring process could run on
    #: size ladders: rows of the base the index was built on (a nested subset, see
    #: annbench.data.subsets); None: the whole base
    base_size: int | None = None
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    recall: float | None = None  # annbench recall@k: id-based, ties counted
    ann_benchmarks_recall: float | None = None  # ann-benchmarks distance-threshold recall
    duplicates: int | None = None
    missing: int | None = None
    label_top_k_accuracy: float | None = None  # datasets with labels: any result shares the label
    label_precision: float | None = None  # precision@k by label
    label_map: float | None = None  # mAP@k by label
    qps: float | None = None  # median over repeats
    qps_min: float | None = None
    qps_max: float | None = None
    qps_q1: float | None = None  # quartiles over repeats: the spread that more repeats don't grow
    qps_q3: float | None = None
    runs: int | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_p999_ms: float | None = None
    latency_p99_spread: float | None = None  # IQR / median of the repeats' p99 (single mode)
    #: Single mode: each query's thread CPU time, beside its wall time, from the same repeat.
    #: CPU time leaves out time the host took the core away (other processes, stalls).
    cpu_mean_ms: float | None = None
    cpu_p50_ms: float | None = None
    cpu_p99_ms: float | None = None
    cpu_p999_ms: float | None = None
    wall_cpu_ratio: float | None = None  # summed wall time / summed CPU time of the queries
    wall_cpu_p99_ratio: float | None = None  # p99 wall latency / p99 CPU time
    build_s: float | None = None
    #: CPU seconds the worker process spent building, all its threads: the build's work
    #: without the time the host took the cores away (a server's own CPU is not in it)
    build_cpu_s: float | None = None
    #: databases (``Index.load_phases``): build_s split into storing the vectors, building
    #: the index over them, and waiting until the database says it is ready to serve
    insert_s: float | None = None
    inserts_per_s: float | None = None  # base rows stored per second during insert_s
    index_build_s: float | None = None
    ready_s: float | None = None
    index_bytes: int | None = None  # serialized index size (file size)
    memory_bytes: int | None = None  # resident memory the worker grew by while building
    peak_rss_bytes: int | None = None  # peak resident memory of the worker during build
    serving_memory_bytes: int | None = None  # resident memory the index adds when loaded fresh
    serving_rss_bytes: int | None = None  # the fresh process's whole RSS gain (code pages too)
    load_s: float | None = None  # cold load of the saved index in a fresh process
    selectivity: float | None = None  # filters: mean fraction of the base a query may return
    step_kind: str | None = None  # runbooks: insert, delete, replace or search
    live_size: int | None = None  # runbooks: base rows live in the index after the step
    update_s: float | None = None  # runbooks: wall time of an insert/delete/replace step
    vectors_per_s: float | None = None  # runbooks: rows inserted + deleted per second
    rebuilt: bool | None = None  # runbooks: the step rebuilt the index from the live set
    rebuild_s: float | None = None  # runbooks: time of that rebuild (part of update_s)
    not_live: int | None = None  # runbooks: returned ids not live at the step (misses)
    #: Load modes (see annbench.sweep.load). ``qps`` is the achieved throughput and the
    #: latency percentiles come from the HDR histogram (rate mode: from intended send times).
    saturation_qps: float | None = None  # highest closed-loop throughput over client counts
    latency_mean_ms: float | None = None
    latency_max_ms: float | None = None
    deadline_ms: float | None = None
    deadline_miss: float | None = None  # share of queries answered past deadline_ms
    unfinished: int | None = None  # rate mode: scheduled queries abandoned unanswered
    lag_p99_ms: float | None = None  # rate mode: how late clients started queries (p99)
    load_seconds: float | None = None  # measured window of the load run
    generator_max_qps: float | None = None  # the load generator's own ceiling (no-op index)
    generator_p99_ms: float | None = None  # the generator's own p99 at this load (no-op index)
    n_queries: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    ids: np.ndarray | None = field(default=None, repr=False)  # (nq, k) ids of the median repeat
    latencies_ns: np.ndarray | None = field(default=None, repr=False)  # (nq,) single mode
    cpu_ns: np.ndarray | None = field(default=None, repr=False)  # (nq,) thread CPU, single mode
    #: load modes: base64 HDR histogram of the latencies in ns (annbench.sweep.load)
    latency_histogram: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """What makes two records the same measurement: a re-run replaces, never duplicates."""
        return record_key(
            self.dataset_hash,
            self.backend,
            self.build_params,
            self.search_params,
            self.k,
            self.mode,
            self.threads,
            self.workload,
            self.library_version,
            self.step,
            self.load_point,
            self.base_size,
        )

    @property
    def load_point(self) -> dict[str, Any] | None:
        """Load modes: what the run offered (client count, or rate or share of saturation,
        and clients) and on how many cores; None for single and batch."""
        return load_point(self.mode, self.clients, self.rate, self.rate_share, self.cores)

    @property
    def near_generator_ceiling(self) -> bool:
        """Whether a load figure may describe the load generator as much as the index (see
        ``near_generator_ceiling``)."""
        return near_generator_ceiling(
            self.mode,
            self.rate,
            self.qps,
            self.generator_max_qps,
            self.latency_p99_ms,
            self.generator_p99_ms,
        )

    def latency_percentile_ms(self, percentile: float) -> float | None:
        """Latency at ``percentile`` (0-100) recomputed from the stored HDR histogram (load
        modes, read with raw arrays), or from the raw latencies of single mode."""
        if self.latency_histogram:
            histogram = HdrHistogram.decode(self.latency_histogram.encode("ascii"))
            return histogram.get_value_at_percentile(percentile) / 1e6
        if self.latencies_ns is not None and len(self.latencies_ns):
            return float(np.percentile(self.latencies_ns, percentile)) / 1e6
        return None

    @property
    def qps_spread(self) -> float | None:
        """Interquartile range / median QPS over the repeats ((max - min) / median for records
        stored before quartiles were); None, unknown, for a single repeat."""
        if not self.qps or (self.runs is not None and self.runs < 2):
            return None
        if self.qps_q1 is not None and self.qps_q3 is not None:
            return (self.qps_q3 - self.qps_q1) / self.qps
        if self.qps_min is None or self.qps_max is None:
            return None
        return (self.qps_max - self.qps_min) / self.qps

    def summary_dict(self) -> dict[str, Any]:
        """Every field but the raw arrays."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RAW_FIELDS}


RAW_FIELDS = ("ids", "latencies_ns", "cpu_ns", "latency_histogram")
JSON_FIELDS = ("build_params", "search_params", "provenance")
SCALAR_FIELDS = tuple(
    f.name for f in fields(RunRecord) if f.name not in RAW_FIELDS and f.name not in JSON_FIELDS
)


#: A load figure offered above this share of the generator's ceiling is flagged.
CEILING_SHARE = 0.5
#: A load figure whose p99 is under this multiple of the generator's own p99 is flagged.
GENERATOR_P99_MULTIPLE = 2.0


def near_generator_ceiling(
    mode: str,
    rate: float | None,
    qps: float | None,
    generator_max_qps: float | None,
    latency_p99_ms: float | None = None,
    generator_p99_ms: float | None = None,
) -> bool:
    """Whether a load figure may describe the load generator as much as the index: its
    offered rate (rate mode) or throughput (concurrent) is over CEILING_SHARE of the
    generator's ceiling, or its p99 is under GENERATOR_P99_MULTIPLE times the p99 the
    generator shows against a no-op search at that load. Unknown figures flag nothing."""
    offered = rate if mode == "rate" else qps
    if _known(offered) and _known(generator_max_qps) and generator_max_qps > 0:
        if offered > CEILING_SHARE * generator_max_qps:
            return True
    return bool(
        _known(latency_p99_ms)
        and _known(generator_p99_ms)
        and latency_p99_ms < GENERATOR_P99_MULTIPLE * generator_p99_ms
    )


def _known(value: Any) -> bool:
    return value is not None and value == value


def record_key(
    dataset_hash: str,
    backend: str,
    build_params: dict[str, Any],
    search_params: dict[str, Any],
    k: int,
    mode: str,
    threads: int,
    workload: str = PLAIN,
    library_version: str | None = None,
    step: int | None = None,
    load: dict[str, Any] | None = None,
    base_size: int | None = None,
) -> str:
    """Canonical text key of a measurement (records stored before workloads, versions,
    steps, load modes and size ladders existed keep their keys)."""
    parts: list[Any] = [dataset_hash, backend, build_params, search_params, k, mode, threads]
    extra = {
        "workload": workload,
        "library_version": library_version,
        "step": step,
        "load": load,
        "size": base_size,
    }
    extra = {name: value for name, value in extra.items() if value not in (None, PLAIN)}
    if extra:
        parts.append(extra)
    return json.dumps(parts, sort_keys=True)


def load_point(
    mode: str, clients: Any, rate: Any, rate_share: Any, cores: Any
) -> dict[str, Any] | None:
    """The load point of a record's key (see ``RunRecord.load_point``), from fields as stored
    or as DataFrame cells (NaN for missing, floats for counts)."""
    if mode not in LOAD_MODES:
        return None

    def number(value: Any, kind: type) -> Any:
        return None if value is None or value != value else kind(value)  # NaN != NaN

    point: dict[str, Any] = {"clients": number(clients, int), "cores": number(cores, int)}
    if mode == "rate":
        share = number(rate_share, float)
        point |= {"rate_share": share} if share else {"rate": number(rate, float)}
    return point


def mode_label(
    mode: str,
    clients: Any = None,
    rate: Any = None,
    rate_share: Any = None,
    cores: Any = None,
) -> str:
    """How a record was measured, for tables: ``single``, ``batch``, ``concurrent 4 clients,
    2 cores``, ``rate 2,000/s (25% sat) 2 clients, 2 cores``; missing values (None, NaN)
    left out."""
    if mode not in LOAD_MODES:
        return str(mode)

    def given(value: Any) -> bool:
        return value is not None and value == value  # NaN != NaN

    parts = [mode]
    if mode == "rate":
        if given(rate):
            parts.append(f"{float(rate):,.0f}/s")
        if given(rate_share):
            parts.append(f"({float(rate_share):.0%} sat)")
    counts = []
    if given(clients):
        counts.append(f"{int(clients)} client{'s' if int(clients) != 1 else ''}")
    if given(cores):
        counts.append(f"{int(cores)} core{'s' if int(cores) != 1 else ''}")
    return " ".join(parts) + (" " + ", ".join(counts) if counts else "")


def params_label(params: dict[str, Any]) -> str:
    """``{'M': 16, 'efConstruction': 200}`` -> ``'M=16 efConstruction=200'``."""
    return " ".join(f"{k}={v}" for k, v in params.items()) or "-"
