"""Every installed built-in backend passes the conformance kit; the kit catches what it should."""

import numpy as np
import pytest

from annbench.errors import BackendUnavailable
from annbench.index import Index, Neighbors
from annbench.metrics import Metric
from annbench.registry import backend_names, load_backend
from annbench.testing import check_backend

# PQ with 256 centroids (the default grid's nbits=8) trains for minutes on the kit's 500
# vectors: a 4-bit setting, lossy enough to need a lower recall bar
GIVEN = {
    "faiss-ivfpq": {
        "build": {"nlist": 16, "m": 16, "nbits": 4},
        "search": {"nprobe": 16},
        "min_recall": 0.85,
    }
}


@pytest.mark.slow
@pytest.mark.parametrize("name", backend_names())
def test_backend_conforms(name):
    try:
        cls = load_backend(name)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    check_backend(cls, **GIVEN.get(name, {}))


class _Brute(Index):
    """Exact search in numpy: the smallest backend that conforms."""

    metrics = frozenset({Metric.EUCLIDEAN})
    default_grid = {"build": {}, "search": {}}

    def __init__(self, metric: Metric) -> None:
        super().__init__(metric)

    def build(self, xb):
        self.xb = np.asarray(xb, dtype=np.float32)

    def search(self, xq, k):
        d = ((xq[:, None, :] - self.xb[None, :, :]) ** 2).sum(axis=2)
        ids = np.argsort(d, axis=1, kind="stable")[:, :k]
        dist = np.take_along_axis(d, ids, axis=1)
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1).astype(np.int64)
        return Neighbors(np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf), ids)

    def save(self, path):
        np.save(open(path, "wb"), self.xb)

    def load(self, path):
        self.xb = np.load(path)


def test_a_conforming_plugin_passes():
    check_backend(_Brute)


class _NoPadding(_Brute):
    def search(self, xq, k):
        result = super().search(xq, k)
        return Neighbors(result.distances, np.where(result.ids < 0, 0, result.ids))


class _Int32(_Brute):
    def search(self, xq, k):
        result = super().search(xq, k)
        return Neighbors(result.distances, result.ids.astype(np.int32))


class _Sloppy(_Brute):
    def search(self, xq, k):
        result = super().search(xq, k + 5)  # misses the 5 nearest
        return Neighbors(result.distances[:, 5:], result.ids[:, 5:])


class _NoLoad(_Brute):
    load = Index.load


class _LeakyFilter(_Brute):
    native_filter = True

    def search_filtered(self, xq, k, allowed):
        return self.search(xq, k)


class _Unremovable(_Brute):
    supports_remove = True

    def remove(self, ids):
        pass


class _AcceptsAnyMetric(_Brute):
    def __init__(self, metric):
        self.metric = metric


@pytest.mark.parametrize(
    "cls, message",
    [
        (_NoPadding, r"_NoPadding \[euclidean\] k > base: .*duplicate ids"),
        (_Int32, r"search: ids dtype int32, expected int64"),
        (_Sloppy, r"recall: 0\.\d+ < 0.9 at its best setting"),
        (_NoLoad, r"load: not implemented"),
        (_LeakyFilter, r"search_filtered .*returned ids that are not allowed"),
        (_Unremovable, r"remove: removed ids still returned"),
        (_AcceptsAnyMetric, r"\[(angular|dot)\] unsupported metric: construction must raise"),
    ],
)
def test_the_kit_names_the_backend_and_the_failed_check(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_backend(cls)


def test_a_plugin_without_a_grid_is_told_to_ship_one():
    class _NoGrid(_Brute):
        default_grid = None

        def set_search_params(self, *, level: int) -> None:
            self.level = level

    with pytest.raises(AssertionError, match="_NoGrid default grid: .*needs parameter level"):
        check_backend(_NoGrid)
    check_backend(_NoGrid, search={"level": 1})
