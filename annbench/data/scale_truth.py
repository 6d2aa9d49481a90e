"""Exact ground truth for a base larger than memory: streamed from the dataset file in row
chunks (``streamed_knn``), or sharded over a Dask cluster (``sharded_knn``: each task streams
its own row range from the file and returns its top-k, which the caller merges).

Both rank as ``exact_knn`` does, by exact float64 distance and then ascending id, and give
the same ids and distances whatever the chunks and shards, ties included: each chunk's
candidates come from ``groundtruth.tie_safe_candidates``, which keeps every vector that
could be nearest when more than k + MARGIN tie (exactly or within float32 rounding) at the
k-th place. They equal ``exact_knn`` on the whole base in memory except where its candidate
step loses such ties: faiss' k-NN (its reservoir and its heaps alike) keeps arbitrary members
of an exact tie group, and its numpy path keeps a near-tie band's lowest ids whatever their
distances; there these are right and it is not. ``recompute_ground_truth`` writes the
result into the file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from annbench import __version__
from annbench.data.format import PROVENANCE_ONLY
from annbench.data.groundtruth import (
    BAND_SLAB,
    DISTANCE_CHUNK,
    GT_K,
    MARGIN,
    NUMPY_SCORES,
    knn_in_blocks,
    merge_knn,
)
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric
from annbench.paths import check_input_file

log = logging.getLogger(__name__)

#: Default chunk: this many bytes of float32 base rows.
CHUNK_BYTES = 64 << 20


def chunk_rows_for(d: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows of ``d`` float32 dimensions in a default chunk (at least 1,024)."""
    return max(1024, chunk_bytes // (4 * d))


def streamed_peak_bytes(
    chunk_rows: int, d: int, nq: int, k: int, threads: int | None = None, itemsize: int = 4
) -> int:
    """Upper bound of the bytes ``streamed_knn`` (or one ``sharded_knn`` task) holds in numpy
    arrays at once, for a base of dimension ``d`` stored with ``itemsize`` bytes per value:

    - the chunk read (float32, reused) and its ranked copy: 8 x chunk_rows x d, plus the rows
      as stored when they are not float32: itemsize x chunk_rows x d;
    - per-row norms and sums: 24 x chunk_rows;
    - float32 scores of the numpy path or of a query whose k-th place ties with more than
      MARGIN others (scores, partition, order, mask): 17 x min(nq x chunk_rows,
      max(NUMPY_SCORES, chunk_rows)), and such a query's tied vectors ranked exactly,
      BAND_SLAB at a time: 8 x BAND_SLAB x d;
    - candidates and the running best: 56 x nq x (k + MARGIN);
    - per re-ranking thread, its queries' candidate rows: 8 x DISTANCE_CHUNK x (k + MARGIN)
      x (d + 16).

    That is O(chunk_rows x d + nq x (k + chunk_rows)), independent of the base size; faiss'
    own buffers (a 512 x 4096 float32 product per thread) and the queries come on top.
    """
    keep = k + MARGIN
    threads = threads or _cpus()
    rows = chunk_rows
    stored = itemsize * rows * d if itemsize != 4 else 0
    scores = min(nq * rows, max(NUMPY_SCORES, rows))
    return (
        8 * rows * d
        + stored
        + 24 * rows
        + 17 * scores
        + 8 * BAND_SLAB * d
        + 56 * nq * keep
        + threads * 8 * DISTANCE_CHUNK * keep * (d + 16)
    )


def base_chunks(
    path: Path,
    dataset: str = "train",
    start: int = 0,
    stop: int | None = None,
    chunk_rows: int | None = None,
) -> Iterator[np.ndarray]:
    """Rows ``start:stop`` of the 2-D array ``dataset`` in the HDF5 file ``path`` as float32
    chunks of ``chunk_rows`` rows, read one at a time into one buffer: each chunk is valid
    until the next one is asked for. Rows with NaN or inf (or beyond float32) are an error."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        array = _base_array(f, path, dataset)
        n, d = array.shape
        stop = n if stop is None else min(stop, n)
        rows = chunk_rows or chunk_rows_for(d)
        buffer = np.empty((min(rows, max(stop - start, 0)), d), dtype=np.float32)
        direct = array.dtype == np.float32
        for first in range(start, stop, rows):
            last = min(first + rows, stop)
            block = buffer[: last - first]
            if direct:
                array.read_direct(block, np.s_[first:last], np.s_[0 : last - first])
            else:
                block[...] = array[first:last]  # cast as read_dataset casts: float32
            sums = np.einsum("nd->n", block, dtype=np.float64)
            if not np.isfinite(sums).all():
                row = first + int(np.argmax(~np.isfinite(sums)))
                raise AnnbenchError(
                    f"{path.name}: '{dataset}' has rows with NaN or inf, or values beyond "
                    f"float32 (first: row {row}); clean or drop them"
                )
            yield block


def streamed_knn(
    path: Path,
    queries: np.ndarray | None = None,
    k: int = GT_K,
    metric: Metric | None = None,
    *,
    dataset: str = "train",
    chunk_rows: int | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(distances, ids)`` (nq, min(k, n)) of ``queries`` (default: the file's
    ``test``) among the rows of ``dataset`` in the HDF5 file ``path``, under ``metric``
    (default: the file's ``distance``), reading ``chunk_rows`` rows at a time (default: 64 MB
    of float32 rows), never the whole base.

    Ranked as ``exact_knn`` ranks, nearest first by exact float64 distance, ascending ids
    among equal distances; equal to its result on the whole base in memory, except where
    that loses tied ids (see the module's note). ``progress`` is called with the rows done
    after each chunk; re-ranking uses ``threads`` threads (default: one per CPU). Peak memory
    is ``streamed_peak_bytes(chunk_rows, d, nq, k)``: O(chunk_rows x d + nq x (k +
    chunk_rows)), whatever the base size.

    Examples:
        >>> d, ids = streamed_knn(path, chunk_rows=100_000)  # doctest: +SKIP
    """
    path, n, d, itemsize, metric = _describe(path, dataset, metric)
    queries = _queries(path, queries, d)
    rows = _check(k, chunk_rows, d, n)
    log.debug(
        "%s: streaming %d rows in chunks of %d; peak about %.0f MB",
        path.name,
        n,
        rows,
        streamed_peak_bytes(rows, d, len(queries), k, threads, itemsize) / 1e6,
    )
    blocks = base_chunks(path, dataset, 0, n, rows)
    return knn_in_blocks(blocks, queries, k, metric, progress, threads)


def sharded_knn(
    path: Path,
    queries: np.ndarray | None = None,
    k: int = GT_K,
    metric: Metric | None = None,
    *,
    client: Any,
    shards: int | None = None,
    chunk_rows: int | None = None,
    dataset: str = "train",
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``streamed_knn`` split over the workers of the Dask ``client``: the base is cut into
    ``shards`` contiguous row ranges (default: one per worker thread); each task reads its
    range from ``path`` itself, ``chunk_rows`` at a time, and returns its exact top-k with
    base ids; the caller merges them by (distance, id). Equal to ``streamed_knn``, ties
    included, whatever the shards.

    Every worker must see the file at ``path`` (one machine, or a shared filesystem). Each
    task uses ``threads`` threads (default: the cores of its host over the worker threads
    there), and at most ``streamed_peak_bytes(chunk_rows, d, nq, k, threads)``; the caller
    holds shards x nq x k distances and ids. ``progress`` is called with the rows done as
    shards finish.
    """
    from distributed import as_completed

    path, n, d, _, metric = _describe(path, dataset, metric)
    queries = _queries(path, queries, d)
    rows = _check(k, chunk_rows, d, n)
    if shards is not None and shards < 1:
        raise BadUsage(f"shards must be at least 1, got {shards}")
    slots, per_task = _cluster_threads(client)
    shards = min(shards or slots, n)
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    shared = client.scatter(queries, broadcast=True)
    futures = {
        client.submit(
            _shard_knn,
            str(path.resolve()),
            dataset,
            int(start),
            int(stop),
            shared,
            k,
            metric.value,
            rows,
            threads or per_task,
            pure=False,
        ): int(stop - start)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    }
    parts, done = [], 0
    for future in as_completed(futures):
        parts.append(future.result())
        done += futures[future]
        if progress is not None:
            progress(done)
    return merge_knn(parts, k)


def _shard_knn(
    path: str,
    dataset: str,
    start: int,
    stop: int,
    queries: np.ndarray,
    k: int,
    metric: str,
    chunk_rows: int,
    threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Runs on a Dask worker: the exact top-k among rows ``start:stop``, with base ids."""
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=threads):
            blocks = base_chunks(Path(path), dataset, start, stop, chunk_rows)
            distances, ids = knn_in_blocks(blocks, queries, k, Metric(metric), threads=threads)
    except OSError as exc:
        raise AnnbenchError(
            f"A Dask worker cannot read {path}: {exc}; every worker needs the dataset file "
            "at the same path (one machine or a shared filesystem)"
        ) from None
    return distances, ids + start


def recompute_ground_truth(
    path: Path,
    chunk_rows: int | None = None,
    client: Any | None = None,
    dest: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Recompute the exact ground truth (k = GT_K) of the dataset file ``path`` from its
    ``train``, ``test`` and ``distance``, streamed in chunks of ``chunk_rows`` rows, or
    sharded over the Dask ``client``'s workers when given, and write it into ``dest``
    (default: ``path``) as ``recompute_truth`` writes it: ``neighbors`` int32, ``distances``
    float32, a ``ground_truth`` attribute, and workload (``@``) arrays dropped, as ground truth
    of the old file. The file is copied and the copy renamed over ``dest``, so a killed
    process leaves the old file whole; the base is never read into memory."""
    path, n, d, _, metric = _describe(path, "train", None)
    with h5py.File(path, "r") as f:
        if "test" not in f:
            raise AnnbenchError(f"{path.name} has no 'test' queries to compute ground truth for")
    k = min(GT_K, n)
    if client is None:
        found = streamed_knn(path, None, k, metric, chunk_rows=chunk_rows, progress=progress)
    else:
        found = sharded_knn(
            path, None, k, metric, client=client, chunk_rows=chunk_rows, progress=progress
        )
    return _write_truth(path, Path(dest or path), *found)


def _write_truth(source: Path, dest: Path, distances: np.ndarray, neighbors: np.ndarray) -> Path:
    """A copy of ``source`` with new ``neighbors``/``distances``, renamed over ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(source, partial)
        with h5py.File(partial, "r+") as f:
            stale = ["neighbors", "distances", *(key for key in f if "@" in key)]
            for key in stale:
                if key in f:
                    del f[key]
            for key in PROVENANCE_ONLY:
                f.attrs.pop(key, None)
            f.create_dataset("neighbors", data=neighbors.astype(np.int32))
            f.create_dataset("distances", data=distances.astype(np.float32))
            f.attrs["ground_truth"] = f"recomputed by annbench {__version__}"
            f.attrs["annbench_version"] = __version__
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _describe(
    path: Path, dataset: str, metric: Metric | None
) -> tuple[Path, int, int, int, Metric]:
    """``(path, n, d, itemsize, metric)`` of the base ``dataset`` in ``path``; the metric is
    the file's ``distance`` attribute unless given."""
    path = check_input_file(path, "Dataset file")
    try:
        with h5py.File(path, "r") as f:
            array = _base_array(f, path, dataset)
            (n, d), itemsize = array.shape, array.dtype.itemsize
            distance = f.attrs.get("distance")
    except OSError as exc:
        raise AnnbenchError(f"{path} is not a readable HDF5 dataset: {exc}") from exc
    if metric is None:
        if distance is None:
            raise AnnbenchError(
                f"{path.name} has no 'distance' attribute; pass the metric (euclidean, "
                "angular or dot)"
            )
        metric = Metric.parse(distance.decode() if isinstance(distance, bytes) else distance)
    return path, n, d, itemsize, metric if isinstance(metric, Metric) else Metric.parse(metric)


def _base_array(f: h5py.File, path: Path, dataset: str) -> h5py.Dataset:
    array = f.get(dataset)
    if not isinstance(array, h5py.Dataset):
        what = "missing" if array is None else "an HDF5 group"
        raise AnnbenchError(f"{path.name}: '{dataset}' is {what}; a 2-D array of vectors is needed")
    if array.ndim != 2 or 0 in array.shape or array.dtype.kind not in "fiu":
        raise AnnbenchError(
            f"{path.name}: '{dataset}' must be a non-empty 2-D array of numbers, got shape "
            f"{array.shape} and dtype {array.dtype}"
        )
    return array


def _queries(path: Path, queries: np.ndarray | None, d: int) -> np.ndarray:
    """The given queries (integers as float32), or the file's ``test`` as float32."""
    if queries is None:
        with h5py.File(path, "r") as f:
            queries = np.asarray(_base_array(f, path, "test")[()], dtype=np.float32)
    queries = np.asarray(queries)
    if queries.dtype.kind != "f":
        queries = queries.astype(np.float32)
    if queries.ndim != 2 or queries.shape[1] != d or len(queries) == 0:
        raise BadUsage(f"queries must be a non-empty (nq, {d}) array, got shape {queries.shape}")
    if not np.isfinite(queries).all():
        raise BadUsage("queries hold NaN or inf; clean or drop them")
    return queries


def _check(k: int, chunk_rows: int | None, d: int, n: int) -> int:
    """The chunk size to use; bad ``k`` or ``chunk_rows`` are BadUsage."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise BadUsage(f"k must be a positive whole number, got {k!r}")
    if chunk_rows is None:
        return chunk_rows_for(d)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)):
        raise BadUsage(f"chunk_rows must be a positive whole number, got {chunk_rows!r}")
    if chunk_rows < 1:
        raise BadUsage(f"chunk_rows must be at least 1, got {chunk_rows}")
    return int(min(chunk_rows, n))


def _cluster_threads(client: Any) -> tuple[int, int]:
    """``(worker threads in the cluster, cores per worker thread)``: the second is, on the
    most crowded host, its cores divided among the worker threads there."""
    workers = client.scheduler_info()["workers"]
    if not workers:
        raise AnnbenchError("The Dask cluster has no workers; start some with 'dask worker'")
    cpus = client.run(_cpus)
    slots: dict[str, int] = defaultdict(int)
    cores: dict[str, int] = {}
    for address, info in workers.items():
        slots[info["host"]] += info["nthreads"]
        cores[info["host"]] = cpus.get(address, 1)
    per_task = min(max(1, cores[host] // slots[host]) for host in slots)
    return sum(slots.values()), per_task


def _cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
