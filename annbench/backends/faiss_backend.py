"""Faiss indexes: exact Flat, IVF-Flat, IVF-PQ and HNSW-Flat."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric, normalize_rows

try:
    import faiss
except ImportError as exc:
    raise MissingDependency("faiss-cpu") from exc


class _FaissIndex(Index):
    """Shared plumbing: angular is inner product on normalized vectors."""

    library = "faiss-cpu"

    def __init__(self, metric: Metric, **build_params: object) -> None:
        super().__init__(metric, **build_params)
        self._index: faiss.Index | None = None

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        xq = as_float32(xq)
        return normalize_rows(xq) if self.metric is Metric.ANGULAR else xq

    def _faiss_metric(self) -> int:
        if self.metric is Metric.EUCLIDEAN:
            return faiss.METRIC_L2
        return faiss.METRIC_INNER_PRODUCT

    def _make(self, d: int) -> faiss.Index:
        raise NotImplementedError

    def build(self, xb: np.ndarray) -> None:
        xb = self.prepare_queries(xb)  # base vectors need the same treatment
        self._index = self._make(xb.shape[1])
        if not self._index.is_trained:
            self._index.train(xb)
        self._index.add(xb)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        distances, ids = self._index.search(xq, k)
        return Neighbors(distances, ids)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._index.search(q[None], k)[1][0]

    def set_num_threads(self, n: int) -> None:
        faiss.omp_set_num_threads(n)

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))


class FaissFlat(_FaissIndex):
    """Exact brute-force search (faiss IndexFlat): the recall-1.0 reference point."""

    def __init__(self, metric: Metric) -> None:
        super().__init__(metric)

    def _make(self, d: int) -> faiss.Index:
        return faiss.index_factory(d, "Flat", self._faiss_metric())


class FaissIVF(_FaissIndex):
    """Inverted file with exact vectors (faiss IVF<nlist>,Flat)."""

    def __init__(self, metric: Metric, *, nlist: int) -> None:
        super().__init__(metric, nlist=positive_int("nlist", nlist))
        self.nlist = self.build_params["nlist"]
        self._nprobe = 1

    def check(self, n: int, d: int) -> None:
        if self.nlist > n:
            raise AnnbenchError(
                f"nlist={self.nlist} exceeds the {n} base vectors; use nlist <= {n} "
                "(about sqrt(n) to 16*sqrt(n) is usual)"
            )

    def _make(self, d: int) -> faiss.Index:
        return faiss.index_factory(d, f"IVF{self.nlist},Flat", self._faiss_metric())

    def build(self, xb: np.ndarray) -> None:
        super().build(xb)
        self._apply_nprobe()

    def set_search_params(self, *, nprobe: int) -> None:
        self._nprobe = positive_int("nprobe", nprobe)
        self._apply_nprobe()

    def _apply_nprobe(self) -> None:
        if self._index is not None:
            faiss.extract_index_ivf(self._index).nprobe = self._nprobe


class FaissIVFPQ(FaissIVF):
    """Inverted file with product-quantized codes (faiss IVF<nlist>,PQ<m>x<nbits>)."""

    def __init__(self, metric: Metric, *, nlist: int, m: int, nbits: int = 8) -> None:
        super().__init__(metric, nlist=nlist)
        self.m = positive_int("m", m)
        self.nbits = positive_int("nbits", nbits)
        if self.nbits > 16:
            raise AnnbenchError(f"Parameter nbits must be <= 16, got {nbits}")
        self.build_params.update(m=self.m, nbits=self.nbits)

    def check(self, n: int, d: int) -> None:
        super().check(n, d)
        if d % self.m:
            raise AnnbenchError(
                f"PQ m={self.m} does not divide the dimension d={d}; "
                f"use a divisor of {d} such as {_divisors_near(d, self.m)}"
            )
        if n < 2**self.nbits:
            raise AnnbenchError(
                f"PQ nbits={self.nbits} needs at least {2**self.nbits} training vectors, "
                f"the base has {n}; lower nbits"
            )

    def _make(self, d: int) -> faiss.Index:
        spec = f"IVF{self.nlist},PQ{self.m}x{self.nbits}"
        return faiss.index_factory(d, spec, self._faiss_metric())


class FaissHNSW(_FaissIndex):
    """HNSW graph over exact vectors (faiss IndexHNSWFlat)."""

    def __init__(self, metric: Metric, *, M: int, efConstruction: int) -> None:
        super().__init__(
            metric,
            M=positive_int("M", M, 2),
            efConstruction=positive_int("efConstruction", efConstruction),
        )
        self._ef_search = 16

    def _make(self, d: int) -> faiss.Index:
        index = faiss.IndexHNSWFlat(d, self.build_params["M"], self._faiss_metric())
        index.hnsw.efConstruction = self.build_params["efConstruction"]
        return index

    def build(self, xb: np.ndarray) -> None:
        super().build(xb)
        self._index.hnsw.efSearch = self._ef_search

    def set_search_params(self, *, efSearch: int) -> None:
        self._ef_search = positive_int("efSearch", efSearch)
        if self._index is not None:
            self._index.hnsw.efSearch = self._ef_search


def _divisors_near(d: int, m: int) -> str:
    divisors = [x for x in range(1, d + 1) if d % x == 0]
    nearest = sorted(divisors, key=lambda x: (abs(x - m), x))[:3]
    return ", ".join(str(x) for x in sorted(nearest))
