"""Nearest-neighbour-descent graph from the PyNNDescent library (numba-compiled).

Metrics: euclidean, and angular as PyNNDescent's dense ``cosine`` (it normalizes the base
once; annbench normalizes the queries in ``prepare_queries`` and says so with
``pre_normalized``). PyNNDescent's ``dot`` normalizes vectors too, which makes it cosine,
so the dot metric is not offered. ``save`` pickles the index (PyNNDescent's supported
format); ``load`` unpickles it, so only load files you trust. The numba compilation on first
use happens inside ``build`` and ``load``, never inside a timed search.
"""

from __future__ import annotations

import functools
import logging
import pickle
from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, cosine_ready, positive_int
from annbench.metrics import Metric

try:
    import numba
    import pynndescent
except ImportError as exc:
    raise MissingDependency("pynndescent", extra="pynndescent") from exc

log = logging.getLogger(__name__)

_METRICS = {Metric.EUCLIDEAN: "euclidean", Metric.ANGULAR: "cosine"}


class PyNNDescent(Index):
    """NN-descent k-NN graph, diversified and pruned: ``n_neighbors`` per node,
    ``diversify_prob``, ``pruning_degree_multiplier``; ``epsilon`` widens each search."""

    metrics = frozenset(_METRICS)
    library = "pynndescent"

    def __init__(
        self,
        metric: Metric,
        *,
        n_neighbors: int,
        diversify_prob: float = 1.0,
        pruning_degree_multiplier: float = 1.5,
        leaf_size: int | None = None,
    ) -> None:
        super().__init__(
            metric,
            n_neighbors=positive_int("n_neighbors", n_neighbors, 2),
            diversify_prob=_fraction("diversify_prob", diversify_prob),
            pruning_degree_multiplier=_positive(
                "pruning_degree_multiplier", pruning_degree_multiplier
            ),
            leaf_size=None if leaf_size is None else positive_int("leaf_size", leaf_size),
        )
        self._index: pynndescent.NNDescent | None = None
        self._epsilon = 0.1
        self._threads: int | None = None

    def check(self, n: int, d: int) -> None:
        if self.build_params["n_neighbors"] >= n:
            raise AnnbenchError(
                f"Parameter n_neighbors={self.build_params['n_neighbors']} needs more than "
                f"{n} base vectors; use n_neighbors < {n}"
            )

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        return cosine_ready(self.metric, xq)

    def build(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        self.check(*xb.shape)
        params = self.build_params
        self._index = pynndescent.NNDescent(
            xb,
            metric=_METRICS[self.metric],
            n_neighbors=params["n_neighbors"],
            diversify_prob=params["diversify_prob"],
            pruning_degree_multiplier=params["pruning_degree_multiplier"],
            leaf_size=params["leaf_size"],
            random_state=42,
            n_jobs=self._threads,
        )
        self._index.prepare()
        self._warm_up(xb[:2])

    def _warm_up(self, xq: np.ndarray) -> None:
        """Compile the search path (single and batch) before anything is timed."""
        self._bind_query()
        xq = self.prepare_queries(xq)
        self.search(xq, 1)
        self.search_one(xq[0], 1)

    def set_search_params(self, *, epsilon: float) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise AnnbenchError(f"Parameter epsilon must be a number >= 0, got {epsilon!r}")
        self._epsilon = float(epsilon)
        self._bind_query()

    def _bind_query(self) -> None:
        """The single-query call with its keyword arguments bound once: per call they cost
        PyNNDescent's own loop a few percent (measured by benchmarks/overhead.py)."""
        if self._index is not None:
            self._query_one = functools.partial(
                self._index.query,
                epsilon=self._epsilon,
                pre_normalized=self._pre_normalized,
                return_distances=False,
            )

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        n = self._index._raw_data.shape[0]
        found = min(k, n)
        ids, distances = self._index.query(
            xq, k=found, epsilon=self._epsilon, pre_normalized=self._pre_normalized
        )
        ids = ids.astype(np.int64, copy=False)
        if found < k:
            ids = np.pad(ids, ((0, 0), (0, k - found)), constant_values=-1)
            distances = np.pad(distances, ((0, 0), (0, k - found)), constant_values=np.inf)
        return Neighbors(distances, ids)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._query_one(q[None], k=k)[0]

    @property
    def _pre_normalized(self) -> bool:
        return self.metric is Metric.ANGULAR

    def set_num_threads(self, n: int) -> None:
        """Threads for building the graph (n_jobs, numba's parallel sections). Searches run
        on the calling thread: PyNNDescent's parallel batch queries slow single queries."""
        self._threads = n
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

    def save(self, path: Path) -> None:
        with open(path, "wb") as file:
            pickle.dump(self._index, file, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, path: Path) -> None:
        with open(path, "rb") as file:
            index = pickle.load(file)
        if not isinstance(index, pynndescent.NNDescent):
            raise AnnbenchError(f"{path} does not hold a pickled PyNNDescent index")
        self._index = index
        self._warm_up(np.asarray(index._raw_data[:2]))


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise AnnbenchError(f"Parameter {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise AnnbenchError(f"Parameter {name} must be a number > 0, got {value!r}")
    return float(value)
