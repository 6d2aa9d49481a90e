"""What a worker process does for one build configuration of a runbook: replay the runbook's
inserts and deletes on one index, and at every search step time every search setting on it.

Replaying once per build configuration (not once per search setting) keeps the index state
identical for every search setting by construction, pays each update once, and gives one
insert/delete throughput per configuration. Where the backend lacks ``add`` or ``remove`` the
index is rebuilt from the live rows, and the step's record says so (``rebuilt``, ``rebuild_s``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from annbench.data.format import read_dataset
from annbench.data.runbooks import Runbook, RunbookTruth, Step, read_truth
from annbench.errors import AnnbenchError
from annbench.index import Index
from annbench.metrics import Metric, recall_at_k, true_distances
from annbench.provenance import provenance
from annbench.record import RunRecord
from annbench.registry import load_backend
from annbench.sweep.measure import BuildJob, failure_reason, time_search, timing_fields
from annbench.sweep.memory import rss_bytes

log = logging.getLogger(__name__)


class ReplayIndex:
    """An index kept equal to a runbook's live rows: ``add``/``remove`` where the backend has
    them, else a rebuild from the live rows. Search results come back as base row numbers."""

    def __init__(
        self, cls: type[Index], metric: Metric, build_params: dict[str, Any], xb: np.ndarray
    ) -> None:
        self.cls, self.metric, self.build_params, self.xb = cls, metric, build_params, xb
        self.index: Index | None = None
        self.live = np.zeros(len(xb), dtype=bool)
        # the index's own id of each of its vectors -> base row (None: they are the same)
        self.id_map: np.ndarray | None = None
        self.threads = 1

    def set_num_threads(self, n: int) -> None:
        """Threads for the index's updates and searches from now on."""
        self.threads = n
        if self.index is not None:
            self.index.set_num_threads(n)

    def apply(self, step: Step) -> dict[str, Any]:
        """Carry out an insert / delete / replace step: record fields of what it took."""
        deleted = np.arange(*step.delete) if step.delete is not None else None
        inserted = np.arange(*step.insert) if step.insert is not None else None
        start = time.perf_counter()
        fields: dict[str, Any] = {"rebuilt": False}
        if self.index is None:
            if deleted is not None or inserted is None:
                raise AnnbenchError(f"step {step.describe()} comes before any insert")
            self._build(inserted)
            fields["build_s"] = time.perf_counter() - start
        else:
            # asked of the instance: a backend may decide per build configuration
            can_remove = deleted is None or self.index.supports_remove
            can_add = inserted is None or self.index.supports_add
            if can_remove and can_add:
                if deleted is not None:
                    self.index.remove(self._own_ids(deleted))
                    self.live[deleted] = False
                if inserted is not None:
                    self._add(inserted)
            else:
                if deleted is not None:
                    self.live[deleted] = False
                if inserted is not None:
                    self.live[inserted] = True
                rebuild_start = time.perf_counter()
                self._build(np.flatnonzero(self.live))
                fields.update(rebuilt=True, rebuild_s=time.perf_counter() - rebuild_start)
        fields["update_s"] = elapsed = time.perf_counter() - start
        fields["vectors_per_s"] = step.changed / elapsed if elapsed > 0 else None
        return fields

    def close(self) -> None:
        """Release the current index (a database server stops)."""
        if self.index is not None:
            self.index.close()
        self.index = None

    def search_rows(self, ids: np.ndarray) -> np.ndarray:
        """The index's returned ids ``(nq, k)`` as base rows (-1 stays -1)."""
        if self.id_map is None:
            return ids
        known = (ids >= 0) & (ids < len(self.id_map))
        return np.where(known, self.id_map[np.where(known, ids, 0)], -1)

    def _build(self, rows: np.ndarray) -> None:
        index = self.cls(self.metric, **self.build_params)
        index.set_num_threads(self.threads)
        self.close()  # the old index (if any) is freed before the new one is built
        index.build(self.xb[rows])
        self.index = index
        self.live[:] = False
        self.live[rows] = True
        contiguous = len(rows) and rows[0] == 0 and rows[-1] == len(rows) - 1
        self.id_map = None if contiguous else rows.astype(np.int64)

    def _add(self, rows: np.ndarray) -> None:
        if self.id_map is None:
            own = rows.astype(np.int64)
        else:
            own = np.arange(len(self.id_map), len(self.id_map) + len(rows), dtype=np.int64)
            self.id_map = np.concatenate([self.id_map, rows])
        self.index.add(self.xb[rows], own)
        self.live[rows] = True

    def _own_ids(self, rows: np.ndarray) -> np.ndarray:
        if self.id_map is None:
            return rows.astype(np.int64)
        own = np.full(len(self.xb), -1, dtype=np.int64)
        own[self.id_map] = np.arange(len(self.id_map))
        return own[rows]


def run_runbook_job(
    job: BuildJob,
    emit: Callable[[RunRecord], None],
    status: Callable[[str], None] | None = None,
) -> None:
    """Replay ``job.runbook`` on one index of ``job``'s build configuration, emitting one
    record per update step and one per search step x search setting x thread count;
    ``status`` hears each step (``step 2/22: insert [50, 60)``)."""
    tell = status or (lambda text: None)
    plan = job.runbook
    assert plan is not None, "run_runbook_job needs a job with a runbook"
    runbook = plan.runbook
    dataset = read_dataset(Path(job.dataset_path), probe=False)
    truth = read_truth(Path(plan.truth_path), runbook)
    if truth is None:
        raise AnnbenchError(
            f"Ground truth of runbook {runbook.name} is missing from {plan.truth_path}; run "
            f"'annbench datasets runbook {dataset.name} {runbook.name}'"
        )
    replay = ReplayIndex(load_backend(job.backend), dataset.metric, job.build_params, dataset.train)
    replay.cls(dataset.metric, **job.build_params).check(plan.min_live, dataset.train.shape[1])
    build_threads = job.build_threads or os.cpu_count() or 1
    context = {"provenance": provenance(build_threads)}
    before = rss_bytes()
    try:
        _replay(job, replay, dataset, truth, before, build_threads, context, emit, tell)
    finally:
        replay.close()


def _replay(
    job: BuildJob,
    replay: ReplayIndex,
    dataset: Any,
    truth: RunbookTruth,
    before: int,
    build_threads: int,
    context: dict[str, Any],
    emit: Callable[[RunRecord], None],
    tell: Callable[[str], None],
) -> None:
    runbook = job.runbook.runbook
    for i, step in enumerate(runbook.steps):
        tell(f"step {i + 1}/{len(runbook.steps)}: {step.describe()}")
        if step.kind != "search":
            replay.set_num_threads(build_threads)
            fields = replay.apply(step)
            emit(
                step_record(
                    job,
                    i,
                    step_kind=step.kind,
                    live_size=int(replay.live.sum()),
                    memory_bytes=_memory(replay, before),
                    **fields,
                    **context,
                )
            )
            continue
        for search_params in job.search_configs:
            for threads in job.threads:
                emit(_measure(job, replay, dataset, truth, i, search_params, threads, before))


def _measure(
    job: BuildJob,
    replay: ReplayIndex,
    dataset: Any,
    truth: RunbookTruth,
    i: int,
    search_params: dict[str, Any],
    threads: int,
    before: int,
) -> RunRecord:
    index = replay.index
    common = {
        "step": i,
        "step_kind": "search",
        "live_size": int(replay.live.sum()),
        "provenance": provenance(threads),
    }
    # the index's own ids: base rows, or positions in id_map when it was built on a subset
    n = len(dataset.train) if replay.id_map is None else len(replay.id_map)
    try:
        index.set_search_params(**search_params)
        replay.set_num_threads(threads)
        timing = time_search(
            index,
            dataset.test,
            job.k,
            job.mode,
            job.runs,
            job.min_seconds,
            n=n,
            backend=job.backend,
        )
    except (Exception, SystemExit) as exc:  # the backend's own code may raise anything
        error = (index.problem() if index is not None else None) or failure_reason(job.backend, exc)
        return job.record(search_params, threads, status="failed", error=error, **common)
    ids = replay.search_rows(timing.ids)
    known = (ids >= 0) & (ids < len(dataset.train))
    live = known & replay.live[np.where(known, ids, 0)]
    not_live = int((known & ~live).sum())
    ids = np.where(live, ids, -1)  # a deleted row is a miss, even if it is close
    found = true_distances(dataset.metric, dataset.train, dataset.test, ids)
    gt_ids, gt_distances = truth.steps[i]
    recall = recall_at_k(ids, found, gt_ids, gt_distances, job.k)
    return job.record(
        search_params,
        threads,
        recall=float(recall.recall.mean()),
        ann_benchmarks_recall=float(recall.ann_benchmarks_recall.mean()),
        duplicates=recall.duplicates,
        missing=recall.missing - not_live,
        not_live=not_live,
        **timing_fields(timing),
        n_queries=len(dataset.test),
        memory_bytes=_memory(replay, before),
        ids=ids,
        latencies_ns=timing.latencies_ns,
        cpu_ns=timing.cpu_ns,
        **common,
    )


def _memory(replay: ReplayIndex, before: int) -> int:
    own = replay.index.memory_bytes() if replay.index is not None else None
    return own or max(rss_bytes() - before, 0)


def step_record(job: BuildJob, i: int, **fields: Any) -> RunRecord:
    """The record of update step ``i`` of ``job``'s runbook (no search parameters)."""
    return job.record({}, job.threads[0], step=i, **fields)


def runbook_records(job: BuildJob, **fields: Any) -> list[RunRecord]:
    """Every record ``job`` (a runbook job) produces, with ``fields`` (keys, failures)."""
    runbook: Runbook = job.runbook.runbook  # type: ignore[union-attr]
    out = []
    for i, step in enumerate(runbook.steps):
        if step.kind != "search":
            out.append(step_record(job, i, step_kind=step.kind, **fields))
            continue
        for search_params in job.search_configs:
            for threads in job.threads:
                out.append(job.record(search_params, threads, step=i, step_kind="search", **fields))
    return out


def pending_runbook_job(job: BuildJob, done: set[str]) -> tuple[BuildJob | None, int]:
    """``job`` narrowed to the search settings with a step not yet stored (None when all is
    stored), and how many of its records are stored already. The updates are replayed again
    whatever is left: the index state at a search step depends on every update before it."""
    records = runbook_records(job)
    if all(r.key in done for r in records):
        return None, len(records)
    remaining = tuple(
        s
        for s in job.search_configs
        if any(
            r.key not in done
            for r in runbook_records(dataclasses.replace(job, search_configs=(s,)))
        )
    )
    narrowed = dataclasses.replace(job, search_configs=remaining)
    return narrowed, len(records) - runbook_run_count(narrowed)


def runbook_run_count(job: BuildJob) -> int:
    """How many records ``job`` (a runbook job) produces."""
    return len(runbook_records(job))
