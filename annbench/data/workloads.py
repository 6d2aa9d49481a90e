"""Filter workloads: which base vectors each query may return, and their exact ground truth.

A filter workload is named by a spec:

- ``label``: a query may return only base vectors with its own label (``train_labels``);
  its selectivity is that label's frequency;
- ``range:0.01`` (or ``range:NAME:0.01``): a query may return only base vectors whose numeric
  attribute (the first of ``train_attrs``, or the one named) lies in a value range holding
  that fraction of the base. The ranges are a few seeded windows in attribute order
  (``WINDOWS``), each query drawing one, so queries sharing a range can be searched together.

The per-query filter, its exact top-``GT_K`` ground truth among allowed vectors only and the
selectivity are stored in the dataset file beside ``neighbors`` as ``filter@<workload>``,
``neighbors@<workload>``, ``distances@<workload>`` and ``selectivity@<workload>`` (ann-benchmarks
ignores them). A file annbench must not change (the bundled dataset, a read-only file) gets
them in a side file in the data folder instead.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from annbench import __version__
from annbench.data.fingerprint import (
    Fingerprint,
    combine_workload,
    file_signature,
    stat_signature,
    workload_digests,
)
from annbench.data.format import Dataset
from annbench.data.groundtruth import GT_K, filtered_knn
from annbench.errors import AnnbenchError
from annbench.index import Condition
from annbench.metrics import RecallResult, recall_at_k, true_distances
from annbench.paths import data_dir
from annbench.record import PLAIN

log = logging.getLogger(__name__)

#: Distinct value ranges per range workload: few enough that batch mode searches each range's
#: queries in one call, enough that results do not hinge on one region of the attribute.
WINDOWS = 16
#: Seed of the window positions and of which query gets which window.
FILTER_SEED = 0
NONE_SPECS = ("none", PLAIN)
ARRAYS = ("filter", "neighbors", "distances", "selectivity")
#: Filter workloads one call may sweep: each is a sweep of its own with its own ground truth.
MAX_FILTERS = 64
#: Computed workload arrays held in memory before they are written out together.
WRITE_BATCH_BYTES = 256 << 20


class BadFilter(AnnbenchError):
    """A filter spec that is not valid, or that the dataset cannot serve (a usage error)."""


@dataclass(frozen=True)
class FilterSpec:
    """A parsed filter workload name."""

    kind: str  # "label" or "range"
    selectivity: float | None = None  # range: fraction of the base each range holds
    attribute: str | None = None  # range: attribute name; None: the dataset's first

    @property
    def name(self) -> str:
        """The workload name, canonical (``range:0.5`` for ``range:.50``)."""
        if self.kind == "label":
            return "label"
        attribute = f"{self.attribute}:" if self.attribute else ""
        return f"range:{attribute}{self.selectivity:g}"


def parse_filters(specs: Iterable[str]) -> list[str]:
    """Workload names of ``--filter`` values: ``label``, ``range:0.01,0.1`` (one workload per
    selectivity), ``range:NAME:0.01``, or ``none`` (the plain, unfiltered sweep); none given:
    plain only. Duplicates dropped, order kept."""
    names: list[str] = []
    for spec in specs:
        spec = spec.strip()
        if spec.lower() in NONE_SPECS:
            names.append(PLAIN)
            continue
        kind, _, rest = spec.partition(":")
        if kind == "label" and not rest:
            names.append("label")
            continue
        if kind != "range" or not rest:
            raise BadFilter(f"Filter '{spec}' not valid. {_SYNTAX}")
        attribute, _, values = rest.rpartition(":")
        for value in values.split(","):
            names.append(FilterSpec("range", _fraction(value, spec), attribute or None).name)
    names = list(dict.fromkeys(names))
    filters = sum(name != PLAIN for name in names)
    if filters > MAX_FILTERS:
        raise BadFilter(
            f"{filters} filter workloads given, at most {MAX_FILTERS} per run (each is a sweep "
            "with its own ground truth); split them over several runs"
        )
    return names or [PLAIN]


_SYNTAX = (
    "Use label, range:FRACTION[,FRACTION...] (e.g. range:0.01,0.1,0.5), "
    "range:ATTRIBUTE:FRACTION or none"
)


def _fraction(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadFilter(f"Filter '{spec}': '{text}' is not a number. {_SYNTAX}") from None
    if not 0 < value <= 1:
        raise BadFilter(
            f"Filter '{spec}': selectivity {text} must be in (0, 1], the fraction of the base "
            "a query may return"
        )
    return value


def parse_workload(name: str) -> FilterSpec | None:
    """The filter of workload ``name``; None for the plain workload (and runbooks)."""
    if name == PLAIN or name.startswith("runbook:"):
        return None
    if name == "label":
        return FilterSpec("label")
    kind, _, rest = name.partition(":")
    if kind != "range" or not rest:
        raise BadFilter(f"Workload '{name}' not valid. {_SYNTAX}")
    attribute, _, value = rest.rpartition(":")
    return FilterSpec("range", _fraction(value, name), attribute or None)


def canonical_workload(dataset: Dataset, workload: str) -> str:
    """The one name of ``workload`` on ``dataset``: ``range:ATTR:0.1`` is ``range:0.1`` when
    ATTR is the attribute ``range:0.1`` filters on (the dataset's first)."""
    spec = parse_workload(workload)
    if spec is None:
        return workload
    if spec.attribute is not None and dataset.attr_names[:1] == [spec.attribute]:
        return FilterSpec("range", spec.selectivity).name
    return spec.name


def canonical_workloads(dataset: Dataset, workloads: Iterable[str]) -> list[str]:
    """``canonical_workload`` of each of ``workloads``, duplicates dropped, order kept."""
    return list(dict.fromkeys(canonical_workload(dataset, w) for w in workloads))


def is_filter(workload: str) -> bool:
    """Whether ``workload`` names a filter (not plain, not a runbook)."""
    return parse_workload(workload) is not None


def check_filter(dataset: Dataset, workload: str) -> None:
    """Raise AnnbenchError (one line, with the fix) when ``dataset`` cannot serve ``workload``."""
    spec = parse_workload(workload)
    if spec is None:
        return
    if spec.kind == "label":
        if dataset.train_labels is None or dataset.test_labels is None:
            raise BadFilter(
                f"Filter 'label' needs class labels, and {dataset.name} has none "
                "(train_labels/test_labels); use a range filter or a labelled dataset"
            )
        return
    _attribute_column(dataset, spec)


def _attribute_column(dataset: Dataset, spec: FilterSpec) -> int:
    if dataset.train_attrs is None or not dataset.attr_names:
        raise BadFilter(
            f"Filter '{spec.name}' needs a numeric attribute, and {dataset.name} has none; "
            "add one with 'annbench datasets create|import|embed ... --random-attr NAME'"
        )
    if spec.attribute is None:
        return 0
    if spec.attribute not in dataset.attr_names:
        raise BadFilter(
            f"Filter '{spec.name}': {dataset.name} has no attribute '{spec.attribute}'; "
            f"its attributes: {', '.join(dataset.attr_names)}"
        )
    return dataset.attr_names.index(spec.attribute)


def expected_selectivity(dataset: Dataset, workload: str) -> float:
    """Mean fraction of the base a query of ``workload`` may return, known before any ground
    truth: the range's fraction, or the mean frequency of the queries' labels."""
    check_filter(dataset, workload)
    spec = parse_workload(workload)
    if spec is None:
        return 1.0
    if spec.kind == "range":
        return spec.selectivity
    values, counts = np.unique(dataset.train_labels, return_counts=True)
    frequency = dict(zip(values.tolist(), (counts / len(dataset.train)).tolist(), strict=True))
    return float(np.mean([frequency.get(v, 0.0) for v in dataset.test_labels.tolist()]))


# ---------------------------------------------------------------------------------------------
# Per-query filters


def filter_definition(dataset: Dataset, workload: str) -> np.ndarray:
    """What each query may return: ``label`` -> its label (nq,) int; ``range`` -> its inclusive
    value range ``[low, high]`` (nq, 2) float64 on the attribute."""
    check_filter(dataset, workload)
    spec = parse_workload(workload)
    assert spec is not None
    nq = len(dataset.test)
    if spec.kind == "label":
        return np.asarray(dataset.test_labels).astype(np.int64)
    values = np.sort(dataset.train_attrs[:, _attribute_column(dataset, spec)])
    n = len(values)
    width = min(n, max(1, round(spec.selectivity * n)))
    rng = np.random.default_rng(FILTER_SEED)
    starts = rng.choice(n - width + 1, size=min(WINDOWS, n - width + 1), replace=False)
    windows = np.stack([values[starts], values[starts + width - 1]], axis=1)
    return windows[rng.integers(len(windows), size=nq)]


def filter_groups(
    dataset: Dataset, workload: str, definition: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(group (nq,), masks)``: queries sharing a filter share a group, and ``masks[g]`` is
    the bool mask (n,) of base vectors group ``g`` may return."""
    spec = parse_workload(workload)
    assert spec is not None
    if spec.kind == "label":
        keys, group = np.unique(definition, return_inverse=True)
        labels = np.asarray(dataset.train_labels)
        return group.reshape(-1), [labels == key for key in keys.tolist()]
    column = dataset.train_attrs[:, _attribute_column(dataset, spec)]
    keys, group = np.unique(definition, axis=0, return_inverse=True)
    return group.reshape(-1), [(column >= low) & (column <= high) for low, high in keys]


@dataclass
class FilterWorkload:
    """A filter workload of one dataset: per-query filters, groups and ground truth."""

    name: str
    definition: np.ndarray  # see filter_definition
    group: np.ndarray  # (nq,) index into masks
    masks: list[np.ndarray]  # per group, bool (n,)
    neighbors: np.ndarray  # (nq, GT_K) int64 nearest allowed ids, -1 past the allowed count
    distances: np.ndarray  # (nq, GT_K) float64, inf past the allowed count
    selectivity: np.ndarray  # (nq,) fraction of the base each query may return
    #: per group, the filter as a condition on the fields ``fields`` gives (for databases)
    conditions: list[Condition] = field(default_factory=list)
    labels: np.ndarray | None = None  # (n,) the label field of a label workload
    values: np.ndarray | None = None  # (n,) the numeric field of a range workload

    @property
    def mean_selectivity(self) -> float:
        """Mean fraction of the base a query may return (the record's ``selectivity``)."""
        return float(self.selectivity.mean())

    def allowed(self, query: int) -> np.ndarray:
        """Bool mask (n,) of the base vectors query ``query`` may return."""
        return self.masks[self.group[query]]

    def group_queries(self) -> list[np.ndarray]:
        """Query rows of each group, ascending."""
        order = np.argsort(self.group, kind="stable")
        bounds = np.cumsum(np.bincount(self.group, minlength=len(self.masks)))[:-1]
        return np.split(order, bounds)

    def recall(self, dataset: Dataset, ids: np.ndarray, k: int) -> RecallResult:
        """Recall@k of returned ``ids (nq, >=k)`` against the filtered ground truth; a
        disallowed id is a miss. A query allowing ``m < k`` vectors has recall = (allowed ids
        found) / m; its k - m empty slots still count in ``missing``."""
        ids = np.asarray(ids)[:, :k].copy()
        valid = ids >= 0
        allowed = np.zeros(ids.shape, dtype=bool)
        for rows, mask in zip(self.group_queries(), self.masks, strict=True):
            block = ids[rows]
            allowed[rows] = (block >= 0) & mask[np.where(block >= 0, block, 0)]
        violations = int((valid & ~allowed).sum())
        if violations:
            log.warning("%s: %d disallowed ids returned, counted as misses", self.name, violations)
        ids[~allowed] = -1
        found = true_distances(dataset.metric, dataset.train, dataset.test, ids)
        result = recall_at_k(ids, found, self.neighbors, self.distances, k)
        available = np.minimum((self.neighbors[:, :k] >= 0).sum(axis=1), k)
        short = available < k
        if not short.any():
            return result
        recall, ab_recall = result.recall.copy(), result.ann_benchmarks_recall.copy()
        unique = np.array([len(set(row[row >= 0].tolist())) for row in ids[short]])
        denominator = np.maximum(available[short], 1)
        recall[short] = np.where(available[short] > 0, unique / denominator, 1.0)
        ab_recall[short] = recall[short]
        return RecallResult(recall, ab_recall, result.duplicates, result.missing)


def compute_workload(dataset: Dataset, workload: str, gt_k: int = GT_K) -> dict[str, np.ndarray]:
    """The arrays of ``workload`` (``filter``, ``neighbors``, ``distances``, ``selectivity``):
    exact top-``gt_k`` among allowed vectors, -1/inf past the allowed count."""
    definition = filter_definition(dataset, workload)
    group, masks = filter_groups(dataset, workload, definition)
    n = len(dataset.train)
    distances, neighbors = filtered_knn(
        dataset.train, dataset.test, min(gt_k, n), dataset.metric, group, masks
    )
    counts = np.array([mask.sum() for mask in masks], dtype=np.int64)
    missing = int((neighbors < 0).sum())
    if missing:
        log.info(
            "%s on %s: %d ground-truth slots empty (filters allowing < %d vectors)",
            workload,
            dataset.name,
            missing,
            gt_k,
        )
    return {
        "filter": definition,
        "neighbors": neighbors.astype(np.int32),
        "distances": distances.astype(np.float32),
        "selectivity": (counts[group] / n).astype(np.float64),
    }


def load_workload(dataset: Dataset, workload: str) -> FilterWorkload:
    """The filter workload ``workload`` of ``dataset``: from its file or side file, else
    computed now and stored (see ``prepare_workloads``)."""
    arrays = stored_workload(dataset, workload)
    if arrays is None:
        arrays = compute_workload(dataset, workload)
        store_workloads(dataset, {workload: arrays})
    definition = arrays["filter"]
    group, masks = filter_groups(dataset, workload, definition)
    spec = parse_workload(workload)
    assert spec is not None
    if spec.kind == "label":
        keys = np.unique(definition)
        conditions = [Condition("label", equals=int(key)) for key in keys.tolist()]
        fields = {"labels": np.asarray(dataset.train_labels).astype(np.int64)}
    else:
        keys = np.unique(definition, axis=0)
        conditions = [Condition("value", low=float(lo), high=float(hi)) for lo, hi in keys]
        column = dataset.train_attrs[:, _attribute_column(dataset, spec)]
        fields = {"values": np.asarray(column, dtype=np.float64)}
    return FilterWorkload(
        name=workload,
        definition=definition,
        group=group,
        masks=masks,
        neighbors=arrays["neighbors"].astype(np.int64),
        distances=arrays["distances"].astype(np.float64),
        selectivity=arrays["selectivity"].astype(np.float64),
        conditions=conditions,
        **fields,
    )


def prepare_workloads(
    dataset: Dataset, workloads: Iterable[str], progress: Callable[[str], None] | None = None
) -> list[str]:
    """Check every filter workload, then compute the ground truth of those not stored yet and
    store them together (one rewrite of the file per ``WRITE_BATCH_BYTES``); the workloads
    computed."""
    filters = [w for w in dict.fromkeys(workloads) if is_filter(w)]
    for workload in filters:
        check_filter(dataset, workload)
    missing = [w for w in filters if workload_holder(dataset, w) is None]
    pending: dict[str, dict[str, np.ndarray]] = {}
    for done, workload in enumerate(missing, 1):
        if progress is not None:
            progress(
                f"Computing exact ground truth of filter {workload} on {dataset.name} "
                f"({done}/{len(missing)})"
            )
        pending[workload] = compute_workload(dataset, workload)
        held = sum(a.nbytes for arrays in pending.values() for a in arrays.values())
        if held >= WRITE_BATCH_BYTES or done == len(missing):
            store_workloads(dataset, pending)
            pending = {}
    return missing


def is_prepared(dataset: Dataset, workload: str) -> bool:
    """Whether the ground truth of filter ``workload`` is stored (nothing is computed)."""
    return workload_holder(dataset, workload) is not None


def workload_hash(dataset: Dataset, workload: str) -> str:
    """What records of filter ``workload`` are keyed on: the dataset's content hash plus the
    digests of the workload's own arrays, wherever they are stored (computed first if they are
    not yet); other workloads' arrays are not read."""
    prepare_workloads(dataset, [workload])
    path = workload_holder(dataset, workload)
    assert path is not None, "prepare_workloads stores what is missing"
    try:
        with h5py.File(path, "r") as f:
            digests = workload_digests(f, workload)
    except OSError as exc:
        raise AnnbenchError(f"Cannot read filter ground truth from {path}: {exc}") from exc
    return combine_workload(dataset.content_hash, workload, sorted(digests.values()))


def store_workloads(
    dataset: Dataset,
    workloads: Mapping[str, Mapping[str, np.ndarray]],
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write the arrays of each of ``workloads`` into the dataset file (atomically, by
    replacing it with one updated copy), or into its side file when annbench must not change
    that file; the path written. ``attrs`` go on each workload's first array (default: the
    filter's settings)."""
    if _read_only(dataset.path):
        target = _side_file(dataset)
        target.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(target, "a") as f:
            f.attrs["dataset"] = dataset.name
            f.attrs["annbench_content_hash"] = dataset.content_hash
        write_workload_arrays(target, workloads, attrs)
        return target
    copied, digests = write_workload_arrays(dataset.path, workloads, attrs)
    known = dataset.fingerprint
    if known is not None and copied == dataset.signature:
        # the bytes copied were the ones fingerprinted: only these workloads' digests changed,
        # so the file need not be hashed again
        dataset.fingerprint = Fingerprint(
            known.content, {**known.workloads, **digests}, known.verdicts
        )
        dataset.signature = file_signature(dataset.path)
    return dataset.path


def write_workload_arrays(
    path: Path,
    workloads: Mapping[str, Mapping[str, np.ndarray]],
    attrs: Mapping[str, Any] | None = None,
) -> tuple[list[Any], dict[str, str]]:
    """Add (or replace) the arrays of each of ``workloads`` in the HDF5 file ``path`` in one
    pass: a copy is updated and renamed over it, so a killed process leaves the old file
    intact. Returns the signature of the file copied and the digests of the arrays written."""
    settings = {"windows": WINDOWS, "seed": FILTER_SEED} if attrs is None else attrs
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(path, "rb") as source, open(partial, "wb") as copy:
            copied = stat_signature(path, os.fstat(source.fileno()))
            shutil.copyfileobj(source, copy, 1 << 20)
        digests: dict[str, str] = {}
        with h5py.File(partial, "a") as f:
            for workload, arrays in workloads.items():
                for key, array in arrays.items():
                    name = f"{key}@{workload}"
                    if name in f:
                        del f[name]
                    f.create_dataset(name, data=array, compression="gzip")
                first = f[f"{next(iter(arrays))}@{workload}"]
                first.attrs["annbench_version"] = __version__
                for key, value in settings.items():
                    first.attrs[key] = value
                digests.update(workload_digests(f, workload))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return copied, digests


def stored_workload(
    dataset: Dataset, workload: str, keys: tuple[str, ...] = ARRAYS
) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` of ``workload`` from the dataset file or its side file, if stored."""
    path = workload_holder(dataset, workload, keys)
    if path is None:
        return None
    try:
        with h5py.File(path, "r") as f:
            return {key: f[f"{key}@{workload}"][()] for key in keys}
    except OSError as exc:
        raise AnnbenchError(f"Cannot read filter ground truth from {path}: {exc}") from exc


def workload_holder(dataset: Dataset, workload: str, keys: tuple[str, ...] = ARRAYS) -> Path | None:
    """The file holding the complete arrays ``keys`` of ``workload`` (the dataset file
    first), if any; nothing but their shapes is read."""
    for path in (dataset.path, _side_file(dataset)):
        if not path.is_file():
            continue
        try:
            with h5py.File(path, "r") as f:
                if all(f"{key}@{workload}" in f for key in keys):
                    if len(f[f"neighbors@{workload}"]) == len(dataset.test):
                        return path
        except OSError as exc:
            raise AnnbenchError(f"Cannot read filter ground truth from {path}: {exc}") from exc
    return None


def _side_file(dataset: Dataset) -> Path:
    """Where the workload arrays of a dataset annbench must not change go."""
    return data_dir() / f"{dataset.path.stem}-{dataset.content_hash}.workloads.h5"


def _read_only(path: Path) -> bool:
    bundled = Path(str(resources.files("annbench.bundled")))
    inside_package = path.resolve().parent == bundled.resolve()
    return inside_package or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK)


def post_filter_k(k: int, overfetch: float, n: int) -> int:
    """Neighbours to ask for before dropping disallowed ones: ceil(k * overfetch), at most n."""
    return min(n, max(k, math.ceil(k * overfetch)))
