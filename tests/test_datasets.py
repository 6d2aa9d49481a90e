import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from annbench.datasets import (
    BUILTIN,
    DEFAULT_DATASET,
    read_dataset,
    resolve_dataset,
    write_dataset,
)
from annbench.errors import AnnbenchError
from annbench.groundtruth import exact_knn
from annbench.metrics import Metric


def test_write_read_round_trip_with_labels(tmp_path, rng):
    train = rng.normal(size=(300, 8)).astype(np.float32)
    test = rng.normal(size=(20, 8)).astype(np.float32)
    path = write_dataset(
        tmp_path / "d.hdf5",
        train,
        test,
        Metric.ANGULAR,
        train_labels=np.arange(300) % 3,
        test_labels=np.arange(20) % 3,
        attrs={"source": "unit"},
    )
    data = read_dataset(path)
    np.testing.assert_array_equal(data.train, train)
    assert data.metric is Metric.ANGULAR
    assert data.neighbors.shape == (20, 100)
    assert data.attrs["source"] == "unit"
    assert data.train_labels is not None and data.test_labels.shape == (20,)
    assert len(data.content_hash) == 16
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


def test_ann_benchmarks_file_without_annbench_attributes(tmp_path, rng):
    """A file as ann-benchmarks publishes it: only the four arrays and 'distance'."""
    train = rng.normal(size=(100, 4)).astype(np.float32)
    test = rng.normal(size=(5, 4)).astype(np.float32)
    path = tmp_path / "ab.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"], f["test"] = train, test
        f["neighbors"] = np.zeros((5, 10), dtype=np.int32)
        f["distances"] = np.zeros((5, 10), dtype=np.float32)
    data = read_dataset(path)
    assert data.name == "ab" and data.neighbors.dtype == np.int64
    assert data.content_hash == read_dataset(path).content_hash


def _ab_file(path: Path, **overrides):
    arrays = {
        "train": np.ones((10, 4), np.float32),
        "test": np.ones((2, 4), np.float32),
        "neighbors": np.zeros((2, 3), np.int32),
        "distances": np.zeros((2, 3), np.float32),
    }
    attrs = {"distance": overrides.pop("distance", "euclidean")}
    arrays.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = value
        for key, value in arrays.items():
            if value is not None:
                f[key] = value
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train": None}, "lacks 'train'"),
        ({"distance": "hamming"}, "Metric 'hamming' not valid"),
        ({"distance": None}, "no 'distance' attribute"),
        ({"test": np.ones((2, 5), np.float32)}, "dimension 4 but test has 5"),
        ({"train": np.full((10, 4), np.nan, np.float32)}, "NaN or inf"),
        ({"train": np.zeros((0, 4), np.float32)}, "non-empty 2-D"),
        ({"neighbors": np.full((2, 3), 99, np.int32)}, "outside"),
        ({"neighbors": np.zeros((3, 3), np.int32)}, "must both be"),
        ({"train": np.array([[b"a"] * 4] * 10)}, "must hold numbers"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, overrides, message):
    path = _ab_file(tmp_path / "bad.hdf5", **overrides)
    with pytest.raises(AnnbenchError, match=message) as info:
        read_dataset(path)
    assert "\n" not in str(info.value)


def test_truncated_and_missing_files(tmp_path, tiny_path):
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(tiny_path.read_bytes()[:5000])
    with pytest.raises(AnnbenchError, match="not a readable HDF5"):
        read_dataset(truncated)
    with pytest.raises(AnnbenchError, match="not found"):
        read_dataset(tmp_path / "nope.hdf5")


def test_write_refuses_nan_and_leaves_nothing(tmp_path, rng):
    train = rng.normal(size=(50, 4)).astype(np.float32)
    train[7, 2] = np.nan
    with pytest.raises(AnnbenchError, match="row 7"):
        write_dataset(tmp_path / "x.hdf5", train, train[:3], Metric.EUCLIDEAN)
    assert list(tmp_path.iterdir()) == []


def test_default_is_real_labelled_and_bundled(isolated_folders):
    messages = []
    data = read_dataset(resolve_dataset(DEFAULT_DATASET, progress=messages.append))
    assert not messages  # nothing to generate or download
    assert data.name == DEFAULT_DATASET and data.metric is Metric.ANGULAR
    assert data.train.shape == (21_000, 384) and len(data.test) == 1000
    assert data.train_labels is not None and data.test_labels is not None
    names = json.loads(data.attrs["label_names"])
    assert "python" in names and "games" in names
    assert "all-MiniLM-L6-v2" in data.attrs["embedding"]
    # the stored ground truth is exact for the stored vectors
    sample = slice(0, 50)
    d, ids = exact_knn(data.train, data.test[sample], 10, Metric.ANGULAR)
    np.testing.assert_array_equal(ids, data.neighbors[sample, :10])
    assert data.distances[:, 0].min() > 0  # queries are held out


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_synthetic_is_generated_once_with_held_out_queries(name, isolated_folders):
    messages = []
    path = resolve_dataset(name, progress=messages.append)
    assert messages and path.is_file()
    assert resolve_dataset(name, progress=messages.append) == path
    assert len(messages) == 1  # cached on first use
    data = read_dataset(path)
    spec = BUILTIN[name]
    assert data.train.shape == (spec.n, spec.d) and len(data.test) == spec.nq
    # queries are held out: no query is also a base vector
    assert data.distances[:, 0].min() > 0


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(
        AnnbenchError, match=f"Unknown dataset 'nope'. Available: .*{DEFAULT_DATASET}"
    ):
        resolve_dataset("nope")


def test_file_that_makes_libhdf5_loop_is_reported_corrupt(tiny_path, tmp_path, monkeypatch):
    """Zeroing one attribute's stored value makes libhdf5 loop forever reading it (found by
    fuzzing); the forked metadata probe turns that into an error."""
    from annbench import datasets

    blob = bytearray(tiny_path.read_bytes())
    with h5py.File(tiny_path, "r") as f:
        value = f.attrs["annbench_content_hash"]
    needle = value.encode() if isinstance(value, str) else bytes(value)
    start = blob.find(needle)
    assert start > 0
    # zero the heap block around the stored string, as the fuzzer did
    blob[start - 64 : start + 1024] = bytes(1088)
    path = tmp_path / "loops.hdf5"
    path.write_bytes(bytes(blob))
    monkeypatch.setattr(datasets, "PROBE_SECONDS", 3.0)
    with pytest.raises(AnnbenchError, match="not a readable HDF5 dataset"):
        read_dataset(path)
