"""Backends that misbehave on purpose, registered like a third-party plugin would be."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from annbench.index import Index, Neighbors
from annbench.metrics import Metric


class _Exact(Index):
    def __init__(self, metric: Metric, *, size: int = 1) -> None:
        super().__init__(metric, size=size)

    def build(self, xb: np.ndarray) -> None:
        self.xb = np.asarray(xb, dtype=np.float32)

    def set_search_params(self, *, level: int) -> None:
        self.level = level

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        d = ((xq[:, None, :] - self.xb[None, :, :]) ** 2).sum(axis=2)
        ids = np.argsort(d, axis=1)[:, :k]
        return Neighbors(np.take_along_axis(d, ids, axis=1), ids.astype(np.int64))


class CrashOnBuild(_Exact):
    """Dies of SIGSEGV while building, as a C++ library bug would."""

    def build(self, xb: np.ndarray) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)


class HangOnSearch(_Exact):
    """Never returns from a search when level >= 2."""

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        if self.level >= 2:
            time.sleep(3600)
        return super().search(xq, k)


class RaiseOnSearch(_Exact):
    """Raises for level 2 only: one search setting fails, the others succeed."""

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        if self.level == 2:
            raise RuntimeError("library refused level 2")
        return super().search(xq, k)


class DuplicateIds(_Exact):
    """Returns its nearest neighbour twice: recall must count the repeat as a miss."""

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        result = super().search(xq, k)
        ids = result.ids.copy()
        ids[:, 1] = ids[:, 0]
        return Neighbors(result.distances, ids)


class AbortOnBuild(_Exact):
    """Calls abort() while building, as a failed C++ assertion does."""

    def build(self, xb: np.ndarray) -> None:
        os.abort()


class EatMemoryOnBuild(_Exact):
    """Allocates without bound while building."""

    def build(self, xb: np.ndarray) -> None:
        hoard = []
        while True:
            hoard.append(np.ones(25_000_000))  # 200 MB, touched
            time.sleep(0.01)


class SlowSearch(_Exact):
    """Each search takes level/10 seconds: a sweep long enough to interrupt."""

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        time.sleep(self.level / 10)
        return super().search(xq, k)

    def search_one(self, q: np.ndarray, k: int):
        return super().search(q[None, :], k).ids[0]


class WhereExact(_Exact):
    """An exact 'database': vectors stored in phases with a label and a value field, filtered
    by its own condition (what a database's where-clause does)."""

    kind = "embedded"
    load_phases = True
    native_where = True
    metrics = frozenset({Metric.EUCLIDEAN})
    default_grid = {"build": {"size": [1]}, "search": {"level": [1]}}
    labels: np.ndarray | None = None
    values: np.ndarray | None = None

    def set_fields(self, labels, values) -> None:
        self.labels, self.values = labels, values

    def insert(self, xb: np.ndarray) -> None:
        self.xb = np.asarray(xb, dtype=np.float32)

    def create_index(self) -> None:
        self.built = True

    def build(self, xb: np.ndarray) -> None:
        self.build_in_phases(xb)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        return self._knn(xq, k, np.ones(len(self.xb), dtype=bool))

    def search_where(self, xq: np.ndarray, k: int, condition) -> Neighbors:
        return self._knn(xq, k, condition.allows(self.labels, self.values))

    def _knn(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        d = ((xq[:, None, :] - self.xb[None, :, :]) ** 2).sum(axis=2)
        d[:, ~allowed] = np.inf
        d = np.hstack([d, np.full((len(xq), max(k - d.shape[1], 0)), np.inf)])
        ids = np.argsort(d, axis=1, kind="stable")[:, :k]
        dist = np.take_along_axis(d, ids, axis=1)
        ids[~np.isfinite(dist)] = -1
        return Neighbors(dist, ids.astype(np.int64))

    def save(self, path) -> None:
        with open(path, "wb") as out:
            np.savez(
                out,
                xb=self.xb,
                labels=np.asarray(self.labels if self.labels is not None else []),
                values=np.asarray(self.values if self.values is not None else []),
            )

    def load(self, path) -> None:
        saved = np.load(path)
        self.xb = saved["xb"]
        self.labels = saved["labels"] if len(saved["labels"]) else None
        self.values = saved["values"] if len(saved["values"]) else None


class WhereIgnored(WhereExact):
    """Claims a where-clause but ignores it."""

    def search_where(self, xq: np.ndarray, k: int, condition) -> Neighbors:
        return self.search(xq, k)  # the condition is ignored
