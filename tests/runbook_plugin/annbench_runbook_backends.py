"""Numpy backends for the runbook tests: one with add and remove, one with neither (every
update rebuilds), one that can insert but not delete. Searches are deterministic and
approximate: candidates ranked on the first ``dims`` dimensions, then re-ranked exactly."""

from __future__ import annotations

import numpy as np

from annbench.index import Index, Neighbors
from annbench.metrics import Metric


class Static(Index):
    """No add, no remove: a runbook rebuilds it from the live rows at every update."""

    metrics = frozenset({Metric.EUCLIDEAN})

    def __init__(self, metric: Metric, *, dims: int = 4) -> None:
        super().__init__(metric, dims=dims)
        self.dims = dims

    def build(self, xb: np.ndarray) -> None:
        self.xb = np.asarray(xb, dtype=np.float32)
        self.ids = np.arange(len(xb), dtype=np.int64)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        width = min(len(self.xb), 2 * k)
        rough = ((xq[:, None, : self.dims] - self.xb[None, :, : self.dims]) ** 2).sum(axis=2)
        candidates = np.argsort(rough, axis=1, kind="stable")[:, :width]
        exact = ((xq[:, None, :] - self.xb[candidates]) ** 2).sum(axis=2)
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        picked = np.take_along_axis(candidates, order, axis=1)
        ids = self.ids[picked]
        distances = np.take_along_axis(exact, order, axis=1)
        if width < k:
            pad = k - width
            ids = np.hstack([ids, np.full((len(xq), pad), -1, dtype=np.int64)])
            distances = np.hstack([distances, np.full((len(xq), pad), np.inf)])
        return Neighbors(distances, ids)


class InsertOnly(Static):
    """add only: inserts are native, deletes rebuild."""

    supports_add = True

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        self.xb = np.vstack([self.xb, np.asarray(xb, dtype=np.float32)])
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])


class Dynamic(InsertOnly):
    """add and remove."""

    supports_remove = True

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, ids)
        self.xb, self.ids = self.xb[keep], self.ids[keep]
