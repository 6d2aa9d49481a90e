"""Nested subsets of a dataset's base, for size ladders (``annbench run --sizes``).

A ladder measures each index configuration at several base sizes. The subset of size ``m`` is
the first ``m`` rows of one seeded permutation of the base, in base order, so every size holds
the smaller ones, and the queries are the dataset's own at every size. Each size's exact
ground truth (base ids) is cached in the dataset file like a filter workload's, as
``neighbors@size=<m>`` and ``distances@size=<m>`` (in a side file for a file annbench must not
change), and records at that size are keyed on a hash of the content and those arrays.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np

from annbench.data.fingerprint import combine_workload, workload_digests
from annbench.data.format import Dataset
from annbench.data.groundtruth import GT_K, exact_knn
from annbench.data.workloads import store_workloads, stored_workload, workload_holder
from annbench.errors import AnnbenchError, BadUsage
from annbench.record import PLAIN

#: Seed of the one permutation every subset of a dataset is a prefix of.
SUBSET_SEED = 0
TRUTH = ("neighbors", "distances")
_COUNT = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmMbBgG]?)$")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def size_workload(size: int) -> str:
    """The name the ground truth of base size ``size`` is stored under: ``size=62500``."""
    return f"size={size}"


def parse_count(text: str, what: str = "size") -> int:
    """A vector count written ``50000``, ``250k``, ``1.5M`` or ``2B``; a usage error else."""
    match = _COUNT.match(str(text).strip().replace(",", "").replace("_", ""))
    if match is None:
        raise BadUsage(f"{what} '{text}' is not a count; write e.g. 250000, 250k, 50M or 1B")
    value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if value != math.floor(value) or value < 1:
        raise BadUsage(f"{what} '{text}' must be a whole number of vectors, at least 1")
    return int(value)


def parse_sizes(sizes: str | Iterable[str | int | float], n: int, k: int = 1) -> list[int]:
    """Base sizes of a ladder from fractions of the base (``1/16``, ``0.25``, ``1``) or
    counts (``62500``, ``250k``), strictly increasing, each between ``k`` and ``n``."""
    tokens = [t for t in (sizes.split(",") if isinstance(sizes, str) else sizes)]
    if not tokens or any(str(t).strip() == "" for t in tokens):
        raise BadUsage(f"--sizes '{sizes}' has an empty entry; write e.g. 1/16,1/8,1/4,1/2,1")
    return check_sizes([_size(token, n) for token in tokens], n, k, [str(t) for t in tokens])


def check_sizes(
    counts: Sequence[int], n: int, k: int = 1, written: Sequence[str] | None = None
) -> list[int]:
    """``counts`` as a ladder of base sizes: whole numbers, strictly increasing, each between
    ``k`` and the ``n`` rows of the base; a usage error naming the entry else."""
    names = list(written or [f"{c:,}" for c in counts])
    if not counts:
        raise BadUsage("--sizes needs at least one size; write e.g. 1/16,1/8,1/4,1/2,1")
    for name, count in zip(names, counts, strict=True):
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool):
            raise BadUsage(f"--sizes: {name} is not a whole number of vectors")
        if count < 1:
            raise BadUsage(f"--sizes: {name} of {n:,} vectors is no vector at all")
        if count > n:
            raise BadUsage(f"--sizes: {name} is above the {n:,} vectors of the base")
        if count < k:
            raise BadUsage(f"--sizes: {name} ({count:,} vectors) is fewer than k={k}")
    for i in range(1, len(counts)):
        if counts[i] <= counts[i - 1]:
            raise BadUsage(
                f"--sizes must increase: {names[i]} ({counts[i]:,} vectors) follows "
                f"{names[i - 1]} ({counts[i - 1]:,})"
            )
    return [int(c) for c in counts]


def check_ladder_workload(workloads: Sequence[str], runbook: object | None) -> None:
    """A size ladder measures plain searches only: BadUsage for filters or a runbook."""
    if runbook is not None or any(w != PLAIN for w in workloads):
        raise BadUsage(
            "--sizes measures plain searches at several base sizes; run filters and "
            "runbooks as sweeps of their own"
        )


def _size(token: str | int | float, n: int) -> int:
    text = str(token).strip()
    if "/" in text:
        top, _, bottom = text.partition("/")
        try:
            fraction = float(top) / float(bottom)
        except (ValueError, ZeroDivisionError):
            raise BadUsage(f"--sizes: '{text}' is not a fraction; write e.g. 1/16") from None
        return _of(fraction, text, n)
    if text == "1" or re.fullmatch(r"0?\.\d+|1\.0*", text):
        return _of(float(text), text, n)
    return parse_count(text, "--sizes entry")


def _of(fraction: float, text: str, n: int) -> int:
    if not 0 < fraction <= 1 or fraction != fraction:
        raise BadUsage(f"--sizes: fraction {text} must lie in (0, 1]")
    return round(fraction * n)


def nested_rows(n: int, size: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """Base ids of the subset of ``size`` rows, ascending: the first ``size`` of one seeded
    permutation of ``n``, so a smaller subset is always inside a larger one."""
    if not 1 <= size <= n:
        raise AnnbenchError(f"a subset needs between 1 and {n} rows, got {size}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def compute_size_truth(dataset: Dataset, size: int) -> dict[str, np.ndarray]:
    """Exact top-``GT_K`` neighbours of the dataset's queries in its subset of ``size`` rows,
    as base ids."""
    rows = nested_rows(len(dataset.train), size)
    distances, local = exact_knn(dataset.train[rows], dataset.test, min(GT_K, size), dataset.metric)
    return {"neighbors": rows[local].astype(np.int32), "distances": distances.astype(np.float32)}


def prepare_sizes(
    dataset: Dataset, sizes: Sequence[int], progress: Callable[[str], None] | None = None
) -> list[int]:
    """Compute and store the ground truth of each size below the whole base not stored yet;
    the sizes computed."""
    n = len(dataset.train)
    missing = [
        m for m in sizes if m < n and workload_holder(dataset, size_workload(m), TRUTH) is None
    ]
    for done, size in enumerate(missing, 1):
        if progress is not None:
            progress(
                f"Computing exact ground truth of {dataset.name} at {size:,} of {n:,} vectors "
                f"({done}/{len(missing)})"
            )
        store_workloads(
            dataset,
            {size_workload(size): compute_size_truth(dataset, size)},
            attrs={"seed": SUBSET_SEED, "base_size": size},
        )
    return missing


def size_hash(dataset: Dataset, size: int) -> str:
    """What records at base size ``size`` are keyed on: the content hash plus the digests of
    that size's ground truth (computed first if missing); the content hash at the whole base."""
    if size >= len(dataset.train):
        return dataset.content_hash
    prepare_sizes(dataset, [size])
    path = workload_holder(dataset, size_workload(size), TRUTH)
    assert path is not None, "prepare_sizes stores what is missing"
    import h5py

    try:
        with h5py.File(path, "r") as f:
            digests = workload_digests(f, size_workload(size))
    except OSError as exc:
        raise AnnbenchError(f"Cannot read size ground truth from {path}: {exc}") from exc
    return combine_workload(dataset.content_hash, size_workload(size), sorted(digests.values()))


def base_subset(dataset: Dataset, size: int) -> tuple[Dataset, np.ndarray]:
    """The dataset cut to its subset of ``size`` rows, ground truth in subset ids, and the
    base ids of those rows (``rows[i]`` is subset row ``i``), for mapping results back."""
    n = len(dataset.train)
    rows = nested_rows(n, size)
    if size == n:
        return dataset, rows
    arrays = stored_workload(dataset, size_workload(size), TRUTH)
    if arrays is None:
        prepare_sizes(dataset, [size])
        arrays = stored_workload(dataset, size_workload(size), TRUTH)
        assert arrays is not None, "prepare_sizes stores what is missing"
    ids = arrays["neighbors"].astype(np.int64)
    local = np.searchsorted(rows, ids)
    inside = (ids >= 0) & (local < size) & (rows[np.minimum(local, size - 1)] == ids)
    if not inside[ids >= 0].all():
        raise AnnbenchError(
            f"the stored ground truth of {dataset.name} at {size:,} vectors names rows outside "
            "that subset; delete its size=... arrays and run again"
        )
    subset = replace(
        dataset,
        train=dataset.train[rows],
        neighbors=np.where(ids >= 0, local, -1),
        distances=arrays["distances"].astype(np.float64),
        train_labels=None if dataset.train_labels is None else dataset.train_labels[rows],
        train_attrs=None if dataset.train_attrs is None else dataset.train_attrs[rows],
        attrs={**dataset.attrs, "base_size": size, "subset_seed": SUBSET_SEED},
    )
    return subset, rows
