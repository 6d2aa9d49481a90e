"""The dataset file: ann-benchmarks' HDF5 layout, ``train``, ``test``, ``neighbors``,
``distances`` arrays and a ``distance`` attribute, plus optional ``train_labels``/``test_labels``
and numeric attributes; read with every check, written atomically with exact ground truth.
Content hashes are ``fingerprint``'s."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from annbench import __version__
from annbench.data.fingerprint import (
    Fingerprint,
    cached,
    file_signature,
    fingerprint,
    hash_hdf5,
    keep,
    remember,
)
from annbench.data.groundtruth import GT_K, block_rows, exact_knn
from annbench.data.truthcheck import check_ground_truth, check_truth_layout
from annbench.errors import AnnbenchError
from annbench.metrics import Metric, normalize_rows
from annbench.paths import check_input_file, data_dir

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("train", "test", "neighbors", "distances")
WRITE_CHUNK = 65536
ArrayLike = Any  # np.ndarray, np.memmap or h5py.Dataset: anything with .shape and row slices
LABEL_KEYS = ("train_labels", "test_labels")
#: Attributes older versions wrote that are no longer trusted (the hash is computed on read).
PROVENANCE_ONLY = ("annbench_content_hash",)
#: The ``Dataset.attrs`` entry (and cached verdict) saying whether the ground truth was checked.
TRUTH_VERDICT = "ground_truth_check"


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
    train_attrs: np.ndarray | None = None  # (n, m) float64 numeric attributes, for filters
    test_attrs: np.ndarray | None = None  # (nq, m) the queries' values, when known
    attr_names: list[str] = field(default_factory=list)  # the m column names
    fingerprint: Fingerprint | None = None
    signature: list[Any] | None = None  # the file's signature when it was read

    @property
    def content_hash(self) -> str:
        """Hash of every array and attribute that changes a number (not of workload arrays):
        plain results are keyed on it, not on the file name."""
        return self._fingerprint().content

    def workload_hash(self, workload: str) -> str:
        """Hash the records of ``workload`` are keyed on: the content plus that workload's
        ground-truth arrays (``*@workload``) in the file; ``plain`` is the content hash."""
        return self._fingerprint().workload_hash(workload)

    def _fingerprint(self) -> Fingerprint:
        """The file's fingerprint, re-read if the file changed since (workload ground truth
        added); vectors or ground truth changed under a reader are an error."""
        if self.fingerprint is not None and self.signature == file_signature(self.path):
            return self.fingerprint
        found = fingerprint(self.path)
        if self.fingerprint is not None and found.content != self.fingerprint.content:
            raise AnnbenchError(
                f"{self.path} changed while in use (its vectors, ground truth or labels); "
                "run the command again"
            )
        self.fingerprint, self.signature = found, file_signature(self.path)
        return found


def read_dataset(path: Path, probe: bool = True, verify: bool = True) -> Dataset:
    """Load and validate an ann-benchmarks-layout file; any problem is one AnnbenchError line.

    ``probe`` first reads the metadata in a child process (see ``probe_hdf5``) and warns about
    zero vectors under cosine; a process that is itself an isolated, timed worker passes False.
    With ``verify`` the ground truth is checked against a recomputed sample on first use (the
    verdict is cached with the file's hash); without, only its layout is checked.
    """
    path = check_input_file(path, "Dataset file")
    if probe:
        probe_hdf5(path)
    signature = file_signature(path)
    found = cached(signature)
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in REQUIRED_KEYS if key not in f]
            if missing:
                raise AnnbenchError(
                    f"{path.name} lacks {', '.join(repr(m) for m in missing)}: the ann-benchmarks "
                    f"layout needs {', '.join(REQUIRED_KEYS)} (annbench datasets import adds "
                    "ground truth)"
                )
            present = [key for key in REQUIRED_KEYS + LABEL_KEYS if key in f]
            for key in present:
                if not isinstance(f[key], h5py.Dataset):
                    raise AnnbenchError(
                        f"{path.name}: '{key}' is an HDF5 group, but an array (dataset) is "
                        "expected there"
                    )
            arrays = {key: f[key][()] for key in present}
            per_row = {
                key: item.shape
                for key, item in f.items()
                if key.startswith(("train_", "test_")) and isinstance(item, h5py.Dataset)
            }
            attrs = {
                key: _plain(value) for key, value in f.attrs.items() if key not in PROVENANCE_ONLY
            }
            if found is None:
                found = hash_hdf5(f, arrays)
            numeric = read_attributes(f, path)
    except AnnbenchError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise AnnbenchError(
            f"{path} is not a readable HDF5 dataset (truncated or corrupt?): {exc}"
        ) from exc
    keep(path, signature, found)
    labels = {key: arrays[key] for key in LABEL_KEYS if key in arrays}
    if "distance" not in attrs:
        raise AnnbenchError(f"{path.name} has no 'distance' attribute (euclidean, angular or dot)")
    metric = Metric.parse(attrs["distance"])
    warn_big_integers(
        path.name, *_add_big(_big_integers(arrays["train"]), _big_integers(arrays["test"]))
    )
    train = _vectors(arrays["train"], "train", path)
    test = _vectors(arrays["test"], "test", path)
    if train.shape[1] != test.shape[1]:
        raise AnnbenchError(
            f"{path.name}: train has dimension {train.shape[1]} but test has {test.shape[1]}"
        )
    _check_rows(path, per_row, len(train), len(test))
    _check_labels(path, labels, attrs)
    if len(labels) == 1 and probe:
        have, lack = LABEL_KEYS if "train_labels" in labels else LABEL_KEYS[::-1]
        log.warning(
            "%s has %s but no %s: label metrics and --filter label need both, so they are "
            "not available; re-import the vectors with labels for every row "
            "(annbench datasets import --labels)",
            path.name,
            have,
            lack,
        )
    neighbors, distances = arrays["neighbors"], arrays["distances"]
    in_place = " --force" if (data_dir() / path.name).exists() else ""
    fix = f"recompute it with 'annbench datasets truth {path}{in_place}'"
    verdict = found.verdicts.get(TRUTH_VERDICT)
    if verdict is None and verify:
        verdict = check_ground_truth(path.name, train, test, neighbors, distances, metric, fix)
        remember(path, TRUTH_VERDICT, verdict)
    elif verdict is None:
        check_truth_layout(path.name, len(train), len(test), neighbors, distances, fix)
    attrs[TRUTH_VERDICT] = verdict or "not checked (layout only)"
    if probe and metric is Metric.ANGULAR:
        warn_zero_vectors(path.name, zero_rows(train), zero_rows(test), neighbors)
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
        **numeric,
        fingerprint=found,
        signature=signature,
    )


#: Seconds a child process may take to read a file's HDF5 metadata before it is called corrupt.
PROBE_SECONDS = 30.0


def probe_hdf5(path: Path) -> None:
    """Read ``path``'s HDF5 metadata in a child process first: on some corrupt files libhdf5
    loops forever holding the GIL, which no in-process timeout can stop. A child that does not
    finish in time is killed and the file reported corrupt; other errors surface in the caller.
    """
    signature = tuple(file_signature(path))
    if signature in _PROBED:  # these very bytes were read safely in this process already
        return
    # fork is cheap, but only safe while no other thread could hold a lock the child needs
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context("spawn")
    child = context.Process(target=_read_metadata, args=(str(path),))
    child.start()
    child.join(PROBE_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()
        raise AnnbenchError(
            f"{path} is not a readable HDF5 dataset: reading its metadata did not finish "
            f"(corrupt file?)"
        )
    _PROBED.add(signature)


#: Signatures (path, size, inode, mtime, ctime) of files whose metadata a child read in time.
_PROBED: set[tuple[Any, ...]] = set()


def _read_metadata(path: str) -> None:
    try:
        with h5py.File(path, "r") as f:
            for value in f.attrs.values():
                _plain(value)
            for key in REQUIRED_KEYS + ("train_labels", "test_labels"):
                if key in f and f[key].ndim and f[key].shape[0]:
                    f[key][:1]
    except Exception:  # noqa: BLE001 - the caller's own read reports the error
        pass


def write_dataset(
    path: Path,
    train: ArrayLike,
    test: np.ndarray,
    metric: Metric,
    train_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    gt_k: int = GT_K,
    float16: bool = False,
    normalize: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    numeric_attrs: dict[str, tuple[np.ndarray, np.ndarray | None]] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a dataset with exact ground truth, atomically (never a half-written file).

    ``train`` may be any row-sliceable array (a memmap or an HDF5 dataset larger than memory):
    it is validated, written and ground-truthed in row chunks. With ``normalize`` rows are
    scaled to unit length; with ``float16`` vectors are rounded to and stored as float16 (half
    the size) and the ground truth is computed on the rounded vectors. ``progress`` is called
    as ``(stage, done, total)``; ``extra`` arrays (``train_attrs``, ...) are stored as given.
    ``numeric_attrs`` maps an attribute name to its values on the base rows and (or None) on
    the queries, stored as ``train_attrs``/``test_attrs`` with an ``attr_names`` attribute.
    """
    path = Path(path)
    shape = getattr(train, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise AnnbenchError(f"{path.name}: base vectors must be a non-empty 2-D array, got {shape}")
    n, d = shape
    big = _big_integers(test)
    test = _vectors(test, "test", path)
    zero_queries = int(zero_rows(test).sum()) if normalize else 0
    test = _prepare(test, normalize, float16)
    if test.shape[1] != d:
        raise AnnbenchError(f"base vectors have dimension {d} but queries have {test.shape[1]}")
    for key, labels, rows in (
        ("train_labels", train_labels, n),
        ("test_labels", test_labels, len(test)),
    ):
        if labels is not None and len(labels) != rows:
            raise AnnbenchError(f"{key} has {len(labels)} entries for {rows} vectors")
    train_labels, test_labels, label_names = _label_codes(train_labels, test_labels)
    if label_names is not None:
        attrs = {**(attrs or {}), "label_names": json.dumps(label_names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    stored = np.float16 if float16 else np.float32
    zeros: list[np.ndarray] = []  # zero rows of the base, under cosine
    zero_base = 0  # zero rows of the base, which --normalize leaves zero
    try:
        with h5py.File(partial, "w") as f:
            base = f.create_dataset(
                "train",
                shape=(n, d),
                dtype=stored,
                chunks=(min(n, max(1, 65536 // d)), d),
                compression="gzip",
            )
            for start in range(0, n, WRITE_CHUNK):
                stop = min(start + WRITE_CHUNK, n)
                raw = train[start:stop]
                big = _add_big(big, _big_integers(raw))
                block = _vectors(raw, "train", path, start)
                if normalize:
                    zero_base += int(zero_rows(block).sum())
                block = _prepare(block, normalize, float16)
                base[start:stop] = block
                if metric is Metric.ANGULAR:
                    zeros.append(start + np.flatnonzero(zero_rows(block)))
                if progress is not None:
                    progress("writing", stop, n)
            warn_big_integers(path.name, *big)
            if zero_base or zero_queries:
                log.warning(
                    "%s: %d base vectors and %d queries are all zeros, which cannot be scaled "
                    "to unit length; --normalize leaves them zero",
                    path.name,
                    zero_base,
                    zero_queries,
                )
            step = max(WRITE_CHUNK, block_rows(d))  # reading back: fewer, larger blocks
            blocks = (base[s : s + step].astype(np.float32) for s in range(0, n, step))
            on_block = (lambda done: progress("ground truth", done, n)) if progress else None
            distances, neighbors = exact_knn(blocks, test, min(gt_k, n), metric, progress=on_block)
            if metric is Metric.ANGULAR:
                zero_base = np.zeros(n, dtype=bool)
                zero_base[np.concatenate(zeros)] = True
                warn_zero_vectors(path.name, zero_base, zero_rows(test), neighbors)
            f.attrs["distance"] = metric.value
            f.attrs["dimension"] = d
            f.attrs["point_type"] = "float"
            f.attrs["annbench_version"] = __version__
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            f.create_dataset("test", data=test.astype(stored))
            f.create_dataset("neighbors", data=neighbors.astype(np.int32))
            f.create_dataset("distances", data=distances.astype(np.float32))
            for key, labels in (("train_labels", train_labels), ("test_labels", test_labels)):
                if labels is not None:
                    f.create_dataset(key, data=np.asarray(labels))
            if numeric_attrs:
                write_attributes(f, numeric_attrs, n, len(test))
            for key, array in (extra or {}).items():
                f.create_dataset(key, data=array)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_attributes(f: h5py.File, path: Path) -> dict[str, Any]:
    """``train_attrs``, ``test_attrs`` (float64, one column per attribute) and ``attr_names``
    (the ``attr_names`` file attribute, a JSON list; ``attr0``, ``attr1``... when absent)."""
    if "train_attrs" not in f:
        return {}
    train_attrs = np.asarray(f["train_attrs"][()], dtype=np.float64)
    if train_attrs.ndim == 1:
        train_attrs = train_attrs[:, None]
    raw = _plain(f.attrs.get("attr_names", "null"))
    try:
        names = json.loads(raw) if isinstance(raw, str) else list(raw)
    except (ValueError, TypeError):
        names = []
    if names is None:
        names = [f"attr{i}" for i in range(train_attrs.shape[1] if train_attrs.ndim == 2 else 0)]
    if train_attrs.ndim != 2 or len(names) != train_attrs.shape[1]:
        raise AnnbenchError(
            f"{path.name}: train_attrs {train_attrs.shape} needs one name per column in its "
            "attr_names attribute (a JSON list)"
        )
    test_attrs = None
    if "test_attrs" in f:
        test_attrs = np.asarray(f["test_attrs"][()], dtype=np.float64).reshape(-1, len(names))
    return {"train_attrs": train_attrs, "test_attrs": test_attrs, "attr_names": names}


def write_attributes(
    f: h5py.File, numeric_attrs: dict[str, tuple[np.ndarray, np.ndarray | None]], n: int, nq: int
) -> None:
    """Store named numeric attributes as ``train_attrs`` (n, m) and, when every one has query
    values, ``test_attrs`` (nq, m), with their names in the ``attr_names`` attribute."""
    names = list(numeric_attrs)
    for name in names:
        if not name or "/" in name or ":" in name:
            raise AnnbenchError(f"Attribute name '{name}' must be non-empty, without '/' or ':'")
    columns = [np.asarray(numeric_attrs[name][0], dtype=np.float64) for name in names]
    queries = [numeric_attrs[name][1] for name in names]
    for name, values in zip(names, columns, strict=True):
        if values.shape != (n,) or not np.isfinite(values).all():
            raise AnnbenchError(
                f"Attribute '{name}' needs {n} finite numbers (one per base vector), "
                f"got shape {values.shape}"
            )
    for key in ("train_attrs", "test_attrs"):
        if key in f:
            del f[key]
    f.create_dataset("train_attrs", data=np.stack(columns, axis=1))
    f.attrs["attr_names"] = json.dumps(names)
    if all(q is not None for q in queries):
        test = np.stack([np.asarray(q, dtype=np.float64).reshape(nq) for q in queries], axis=1)
        f.create_dataset("test_attrs", data=test)


def recompute_truth(source: Path, dest: Path) -> Path:
    """Write ``source`` to ``dest`` with its exact ground truth recomputed; vectors, labels,
    label names, per-row arrays and provenance are kept, workload (``@``) arrays dropped
    (they are ground truth of the old file). ``dest`` may be ``source`` (replaced atomically)."""
    source, dest = Path(source), Path(dest)
    try:
        with h5py.File(source, "r") as f:
            missing = [key for key in ("train", "test") if key not in f]
            if missing or "distance" not in f.attrs:
                raise AnnbenchError(
                    f"{source.name} needs 'train', 'test' and a 'distance' attribute to "
                    "recompute ground truth; import it with 'annbench datasets import'"
                )
            metric = Metric.parse(_plain(f.attrs["distance"]))
            skip = (*PROVENANCE_ONLY, "distance", "dimension", "point_type", "annbench_version")
            attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in skip}
            attrs["ground_truth"] = f"recomputed by annbench {__version__}"
            labels = {key: f[key][()] for key in LABEL_KEYS if key in f}
            extra = {
                key: item[()]
                for key, item in f.items()
                if isinstance(item, h5py.Dataset)
                and "@" not in key
                and key not in (*REQUIRED_KEYS, *LABEL_KEYS)
            }
            float16 = f["train"].dtype == np.float16
            write_dataset(
                dest,
                f["train"],
                f["test"][()],
                metric,
                labels.get("train_labels"),
                labels.get("test_labels"),
                attrs,
                float16=float16,
                extra=extra,
            )
    except AnnbenchError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise AnnbenchError(f"{source} is not a readable HDF5 dataset: {exc}") from exc
    return dest


def _label_codes(
    train_labels: np.ndarray | None, test_labels: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None, list[str] | None]:
    """Text labels become int32 codes into a sorted list of names (HDF5 stores numbers)."""
    given = [np.asarray(x) for x in (train_labels, test_labels) if x is not None]
    if not given or all(np.issubdtype(x.dtype, np.integer) for x in given):
        return train_labels, test_labels, None
    names = sorted({str(v) for x in given for v in x.tolist()})
    index = {name: code for code, name in enumerate(names)}

    def codes(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.array([index[str(v)] for v in x.tolist()], np.int32)

    return codes(train_labels), codes(test_labels), names


def _prepare(block: np.ndarray, normalize: bool, float16: bool) -> np.ndarray:
    if normalize:
        block = normalize_rows(block)
    if float16:
        block = block.astype(np.float16).astype(np.float32)
    return block


def _vectors(array: ArrayLike, key: str, path: Path, first_row: int = 0) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise AnnbenchError(
            f"{path.name}: '{key}' must be a non-empty 2-D array, got {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise AnnbenchError(f"{path.name}: '{key}' must hold numbers, got dtype {array.dtype}")
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:
        big = np.abs(array) > np.finfo(np.float32).max
        if big.any():
            row = int(np.argmax(big.any(axis=1)))
            value = float(array[row][big[row]][0])
            raise AnnbenchError(
                f"{path.name}: '{key}' row {first_row + row} holds {value:g}, beyond float32's "
                f"largest value {np.finfo(np.float32).max:g}; rescale the vectors"
            )
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise AnnbenchError(
            f"{path.name}: '{key}' has rows with NaN or inf (first: row "
            f"{first_row + int(np.argmax(bad))}); clean or drop them"
        )
    return array


#: Integers up to this magnitude are exact in float32 (a 24-bit significand); beyond, they round.
FLOAT32_EXACT = 2**24


def _big_integers(array: ArrayLike) -> tuple[int, int]:
    """``(how many values, largest magnitude)`` of the integers in ``array`` beyond
    ``FLOAT32_EXACT``, which float32 vectors cannot hold exactly; (0, 0) for floats."""
    array = np.asarray(array)
    if array.dtype.kind not in "iu" or array.size == 0:
        return 0, 0
    big = (array > FLOAT32_EXACT) | (array < -FLOAT32_EXACT)
    count = int(big.sum())
    return (count, max(int(array.max()), -int(array.min()))) if count else (0, 0)


def _add_big(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], max(a[1], b[1])


def warn_big_integers(name: str, count: int, largest: int) -> None:
    """Warn that ``count`` integer values (up to ``largest``) lose precision as float32."""
    if count:
        log.warning(
            "%s: %d integer values exceed 2**24 in magnitude (largest %d) and are rounded in "
            "float32, so distances and exact search lose precision (recall may be near 0); "
            "rescale the vectors or subtract a common offset",
            name,
            count,
            largest,
        )


def zero_rows(x: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``x`` that are all zeros."""
    return ~np.any(x != 0, axis=1)


def warn_zero_vectors(
    name: str, zero_base: np.ndarray, zero_query: np.ndarray, neighbors: np.ndarray | None
) -> tuple[int, int, int]:
    """Warn (a warning, not an error) if vectors compared by cosine have zero length; returns
    ``(zero base vectors, zero queries, queries affected)``. A query is affected if it is zero
    or its true neighbours include a zero base vector: cosine distances to zero are all 1.0."""
    affected = zero_query.copy()
    if neighbors is not None and zero_base.any():
        affected |= zero_base[neighbors].any(axis=1)
    counts = int(zero_base.sum()), int(zero_query.sum()), int(affected.sum())
    if counts[0] or counts[1]:
        log.warning(
            "%s: %d base vectors and %d queries have zero length; under cosine their "
            "distances are all 1.0 (%d of %d queries affected)",
            name,
            *counts,
            len(zero_query),
        )
    return counts


def _check_rows(path: Path, shapes: dict[str, tuple[int, ...]], n: int, nq: int) -> None:
    """Per-row arrays (``train_*``, ``test_*``) must have one entry per base vector / query."""
    for key, shape in sorted(shapes.items()):
        rows, what = (n, "base vectors") if key.startswith("train_") else (nq, "queries")
        if len(shape) == 0 or shape[0] != rows:
            raise AnnbenchError(
                f"{path.name}: '{key}' has shape {shape} but there are {rows} {what}; it needs "
                f"one entry per row ({rows}, ...)"
            )


def _check_labels(path: Path, labels: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Labels are one number (or text) per row, not NaN; ``label_names`` covers every code."""
    names = attrs.get("label_names")
    if names is not None:
        try:
            names = json.loads(names) if isinstance(names, str) else list(names)
        except (ValueError, TypeError):
            names = None
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise AnnbenchError(
                f"{path.name}: the 'label_names' attribute must be a JSON list of strings"
            )
    for key, values in labels.items():
        if values.ndim != 1:
            raise AnnbenchError(f"{path.name}: '{key}' must be 1-D, got shape {values.shape}")
        if values.dtype.kind == "f":
            if not np.isfinite(values).all():
                raise AnnbenchError(
                    f"{path.name}: '{key}' has NaN or infinite labels (first at row "
                    f"{int(np.argmin(np.isfinite(values)))}); label every row"
                )
        elif values.dtype.kind not in "iuSUOb":
            raise AnnbenchError(
                f"{path.name}: '{key}' must hold numbers or text, got {values.dtype}"
            )
        if names is not None:
            if values.dtype.kind not in "iu" or (
                len(values) and (values.min() < 0 or values.max() >= len(names))
            ):
                raise AnnbenchError(
                    f"{path.name}: '{key}' holds codes outside the {len(names)} entries of "
                    "'label_names'; the label-name table does not match the labels"
                )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
