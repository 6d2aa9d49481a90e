"""Conformance kit for backends, in the spirit of scikit-learn's ``check_estimator``.

A third-party backend runs it on itself in its own tests::

    from annbench.testing import check_backend
    from my_package import MyIndex

    def test_my_index_conforms():
        check_backend(MyIndex)

Each failed check raises ``AssertionError`` naming the backend and the check.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from annbench.data.groundtruth import exact_knn
from annbench.data.synthetic import clustered_gaussian
from annbench.errors import AnnbenchError, one_line_error
from annbench.index import Condition, Index, Neighbors
from annbench.metrics import Metric, recall_at_k, true_distances
from annbench.param_grid import Params, check_grid
from annbench.registry import grid_for_class

if TYPE_CHECKING:
    from annbench.sweep.load import GilMeasurement

log = logging.getLogger(__name__)

#: recall@10 the best default setting must reach on the kit's tiny clustered data
MIN_RECALL = 0.9
N_BASE, N_QUERIES, DIM, K = 500, 40, 16, 10
#: build configurations of the default grid tried at most (the first that pass ``check``)
MAX_BUILDS = 4


class _Checker:
    """Runs the checks of one backend class on one metric's data."""

    def __init__(
        self, cls: type[Index], name: str, metric: Metric, seed: int, min_recall: float
    ) -> None:
        self.cls, self.name, self.metric, self.min_recall = cls, name, metric, min_recall
        x, _ = clustered_gaussian(N_BASE + N_QUERIES, DIM, n_clusters=8, seed=seed)
        self.xb, self.xq = x[:N_BASE], x[N_BASE:]
        self.gt_d, self.gt_i = exact_knn(self.xb, self.xq, K, metric)
        self.id_limit = N_BASE  # ids at or past it are out of range

    def fail(self, check: str, detail: str) -> AssertionError:
        return AssertionError(f"{self.name} [{self.metric.value}] {check}: {detail}")

    def recall(self, ids: np.ndarray) -> float:
        found = true_distances(self.metric, self.xb, self.xq, ids)
        return float(recall_at_k(ids, found, self.gt_i, self.gt_d, K).recall.mean())

    def make(self, build: Params) -> Index:
        index = self.cls(self.metric, **build)
        index.check(N_BASE, DIM)
        index.set_num_threads(1)  # tiny data: threads only contend on a shared machine
        index.build(self.xb)
        return index

    def best(self, configs: list[tuple[Params, list[Params]]]) -> tuple[Index, Params, Params]:
        """The built index and (build, search) setting with the highest recall."""
        best: tuple[float, Index, Params, Params] | None = None
        tried = 0
        for build, searches in configs:
            if tried == MAX_BUILDS:
                break
            try:
                index = self.make(build)
            except AnnbenchError as exc:  # a setting meant for larger data: try the next
                log.info("%s: %s does not fit the kit's data: %s", self.name, build, exc)
                continue
            tried += 1
            xq = index.prepare_queries(self.xq)
            for search in searches:
                index.set_search_params(**search)
                recall = self.recall(self.checked(index.search(xq, K), K, "search"))
                if best is None or recall > best[0]:
                    best = (recall, index, build, search)
        if best is None:
            raise self.fail(
                "default grid",
                f"no build setting works on {N_BASE}x{DIM} data; pass build= and search=",
            )
        recall, index, build, search = best
        index.set_search_params(**search)
        if recall < self.min_recall:
            raise self.fail(
                "recall",
                f"{recall:.3f} < {self.min_recall} at its best setting "
                f"build={build} search={search}",
            )
        return index, build, search

    def checked(self, result: Neighbors, k: int, call: str) -> np.ndarray:
        """ids of ``result`` after checking shape, dtype, range, duplicates and -1 padding."""
        if not isinstance(result, tuple) or len(result) != 2:
            raise self.fail(call, "must return Neighbors(distances, ids)")
        ids = np.asarray(result.ids)
        if ids.shape != (N_QUERIES, k):
            raise self.fail(call, f"ids shape {ids.shape}, expected {(N_QUERIES, k)}")
        if np.asarray(result.distances).shape != (N_QUERIES, k):
            raise self.fail(call, f"distances shape {np.shape(result.distances)}")
        if ids.dtype != np.int64:
            raise self.fail(call, f"ids dtype {ids.dtype}, expected int64")
        if ((ids < -1) | (ids >= self.id_limit)).any():
            raise self.fail(call, f"ids outside [-1, {self.id_limit}): {ids.min()}..{ids.max()}")
        for row in ids:
            valid = row[row >= 0]
            if len(np.unique(valid)) != len(valid):
                raise self.fail(call, f"duplicate ids in one result row: {row.tolist()}")
            if (row[len(valid) :] != -1).any():
                raise self.fail(call, f"-1 padding must come after the ids found: {row.tolist()}")
        return ids


def check_backend(
    cls: type[Index],
    metrics: Iterable[Metric | str] | None = None,
    *,
    build: Params | None = None,
    search: Params | list[Params] | None = None,
    seed: int = 0,
    min_recall: float = MIN_RECALL,
) -> None:
    """Check ``cls`` against the Index contract on tiny seeded data; AssertionError if not.

    For each metric it claims (or ``metrics``): recall@10 >= 0.9 at the best setting of its
    default grid (or the ``build``/``search`` given), ``k`` above the base padded with -1,
    int64 ids in range without duplicates, ``search_one`` on prepared queries agreeing with
    ``search``, ``save`` writing a non-empty file that ``load`` reads back into a fresh object
    with the same results, ``set_num_threads``, and when declared ``add``, ``remove`` and
    ``search_filtered``; constructing it for a metric it does not claim raises AnnbenchError.
    ``min_recall`` lowers the recall bar for lossy settings. An error the backend raises is an
    AssertionError naming it too.
    """
    from annbench.registry import name_of

    name = name_of(cls) or cls.__name__
    configs = _configs(cls, name, build, search)
    with _raising_named(name, "unsupported metrics"):
        _check_unsupported_metrics(cls, name, configs[0][0])
    chosen = cls.metrics if metrics is None else {Metric.parse(m) for m in metrics}
    for metric in sorted(chosen, key=lambda m: m.value):
        if metric not in cls.metrics:
            raise AssertionError(f"{name}: asked to check {metric.value}, which it does not claim")
        with _raising_named(name, metric.value):
            own = _configs(cls, name, build, search, metric)
            _check_metric(cls, name, metric, own, seed, min_recall)


@contextmanager
def _raising_named(name: str, where: str) -> Iterator[None]:
    """An error the backend raises (other than a failed check) as an AssertionError naming it."""
    try:
        yield
    except AssertionError:
        raise
    except (Exception, SystemExit) as exc:
        raise AssertionError(f"{name} [{where}] raised {one_line_error(exc)}") from exc


def _check_metric(
    cls: type[Index],
    name: str,
    metric: Metric,
    configs: list[tuple[Params, list[Params]]],
    seed: int,
    min_recall: float,
) -> None:
    """Every check of ``cls`` on ``metric``'s data."""
    checker = _Checker(cls, name, metric, seed, min_recall)
    index, build_params, search_params = checker.best(configs)
    _check_padding(checker, index)
    _check_prepared_queries(checker, index)
    with tempfile.TemporaryDirectory(prefix="annbench-check-") as folder:
        loaded = _check_save_load(checker, index, build_params, search_params, Path(folder))
    _check_threads(checker, index)
    # capabilities may depend on the build parameters (instance attributes)
    if index.native_filter:
        _check_filtered(checker, index)
    if index.native_where:
        _check_where(checker, build_params, search_params)
    if loaded.supports_remove:
        _check_remove(checker, loaded)
    if loaded.supports_add:
        _check_add(checker, loaded)
    log.info("%s [%s] conforms", name, metric.value)


def _configs(
    cls: type[Index],
    name: str,
    build: Params | None,
    search: Params | list[Params] | None,
    metric: Metric | None = None,
) -> list[tuple[Params, list[Params]]]:
    """(build, search settings) pairs to choose the best from: the default grid's blocks for
    ``metric`` (all blocks without one), unless ``build``/``search`` say otherwise."""
    if build is not None or search is not None:
        searches = [search or {}] if not isinstance(search, list) else search
        return [(build or {}, searches)]
    grid = grid_for_class(name, cls)
    try:
        check_grid(name, cls, grid)
    except AnnbenchError as exc:
        raise AssertionError(
            f"{name} default grid: {exc}; ship one (a default_grid class attribute or a "
            f"{name}.yaml beside the module) or pass build= and search= to check_backend"
        ) from None
    if metric is not None and grid.for_metric(metric).build_configs():
        grid = grid.for_metric(metric)  # e.g. usearch's i8 block is for angular data only
    return [(b, grid.search_configs(b)) for b in grid.build_configs()]


def _check_unsupported_metrics(cls: type[Index], name: str, build: Params) -> None:
    for metric in set(Metric) - set(cls.metrics):
        try:
            cls(metric, **build)
        except AnnbenchError:
            continue
        raise AssertionError(
            f"{name} [{metric.value}] unsupported metric: construction must raise AnnbenchError"
        )


def _check_padding(checker: _Checker, index: Index) -> None:
    k = N_BASE + 7
    ids = checker.checked(index.search(index.prepare_queries(checker.xq), k), k, "k > base")
    if not (ids[:, N_BASE:] == -1).all():
        raise checker.fail("k > base", f"columns past the {N_BASE} base vectors must be -1")


def _check_prepared_queries(checker: _Checker, index: Index) -> None:
    xq = index.prepare_queries(checker.xq)
    batch = index.search(xq, K).ids
    for i in range(5):
        one = np.asarray(list(index.search_one(xq[i], K)), dtype=np.int64)
        one = one[one >= 0]
        row = batch[i][batch[i] >= 0]
        if not np.array_equal(one, row):
            raise checker.fail(
                "search_one",
                f"query {i}: search_one gave {one.tolist()}, search gave {row.tolist()}",
            )


def _check_save_load(
    checker: _Checker, index: Index, build: Params, search: Params, folder: Path
) -> Index:
    path = folder / "index"
    index.save(path)
    written = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if not sum(p.stat().st_size for p in written):
        raise checker.fail(
            "save", f"must write a non-empty file (or folder of files) at the path given ({path})"
        )
    fresh = checker.cls(checker.metric, **build)
    try:
        fresh.load(path)
    except NotImplementedError:
        raise checker.fail(
            "load", "not implemented; load(path) must read what save wrote"
        ) from None
    fresh.set_search_params(**search)
    expected = index.search(index.prepare_queries(checker.xq), K).ids
    got = checker.checked(fresh.search(fresh.prepare_queries(checker.xq), K), K, "load")
    if not np.array_equal(expected, got):
        raise checker.fail("load", "a loaded copy returns other ids than the saved index")
    return fresh


def _check_threads(checker: _Checker, index: Index) -> None:
    xq = index.prepare_queries(checker.xq)
    expected = checker.recall(index.search(xq, K).ids)
    for n in (1, 2):
        index.set_num_threads(n)
        recall = checker.recall(checker.checked(index.search(xq, K), K, f"{n} threads"))
        if abs(recall - expected) > 0.05:
            raise checker.fail("set_num_threads", f"recall {recall:.3f} with {n} threads")


def _check_filtered(checker: _Checker, index: Index) -> None:
    rng = np.random.default_rng(7)
    xq = index.prepare_queries(checker.xq)
    for share in (0.3, 4 / N_BASE):
        allowed = rng.random(N_BASE) < share
        allowed[rng.integers(N_BASE)] = True
        call = f"search_filtered ({allowed.sum()} allowed)"
        ids = checker.checked(index.search_filtered(xq, K, allowed), K, call)
        found = ids[ids >= 0]
        if not allowed[found].all():
            raise checker.fail(call, f"returned ids that are not allowed: {found[~allowed[found]]}")
        if share > 0.1 and not len(found):
            raise checker.fail(call, "found nothing")


#: recall@10 ``search_where`` must reach, against the exact answer among allowed rows
MIN_WHERE_RECALL = 0.8


def _check_where(checker: _Checker, build_params: Params, search_params: Params) -> None:
    """``set_fields`` then ``search_where``: only allowed rows, near the exact filtered answer,
    for a label condition, a value range and a condition nothing meets."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, N_BASE)
    values = rng.random(N_BASE)
    index = checker.cls(checker.metric, **build_params)
    index.set_num_threads(1)
    index.set_fields(labels, values)
    index.build(checker.xb)
    index.set_search_params(**search_params)
    xq = index.prepare_queries(checker.xq)
    for condition in (
        Condition("label", equals=1),
        Condition("value", low=0.25, high=0.75),
        Condition("label", equals=7),
    ):
        call = f"search_where ({condition})"
        allowed = condition.allows(labels, values)
        ids = checker.checked(index.search_where(xq, K, condition), K, call)
        found = ids[ids >= 0]
        if not allowed[found].all():
            raise checker.fail(
                call, f"returned rows the condition excludes: {found[~allowed[found]]}"
            )
        if not allowed.any():
            continue
        rows = np.flatnonzero(allowed)
        _, top = exact_knn(checker.xb[rows], checker.xq, K, checker.metric)
        truth = np.where(top >= 0, rows[np.maximum(top, 0)], -1)
        hits = [len(set(a[a >= 0]) & set(t[t >= 0])) / max((t >= 0).sum(), 1)
                for a, t in zip(ids, truth, strict=True)]  # fmt: skip
        if np.mean(hits) < MIN_WHERE_RECALL:
            raise checker.fail(call, f"recall {np.mean(hits):.3f} < {MIN_WHERE_RECALL}")
    index.close()


def _check_remove(checker: _Checker, index: Index) -> None:
    xq = index.prepare_queries(checker.xq)
    gone = np.unique(index.search(xq, 3).ids[:, :3])
    gone = gone[gone >= 0]
    index.remove(gone)
    ids = checker.checked(index.search(xq, K), K, "after remove")
    back = np.intersect1d(ids, gone)
    if len(back):
        raise checker.fail("remove", f"removed ids still returned: {back[:10].tolist()}")


def _check_add(checker: _Checker, index: Index) -> None:
    new_ids = np.arange(10 * N_BASE, 10 * N_BASE + N_QUERIES, dtype=np.int64)
    # copies of the queries are their own nearest neighbours; under dot, scaled-up copies
    scale = 100.0 if checker.metric is Metric.DOT else 1.0
    index.add(checker.xq * scale, new_ids)
    checker.id_limit = 10 * N_BASE + N_QUERIES
    try:
        ids = checker.checked(index.search(index.prepare_queries(checker.xq), K), K, "after add")
    finally:
        checker.id_limit = N_BASE
    hits = (ids == new_ids[:, None]).any(axis=1).mean()
    if hits < checker.min_recall:
        raise checker.fail("add", f"only {hits:.0%} of added vectors are found by themselves")


def check_releases_gil(
    cls: type[Index],
    metric: Metric | str | None = None,
    *,
    build: Params | None = None,
    search: Params | None = None,
    n: int = 20_000,
    d: int = 64,
    seconds: float = 0.5,
    seed: int = 0,
) -> GilMeasurement:
    """Check ``cls.releases_gil`` by measurement (``annbench.sweep.load.measure_gil_release``:
    does a probe thread get the GIL while ``search_one`` runs?) on ``n`` seeded vectors of
    ``d`` dims, at the default grid's first build setting that fits and its slowest search
    setting, with one library thread. AssertionError when ``cls`` claims
    ``releases_gil`` and the measurement says it does not; a host too busy to tell is logged,
    not failed. Returns the measurement."""
    from annbench.registry import name_of
    from annbench.sweep.load import measure_gil_release

    name = name_of(cls) or cls.__name__
    if metric is None:
        metric = Metric.EUCLIDEAN if Metric.EUCLIDEAN in cls.metrics else min(cls.metrics)
    metric = Metric.parse(metric)
    x, _ = clustered_gaussian(n + 100, d, n_clusters=32, seed=seed)
    xb, xq = x[:n], x[n:]
    fitting = None
    for build_params, settings in _configs(cls, name, build, search, metric):
        try:
            candidate = cls(metric, **build_params)
            candidate.check(n, d)
        except AnnbenchError:
            continue
        fitting = candidate, settings
        break
    if fitting is None:
        raise AssertionError(f"{name} releases_gil: no build setting fits {n}x{d}; pass build=")
    index, searches = fitting
    with _raising_named(name, "releases_gil"):
        index.set_num_threads(1)
        index.build(xb)
        prepared = index.prepare_queries(xq)
        slowest, longest = searches[0], -1.0
        for params in searches:  # the longest search shows the GIL best
            index.set_search_params(**params)
            start = time.perf_counter()
            for q in prepared[:20]:
                index.search_one(q, K)
            if time.perf_counter() - start > longest:
                slowest, longest = params, time.perf_counter() - start
        index.set_search_params(**slowest)
        measured = measure_gil_release(
            lambda i: index.search_one(prepared[i], K),
            len(prepared),
            seconds=seconds,
            thread_setup=lambda: index.set_num_threads(1),  # OpenMP's count is per thread
        )
    summary = (
        f"a probe thread waits {measured.probe_ms:.3f} ms (median; over 1 ms "
        f"{measured.held_share:.0%} of the time) while it searches at {slowest}, "
        f"{measured.control_probe_ms:.3f} ms beside a GIL-releasing control; 2 threads "
        f"x{measured.speedup:.2f} the throughput of 1 ({measured.qps_1:.0f}/s)"
    )
    if measured.releases is None:
        log.warning("%s releases_gil: host too busy to tell: %s", name, summary)
    elif cls.releases_gil and not measured.releases:
        raise AssertionError(
            f"{name} releases_gil: claimed, but its search holds the GIL: {summary}; "
            "set releases_gil = False"
        )
    elif measured.releases and not cls.releases_gil:
        log.info("%s releases the GIL (%s); it may declare releases_gil = True", name, summary)
    return measured
