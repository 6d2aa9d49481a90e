"""HNSW graph from the hnswlib library."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

try:
    import hnswlib
except ImportError as exc:
    raise MissingDependency("hnswlib") from exc

_SPACES = {Metric.EUCLIDEAN: "l2", Metric.ANGULAR: "cosine", Metric.DOT: "ip"}


class Hnswlib(Index):
    """HNSW graph from the hnswlib library; inserts (growing as needed), deletes by marking,
    and filters natively with a callable over ids."""

    library = "hnswlib"
    releases_gil = True  # search runs in C++ without the GIL: load clients are threads
    supports_add = True
    supports_remove = True
    native_filter = True

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

    def load(self, path: Path) -> None:
        index = hnswlib.Index(space=_SPACES[self.metric], dim=_saved_dim(Path(path)))
        index.load_index(str(path))
        index.set_ef(self._ef)
        self._index = index

    def set_search_params(self, *, ef: int) -> None:
        self._ef = positive_int("ef", ef)
        if self._index is not None:
            self._index.set_ef(self._ef)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        try:
            ids, distances = self._index.knn_query(xq, k=k, num_threads=self._threads)
        except RuntimeError:  # fewer than k found for some query
            return self._knn(xq, k, None)
        return Neighbors(distances, ids.astype(np.int64, copy=False))

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        try:
            return self._index.knn_query(q, k=k, num_threads=1)[0][0]
        except RuntimeError:  # fewer than k found
            ids = self._knn(q[None], k, None).ids[0]
            return ids[ids >= 0]

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        members = set(np.flatnonzero(allowed).tolist())
        return self._knn(xq, min(k, len(members)), members.__contains__, k)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        needed = self._index.element_count + len(ids)
        if needed > self._index.get_max_elements():  # grow geometrically, as a vector does
            self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
        self._index.add_items(as_float32(xb), np.asarray(ids), num_threads=self._threads)

    def remove(self, ids: np.ndarray) -> None:
        for label in np.asarray(ids).tolist():
            try:
                self._index.mark_deleted(label)
            except RuntimeError as exc:
                raise AnnbenchError(f"hnswlib cannot remove id {label}: {exc}") from exc

    def set_num_threads(self, n: int) -> None:
        self._threads = n

    def save(self, path: Path) -> None:
        self._index.save_index(str(path))

    def _knn(
        self,
        xq: np.ndarray,
        k: int,
        keep: Callable[[int], bool] | None,
        width: int | None = None,
    ) -> Neighbors:
        """knn_query padded with -1 to ``width`` (default ``k``) columns: hnswlib raises when
        it finds fewer than k (k above the live count, deletions, a narrow filter)."""
        width = k if width is None else width
        ids = np.full((len(xq), width), -1, dtype=np.int64)
        distances = np.full((len(xq), width), np.inf, dtype=np.float32)
        k = min(k, self._index.element_count)
        if k == 0 or len(xq) == 0:
            return Neighbors(distances, ids)
        try:
            found, dist = self._index.knn_query(xq, k=k, num_threads=self._threads, filter=keep)
            ids[:, :k], distances[:, :k] = found, dist
        except RuntimeError:  # some query found fewer than k: take the most each one finds
            for i, q in enumerate(xq):
                found, dist = self._largest_query(q, k, keep)
                ids[i, : len(found)], distances[i, : len(dist)] = found, dist
        return Neighbors(distances, ids)

    def _largest_query(
        self, q: np.ndarray, k: int, keep: Callable[[int], bool] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Results of the largest k' <= k that hnswlib can fill for one query."""
        best = (np.empty(0, np.int64), np.empty(0, np.float32))
        lo, hi = 0, k + 1  # lo can be filled, hi cannot
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                found, dist = self._index.knn_query(q, k=mid, num_threads=1, filter=keep)
            except RuntimeError:
                hi = mid
                continue
            lo, best = mid, (found[0], dist[0])
        return best


def _saved_dim(path: Path) -> int:
    """Dimension of the vectors in an hnswlib index file, read from its header."""
    try:
        with path.open("rb") as f:
            header = f.read(48)
    except OSError as exc:
        raise AnnbenchError(f"Cannot read hnswlib index {path}: {exc}") from exc
    if len(header) < 48:
        raise AnnbenchError(f"{path} is not an hnswlib index file (too short)")
    # size_t offsetLevel0, max_elements, cur_element_count, size_data_per_element,
    # label_offset, offsetData: the vector sits between offsetData and label_offset
    label_offset, offset_data = struct.unpack("<6Q", header)[4:6]
    size = label_offset - offset_data
    if size <= 0 or size % 4:
        raise AnnbenchError(f"{path} is not an hnswlib index file (bad header)")
    return size // 4
