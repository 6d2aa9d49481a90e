"""Google's ScaNN: a partitioning tree, anisotropic (asymmetric) hashing, then exact re-ranking.

Metrics: dot is ScaNN's ``dot_product``; angular is ``dot_product`` on vectors that annbench
normalizes (base once at build, queries in ``prepare_queries``), with a spherical tree as
ann-benchmarks uses; euclidean is ``squared_l2``. The anisotropic quantization threshold
(``avq_threshold``) only applies to dot-product scoring: ScaNN ignores it for ``squared_l2``,
where quantization is isotropic. ``save`` writes ScaNN's serialized assets (a folder of
files) into one uncompressed tar file, so the index size is their total; ``load`` unpacks
them into a temporary folder and reads them with ``scann_ops_pybind.load_searcher``, which
holds everything in memory, and removes the folder.
"""

from __future__ import annotations

import math
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, cosine_ready, positive_int
from annbench.metrics import Metric

try:
    from scann import scann_ops_pybind
except ImportError as exc:
    raise MissingDependency("scann", extra="scann") from exc

_MEASURES = {
    Metric.EUCLIDEAN: "squared_l2",
    Metric.ANGULAR: "dot_product",
    Metric.DOT: "dot_product",
}


class Scann(Index):
    """ScaNN: ``num_leaves`` partitions, asymmetric hashing with ``dims_per_block`` dims per
    4-bit code and ``avq_threshold``; ``leaves_to_search`` partitions probed and ``reorder``
    candidates re-ranked exactly per query."""

    library = "scann"
    releases_gil = True  # search runs in C++ without the GIL: load clients are threads

    def __init__(
        self,
        metric: Metric,
        *,
        num_leaves: int,
        avq_threshold: float = 0.2,
        dims_per_block: int = 2,
    ) -> None:
        if isinstance(avq_threshold, bool) or not isinstance(avq_threshold, (int, float)):
            raise AnnbenchError(f"Parameter avq_threshold must be a number, got {avq_threshold!r}")
        super().__init__(
            metric,
            num_leaves=positive_int("num_leaves", num_leaves),
            avq_threshold=float(avq_threshold),
            dims_per_block=positive_int("dims_per_block", dims_per_block),
        )
        self._searcher = None
        self._leaves = 1
        self._reorder = 100
        self._threads = 0  # 0: every core, for training and for the batch search pool

    def check(self, n: int, d: int) -> None:
        leaves = self.build_params["num_leaves"]
        if leaves > n:
            raise AnnbenchError(
                f"Parameter num_leaves={leaves} is more than the {n} base vectors; "
                f"use num_leaves <= {n} (about sqrt(n) is typical)"
            )
        if self.build_params["dims_per_block"] > d:
            raise AnnbenchError(
                f"Parameter dims_per_block={self.build_params['dims_per_block']} exceeds "
                f"the {d} dimensions; use a divisor of {d} such as 2"
            )

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        return cosine_ready(self.metric, xq)

    def build(self, xb: np.ndarray) -> None:
        xb = self.prepare_queries(xb)
        self.check(*xb.shape)
        params = self.build_params
        avq = params["avq_threshold"] if self.metric is not Metric.EUCLIDEAN else math.nan
        builder = scann_ops_pybind.builder(xb, 10, _MEASURES[self.metric])
        builder.set_n_training_threads(self._threads)
        self._attach(
            builder.tree(
                params["num_leaves"],
                1,
                training_sample_size=len(xb),
                spherical=self.metric is Metric.ANGULAR,
                quantize_centroids=True,
            )
            .score_ah(params["dims_per_block"], anisotropic_quantization_threshold=avq)
            .reorder(self._reorder)
            .build()
        )

    def _attach(self, searcher: object) -> None:
        self._searcher = searcher
        self._search_one = searcher.searcher.search  # the pybind call, no wrapper

    def set_search_params(self, *, leaves_to_search: int, reorder: int) -> None:
        """``reorder``: candidates re-ranked with exact distances; fewer than k returns only
        that many neighbours."""
        self._leaves = positive_int("leaves_to_search", leaves_to_search)
        self._reorder = positive_int("reorder", reorder)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        search = (
            self._searcher.search_batched
            if self._threads == 1
            else self._searcher.search_batched_parallel
        )
        found, distances = search(
            xq, k, leaves_to_search=self._leaves, pre_reorder_num_neighbors=self._reorder
        )
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        width = found.shape[1] if found.ndim == 2 else 0
        ids[:, :width] = found
        missing = np.isnan(distances)  # ScaNN pads with id 0 and a NaN distance
        ids[:, :width][missing] = -1
        padded = np.full((len(xq), k), np.inf, dtype=np.float32)
        padded[:, :width] = np.where(missing, np.inf, distances)
        return Neighbors(padded, ids)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._search_one(q, k, self._reorder, self._leaves)[0]

    def set_num_threads(self, n: int) -> None:
        """Threads for training and batch search (ScaNN sizes its pool when building or
        loading; 1 searches on the calling thread)."""
        self._threads = n

    def save(self, path: Path) -> None:
        """Write ScaNN's assets as one tar file at ``path``."""
        with tempfile.TemporaryDirectory(prefix="annbench-scann-") as folder:
            self._searcher.serialize(folder, relative_path=True)
            with tarfile.open(path, "w") as archive:
                for file in sorted(Path(folder).iterdir()):
                    archive.add(file, arcname=file.name)

    def load(self, path: Path) -> None:
        if not tarfile.is_tarfile(path):
            raise AnnbenchError(f"{path} is not a ScaNN index written by Scann.save")
        with tempfile.TemporaryDirectory(prefix="annbench-scann-") as folder:
            with tarfile.open(path) as archive:
                archive.extractall(folder, filter="data")
            if not (Path(folder) / "scann_assets.pbtxt").is_file():
                raise AnnbenchError(f"{path} holds no ScaNN assets; write it with Scann.save")
            self._attach(scann_ops_pybind.load_searcher(folder))
