"""Random-projection forest from Spotify's Annoy library."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annbench.errors import MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

try:
    import annoy
except ImportError as exc:
    raise MissingDependency("annoy") from exc

_NAMES = {Metric.EUCLIDEAN: "euclidean", Metric.ANGULAR: "angular", Metric.DOT: "dot"}


class Annoy(Index):
    """Forest of random-projection trees; search_k nodes are inspected per query."""

    library = "annoy"

    def __init__(self, metric: Metric, *, n_trees: int) -> None:
        super().__init__(metric, n_trees=positive_int("n_trees", n_trees))
        self._index: annoy.AnnoyIndex | None = None
        self._search_k = -1
        self._build_jobs = -1

    def build(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        index = annoy.AnnoyIndex(xb.shape[1], _NAMES[self.metric])
        index.set_seed(42)
        for i, row in enumerate(xb):
            index.add_item(i, row)
        index.build(self.build_params["n_trees"], n_jobs=self._build_jobs)
        self._index = index

    def set_search_params(self, *, search_k: int) -> None:
        """search_k nodes inspected per query; -1 means Annoy's default (n_trees * k)."""
        self._search_k = -1 if search_k == -1 else positive_int("search_k", search_k)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        distances = np.full((len(xq), k), np.inf, dtype=np.float32)
        for i, q in enumerate(xq):
            found, dist = self._index.get_nns_by_vector(q, k, self._search_k, True)
            ids[i, : len(found)] = found
            distances[i, : len(dist)] = dist
        return Neighbors(distances, ids)

    def search_one(self, q: np.ndarray, k: int) -> list[int]:
        return self._index.get_nns_by_vector(q, k, self._search_k)

    def set_num_threads(self, n: int) -> None:
        """Threads for building the forest (Annoy searches on the calling thread)."""
        self._build_jobs = n

    def save(self, path: Path) -> None:
        self._index.save(str(path))
