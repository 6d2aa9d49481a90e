"""The catalog: datasets by name (built-in synthetic ones generated on first use, real ones
bundled with the package, files in the data folder), the default one, and the path a name
resolves to. Downloading the standard ann-benchmarks files is ``download``'s."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError
from annbench.metrics import Metric
from annbench.paths import check_input_file, check_path_name, data_dir, kind_of


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
#: Real datasets shipped inside the package (the ``datasets/bundled`` folder), no network needed.
BUNDLED: dict[str, str] = {
    "debian-packages-384-angular": (
        "21,000 Debian package descriptions embedded by all-MiniLM-L6-v2, labelled by section"
    ),
}
DEFAULT_DATASET = "debian-packages-384-angular"


def resolve_dataset(spec: str, progress: Callable[[str], None] | None = None) -> Path:
    """Path of the dataset named ``spec`` (a file path, a file in the data folder, or a
    built-in name, generated on first use)."""
    candidate = Path(spec).expanduser()
    if not spec.strip():
        raise AnnbenchError("Dataset name is empty; give a name or a path to an HDF5 file")
    if candidate.suffix in (".hdf5", ".h5") or os.sep in spec:
        return check_input_file(candidate, "Dataset file")
    stored = data_dir() / f"{spec}.hdf5"
    if kind_of(check_path_name(stored, "Dataset")) == "a file":
        return stored
    if spec in BUNDLED:
        bundled = resources.files("annbench.bundled") / f"{spec}.hdf5"
        if not bundled.is_file():
            raise AnnbenchError(f"The bundled dataset {spec} is missing; reinstall annbench")
        return Path(str(bundled))
    if spec in BUILTIN:
        if progress is not None:
            progress(f"Generating built-in dataset {spec} into {stored}")
        return create_builtin(spec, stored)
    from annbench.data.download import STANDARD

    if spec in STANDARD:
        raise AnnbenchError(
            f"Dataset '{spec}' is not downloaded yet; run 'annbench datasets fetch {spec}'"
        )
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


def available_datasets() -> list[str]:
    """Names of stored datasets and built-ins, sorted."""
    folder = check_path_name(data_dir(), "Data folder ($ANNBENCH_DATA)")
    stored = {p.stem for p in folder.glob("*.hdf5")} if kind_of(folder) == "a directory" else set()
    return sorted(stored | set(BUILTIN) | set(BUNDLED))
