"""HNSW graph from the usearch library, with f32, f16 or i8 vector storage.

Metrics map to usearch's own: euclidean -> ``l2sq`` (squared L2, so the library reports
squared distances; the runner recomputes exact distances itself), angular -> ``cos`` on
vectors normalized once by annbench, dot -> ``ip``. usearch's ``i8`` storage normalizes
vectors, so it is accepted for the angular metric only. usearch's Python API (2.26) has no
filtered search (no predicate argument), so ``native_filter`` is False and filter
workloads post-filter.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, cosine_ready, positive_int
from annbench.metrics import Metric


def _load_system_cpp_runtime() -> None:
    """usearch's extension carries its own copy of libstdc++ and exports its locale facet ids
    as unique symbols: loaded before the system libstdc++, they win process-wide and ScaNN
    then crashes (SIGSEGV) reading its saved index. Loading the system runtime globally first
    keeps one set of those symbols."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
        except OSError:  # no system libstdc++: nothing else can clash with usearch's
            pass


_load_system_cpp_runtime()

try:
    from usearch.index import Index as UsearchIndex
except ImportError as exc:
    raise MissingDependency("usearch", extra="usearch") from exc

_METRICS = {Metric.EUCLIDEAN: "l2sq", Metric.ANGULAR: "cos", Metric.DOT: "ip"}
_DTYPES = ("f32", "f16", "i8")


class Usearch(Index):
    """HNSW graph from usearch: ``connectivity`` links per node, ``expansion_add`` build
    beam, ``dtype`` vector storage; ``expansion_search`` beam per query."""

    library = "usearch"
    releases_gil = True  # search runs in C++ without the GIL: load clients are threads
    supports_add = True
    supports_remove = True

    def __init__(
        self, metric: Metric, *, connectivity: int, expansion_add: int, dtype: str = "f32"
    ) -> None:
        if dtype not in _DTYPES:
            raise AnnbenchError(
                f"Parameter dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}"
            )
        if dtype == "i8" and metric is not Metric.ANGULAR:
            raise AnnbenchError(
                f"usearch dtype i8 normalizes vectors, so it only fits the angular metric; "
                f"use dtype f16 or f32 for {metric.value}"
            )
        super().__init__(
            metric,
            connectivity=positive_int("connectivity", connectivity, 2),
            expansion_add=positive_int("expansion_add", expansion_add),
            dtype=dtype,
        )
        self._index: UsearchIndex | None = None
        self._search = None  # the compiled search_many, called without the wrapper
        self._expansion_search = 64
        self._threads = 0  # 0: all cores
        self._counters: dict[str, float] = {}

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        return cosine_ready(self.metric, xq)

    def build(self, xb: np.ndarray) -> None:
        xb = self.prepare_queries(xb)
        self._attach(
            UsearchIndex(
                ndim=xb.shape[1],
                metric=_METRICS[self.metric],
                dtype=self.build_params["dtype"],
                connectivity=self.build_params["connectivity"],
                expansion_add=self.build_params["expansion_add"],
            )
        )
        self._index.add(np.arange(len(xb), dtype=np.uint64), xb, threads=self._threads)

    def _attach(self, index: UsearchIndex) -> None:
        self._index = index
        self._search = index._compiled.search_many
        index.expansion_search = self._expansion_search

    def set_search_params(self, *, expansion_search: int) -> None:
        self._expansion_search = positive_int("expansion_search", expansion_search)
        if self._index is not None:
            self._index.expansion_search = self._expansion_search

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        keys, distances, counts, visited, computed = self._search(xq, k, False, self._threads)
        self._counters = {"visited_members": visited, "computed_distances": computed}
        ids = keys.astype(np.int64)
        missing = np.arange(k)[None, :] >= counts[:, None]
        ids[missing] = -1
        distances[missing] = np.inf
        return Neighbors(distances, ids)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        keys, _, counts, _, _ = self._search(q[None], k, False, 1)
        return keys[0, : counts[0]]

    def set_num_threads(self, n: int) -> None:
        self._threads = n

    def save(self, path: Path) -> None:
        self._index.save(str(path))

    def load(self, path: Path) -> None:
        index = UsearchIndex.restore(str(path))
        if index is None:
            raise AnnbenchError(f"{path} is not a usearch index file; save it with Usearch.save")
        self._attach(index)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        self._index.add(
            np.asarray(ids, dtype=np.uint64), self.prepare_queries(xb), threads=self._threads
        )

    def remove(self, ids: np.ndarray) -> None:
        self._index.remove(np.asarray(ids, dtype=np.uint64))

    def memory_bytes(self) -> int | None:
        return int(self._index.memory_usage)

    def stats(self) -> dict[str, float]:
        """Graph nodes visited and distances computed by the last batch search."""
        return dict(self._counters)
