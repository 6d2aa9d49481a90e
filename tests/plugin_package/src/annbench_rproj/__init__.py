"""Random-projection hashing with exact re-ranking: an annbench backend in its own package."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric, normalize_rows


class RandomProjection(Index):
    """Sign bits of n_bits random projections; the n_candidates vectors whose bits are nearest
    in Hamming distance to the query's are re-ranked by their exact distance."""

    library = "annbench-rproj"
    metrics = frozenset({Metric.EUCLIDEAN, Metric.ANGULAR})

    def __init__(self, metric: Metric, *, n_bits: int, seed: int = 0) -> None:
        super().__init__(metric, n_bits=positive_int("n_bits", n_bits), seed=seed)
        self._n_candidates = 100

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        xq = as_float32(xq)
        return normalize_rows(xq) if self.metric is Metric.ANGULAR else xq

    def build(self, xb: np.ndarray) -> None:
        self.xb = self.prepare_queries(xb)
        rng = np.random.default_rng(self.build_params["seed"])
        self.planes = rng.standard_normal((self.xb.shape[1], self.build_params["n_bits"]))
        self.planes = self.planes.astype(np.float32)
        self.codes = self.xb @ self.planes > 0

    def set_search_params(self, *, n_candidates: int) -> None:
        self._n_candidates = positive_int("n_candidates", n_candidates)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        hamming = (xq @ self.planes > 0)[:, None, :] != self.codes[None, :, :]
        m = min(max(self._n_candidates, k), len(self.xb))
        candidates = np.argsort(hamming.sum(axis=2), axis=1, kind="stable")[:, :m]
        distances = ((self.xb[candidates] - xq[:, None, :]) ** 2).sum(axis=2)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        found = np.full((len(xq), k), np.inf, dtype=np.float32)
        ids[:, : order.shape[1]] = np.take_along_axis(candidates, order, axis=1)
        found[:, : order.shape[1]] = np.take_along_axis(distances, order, axis=1)
        return Neighbors(found, ids)

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, xb=self.xb, planes=self.planes)

    def load(self, path: Path) -> None:
        try:
            with np.load(path) as saved:
                self.xb, self.planes = saved["xb"], saved["planes"]
        except (OSError, KeyError, ValueError) as exc:
            raise AnnbenchError(f"{path} is not a saved rproj index: {exc}") from exc
        self.codes = self.xb @ self.planes > 0
