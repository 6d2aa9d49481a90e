"""Filtered search strategies, swept as the search parameter ``filter_strategy``:

- ``native``: the library's own filtered search (``Index.search_filtered``, given the allowed
  rows), for backends with ``native_filter``;
- ``where``: a database's own where-clause on fields stored with the vectors (the label, or
  the numeric attribute of a range workload: ``Index.set_fields`` before the build,
  ``Index.search_where``), for backends with ``native_where``;
- ``post``: ask the index for ``ceil(k * overfetch)`` neighbours, drop the disallowed ones and
  keep the first ``k`` (any backend);
- ``brute``: exact search over the allowed vectors only, with numpy/faiss and no index: the
  baseline a user would otherwise write.

Batch mode searches the queries sharing a filter in one call per filter; single mode one call
per query, as for plain searches.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from annbench.data.workloads import FilterWorkload, post_filter_k
from annbench.errors import AnnbenchError
from annbench.index import CheckedSearches, Index, cosine_ready
from annbench.metrics import Metric, normalize_rows

STRATEGIES = ("native", "where", "post", "brute")
FILTER_PARAMS = ("filter_strategy", "overfetch")
#: Above this allowed fraction, brute force scans every base vector and masks the disallowed
#: ones; below it, it gathers the allowed vectors first.
GATHER_BELOW = 0.25


def split_filter_params(
    search_params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(backend's search parameters, filter parameters)`` of a search setting."""
    backend = {k: v for k, v in search_params.items() if k not in FILTER_PARAMS}
    return backend, {k: v for k, v in search_params.items() if k in FILTER_PARAMS}


def check_strategy(
    strategy: Any, overfetch: Any, backend: str, native: bool, where: bool = False
) -> None:
    """Raise AnnbenchError when ``strategy``/``overfetch`` are not valid for ``backend``
    (``native``: it has ``native_filter``; ``where``: it has ``native_where``)."""
    if strategy not in STRATEGIES:
        raise AnnbenchError(
            f"filter_strategy '{strategy}' not valid. Use one of: {', '.join(STRATEGIES)}"
        )
    if strategy == "native" and not native:
        raise AnnbenchError(
            f"Backend '{backend}' has no native filtered search; use filter_strategy=post or "
            "brute for it ('annbench backends' shows which backends filter natively)"
        )
    if strategy == "where" and not where:
        raise AnnbenchError(
            f"Backend '{backend}' filters with no where-clause of its own; use "
            "filter_strategy=native, post or brute for it ('annbench backends' shows which)"
        )
    if strategy == "post":
        if isinstance(overfetch, bool) or not isinstance(overfetch, (int, float)):
            raise AnnbenchError(f"overfetch must be a number >= 1, got {overfetch!r}")
        if not overfetch >= 1 or math.isinf(overfetch):
            raise AnnbenchError(f"overfetch must be a number >= 1, got {overfetch!r}")


def default_overfetch(selectivity: float, k: int, n: int) -> list[float]:
    """Default ``overfetch`` values for post-filtering at ``selectivity``: about 1 and 4 times
    what brings ``k`` allowed ids back when allowed vectors are spread evenly (1/selectivity),
    capped where ``k * overfetch`` reaches the base size."""
    cap = max(1.0, n / k)
    values = []
    for factor in (1, 4):
        value = min(cap, max(1.0, factor / max(selectivity, 1e-9)))
        values.append(float(f"{value:.2g}"))
    return sorted(set(values))


def filter_search_configs(
    searches: Sequence[dict[str, Any]],
    backend: str,
    native: bool,
    strategies: Sequence[str] | None,
    overfetch: Sequence[float],
    where: bool = False,
) -> tuple[dict[str, Any], ...]:
    """Search settings of a filter workload: the backend's settings with each strategy
    (``post`` once per ``overfetch``), and ``brute`` once (it does not use the index).
    ``strategies`` None: ``where`` and ``native`` where the backend has them, and ``post``."""
    default = [s for s, has in (("where", where), ("native", native)) if has] + ["post"]
    chosen = list(strategies) if strategies else default
    configs: list[dict[str, Any]] = []
    for strategy in dict.fromkeys(chosen):
        if strategy == "brute":
            check_strategy(strategy, None, backend, native, where)
            configs.append({"filter_strategy": "brute"})
        elif strategy == "post":
            for value in overfetch:
                check_strategy(strategy, value, backend, native, where)
                configs += [{**s, "filter_strategy": "post", "overfetch": value} for s in searches]
        else:
            check_strategy(strategy, None, backend, native, where)
            configs += [{**s, "filter_strategy": strategy} for s in searches]
    return tuple(configs)


class FilteredSearch:
    """Searches ``index`` under a filter workload with one strategy; ids (nq, k) per call."""

    def __init__(
        self,
        index: Index | None,  # None: brute force only
        workload: FilterWorkload,
        xb: np.ndarray,
        metric: Metric,
        k: int,
        filter_strategy: str,
        overfetch: float = 1.0,
        threads: int = 1,
    ) -> None:
        native = index is not None and index.native_filter
        where = index is not None and index.native_where
        check_strategy(filter_strategy, overfetch, type(index).__name__, native, where)
        self.index, self.workload, self.metric, self.k = index, workload, metric, k
        self.strategy = filter_strategy
        self.k_post = post_filter_k(k, overfetch, len(xb))
        self.n = len(xb)
        self.threads = threads
        self.rows = workload.group_queries()
        self.masks = workload.masks
        self.conditions = workload.conditions
        if filter_strategy == "where" and len(self.conditions) != len(self.masks):
            raise AnnbenchError(f"Filter workload {workload.name} states no where-clauses")
        if filter_strategy == "brute":
            self.base = normalize_rows(xb) if metric is Metric.ANGULAR else xb.astype(np.float32)
            self.norms = (self.base**2).sum(axis=1) if metric is Metric.EUCLIDEAN else None
            self.allowed_ids = [np.flatnonzero(mask) for mask in self.masks]

    def checked(self, backend: str) -> FilteredSearch:
        """A copy whose calls into the index check what it returns (``check_neighbors``), for
        warming up: the timed calls go straight to the index."""
        warm = copy.copy(self)
        if self.index is not None:
            warm.index = CheckedSearches(self.index, self.n, backend)  # type: ignore[assignment]
        return warm

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        """Queries as the strategy takes them (as the index takes them, or for brute force
        float32, normalized under the angular metric); done once, outside any timing."""
        if self.strategy != "brute":
            return self.index.prepare_queries(xq)
        return cosine_ready(self.metric, xq)

    def batch(self, xq: np.ndarray, limit: int | None = None) -> np.ndarray:
        """Ids (nq, k) of all prepared queries ``xq``, one call per filter group (only the
        queries below ``limit`` when given, the rest -1: for warming up)."""
        ids = np.full((len(xq), self.k), -1, dtype=np.int64)
        for g, rows in enumerate(self.rows):
            if limit is not None:
                rows = rows[rows < limit]
            if len(rows):
                ids[rows] = self._search_group(g, xq[rows])
        return ids

    def one(self, query: int, q: np.ndarray) -> Sequence[int]:
        """Ids of up to ``k`` allowed neighbours of query number ``query`` (prepared ``q``)."""
        g = self.workload.group[query]
        if self.strategy == "native":
            return self.index.search_filtered(q[None, :], self.k, self.masks[g]).ids[0]
        if self.strategy == "where":
            return self.index.search_where(q[None, :], self.k, self.conditions[g]).ids[0]
        if self.strategy == "post":
            found = np.asarray(self.index.search_one(q, self.k_post))
            found = found[found >= 0]
            return found[self.masks[g][found]][: self.k]
        return self._brute_one(g, q)

    def _search_group(self, g: int, xq: np.ndarray) -> np.ndarray:
        mask = self.masks[g]
        if self.strategy == "native":
            return _width(self.index.search_filtered(xq, self.k, mask).ids, self.k)
        if self.strategy == "where":
            return _width(self.index.search_where(xq, self.k, self.conditions[g]).ids, self.k)
        if self.strategy == "post":
            return keep_allowed(self.index.search(xq, self.k_post).ids, mask, self.k)
        return self._brute_group(g, xq)

    def _brute_group(self, g: int, xq: np.ndarray) -> np.ndarray:
        import faiss

        allowed = self.allowed_ids[g]
        out = np.full((len(xq), self.k), -1, dtype=np.int64)
        if len(allowed) == 0:
            return out
        faiss.omp_set_num_threads(self.threads)
        metric = faiss.METRIC_L2 if self.metric is Metric.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
        width = min(self.k, len(allowed))
        _, found = faiss.knn(xq, self.base[allowed], width, metric=metric)
        out[:, :width] = allowed[found]
        return out

    def _brute_one(self, g: int, q: np.ndarray) -> np.ndarray:
        allowed = self.allowed_ids[g]
        if len(allowed) == 0:
            return allowed
        if len(allowed) < GATHER_BELOW * len(self.base):
            scores = self._scores(self.base[allowed] @ q, allowed)
            ids = allowed
        else:
            scores = np.where(self.masks[g], self._scores(self.base @ q, None), np.inf)
            ids = None
        width = min(self.k, len(allowed))
        top = np.argpartition(scores, width - 1)[:width]
        top = top[np.argsort(scores[top], kind="stable")]
        return top if ids is None else ids[top]

    def _scores(self, dots: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Smaller is nearer: squared L2 up to the query's norm, or minus the inner product."""
        if self.norms is None:
            return -dots
        norms = self.norms if rows is None else self.norms[rows]
        return norms - 2 * dots


def keep_allowed(ids: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row of ``ids (nq, k')`` that ``allowed (n,)`` allows,
    in order; -1 where fewer remain."""
    ok = (ids >= 0) & allowed[np.where(ids >= 0, ids, 0)]
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(ids, order, axis=1)
    out[~np.take_along_axis(ok, order, axis=1)] = -1
    return _width(out, k)


def _width(ids: np.ndarray, k: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape[1] >= k:
        return ids[:, :k]
    return np.hstack([ids, np.full((len(ids), k - ids.shape[1]), -1, dtype=np.int64)])
