"""Export stored runs as ann-benchmarks result files, so its plotting tools can read them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from annbench.data.format import Dataset
from annbench.errors import AnnbenchError
from annbench.metrics import true_distances
from annbench.paths import output_file
from annbench.record import PLAIN, RunRecord


@dataclass(frozen=True)
class Exported:
    """What ``export_results`` wrote: the files, the folder holding them, and how many
    successful runs of filters and runbooks it left out."""

    folder: Path
    files: list[Path]
    left_out: int

    def left_out_note(self) -> str:
        """Why runs were left out, or "" when none were."""
        if not self.left_out:
            return ""
        return (
            f"{self.left_out} results of filters and runbooks left out: ann-benchmarks' layout "
            "has no place for them"
        )


def export_results(
    dataset: str | Path, out: str | Path, results: str | Path | None = None
) -> Exported:
    """Write every successful unfiltered run of ``dataset`` (a name or HDF5 path) stored in
    ``results`` (a store folder or .sqlite file; default ``$ANNBENCH_RESULTS``) as
    ann-benchmarks result files under ``out/<dataset>/`` (see ``export_ann_benchmarks``).
    Only runs on this content of the dataset count; none at all is an error."""
    from annbench.data.catalog import resolve_dataset
    from annbench.data.format import read_dataset
    from annbench.paths import results_dir
    from annbench.results.store import ResultStore

    data = read_dataset(resolve_dataset(str(dataset)))
    with ResultStore.open_existing(
        Path(results).expanduser() if results else results_dir()
    ) as store:
        records = store.records(data.name, with_raw=True, content_hash=data.content_hash)
    written = export_ann_benchmarks(records, data, Path(out))
    others = sum(1 for r in records if r.status == "ok" and r.workload != PLAIN)
    exported = Exported(Path(out) / data.name, written, others)
    if not written:
        note = exported.left_out_note()
        raise AnnbenchError(
            f"No successful runs of {data.name} (this content) to export"
            + (f"; {note}" if note else "")
        )
    return exported


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
