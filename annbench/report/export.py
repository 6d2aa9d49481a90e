"""Export stored runs as ann-benchmarks result files, so its plotting tools can read them."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from annbench.data.format import Dataset
from annbench.errors import AnnbenchError
from annbench.metrics import true_distances
from annbench.paths import output_file
from annbench.record import RunRecord


def export_ann_benchmarks(records: list[RunRecord], dataset: Dataset, out_dir: Path) -> list[Path]:
    """Write one HDF5 file per successful run of ``dataset`` in ann-benchmarks' result layout:
    ``out_dir/<dataset>/<k>/<algorithm>[-batch]/<name>.hdf5`` with attributes and the arrays
    ``times`` (seconds per query), ``neighbors`` and ``distances`` (k per query).

    Distances are recomputed exactly from the dataset, as ann-benchmarks' runner does.
    """
    written = []
    for record in records:
        if record.status != "ok" or record.dataset_hash != dataset.content_hash:
            continue
        if record.ids is None:
            raise AnnbenchError(f"Run {record.key} has no stored ids to export")
        batch = record.mode == "batch"
        name = _name(record)
        folder = (
            out_dir / dataset.name / str(record.k) / (record.backend + ("-batch" if batch else ""))
        )
        path = folder / f"{name}.hdf5"
        ids = record.ids[:, : record.k]
        distances = true_distances(dataset.metric, dataset.train, dataset.test, ids)
        if record.latencies_ns is not None:
            times = record.latencies_ns / 1e9
        else:  # batch mode: the mean time per query of the median repeat
            times = np.full(len(ids), 1.0 / record.qps)
        with output_file(path, "Export file") as temp, h5py.File(temp, "w") as f:
            f.attrs.update(
                {
                    "algo": record.backend,
                    "name": name,
                    "dataset": dataset.name,
                    "distance": dataset.metric.value,
                    "count": int(record.k),
                    "batch_mode": batch,
                    "build_time": float(record.build_s),
                    "index_size": float(_serving_bytes(record) / 1024),
                    "best_search_time": float(1.0 / record.qps_max),
                    "candidates": float(record.k),
                    "run_count": int(record.runs or 1),
                    "expect_extra": False,
                }
            )
            f.create_dataset("times", data=times.astype(np.float32))
            f.create_dataset("neighbors", data=ids.astype(np.int32))
            f.create_dataset("distances", data=distances.astype(np.float32))
        written.append(path)
    return written


def _name(record: RunRecord) -> str:
    params = {**record.build_params, **record.search_params}
    text = "_".join([record.backend, *(f"{key}={value}" for key, value in params.items())])
    if record.threads != 1:
        text += f"_threads{record.threads}"
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", text)


def _serving_bytes(record: RunRecord) -> int:
    """ann-benchmarks' ``index_size`` is the memory the index takes: its serving memory when
    measured, else its file size, else the memory its build added."""
    return record.serving_memory_bytes or record.index_bytes or record.memory_bytes or 0
