"""HNSW graph from the hnswlib library."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annbench.errors import MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

try:
    import hnswlib
except ImportError as exc:
    raise MissingDependency("hnswlib") from exc

_SPACES = {Metric.EUCLIDEAN: "l2", Metric.ANGULAR: "cosine", Metric.DOT: "ip"}


class Hnswlib(Index):
    """HNSW graph from the hnswlib library."""

    library = "hnswlib"

    def __init__(self, metric: Metric, *, M: int, ef_construction: int) -> None:
        super().__init__(
            metric,
            M=positive_int("M", M, 2),
            ef_construction=positive_int("ef_construction", ef_construction),
        )
        self._index: hnswlib.Index | None = None
        self._threads = -1
        self._ef = 10

    def build(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        index = hnswlib.Index(space=_SPACES[self.metric], dim=xb.shape[1])
        index.init_index(
            max_elements=len(xb),
            M=self.build_params["M"],
            ef_construction=self.build_params["ef_construction"],
            random_seed=100,
        )
        index.add_items(xb, np.arange(len(xb)), num_threads=self._threads)
        self._index = index
        index.set_ef(self._ef)

    def set_search_params(self, *, ef: int) -> None:
        self._ef = positive_int("ef", ef)
        if self._index is not None:
            self._index.set_ef(self._ef)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        ids, distances = self._index.knn_query(xq, k=k, num_threads=self._threads)
        return Neighbors(distances, ids.astype(np.int64, copy=False))

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._index.knn_query(q, k=k, num_threads=1)[0][0]

    def set_num_threads(self, n: int) -> None:
        self._threads = n

    def save(self, path: Path) -> None:
        self._index.save_index(str(path))
