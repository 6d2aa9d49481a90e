"""Every kind of bad input in the documentation's table (docs/reference/errors.md): one line,
the right exit code, no traceback, nothing stored lost. Each case here is a row of that table
(checked below)."""

import gzip
import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from tests_helpers import a_record

from annbench.cli import main
from annbench.data.synthetic import create_synthetic
from annbench.metrics import Metric
from annbench.results.store import ResultStore

ERRORS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "errors.md"


def ab_file(path, **overrides):
    """A small ann-benchmarks file with one thing wrong."""
    arrays = {
        "train": np.ones((10, 4), np.float32) * np.arange(10)[:, None],
        "test": np.ones((2, 4), np.float32),
        "neighbors": np.zeros((2, 3), np.int32),
        "distances": np.zeros((2, 3), np.float32),
    }
    distance = overrides.pop("distance", "euclidean")
    label_names = overrides.pop("label_names", None)
    arrays.update(overrides)
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = distance
        if label_names is not None:
            f.attrs["label_names"] = label_names
        for key, value in arrays.items():
            if isinstance(value, dict):
                group = f.create_group(key)
                for sub, array in value.items():
                    group[sub] = array
            elif value is not None:
                f[key] = value
    return str(path)


def tampered(path, change):
    """A copy of the tiny dataset with its ground truth changed by ``change(ids, dists)``."""

    def make(tmp, tiny):
        copy = tmp / path
        copy.write_bytes(tiny.read_bytes())
        with h5py.File(copy, "r+") as f:
            ids, dists = change(f["neighbors"][()], f["distances"][()])
            del f["neighbors"], f["distances"]
            f["neighbors"], f["distances"] = ids, dists
        return str(copy)

    return make


def fifo(tmp, _):
    os.mkfifo(tmp / "pipe.hdf5")
    return str(tmp / "pipe.hdf5")


def folder(tmp, _):
    (tmp / "folder.hdf5").mkdir()
    return str(tmp / "folder.hdf5")


def parquet_of_strings(tmp, _):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"v": ["a", "b", "c"]}), tmp / "s.parquet")
    return str(tmp / "s.parquet")


def texts(tmp, count=10):
    path = tmp / "texts.txt"
    path.write_text("".join(f"text number {i}\n" for i in range(count)))
    return str(path)


def importing(make_source, *extra):
    return lambda t, tiny: [
        "datasets",
        "import",
        make_source(t, tiny),
        "--name",
        "x",
        "--metric",
        "l2",
        *extra,
    ]


def embedding(make_source, *extra):
    return lambda t, tiny: ["datasets", "embed", make_source(t), "--name", "x", *extra]


def looping_hdf5(tmp, tiny):
    """A file whose zeroed attribute heap makes libhdf5 loop forever (found by fuzzing)."""
    blob = bytearray(tiny.read_bytes())
    with h5py.File(tiny, "r") as f:
        start = blob.find(f.attrs["annbench_version"].encode())
    blob[start - 64 : start + 1024] = bytes(1088)
    return _write(tmp / "loops.hdf5", bytes(blob))


@pytest.fixture(autouse=True)
def quick_probe(monkeypatch):
    monkeypatch.setattr("annbench.data.format.PROBE_SECONDS", 3.0)


def run_on(path_maker, *extra):
    return lambda tmp, tiny: ["run", "-b", "faiss-flat", "-d", path_maker(tmp, tiny), *extra]


def run_tiny(*extra):
    return lambda tmp, tiny: ["run", "-d", str(tiny), *extra]


def garbage_store(tmp, tiny):
    (tmp / "store").mkdir()
    (tmp / "store" / "annbench.sqlite").write_bytes(b"not a database" * 100)
    return ["results", "--results", str(tmp / "store")]


def npy(tmp, name, array):
    np.save(tmp / name, array)
    return str(tmp / name)


CASES = {
    "corrupt HDF5": (
        run_on(lambda t, _: _write(t / "c.hdf5", os.urandom(4096))),
        "is not a readable HDF5 dataset",
        1,
    ),
    "truncated HDF5": (
        run_on(lambda t, tiny: _write(t / "t.hdf5", tiny.read_bytes()[:6000])),
        "is not a readable HDF5 dataset",
        1,
    ),
    "HDF5 that makes the reader loop": (
        run_on(looping_hdf5),
        "reading its metadata did not finish",
        1,
    ),
    "missing key": (
        run_on(lambda t, _: ab_file(t / "m.hdf5", neighbors=None)),
        "lacks 'neighbors'",
        1,
    ),
    "wrong dtype": (
        run_on(lambda t, _: ab_file(t / "w.hdf5", train=np.array([[b"x"] * 4] * 10))),
        "must hold numbers",
        1,
    ),
    "NaN or inf vectors": (
        run_on(lambda t, _: ab_file(t / "n.hdf5", test=np.full((2, 4), np.nan))),
        "has rows with NaN or inf",
        1,
    ),
    "dimension mismatch": (
        run_on(lambda t, _: ab_file(t / "d.hdf5", test=np.ones((2, 5)))),
        "train has dimension 4 but test has 5",
        1,
    ),
    "unknown metric in file": (
        run_on(lambda t, _: ab_file(t / "u.hdf5", distance="hamming")),
        "Metric 'hamming' not valid",
        1,
    ),
    "empty dataset": (
        run_on(lambda t, _: ab_file(t / "e.hdf5", train=np.zeros((0, 4)))),
        "must be a non-empty 2-D array",
        1,
    ),
    "neighbour ids out of range": (
        run_on(lambda t, _: ab_file(t / "o.hdf5", neighbors=np.full((2, 3), 50))),
        "neighbors holds ids outside",
        1,
    ),
    "k <= 0": (
        run_tiny("-b", "faiss-flat", "--k", "0"),
        "Invalid value for '--k': 0 is not in the range 1<=x<=10000",
        2,
    ),
    "k > n": (run_tiny("-b", "faiss-flat", "--k", "5000"), "k must be between 1 and the 2000", 1),
    "k > ground truth": (
        run_tiny("-b", "faiss-flat", "--k", "101"),
        "exceeds the 100 true neighbours",
        1,
    ),
    "unknown backend": (run_tiny("-b", "nope"), "Unknown backend 'nope'. Valid backends:", 1),
    "unknown dataset": (
        lambda t, tiny: ["run", "-b", "hnswlib", "-d", "nope"],
        "Unknown dataset 'nope'. Available:",
        1,
    ),
    "unknown metric": (
        lambda t, tiny: ["datasets", "create", "x", "--metric", "manhattan"],
        "Metric 'manhattan' not valid. Use one of",
        1,
    ),
    "grid key a backend does not take": (
        run_tiny("-b", "hnswlib", "-g", "nprobe=4"),
        "Grid key 'nprobe' is not a parameter of hnswlib",
        1,
    ),
    "malformed grid override": (
        run_tiny("-b", "hnswlib", "-g", "ef"),
        "must look like key=value",
        1,
    ),
    "PQ m not dividing d": (
        run_tiny("-b", "faiss-ivfpq", "-g", "m=7"),
        "PQ m=7 does not divide the dimension d=32",
        2,
    ),
    "nlist > n": (
        run_tiny("-b", "faiss-ivf", "-g", "nlist=5000"),
        "nlist=5000 exceeds the 2000 base vectors",
        2,
    ),
    "negative ef": (run_tiny("-b", "hnswlib", "-g", "ef=-5"), "ef must be an integer >= 1", 1),
    "non-integer parameter": (
        run_tiny("-b", "faiss-hnsw", "-g", "M=many"),
        "M must be an integer >= 2",
        1,
    ),
    "invalid repeats": (
        run_tiny("-b", "faiss-flat", "--runs", "0"),
        "Invalid value for '--runs': 0 is not in the range 1<=x<=1000",
        2,
    ),
    "negative minimum timing": (
        run_tiny("-b", "faiss-flat", "--min-time", "-1"),
        "Invalid value for '--min-time': -1 is not a finite number >= 0",
        2,
    ),
    "invalid mode": (
        run_tiny("-b", "faiss-flat", "--mode", "turbo"),
        "Invalid value for '--mode'",
        2,
    ),
    "unreadable results store": (garbage_store, "Cannot use results store", 1),
    "results folder not writable": (
        lambda t, tiny: [
            *["run", "-b", "faiss-flat", "-d", str(tiny)],
            *["--results", _write(t / "file", b"x") + "/sub/store.sqlite"],
        ],
        "Cannot use results store",
        1,
    ),
    "backend library missing": (
        run_tiny("-b", "test-missing"),
        "Install a-library-that-is-not-installed to use the test-missing",
        1,
    ),
    "truncated .fvecs": (
        lambda t, tiny: [
            "datasets",
            "import",
            _write(t / "x.fvecs", np.int32(4).tobytes() + b"\0" * 9),
            "--name",
            "x",
            "--metric",
            "l2",
        ],
        "do not make whole rows (truncated?)",
        1,
    ),
    "empty file": (
        lambda t, tiny: [
            "datasets",
            "import",
            _write(t / "x.npy", b""),
            "--name",
            "x",
            "--metric",
            "l2",
        ],
        "is empty",
        1,
    ),
    "queries of another dimension": (
        lambda t, tiny: [
            "datasets",
            "import",
            npy(t, "b.npy", np.ones((20, 6))),
            "--name",
            "x",
            "--metric",
            "l2",
            "--queries-file",
            npy(t, "q.npy", np.ones((3, 5))),
        ],
        "have dimension 5, the base has 6",
        1,
    ),
    "labels of the wrong length": (
        lambda t, tiny: [
            "datasets",
            "import",
            npy(t, "b.npy", np.ones((20, 6))),
            "--name",
            "x",
            "--metric",
            "l2",
            "--labels",
            npy(t, "l.npy", np.arange(7)),
        ],
        "labels for 20 vectors",
        1,
    ),
    "memory size not understood": (
        lambda t, tiny: [
            "recommend",
            "-d",
            str(tiny),
            "--min-recall",
            "0.9",
            "--max-memory",
            "lots",
        ],
        "Memory size 'lots' not understood",
        2,
    ),
    "recall target out of range": (
        lambda t, tiny: ["recommend", "-d", str(tiny), "--min-recall", "1.5"],
        "Invalid value for '--min-recall': 1.5 is not a finite number > 0 and <= 1",
        2,
    ),
    "labels of the wrong length in the file": (
        run_on(lambda t, _: ab_file(t / "l.hdf5", train_labels=np.arange(9))),
        "'train_labels' has shape (9,) but there are 10 base vectors",
        1,
    ),
    "NaN labels": (
        run_on(lambda t, _: ab_file(t / "l.hdf5", train_labels=np.r_[np.nan, np.ones(9)])),
        "'train_labels' has NaN or infinite labels",
        1,
    ),
    "label names that do not match": (
        run_on(lambda t, _: ab_file(t / "l.hdf5", train_labels=np.arange(10), label_names='["a"]')),
        "the label-name table does not match the labels",
        1,
    ),
    "attributes of the wrong shape": (
        run_on(lambda t, _: ab_file(t / "a.hdf5", train_attrs=np.zeros((3, 2)))),
        "'train_attrs' has shape (3, 2) but there are 10 base vectors",
        1,
    ),
    "ground truth shuffled between queries": (
        run_on(tampered("s.hdf5", lambda i, d: (i[::-1], d))),
        "stored distances disagree with the stored neighbours' actual distances",
        1,
    ),
    "ground truth all one id": (
        run_on(tampered("o.hdf5", lambda i, d: (np.zeros_like(i), d))),
        "lists the same neighbour id twice",
        1,
    ),
    "NaN distances": (
        run_on(tampered("n.hdf5", lambda i, d: (i, np.full_like(d, np.nan)))),
        "are NaN or infinite",
        1,
    ),
    "distances as strings": (
        run_on(tampered("t.hdf5", lambda i, d: (i, d.astype("S8")))),
        "distances must be numbers",
        1,
    ),
    "HDF5 group where an array is expected": (
        run_on(lambda t, _: ab_file(t / "g.hdf5", neighbors={"ids": np.zeros(3)})),
        "'neighbors' is an HDF5 group, but an array (dataset) is expected",
        1,
    ),
    "dataset path is a directory": (run_on(folder), "is a directory, not a regular file", 1),
    "dataset path is a FIFO": (run_on(fifo), "is a FIFO (named pipe), not a regular file", 1),
    "output path is a directory": (
        lambda t, tiny: ["results", "--csv", str(t)],
        "is a directory; give a file name",
        2,
    ),
    "output path is a device": (
        lambda t, tiny: ["results", "--csv", "/dev/null"],
        "/dev/null is a character device, not a regular file",
        2,
    ),
    "output path under a file": (
        lambda t, tiny: ["plot", "-d", "tiny", "--out", _write(t / "f", b"x") + "/p.png"],
        "cannot be written: ",
        2,
    ),
    "output path empty": (
        lambda t, tiny: ["results", "--csv", ""],
        "path is empty; give a file or folder name",
        2,
    ),
    "output path too long": (
        lambda t, tiny: ["results", "--csv", str(t / ("x" * 300))],
        "path is too long for the file system",
        2,
    ),
    "report folder is a file": (
        lambda t, tiny: ["report", "--out", _write(t / "f", b"x")],
        "is a file; give a folder",
        2,
    ),
    "grid key given twice": (
        run_tiny("-b", "hnswlib", "-g", "ef=10", "-g", "ef=20"),
        "Grid key 'ef' is given twice; give all its values once: --grid ef=10,20",
        1,
    ),
    "grid value beyond the C integer range": (
        run_tiny("-b", "hnswlib", "-g", "ef=3000000000"),
        "ef=3000000000 for 'hnswlib' is beyond the integer range",
        1,
    ),
    "unknown backend beside all": (
        run_tiny("-b", "all", "-b", "nosuch"),
        "Unknown backend 'nosuch'",
        1,
    ),
    "import source is a directory": (
        importing(lambda t, _: str(t)),
        "is a directory, not a regular file",
        1,
    ),
    "tiny .fvecs": (
        importing(lambda t, _: _write(t / "x.fvecs", b"\x04\0")),
        "too few for one .fvecs row",
        1,
    ),
    "HDF5 group named as the vectors": (
        importing(lambda t, _: ab_file(t / "g.hdf5", emb={"a": np.ones((3, 2))}), "--key", "emb"),
        "'emb' is an HDF5 group, not an array",
        1,
    ),
    "parquet column of strings": (
        importing(parquet_of_strings, "--column", "v"),
        "column 'v' holds string, not vectors",
        1,
    ),
    "float64 beyond float32": (
        importing(lambda t, _: npy(t, "big.npy", np.full((20, 3), 1e39)), "--queries", "3"),
        "beyond float32's largest value",
        1,
    ),
    "dataset name of a bundled dataset": (
        lambda t, tiny: ["datasets", "create", "debian-packages-384-angular", "--n", "100"],
        "is taken by the bundled dataset",
        1,
    ),
    "more queries than texts to embed": (
        embedding(texts, "--queries", "50"),
        "--queries must be between 1 and 9 for 10 texts",
        1,
    ),
    "binary file to embed": (
        embedding(lambda t: _write(t / "b.txt", os.urandom(2000) + b"\0")),
        "is not text",
        1,
    ),
    "unknown embedding model": (
        embedding(texts, "--queries", "2", "--model", "no-such-model"),
        "Embedding model 'no-such-model' is neither a model folder nor in the Hugging Face cache",
        1,
    ),
    "malformed scheduler address": (
        run_tiny("-b", "faiss-flat", "--scheduler", "tcp://host:99999"),
        "--scheduler must be 'local' or tcp://HOST:PORT",
        1,
    ),
    "plot file not a PNG": (
        lambda t, tiny: ["plot", "-d", "tiny", "--out", str(t / "p.jpg")],
        "does not end in .png; plot writes PNG files",
        2,
    ),
    "backend named without --measure": (
        lambda t, tiny: ["recommend", "-d", str(tiny), "--min-recall", "0.5", "-b", "hnswlib"],
        "-b chooses what --measure measures; add --measure",
        2,
    ),
    "negative query id": (
        lambda t, tiny: ["report", "--neighbours", "--queries", "-1"],
        "-1 is not 0 or more",
        2,
    ),
    "runbook name too long": (
        lambda t, tiny: ["run", "-b", "faiss-flat", "-d", str(tiny), "--runbook", "r" * 300],
        "Runbook path is too long for the file system",
        1,
    ),
    "threads in single mode": (
        run_tiny("-b", "faiss-flat", "--threads", "2"),
        "single mode times one query per call on one thread; use --mode batch",
        2,
    ),
    "runbook and filter together": (
        run_tiny("-b", "faiss-flat", "--runbook", "grow", "--filter", "label"),
        "--runbook and --filter measure different workloads",
        2,
    ),
    "filter strategy without a filter": (
        run_tiny("-b", "faiss-flat", "-g", "filter_strategy=post"),
        "filter_strategy applies only to filtered searches; add --filter",
        2,
    ),
    "empty --url": (
        lambda t, tiny: ["datasets", "fetch", "gist-960-euclidean", "--url", ""],
        "--url is empty",
        2,
    ),
    "output path is the results store": (
        lambda t, tiny: [
            "results",
            "--csv",
            str(Path(os.environ["ANNBENCH_RESULTS"])) + "/annbench.sqlite",
        ],
        "is an SQLite database (a results store); writing there would destroy it",
        2,
    ),
    "output path is a dataset": (
        lambda t, tiny: [
            "recommend",
            "-d",
            str(tiny),
            "--min-recall",
            "0.5",
            "--save-index",
            str(tiny),
        ],
        "is a dataset (an HDF5 file with train vectors); writing there would destroy it",
        2,
    ),
    "results store is a dataset": (
        lambda t, tiny: ["run", "-b", "faiss-flat", "-d", str(tiny), "--results", str(tiny)],
        "is a dataset (an HDF5 file with train vectors), not a results store",
        2,
    ),
    "optimize without a recall target": (
        lambda t, tiny: ["recommend", "-d", str(tiny), "--optimize", "qps"],
        "--optimize qps needs a recall target (--min-recall R)",
        2,
    ),
    ".npz imported as .npy": (
        importing(lambda t, _: npz_named(t / "v.npy")),
        "v.npy is a NumPy .npz archive (a zip of arrays), not a .npy file (arrays: emb)",
        1,
    ),
    "gzipped .npy": (
        importing(lambda t, _: _write(t / "g.npy", gzip.compress(npy_bytes(np.ones((20, 3)))))),
        "g.npy is gzip-compressed; decompress it first",
        1,
    ),
    "complex vectors": (
        importing(lambda t, _: npy(t, "c.npy", np.ones((20, 3), np.complex64)), "--queries", "3"),
        "c.npy holds complex64 values, but vectors must be integers or floats",
        1,
    ),
    "labels of mixed types": (
        importing(
            lambda t, _: npy(t, "b.npy", np.ones((20, 3))),
            *["--labels", "MIXED", "--queries", "3"],
        ),
        "holds Python objects (dtype object, e.g. values of mixed types)",
        1,
    ),
    "labels not UTF-8": (
        importing(
            lambda t, _: npy(t, "b.npy", np.ones((20, 3))),
            *["--labels", "LATIN1", "--queries", "3"],
        ),
        "l.txt is not UTF-8 text (byte 3); save it as UTF-8",
        1,
    ),
    "NaN labels to import": (
        importing(
            lambda t, _: npy(t, "b.npy", np.ones((20, 3))),
            *["--labels", "NANS", "--queries", "3"],
        ),
        "l.npy has NaN or infinite labels (first at row 0); label every vector",
        1,
    ),
    "labels without the held-out queries": (
        importing(
            lambda t, _: npy(t, "b.npy", np.ones((20, 3))),
            *["--labels", "SEVENTEEN", "--queries", "3"],
        ),
        "has 17 labels for 20 vectors; labels cover every row of the source, the 3 rows",
        1,
    ),
    "queries given twice": (
        importing(
            lambda t, _: npy(t, "b.npy", np.ones((20, 3))),
            *["--queries", "3", "--queries-file", "QUERIES"],
        ),
        "--queries 3 and --queries-file contradict each other",
        2,
    ),
    "parquet column that is not there": (
        importing(parquet_of_strings, "--column", "nope"),
        "s.parquet has no column 'nope'; it has: v",
        1,
    ),
    "dataset name too long": (
        lambda t, tiny: ["run", "-b", "faiss-flat", "-d", "z" * 5000],
        "Dataset path is too long for the file system",
        1,
    ),
    "IPv6 scheduler without brackets": (
        run_tiny("-b", "faiss-flat", "--scheduler", "tcp://::1:8786"),
        "an IPv6 host is written in brackets, e.g. tcp://[::1]:8786",
        1,
    ),
    "scheduler host name too long": (
        run_tiny("-b", "faiss-flat", "--scheduler", "tcp://" + "h" * 300 + ":8786"),
        "the host is not a valid host name",
        1,
    ),
    "mirror URL not valid": (
        lambda t, tiny: ["datasets", "fetch", "gist-960-euclidean", "--url", "http://[::1"],
        "Dataset URL 'http://[::1' is not a valid URL",
        1,
    ),
    "embedding model name too long": (
        embedding(texts, "--queries", "2", "--model", "m" * 5000),
        "is neither a model folder nor in the Hugging Face cache",
        1,
    ),
    "gzipped texts named .txt": (
        embedding(lambda t: _write(t / "z.txt", gzip.compress(b"a\nb\nc\n"))),
        "z.txt is gzip-compressed; name it z.txt.gz or decompress it",
        1,
    ),
    "label column of a plain-text corpus": (
        embedding(texts, "--queries", "2", "--label-column", "section"),
        "--label-column section needs a CSV or TSV corpus",
        1,
    ),
    "synthetic dataset larger than memory": (
        lambda t, tiny: ["datasets", "create", "huge", "--n", "1000000000", "--d", "65536"],
        "GB of memory to generate, more than this machine",
        1,
    ),
}

#: Stand-ins in CASES arguments for label and query files written into the test's folder.
LABEL_FILES = {
    "MIXED": ("l.npy", lambda path: np.save(path, np.array([1, "a"] * 10, object))),
    "LATIN1": ("l.txt", lambda path: path.write_bytes("caf\xe9\n".encode("latin-1") * 20)),
    "NANS": ("l.npy", lambda path: np.save(path, np.r_[np.nan, np.ones(19)])),
    "SEVENTEEN": ("l.npy", lambda path: np.save(path, np.arange(17))),
    "QUERIES": ("q.npy", lambda path: np.save(path, np.ones((4, 3)))),
}


def with_files(args, tmp):
    """``args`` with the LABEL_FILES stand-ins written and replaced by their paths."""
    out = []
    for arg in args:
        if arg in LABEL_FILES:
            name, write = LABEL_FILES[arg]
            write(tmp / name)
            arg = str(tmp / name)
        out.append(arg)
    return out


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_named(path):
    """An .npz archive saved under a .npy name."""
    with open(path, "wb") as f:
        np.savez(f, emb=np.ones((20, 3)))
    return str(path)


def _write(path, data: bytes) -> str:
    Path(path).write_bytes(data)
    return str(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_exit_code(
    case, tiny_path, tmp_path, isolated_folders, test_backends
):
    make_args, message, code = CASES[case]
    with ResultStore(isolated_folders / "results") as store:  # something already stored
        store.put(a_record())
    result = CliRunner().invoke(main, with_files(make_args(tmp_path, tiny_path), tmp_path))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    with ResultStore(isolated_folders / "results") as store:
        assert store.count() == 1  # nothing stored is lost


def test_documented_table_has_every_case():
    text = ERRORS_PAGE.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and "|" in line[2:]]
    rows = [(case, message, code) for case, (_, message, code) in CASES.items()]
    rows.append(("disk full", "Cannot write to results store", 1))  # its own test below
    for case, message, code in rows:
        row = next((line for line in table if line.startswith(f"| {case} |")), None)
        assert row is not None, f"docs/reference/errors.md lacks a bad-input row for: {case}"
        assert message in row and f"| {code} |" in row, row
    assert len(CASES) >= 20


@pytest.mark.slow
def test_disk_full_keeps_what_was_stored(tmp_path):
    """A real write failure: the file-size limit makes SQLite's writes fail with EFBIG."""
    data = create_synthetic(
        tmp_path / "small.hdf5", n=300, nq=20, d=4, metric=Metric.EUCLIDEAN, n_clusters=3
    )
    results = tmp_path / "results"
    limit = 96 * 1024

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "ANNBENCH_RESULTS": str(results)}
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "annbench.cli",
            "run",
            "-d",
            str(data),
            "-b",
            "hnswlib",
            "--runs",
            "1",
            "-g",
            "M=4,8,12,16",
            "-g",
            "ef=" + ",".join(str(e) for e in range(10, 60, 2)),
        ],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        timeout=300,
    )
    assert process.returncode == 1, process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("Error: Cannot write to results store")
        and "results stored before are kept" in last
    )
    assert "Traceback" not in process.stderr
    with ResultStore(results) as store:
        kept = store.records()
    assert kept and all(r.status == "ok" for r in kept)
