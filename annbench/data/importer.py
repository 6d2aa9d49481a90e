"""Bring your own embeddings: .npy, TEXMEX .fvecs/.ivecs/.bvecs, parquet or HDF5 in, an
ann-benchmarks-layout dataset with exact ground truth out. Large files are memory-mapped and
processed in chunks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from annbench.data.format import ArrayLike, Dataset, read_dataset, write_dataset
from annbench.data.split import held_out_rows
from annbench.data.synthetic import random_attribute
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric
from annbench.paths import check_input_file

log = logging.getLogger(__name__)

#: Rows held out of the base as queries, unless told otherwise.
DEFAULT_QUERIES = 1000

_TEXMEX = {".fvecs": np.float32, ".ivecs": np.int32, ".bvecs": np.uint8}
SUFFIXES = (".npy", *_TEXMEX, ".parquet", ".hdf5", ".h5")


def open_vectors(path: Path, key: str | None = None, column: str | None = None) -> ArrayLike:
    """The 2-D vectors in ``path`` as a row-sliceable array, memory-mapped where possible.

    ``key`` names the HDF5 dataset (default: 'train', else the only 2-D one); ``column`` names
    the parquet column holding one list/array per row (default: the only such column).
    """
    path = check_input_file(path, "Input")
    if path.stat().st_size == 0:
        raise AnnbenchError(f"{path.name} is empty")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        vectors = load_npy(path, mmap_mode="r")
    elif suffix in _TEXMEX:
        vectors = _texmex(path, _TEXMEX[suffix])
    elif suffix == ".parquet":
        vectors = _parquet(path, column)
    elif suffix in (".hdf5", ".h5"):
        vectors = _hdf5(path, key)
    else:
        raise AnnbenchError(f"Cannot import {path.name}: use one of {', '.join(SUFFIXES)}")
    if vectors.dtype.kind not in "iuf":
        raise AnnbenchError(
            f"{path.name} holds {vectors.dtype} values, but vectors must be integers or floats; "
            "convert them (e.g. numpy's x.astype('float32'))"
        )
    if vectors.ndim != 2 or 0 in vectors.shape:
        raise AnnbenchError(
            f"{path.name} must hold a non-empty 2-D array, got shape {vectors.shape}"
        )
    return vectors


#: First bytes of the formats a file given as .npy often really is.
_MAGIC = (
    (b"\x93NUMPY", "a .npy file"),
    (b"PK\x03\x04", "a NumPy .npz archive (a zip of arrays)"),
    (b"PK\x05\x06", "a NumPy .npz archive (an empty zip)"),
    (b"\x1f\x8b", "gzip-compressed"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"PAR1", "a parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
)


def sniff(path: Path) -> str:
    """What ``path`` is by its first bytes: 'a .npy file', 'gzip-compressed', ... or ''."""
    with open(path, "rb") as f:
        head = f.read(16)
    return next((what for magic, what in _MAGIC if head.startswith(magic)), "")


def load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """The array in the .npy file ``path`` (never unpickled), or one line saying what the file
    is instead (an .npz archive, gzip, HDF5...) and how to fix it."""
    what = sniff(path)
    if what.startswith("a NumPy .npz"):
        with np.load(path, allow_pickle=False) as archive:
            names = ", ".join(archive.files) or "none"
        raise AnnbenchError(
            f"{path.name} is {what}, not a .npy file (arrays: {names}); save the one array you "
            f"mean as .npy, e.g. np.save('vectors.npy', np.load('{path.name}')['NAME'])"
        )
    if what == "gzip-compressed":
        raise AnnbenchError(f"{path.name} is gzip-compressed; decompress it first (gunzip -c)")
    if what and what != "a .npy file":
        raise AnnbenchError(f"{path.name} is {what}, not a .npy file; give it its own suffix")
    if not what:
        raise AnnbenchError(
            f"{path.name} is not a readable .npy file: it lacks NumPy's header; write it with "
            "numpy.save"
        )
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise AnnbenchError(
                f"{path.name} holds Python objects (dtype object, e.g. values of mixed types), "
                "which annbench does not unpickle; save numbers or strings instead, e.g. "
                "np.save(path, x.astype(str))"
            ) from exc
        raise AnnbenchError(f"{path.name} is not a readable .npy file: {exc}") from exc
    except OSError as exc:
        raise AnnbenchError(f"{path.name} is not a readable .npy file: {exc}") from exc


def read_labels(path: Path, expected: int, queries: int | None = None) -> np.ndarray:
    """Labels from a .npy file or a UTF-8 text file with one label per line, one per row of
    the source (``expected`` rows, ``queries`` of them to be held out, for the hint)."""
    path = check_input_file(path, "Labels file")
    if path.suffix.lower() == ".npy":
        labels = load_npy(path)
    else:
        if sniff(path):
            raise AnnbenchError(
                f"{path.name} is {sniff(path)}, not text; give labels as .npy or as UTF-8 "
                "text with one label per line"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise AnnbenchError(
                f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8 with one "
                "label per line, or as .npy"
            ) from exc
        labels = np.array([line.strip() for line in text.splitlines() if line.strip()])
    if labels.ndim != 1:
        raise AnnbenchError(
            f"{path.name} holds labels of shape {labels.shape}; give one label per vector "
            "(a 1-D array, or one label per line)"
        )
    read_label_array(labels, path.name)
    if len(labels) != expected:
        hint = ""
        if queries is not None and len(labels) == expected - queries:
            hint = (
                f"; labels cover every row of the source, the {queries} rows annbench holds "
                "out as queries included, so give the labels of all rows"
            )
        raise AnnbenchError(f"{path.name} has {len(labels)} labels for {expected} vectors{hint}")
    return labels


def file_labels(path: Path, key: str | None) -> np.ndarray | None:
    """The labels an HDF5 source stores beside its vectors (``train_labels`` for ``train``),
    or None (other formats, no labels, or labels that do not fit the vectors)."""
    path = Path(path)
    if path.suffix.lower() not in (".hdf5", ".h5"):
        return None
    vectors = _hdf5(path, key)
    name = f"{vectors.name.lstrip('/')}_labels"
    labels = vectors.file.get(name)
    if not isinstance(labels, h5py.Dataset) or labels.shape != vectors.shape[:1]:
        return None
    log.info("Labels: %s of %s", name, path.name)
    return read_label_array(labels[()], f"{path.name}: '{name}'")


def read_label_array(labels: np.ndarray, what: str) -> np.ndarray:
    """``labels`` if they are one number or text per row, else one line naming ``what``."""
    if labels.dtype.kind not in "iuUSbf":
        raise AnnbenchError(
            f"{what} holds {labels.dtype} labels; give integers or strings, one per vector"
        )
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise AnnbenchError(
            f"{what} has NaN or infinite labels (first at row "
            f"{int(np.argmin(np.isfinite(labels)))}); label every vector"
        )
    return labels


def import_vectors(
    source: Path,
    dest: Path,
    metric: Metric,
    queries: int = 1000,
    queries_file: Path | None = None,
    labels: np.ndarray | None = None,
    normalize: bool = False,
    seed: int = 0,
    key: str | None = None,
    column: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    random_attr: str | None = None,
) -> Path:
    """Write ``source`` as an ann-benchmarks-layout dataset at ``dest`` with exact ground truth.

    Queries come from ``queries_file``, or are ``queries`` rows held out from the base (seeded)
    so that no query finds itself. ``random_attr`` adds a uniform random numeric attribute of
    that name (for filters).
    """
    suffix = Path(source).suffix.lower()
    if key is not None and suffix not in (".hdf5", ".h5"):
        log.warning("--key %s is ignored: %s is not an HDF5 file", key, Path(source).name)
    if column is not None and suffix != ".parquet":
        log.warning("--column %s is ignored: %s is not a parquet file", column, Path(source).name)
    vectors = open_vectors(source, key, column)
    n, d = vectors.shape
    if labels is None:
        labels = file_labels(source, key)
    if labels is not None and len(labels) != n:
        raise AnnbenchError(f"{len(labels)} labels for {n} vectors")
    if queries_file is not None:
        query_key = "test" if key is None else key
        test = np.asarray(open_vectors(queries_file, key=query_key)[:])
        if test.shape[1] != d:
            raise AnnbenchError(
                f"Queries in {Path(queries_file).name} have dimension {test.shape[1]}, "
                f"the base has {d}"
            )
        base: ArrayLike = vectors
        train_labels = labels
        test_labels = None if labels is None else file_labels(queries_file, query_key)
        if labels is not None and test_labels is None:
            log.warning(
                "Labels cover the base vectors only: the queries from %s have none, so label "
                "metrics and --filter label will not be available; to keep them, leave out "
                "--queries-file so that labelled rows are held out as queries",
                Path(queries_file).name,
            )
    else:
        train_rows, test_rows = held_out_rows(n, queries, seed)
        test = np.asarray(vectors[test_rows])
        base = _Rows(vectors, train_rows)
        train_labels = None if labels is None else labels[train_rows]
        test_labels = None if labels is None else labels[test_rows]
    attrs = {"source": f"imported from {Path(source).name}", "split_seed": seed}
    numeric = None
    if random_attr:
        numeric = {random_attr: random_attribute(base.shape[0], len(test), seed)}
    return write_dataset(
        dest,
        base,
        test,
        metric,
        train_labels,
        test_labels,
        attrs,
        normalize=normalize,
        progress=progress,
        numeric_attrs=numeric,
    )


class _Rows:
    """A row subset of a (memory-mapped) array, sliced lazily in order."""

    def __init__(self, source: ArrayLike, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows
        self.shape = (len(rows), source.shape[1])

    def __getitem__(self, item: slice) -> np.ndarray:
        return np.asarray(self.source[self.rows[item]])


def _texmex(path: Path, dtype: Any) -> np.ndarray:
    """TEXMEX vecs: each row is an int32 dimension followed by that many values."""
    size = path.stat().st_size
    if size < 4 + np.dtype(dtype).itemsize:
        raise AnnbenchError(
            f"{path.name} has {size} bytes, too few for one {path.suffix} row (a 4-byte "
            "dimension and its values); the file is truncated"
        )
    d = int(np.fromfile(path, dtype=np.int32, count=1)[0])
    item = np.dtype(dtype).itemsize
    row_bytes = 4 + d * item
    if d <= 0 or d > 1_000_000 or size % row_bytes:
        raise AnnbenchError(
            f"{path.name} is not a valid {path.suffix} file: dimension {d} and size {size} bytes "
            "do not make whole rows (truncated?)"
        )
    n = size // row_bytes
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, row_bytes))
    dims = raw[:, :4].copy().view(np.int32).ravel()
    if (dims != d).any():
        raise AnnbenchError(f"{path.name}: rows have differing dimensions (first row says {d})")
    return raw[:, 4:].view(dtype)


def _parquet(path: Path, column: str | None) -> np.ndarray:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise AnnbenchError("Importing parquet needs pyarrow: pip install pyarrow") from exc
    try:
        names = pq.read_schema(path).names
        if column is not None and column not in names:
            raise AnnbenchError(f"{path.name} has no column '{column}'; it has: {', '.join(names)}")
        table = pq.read_table(path, columns=[column] if column else None)
    except (OSError, ValueError, KeyError) as exc:
        raise AnnbenchError(f"Cannot read {path.name} as parquet: {exc}") from exc
    if column is None:
        candidates = [
            name
            for name, kind in zip(table.column_names, table.schema.types, strict=True)
            if "list" in str(kind)
        ]
        if len(candidates) != 1:
            raise AnnbenchError(
                f"{path.name}: name the vector column with --column (list columns: "
                f"{', '.join(candidates) or 'none'})"
            )
        column = candidates[0]
    if column not in table.column_names:
        raise AnnbenchError(
            f"{path.name} has no column '{column}'; it has: {', '.join(table.column_names)}"
        )
    kind = table.schema.field(column).type
    value_kind = getattr(kind, "value_type", None)
    if value_kind is None or not (
        pa.types.is_floating(value_kind) or pa.types.is_integer(value_kind)
    ):
        raise AnnbenchError(
            f"{path.name}: column '{column}' holds {kind}, not vectors (a list of numbers per "
            "row); name the vector column with --column"
        )
    values = table.column(column).to_pylist()
    if any(v is None for v in values):
        raise AnnbenchError(f"{path.name}: column '{column}' has empty rows")
    try:
        return np.array(values, dtype=np.float32)
    except ValueError as exc:
        raise AnnbenchError(f"{path.name}: rows of '{column}' differ in length") from exc


def _hdf5(path: Path, key: str | None) -> h5py.Dataset:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise AnnbenchError(f"{path.name} is not a readable HDF5 file: {exc}") from exc
    if key is None:
        two_d = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2]
        key = "train" if "train" in f else (two_d[0] if len(two_d) == 1 else None)
        if key is None:
            raise AnnbenchError(
                f"{path.name}: name the vectors with --key "
                f"(2-D datasets: {', '.join(two_d) or 'none'})"
            )
    if key not in f:
        raise AnnbenchError(f"{path.name} has no dataset '{key}'; it has: {', '.join(f.keys())}")
    if not isinstance(f[key], h5py.Dataset):
        raise AnnbenchError(
            f"{path.name}: '{key}' is an HDF5 group, not an array; name the array inside it "
            f"with --key (it holds: {', '.join(f[key].keys()) or 'nothing'})"
        )
    return f[key]


def plain_dataset_name(name: str) -> str:
    """``name`` without an .hdf5 or .h5 suffix: ``x.hdf5`` means the dataset x (in the file
    x.hdf5), not x.hdf5.hdf5."""
    for suffix in (".hdf5", ".h5"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def new_dataset_path(name: str, force: bool = False) -> Path:
    """Where the new dataset ``name`` goes: ``name.hdf5`` in the data folder. Refused: a name
    that is not a plain file name, one a bundled, built-in or standard dataset has, and an
    existing file unless ``force`` (which replaces a dataset, never another kind of file)."""
    from annbench.data.catalog import BUILTIN, BUNDLED
    from annbench.data.download import STANDARD
    from annbench.paths import check_path_name, check_writable_file, data_dir, is_hdf5

    given, name = name, plain_dataset_name(name)
    if name != given:
        log.warning("Dataset name: %s (annbench adds the .hdf5 suffix)", name)
    plain = name.strip() == name and not name.startswith(".")
    if not name or not plain or "/" in name or "\\" in name:
        raise AnnbenchError(
            f"Dataset name '{name}' must be a plain file name (no slashes, no leading dot or "
            "spaces)"
        )
    shadowed = (
        "the bundled dataset"
        if name in BUNDLED
        else "a built-in dataset"
        if name in BUILTIN
        else "a standard ann-benchmarks dataset"
        if name in STANDARD
        else None
    )
    if shadowed:
        raise AnnbenchError(
            f"Dataset name '{name}' is taken by {shadowed}; writing it would hide that one, "
            "so choose another name"
        )
    path = check_writable_file(check_path_name(data_dir() / f"{name}.hdf5", "Dataset"), "Dataset")
    if path.exists() and not force:
        raise AnnbenchError(f"Dataset {path} exists; pass --force to overwrite it")
    if path.exists() and not is_hdf5(path):  # --force replaces a dataset, nothing else
        raise AnnbenchError(f"{path} is not an HDF5 dataset; choose another name")
    return path


def import_dataset(
    source: str | Path,
    name: str,
    metric: str | Metric,
    queries: int | None = None,
    queries_file: str | Path | None = None,
    labels: str | Path | None = None,
    normalize: bool = False,
    seed: int = 0,
    key: str | None = None,
    column: str | None = None,
    random_attr: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Dataset:
    """Import your own vectors (.npy, .fvecs/.ivecs/.bvecs, .parquet, .hdf5) as the dataset
    ``name`` in the data folder, with exact ground truth; what ``annbench datasets import``
    does. Returns the dataset written.

    Queries are every row of ``queries_file``, or ``queries`` rows (default 1000) held out of
    the base (seeded by ``seed``), never both. ``labels``: a .npy file or UTF-8 text with one
    class label per row of ``source``. ``key``/``column``: the HDF5 dataset or parquet column
    holding the vectors. ``random_attr`` adds a uniform random numeric attribute of that name
    (for range filters); ``force`` overwrites a dataset of that name; ``progress`` shows a
    display per stage on stderr.

    Examples:
        >>> import annbench
        >>> annbench.import_dataset("emb.npy", "mine", "cosine", queries=500)  # doctest: +SKIP
    """
    from annbench.progress import Stages

    if queries_file is not None and queries is not None:
        raise BadUsage(
            f"--queries {queries} and --queries-file contradict each other: the queries are "
            f"every row of {Path(queries_file).name}; leave out --queries (or --queries-file "
            f"to hold {queries} rows of the base out)"
        )
    held_out = DEFAULT_QUERIES if queries is None else queries
    if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 1:
        raise BadUsage(f"queries must be a whole number of at least 1, got {queries!r}")
    source = Path(source)
    path = new_dataset_path(name, force)
    parsed = Metric.parse(metric)
    label_array = None
    if labels is not None:
        rows = open_vectors(source, key, column).shape[0]
        label_array = read_labels(Path(labels), rows, None if queries_file else held_out)
    with Stages(quiet=not progress) as stages:
        import_vectors(
            source,
            path,
            parsed,
            held_out,
            None if queries_file is None else Path(queries_file),
            label_array,
            normalize,
            seed,
            key,
            column,
            stages,
            random_attr=random_attr,
        )
    return read_dataset(path, probe=False)  # just written: its warnings were given
