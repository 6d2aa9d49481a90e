"""Random-projection forest from Spotify's Annoy library (static: no add, remove or filter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

try:
    import annoy
except ImportError as exc:
    raise MissingDependency("annoy") from exc

_NAMES = {Metric.EUCLIDEAN: "euclidean", Metric.ANGULAR: "angular", Metric.DOT: "dot"}
# int32 words before the vector in each Annoy node: n_descendants, children[2] (+ a or dot_factor)
_HEADER_WORDS = {Metric.EUCLIDEAN: 4, Metric.ANGULAR: 3, Metric.DOT: 4}


class Annoy(Index):
    """Forest of random-projection trees; search_k nodes are inspected per query."""

    library = "annoy"
    releases_gil = True  # search runs in C++ without the GIL: load clients are threads

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
            index.add_item(i, row.tolist())  # a list converts faster than an array row
        index.build(self.build_params["n_trees"], n_jobs=self._build_jobs)
        self._index = index

    def set_search_params(self, *, search_k: int) -> None:
        """search_k nodes inspected per query; -1 means Annoy's default (n_trees * k)."""
        self._search_k = -1 if search_k == -1 else positive_int("search_k", search_k)

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        """Each query as a Python list of floats, in a 1-D object array ``(nq,)``: Annoy reads a
        vector item by item, which from an array row makes a numpy scalar per item (5 to 13% of
        a fast query) and from a list only reads a float. The values are the float32 rows'."""
        return as_rows_of_lists(as_float32(xq))

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        distances = np.full((len(xq), k), np.inf, dtype=np.float32)
        for i, q in enumerate(xq):
            found, dist = self._index.get_nns_by_vector(q, k, self._search_k, True)
            ids[i, : len(found)] = found
            distances[i, : len(dist)] = dist
        return Neighbors(distances, ids)

    def search_one(self, q: list[float], k: int) -> list[int]:
        return self._index.get_nns_by_vector(q, k, self._search_k)

    def set_num_threads(self, n: int) -> None:
        """Threads for building the forest (Annoy searches on the calling thread)."""
        self._build_jobs = n

    def save(self, path: Path) -> None:
        self._index.save(str(path))

    def load(self, path: Path) -> None:
        index = annoy.AnnoyIndex(_saved_dim(Path(path), self.metric), _NAMES[self.metric])
        index.load(str(path))  # memory-maps the file, as Annoy serves it
        self._index = index


def as_rows_of_lists(x: np.ndarray) -> np.ndarray:
    """``x (n, d)`` as a 1-D object array ``(n,)`` whose items are the rows as Python lists: it
    indexes, slices and fancy-indexes like the array it replaces, and ``rows[i]`` is a list."""
    rows = np.empty(len(x), dtype=object)
    for i, row in enumerate(x.tolist()):
        rows[i] = row
    return rows


def _saved_dim(path: Path, metric: Metric) -> int:
    """Dimension of an Annoy file, which has no header: items come first, each node
    ``(header + d)`` int32-sized words starting with n_descendants == 1, so d is the one stride
    at which the next items' n_descendants read 1."""
    try:
        words = np.fromfile(path, dtype="<i4", count=65 * 4096)
        size = path.stat().st_size
    except OSError as exc:
        raise AnnbenchError(f"Cannot read Annoy index {path}: {exc}") from exc
    header = _HEADER_WORDS[metric]
    if len(words) < 2 * (header + 1) or words[0] != 1:
        raise AnnbenchError(f"{path} is not an Annoy index with at least two items")
    for stride in range(header + 1, len(words) // 2 + 1):
        if size % (4 * stride) == 0 and _items_then_nodes(words[stride : stride * 17 : stride]):
            return stride - header
    raise AnnbenchError(f"{path} is not an Annoy {_NAMES[metric]} index (no item stride found)")


def _items_then_nodes(counts: np.ndarray) -> bool:
    """n_descendants read at one stride: items (1) first, then tree nodes (2 or more)."""
    tree = np.flatnonzero(counts != 1)
    return counts[0] == 1 and (not len(tree) or bool((counts[tree[0] :] >= 2).all()))
