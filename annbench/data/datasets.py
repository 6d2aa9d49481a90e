"""The catalog's compatibility surface: the names this module held before it was split by
responsibility, re-exported from their modules, so older imports keep working.

New code imports from where each name lives: ``annbench.data.catalog`` (dataset names, the
default, resolving a name to a file), ``annbench.data.format`` (the ``Dataset`` and its HDF5
file: read, write, attributes, recomputed ground truth), ``annbench.data.synthetic``
(``create_synthetic``, ``random_attribute``) and ``annbench.data.split`` (held-out queries).
Patch a module attribute (``PROBE_SECONDS``, ``WRITE_CHUNK``) where it lives, not here.
"""

from __future__ import annotations

from annbench.data.catalog import (
    BUILTIN,
    BUNDLED,
    DEFAULT_DATASET,
    BuiltinDataset,
    available_datasets,
    create_builtin,
    resolve_dataset,
)
from annbench.data.format import (
    FLOAT32_EXACT,
    LABEL_KEYS,
    PROBE_SECONDS,
    PROVENANCE_ONLY,
    REQUIRED_KEYS,
    TRUTH_VERDICT,
    WRITE_CHUNK,
    ArrayLike,
    Dataset,
    probe_hdf5,
    read_attributes,
    read_dataset,
    recompute_truth,
    warn_big_integers,
    warn_zero_vectors,
    write_attributes,
    write_dataset,
    zero_rows,
)
from annbench.data.split import held_out_rows, split_queries
from annbench.data.synthetic import SYNTHETIC_BYTES, create_synthetic, random_attribute

__all__ = [
    "BUILTIN",
    "BUNDLED",
    "DEFAULT_DATASET",
    "FLOAT32_EXACT",
    "LABEL_KEYS",
    "PROBE_SECONDS",
    "PROVENANCE_ONLY",
    "REQUIRED_KEYS",
    "SYNTHETIC_BYTES",
    "TRUTH_VERDICT",
    "WRITE_CHUNK",
    "ArrayLike",
    "BuiltinDataset",
    "Dataset",
    "available_datasets",
    "create_builtin",
    "create_synthetic",
    "held_out_rows",
    "probe_hdf5",
    "random_attribute",
    "read_attributes",
    "read_dataset",
    "recompute_truth",
    "resolve_dataset",
    "split_queries",
    "warn_big_integers",
    "warn_zero_vectors",
    "write_attributes",
    "write_dataset",
    "zero_rows",
]
