"""HNSW graph from Spotify's Voyager library, with float32, float8 or E4M3 vector storage.

Metrics map to Voyager's spaces: euclidean -> ``Euclidean`` (squared L2 as the library
reports it; the runner recomputes exact distances), angular -> ``Cosine`` (Voyager normalizes
on insertion), dot -> ``InnerProduct``. ``float8`` stores each component as a signed byte
over [-1, 1]: fine for angular, refused for other metrics when the data leaves that range.
``remove`` marks vectors deleted (Voyager's ``mark_deleted``); the saved file keeps the marks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

try:
    import voyager
except ImportError as exc:
    raise MissingDependency("voyager", extra="voyager") from exc

_SPACES = {
    Metric.EUCLIDEAN: voyager.Space.Euclidean,
    Metric.ANGULAR: voyager.Space.Cosine,
    Metric.DOT: voyager.Space.InnerProduct,
}
_STORAGE = {
    "float32": voyager.StorageDataType.Float32,
    "float8": voyager.StorageDataType.Float8,
    "e4m3": voyager.StorageDataType.E4M3,
}


class Voyager(Index):
    """HNSW graph from Voyager: ``M`` links per node, ``ef_construction`` build beam,
    ``storage`` vector type; ``ef`` beam per query."""

    library = "voyager"
    supports_add = True
    supports_remove = True

    def __init__(
        self, metric: Metric, *, M: int, ef_construction: int, storage: str = "float32"
    ) -> None:
        if storage not in _STORAGE:
            raise AnnbenchError(
                f"Parameter storage must be one of {', '.join(_STORAGE)}, got {storage!r}"
            )
        super().__init__(
            metric,
            M=positive_int("M", M, 2),
            ef_construction=positive_int("ef_construction", ef_construction),
            storage=storage,
        )
        self._index: voyager.Index | None = None
        self._ef = 10
        self._threads = -1  # -1: one thread per core
        self._removed: set[int] = set()  # marked deleted since build or load

    def _checked(self, xb: np.ndarray) -> np.ndarray:
        xb = as_float32(xb)
        if self.build_params["storage"] == "float8" and self.metric is not Metric.ANGULAR:
            largest = float(np.abs(xb).max()) if xb.size else 0.0
            if largest > 1.0:
                raise AnnbenchError(
                    f"Voyager float8 storage holds components in [-1, 1] but this data "
                    f"reaches {largest:.3g}; use storage float32 or e4m3 for {self.metric.value}"
                )
        return xb

    def build(self, xb: np.ndarray) -> None:
        xb = self._checked(xb)
        index = voyager.Index(
            _SPACES[self.metric],
            num_dimensions=xb.shape[1],
            M=self.build_params["M"],
            ef_construction=self.build_params["ef_construction"],
            random_seed=1,
            max_elements=len(xb),
            storage_data_type=_STORAGE[self.build_params["storage"]],
        )
        index.add_items(xb, list(range(len(xb))), num_threads=self._threads)
        self._attach(index)

    def _attach(self, index: voyager.Index) -> None:
        self._index = index
        self._removed = set()
        index.ef = self._ef

    @property
    def _live(self) -> int:
        return self._index.num_elements - len(self._removed)

    def set_search_params(self, *, ef: int) -> None:
        self._ef = positive_int("ef", ef)
        if self._index is not None:
            self._index.ef = self._ef

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        distances = np.full((len(xq), k), np.inf, dtype=np.float32)
        found = min(k, self._live)
        if found and len(xq):
            # Voyager raises RecallError when it finds fewer than k: widen the beam then
            found_ids, found_d = self._query(xq, found, self._threads)
            ids[:, :found] = found_ids
            distances[:, :found] = found_d
        return Neighbors(distances, ids)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        try:
            return self._index.query(q, k)[0]
        except (voyager.RecallError, RuntimeError):  # k > ef, or fewer than k reachable
            found = min(k, self._live)
            return self._query(q, found, 1)[0] if found else np.empty(0, dtype=np.int64)

    def _query(self, xq: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        for ef in (max(self._ef, k), max(self._ef, 4 * k), self._live):
            try:
                return self._index.query(xq, k, num_threads=threads, query_ef=ef)
            except voyager.RecallError:
                continue
        raise AnnbenchError(
            f"Voyager found fewer than {k} neighbours even searching all {self._live} "
            f"vectors; rebuild with a larger M"
        )

    def set_num_threads(self, n: int) -> None:
        self._threads = n

    def save(self, path: Path) -> None:
        self._index.save(str(path))

    def load(self, path: Path) -> None:
        self._attach(voyager.Index.load(str(path)))

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        xb = self._checked(xb)
        ids = [int(i) for i in ids]
        if self._index.num_elements + len(ids) > self._index.max_elements:
            self._index.resize(self._index.num_elements + len(ids))
        self._index.add_items(xb, ids, num_threads=self._threads)
        self._removed.difference_update(ids)  # re-adding a deleted id revives it

    def remove(self, ids: np.ndarray) -> None:
        for i in map(int, ids):
            if i not in self._removed:
                self._index.mark_deleted(i)
                self._removed.add(i)
