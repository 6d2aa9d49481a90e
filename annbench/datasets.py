"""Datasets in ann-benchmarks' HDF5 layout: ``train``, ``test``, ``neighbors``, ``distances``
arrays and a ``distance`` attribute, plus optional ``train_labels``/``test_labels``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from annbench import __version__
from annbench.errors import AnnbenchError
from annbench.groundtruth import GT_K, exact_knn
from annbench.metrics import Metric
from annbench.paths import data_dir
from annbench.synthetic import clustered_gaussian

REQUIRED_KEYS = ("train", "test", "neighbors", "distances")
HASH_ATTR = "annbench_content_hash"


@dataclass
class Dataset:
    """A base set, held-out queries and their exact ground truth."""

    name: str
    path: Path
    metric: Metric
    train: np.ndarray  # (n, d) float32
    test: np.ndarray  # (nq, d) float32
    neighbors: np.ndarray  # (nq, >=k) int64 ids into train, nearest first
    distances: np.ndarray  # (nq, >=k) their distances, ann-benchmarks convention
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """Hash of the vectors and metric: results are keyed on it, not on the file name."""
        return self.attrs.get(HASH_ATTR) or content_hash(self.train, self.test, self.metric)


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset annbench generates itself on first use, needing no network."""

    n: int
    nq: int
    d: int
    metric: Metric
    n_clusters: int
    seed: int
    description: str


BUILTIN: dict[str, BuiltinDataset] = {
    "clustered-20k-128-euclidean": BuiltinDataset(
        20_000, 1_000, 128, Metric.EUCLIDEAN, 64, 1, "clustered Gaussian, 64 uneven clusters"
    ),
    "clustered-10k-64-angular": BuiltinDataset(
        10_000, 500, 64, Metric.ANGULAR, 32, 2, "clustered Gaussian compared by cosine"
    ),
}
DEFAULT_DATASET = "clustered-20k-128-euclidean"


def content_hash(train: np.ndarray, test: np.ndarray, metric: Metric) -> str:
    """sha256 (first 16 hex digits) of the float32 vectors and the metric name."""
    digest = hashlib.sha256(metric.value.encode())
    for array in (train, test):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def read_dataset(path: Path) -> Dataset:
    """Load and validate an ann-benchmarks-layout file; any problem is one AnnbenchError line."""
    path = Path(path)
    if not path.is_file():
        raise AnnbenchError(f"Dataset file {path} not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in REQUIRED_KEYS if key not in f]
            if missing:
                raise AnnbenchError(
                    f"{path.name} lacks {', '.join(repr(m) for m in missing)}: the ann-benchmarks "
                    f"layout needs {', '.join(REQUIRED_KEYS)} (annbench datasets import adds "
                    "ground truth)"
                )
            arrays = {key: f[key][()] for key in REQUIRED_KEYS}
            labels = {key: f[key][()] for key in ("train_labels", "test_labels") if key in f}
            attrs = {key: _plain(value) for key, value in f.attrs.items()}
    except AnnbenchError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise AnnbenchError(
            f"{path} is not a readable HDF5 dataset (truncated or corrupt?): {exc}"
        ) from exc
    if "distance" not in attrs:
        raise AnnbenchError(f"{path.name} has no 'distance' attribute (euclidean, angular or dot)")
    metric = Metric.parse(attrs["distance"])
    train = _vectors(arrays["train"], "train", path)
    test = _vectors(arrays["test"], "test", path)
    if train.shape[1] != test.shape[1]:
        raise AnnbenchError(
            f"{path.name}: train has dimension {train.shape[1]} but test has {test.shape[1]}"
        )
    neighbors, distances = arrays["neighbors"], arrays["distances"]
    if neighbors.ndim != 2 or neighbors.shape[0] != len(test) or distances.shape != neighbors.shape:
        raise AnnbenchError(
            f"{path.name}: neighbors {neighbors.shape} and distances {distances.shape} must both "
            f"be ({len(test)}, k)"
        )
    if not np.issubdtype(neighbors.dtype, np.integer):
        raise AnnbenchError(f"{path.name}: neighbors must be integer ids, got {neighbors.dtype}")
    if neighbors.size and (neighbors.min() < 0 or neighbors.max() >= len(train)):
        raise AnnbenchError(f"{path.name}: neighbors holds ids outside 0..{len(train) - 1}")
    return Dataset(
        name=path.stem,
        path=path,
        metric=metric,
        train=train,
        test=test,
        neighbors=neighbors.astype(np.int64, copy=False),
        distances=distances.astype(np.float64, copy=False),
        train_labels=labels.get("train_labels"),
        test_labels=labels.get("test_labels"),
        attrs=attrs,
    )


def write_dataset(
    path: Path,
    train: np.ndarray,
    test: np.ndarray,
    metric: Metric,
    train_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    gt_k: int = GT_K,
) -> Path:
    """Compute exact ground truth and write the dataset atomically (never a half-written file)."""
    path = Path(path)
    train = _vectors(train, "train", path)
    test = _vectors(test, "test", path)
    if train.shape[1] != test.shape[1]:
        raise AnnbenchError(f"train has dimension {train.shape[1]} but test has {test.shape[1]}")
    distances, neighbors = exact_knn(train, test, min(gt_k, len(train)), metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with h5py.File(partial, "w") as f:
            f.attrs["distance"] = metric.value
            f.attrs["dimension"] = train.shape[1]
            f.attrs["point_type"] = "float"
            f.attrs[HASH_ATTR] = content_hash(train, test, metric)
            f.attrs["annbench_version"] = __version__
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            f.create_dataset("train", data=train, compression="gzip", compression_opts=1)
            f.create_dataset("test", data=test)
            f.create_dataset("neighbors", data=neighbors.astype(np.int32))
            f.create_dataset("distances", data=distances.astype(np.float32))
            for key, labels in (("train_labels", train_labels), ("test_labels", test_labels)):
                if labels is not None:
                    f.create_dataset(key, data=np.asarray(labels))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def resolve_dataset(spec: str, progress: Callable[[str], None] | None = None) -> Path:
    """Path of the dataset named ``spec`` (a file path, a file in the data folder, or a
    built-in name, generated on first use)."""
    candidate = Path(spec).expanduser()
    if candidate.suffix in (".hdf5", ".h5") or os.sep in spec:
        if not candidate.is_file():
            raise AnnbenchError(f"Dataset file {candidate} not found")
        return candidate
    stored = data_dir() / f"{spec}.hdf5"
    if stored.is_file():
        return stored
    if spec in BUILTIN:
        if progress is not None:
            progress(f"Generating built-in dataset {spec} into {stored}")
        return create_builtin(spec, stored)
    raise AnnbenchError(
        f"Unknown dataset '{spec}'. Available: {', '.join(available_datasets())} "
        "(or give a path to an ann-benchmarks HDF5 file)"
    )


def create_builtin(name: str, path: Path) -> Path:
    """Generate the built-in dataset ``name`` into ``path``."""
    spec = BUILTIN[name]
    return create_synthetic(
        path, spec.n, spec.nq, spec.d, spec.metric, spec.n_clusters, spec.seed, spec.description
    )


def create_synthetic(
    path: Path,
    n: int,
    nq: int,
    d: int,
    metric: Metric,
    n_clusters: int = 64,
    seed: int = 0,
    description: str = "clustered Gaussian",
) -> Path:
    """Write a clustered-Gaussian dataset with ``nq`` held-out queries (not in the base)."""
    if n < 1 or nq < 1 or d < 1:
        raise AnnbenchError(f"n, nq and d must be positive, got n={n}, nq={nq}, d={d}")
    x, labels = clustered_gaussian(n + nq, d, n_clusters=n_clusters, seed=seed)
    order = np.random.default_rng(seed + 1).permutation(n + nq)
    test_rows, train_rows = order[:nq], order[nq:]
    attrs = {
        "source": f"annbench synthetic: {description}",
        "generator": f"clustered_gaussian(n={n + nq}, d={d}, n_clusters={n_clusters}, seed={seed})",
    }
    return write_dataset(
        path, x[train_rows], x[test_rows], metric, labels[train_rows], labels[test_rows], attrs
    )


def available_datasets() -> list[str]:
    """Names of stored datasets and built-ins, sorted."""
    folder = data_dir()
    stored = {p.stem for p in folder.glob("*.hdf5")} if folder.is_dir() else set()
    return sorted(stored | set(BUILTIN))


def _vectors(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise AnnbenchError(
            f"{path.name}: '{key}' must be a non-empty 2-D array, got {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise AnnbenchError(f"{path.name}: '{key}' must hold numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise AnnbenchError(
            f"{path.name}: '{key}' has {int(bad.sum())} rows with NaN or inf (first: row "
            f"{int(np.argmax(bad))}); clean or drop them"
        )
    return array


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
