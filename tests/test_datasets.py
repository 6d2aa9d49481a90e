import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from annbench.data.catalog import BUILTIN, DEFAULT_DATASET, resolve_dataset
from annbench.data.format import read_dataset, write_dataset
from annbench.data.groundtruth import exact_knn
from annbench.errors import AnnbenchError
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
        distances, neighbors = exact_knn(train, test, 10, Metric.EUCLIDEAN)
        f["neighbors"] = neighbors.astype(np.int32)
        f["distances"] = distances.astype(np.float32)
    data = read_dataset(path)
    assert data.name == "ab" and data.neighbors.dtype == np.int64
    assert data.attrs["ground_truth_check"].startswith("passed")
    assert data.content_hash == read_dataset(path).content_hash


def _ab_file(path: Path, **overrides):
    arrays = {
        "train": np.ones((10, 4), np.float32),
        "test": np.ones((2, 4), np.float32),
        "neighbors": np.tile(np.arange(3, dtype=np.int32), (2, 1)),  # all tied at distance 0
        "distances": np.zeros((2, 3), np.float32),
    }
    attrs = {"distance": overrides.pop("distance", "euclidean")}
    if "label_names" in overrides:
        attrs["label_names"] = overrides.pop("label_names")
    arrays.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = value
        for key, value in arrays.items():
            if isinstance(value, dict):
                for sub, array in value.items():
                    f.create_group(key)[sub] = array
            elif value is not None:
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
        ({"neighbors": np.zeros((3, 3), np.int32)}, r"neighbors has shape \(3, 3\), expected"),
        ({"neighbors": np.zeros((2, 3), np.int32)}, "same neighbour id twice"),
        ({"distances": np.full((2, 3), np.nan, np.float32)}, "NaN or infinite"),
        ({"distances": np.array([[b"0"] * 3] * 2)}, "distances must be numbers"),
        ({"distances": np.array([[2, 1, 0]] * 2, np.float32)}, "not sorted nearest first"),
        ({"train_labels": np.arange(9)}, "'train_labels' has shape"),
        ({"train_labels": np.zeros((10, 2))}, "must be 1-D"),
        ({"train_labels": np.r_[np.nan, np.zeros(9)]}, "NaN or infinite labels"),
        ({"test_attrs": np.zeros((3, 2))}, "'test_attrs' has shape"),
        ({"train_labels": np.arange(10), "label_names": '["a", "b"]'}, "label-name table"),
        ({"train_labels": np.arange(10), "label_names": "{not json"}, "JSON list of strings"),
        ({"neighbors": {"x": np.zeros(3)}}, "is an HDF5 group"),
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    blob = bytearray(tiny_path.read_bytes())
    with h5py.File(tiny_path, "r") as f:
        value = f.attrs["annbench_version"]
    needle = value.encode() if isinstance(value, str) else bytes(value)
    start = blob.find(needle)
    assert start > 0
    # zero the heap block around the stored string, as the fuzzer did
    blob[start - 64 : start + 1024] = bytes(1088)
    path = tmp_path / "loops.hdf5"
    path.write_bytes(bytes(blob))
    monkeypatch.setattr("annbench.data.format.PROBE_SECONDS", 3.0)
    with pytest.raises(AnnbenchError, match="not a readable HDF5 dataset"):
        read_dataset(path)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def test_content_hash_covers_every_array_and_not_provenance(tiny_path, tmp_path):
    base = read_dataset(tiny_path).content_hash
    changes = {
        "labels": lambda f: f["train_labels"].__setitem__(0, f["train_labels"][0] + 1),
        "ground truth": lambda f: f["distances"].__setitem__((0, -1), f["distances"][0, -1] + 1),
        "attributes": lambda f: f.create_dataset("train_attrs", data=np.arange(2000)),
        "nested group": lambda f: f.create_group("extra/deeper").create_dataset("x", data=[1]),
        "metric": lambda f: f.attrs.__setitem__("distance", "dot"),
        "label names": lambda f: f.attrs.__setitem__(
            "label_names", json.dumps(list("abcdefghijklmnop"))
        ),
    }
    hashes = {}
    for what, change in changes.items():
        path = _copy(tiny_path, tmp_path / f"{len(hashes)}.hdf5")
        with h5py.File(path, "r+") as f:
            change(f)
        hashes[what] = read_dataset(path, probe=False, verify=False).content_hash
    assert base not in hashes.values() and len(set(hashes.values())) == len(hashes), hashes
    # provenance and the hash an older version stored are not content
    path = _copy(tiny_path, tmp_path / "provenance.hdf5")
    with h5py.File(path, "r+") as f:
        f.attrs["source"] = "somewhere else"
        f.attrs["annbench_content_hash"] = "0123456789abcdef"
    assert read_dataset(path, probe=False).content_hash == base


def test_workload_arrays_change_only_their_workload_hash(tiny_path, tmp_path):
    path = _copy(tiny_path, tmp_path / "w.hdf5")
    before = read_dataset(path, probe=False)
    label, window = before.workload_hash("label"), before.workload_hash("runbook:window")
    assert before.workload_hash("plain") == before.content_hash
    with h5py.File(path, "r+") as f:
        f["neighbors@label"] = np.zeros((100, 10), np.int32)
        f.create_group("runbook@window").create_dataset("step0", data=np.arange(3))
    # the same Dataset object notices the file grew workload arrays
    assert before.workload_hash("label") != label
    after = read_dataset(path, probe=False)
    assert after.content_hash == before.content_hash
    assert after.workload_hash("runbook:window") != window
    assert after.workload_hash("window") == after.workload_hash("runbook:window")
    label = after.workload_hash("label")
    with h5py.File(path, "r+") as f:
        f["neighbors@label"][0, 0] = 5
    assert read_dataset(path, probe=False).workload_hash("label") != label


def test_cached_hash_is_not_trusted_once_the_file_changes(tiny_path, tmp_path, monkeypatch):
    from annbench.data import fingerprint

    monkeypatch.setattr(fingerprint, "RACY_NS", 0)  # cache even a file written just now
    path = _copy(tiny_path, tmp_path / "c.hdf5")
    first = read_dataset(path, probe=False).content_hash
    assert fingerprint.cached(fingerprint.file_signature(path)).content == first
    with h5py.File(path, "r+") as f:
        f["test_labels"][0] = f["test_labels"][0] + 1  # same size, same layout
    assert read_dataset(path, probe=False).content_hash != first


@pytest.mark.slow
def test_corrected_labels_are_measured_again(tiny_path, tmp_path):
    from click.testing import CliRunner

    from annbench.cli import main

    path = _copy(tiny_path, tmp_path / "labelled.hdf5")
    command = ["run", "-b", "faiss-flat", "-d", str(path), "--runs", "1"]
    first = CliRunner().invoke(main, command)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, command)
    assert "Stored 0 results" in again.output, again.output
    with h5py.File(path, "r+") as f:
        f["train_labels"][:] = f["train_labels"][()][::-1]
    corrected = CliRunner().invoke(main, command)
    assert corrected.exit_code == 0 and "Stored 1 results" in corrected.output, corrected.output


def _tampered(tiny_path: Path, tmp_path: Path, change) -> Path:
    path = _copy(tiny_path, tmp_path / "tampered.hdf5")
    with h5py.File(path, "r+") as f:
        neighbors, distances = f["neighbors"][()], f["distances"][()]
        del f["neighbors"], f["distances"]
        neighbors, distances = change(neighbors, distances)
        f["neighbors"], f["distances"] = neighbors, distances
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i, d: (i[::-1], d), "stored neighbours' actual distances"),  # between queries
        (lambda i, d: (i[::-1], d[::-1]), "actual distances"),  # both, together
        (lambda i, d: (np.zeros_like(i), d), "same neighbour id twice"),
        (lambda i, d: (i, np.full_like(d, np.nan)), "NaN or infinite"),
        (lambda i, d: (i, d.astype("S8")), "distances must be numbers"),
        (lambda i, d: (i, d * d), "actual distances"),  # squared L2 instead of L2
        (lambda i, d: (i[:, 1:], d[:, 1:]), "exact nearest distances"),  # the nearest dropped
    ],
)
def test_wrong_ground_truth_is_refused_with_the_fix(tiny_path, tmp_path, change, message):
    path = _tampered(tiny_path, tmp_path, change)
    with pytest.raises(AnnbenchError, match=message) as info:
        read_dataset(path, probe=False)
    assert "annbench datasets truth" in str(info.value) and "\n" not in str(info.value)


def test_ground_truth_verdict_is_cached_with_the_hash(tiny_path, tmp_path, monkeypatch):
    from annbench.data import fingerprint

    monkeypatch.setattr(fingerprint, "RACY_NS", 0)
    path = _copy(tiny_path, tmp_path / "checked.hdf5")
    assert read_dataset(path, probe=False).attrs["ground_truth_check"].startswith("passed")
    calls = []
    monkeypatch.setattr("annbench.data.format.check_ground_truth", lambda *a: calls.append(a))
    assert read_dataset(path, probe=False).attrs["ground_truth_check"].startswith("passed")
    assert not calls  # not repeated for an unchanged file
    with h5py.File(path, "r+") as f:
        f["distances"][0, 0] = 0.0
    read_dataset(path, probe=False)
    assert len(calls) == 1  # the file changed: checked again


@pytest.mark.slow
def test_truth_command_recomputes_what_the_check_refused(tiny_path, tmp_path):
    from click.testing import CliRunner

    from annbench.cli import main

    path = _tampered(tiny_path, tmp_path, lambda i, d: (i[::-1], d))
    with h5py.File(path, "r+") as f:
        f["train_attrs"] = np.arange(2000)
    refused = CliRunner().invoke(main, ["datasets", "info", str(path)])
    assert refused.exit_code == 1 and "annbench datasets truth" in refused.output
    fixed = CliRunner().invoke(main, ["datasets", "truth", str(path), "--name", "fixed"])
    assert fixed.exit_code == 0, fixed.output
    data = read_dataset(resolve_dataset("fixed"))
    original = read_dataset(tiny_path)
    np.testing.assert_array_equal(data.neighbors, original.neighbors)
    np.testing.assert_array_equal(data.train_labels, original.train_labels)
    with h5py.File(resolve_dataset("fixed"), "r") as f:
        np.testing.assert_array_equal(f["train_attrs"][()], np.arange(2000))
    # in place, in the data folder: --force replaces it
    again = CliRunner().invoke(main, ["datasets", "truth", "fixed"])
    assert again.exit_code == 1 and "--force" in again.output
    assert CliRunner().invoke(main, ["datasets", "truth", "fixed", "--force"]).exit_code == 0


def test_zero_vectors_under_cosine_are_counted_and_warned(tmp_path, rng, caplog):
    train = rng.normal(size=(200, 8)).astype(np.float32)
    test = rng.normal(size=(20, 8)).astype(np.float32)
    train[[3, 50]] = 0
    test[5] = 0
    with caplog.at_level("WARNING", logger="annbench.data.format"):
        path = write_dataset(tmp_path / "z.hdf5", train, test, Metric.ANGULAR)
    assert "2 base vectors and 1 queries have zero length" in caplog.text
    assert "of 20 queries affected" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="annbench.data.format"):
        read_dataset(path)
    assert "2 base vectors and 1 queries have zero length; under cosine" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="annbench.data.format"):
        write_dataset(tmp_path / "e.hdf5", train, test, Metric.EUCLIDEAN)
    assert not caplog.text  # only cosine makes zero vectors meaningless


def test_float64_beyond_float32_is_reported_as_overflow(tmp_path, rng):
    train = rng.normal(size=(50, 4))
    train[9, 1] = 1e39
    with pytest.raises(AnnbenchError, match="row 9 holds 1e.39, beyond float32"):
        write_dataset(tmp_path / "big.hdf5", train, train[:3], Metric.EUCLIDEAN)


def test_dataset_name_ending_in_hdf5_is_corrected(isolated_folders):
    from click.testing import CliRunner

    from annbench.cli import main
    from annbench.paths import data_dir

    result = CliRunner().invoke(
        main, ["datasets", "create", "mine.hdf5", "--n", "200", "--nq", "10", "--d", "4"]
    )
    assert result.exit_code == 0, result.output
    assert (data_dir() / "mine.hdf5").is_file() and not (data_dir() / "mine.hdf5.hdf5").exists()
    assert "Dataset name: mine" in result.output


@pytest.mark.slow
def test_records_say_the_ground_truth_was_checked(tiny_path, tmp_path):
    from annbench.results.store import ResultStore
    from annbench.sweep.runner import plan_sweep, run_sweep

    jobs = plan_sweep(read_dataset(tiny_path), ["faiss-flat"], runs=1)
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store)
        (record,) = store.records()
    assert record.provenance["ground_truth_check"].startswith("passed")


def test_old_datasets_module_gives_the_moved_names_from_their_new_homes():
    """``annbench.data.datasets`` is the catalog's compatibility surface: each name it had is
    the very object of the module it moved to."""
    import importlib

    from annbench.data import datasets

    homes = [
        importlib.import_module(f"annbench.data.{m}")
        for m in ("catalog", "format", "split", "synthetic")
    ]
    for name in datasets.__all__:
        found = [vars(m)[name] for m in homes if name in vars(m)]
        assert found and all(x is getattr(datasets, name) for x in found), name


def test_a_file_is_probed_in_a_child_once_until_it_changes(tiny_path, tmp_path, monkeypatch):
    import multiprocessing
    import shutil

    from annbench.data import format as fmt

    path = shutil.copy(tiny_path, tmp_path / "probed.hdf5")
    started = []
    real = multiprocessing.get_context

    def counting(method=None):
        started.append(method)
        return real(method)

    monkeypatch.setattr(fmt.multiprocessing, "get_context", counting)
    fmt.probe_hdf5(path)
    fmt.probe_hdf5(path)
    assert len(started) == 1
    with open(path, "ab") as f:  # new bytes: a new signature, probed again
        f.write(b"\0")
    fmt.probe_hdf5(path)
    assert len(started) == 2
