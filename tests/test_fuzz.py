"""Property-based tests: recall functions on any input, and the HDF5 reader on corrupt files."""

import os

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from annbench.data.format import read_dataset
from annbench.errors import AnnbenchError
from annbench.metrics import label_metrics, recall_at_k

pytestmark = pytest.mark.slow  # hypothesis fuzzing


@st.composite
def runs(draw):
    """Returned ids with distances consistent with a per-query distance table (ties likely)."""
    nq = draw(st.integers(1, 6))
    k = draw(st.integers(1, 8))
    n = draw(st.integers(k, 40))
    width = draw(st.integers(0, k + 2))
    table = draw(arrays(np.float64, (nq, n), elements=st.integers(0, 12).map(float)))
    order = np.argsort(table, axis=1, kind="stable")
    gt_ids = order[:, :k]
    gt_d = np.take_along_axis(table, gt_ids, axis=1)
    ids = draw(arrays(np.int64, (nq, width), elements=st.integers(-1, n - 1)))
    found = np.where(ids >= 0, np.take_along_axis(table, np.maximum(ids, 0), axis=1), np.inf)
    return ids, found, gt_ids, gt_d, k


@given(runs())
@settings(max_examples=300, deadline=None)
def test_recall_is_a_fraction_and_perfect_answers_score_one(run):
    ids, found, gt_ids, gt_d, k = run
    result = recall_at_k(ids, found, gt_ids, gt_d, k)
    assert ((0 <= result.recall) & (result.recall <= 1)).all()
    assert result.duplicates >= 0 and result.missing >= 0
    perfect = recall_at_k(gt_ids, gt_d, gt_ids, gt_d, k)
    assert (perfect.recall == 1).all() and perfect.duplicates == 0
    # the order of the returned ids does not matter
    if ids.shape[1] <= k:
        flipped = recall_at_k(ids[:, ::-1], found[:, ::-1], gt_ids, gt_d, k)
        np.testing.assert_allclose(flipped.recall, result.recall)
    # hits are exactly the distinct returned ids no farther than the k-th true distance
    for q in range(len(ids)):
        distinct = {i for i in ids[q, :k].tolist() if i >= 0}
        near = sum(1 for i in distinct if found[q, list(ids[q, :k]).index(i)] <= gt_d[q, -1])
        assert result.recall[q] == pytest.approx(near / k)


@given(runs(), st.integers(1, 4))
@settings(max_examples=200, deadline=None)
def test_label_metrics_are_fractions(run, n_labels):
    ids, _, gt_ids, _, k = run
    n = int(max(gt_ids.max(), ids.max(initial=0))) + 1
    rng = np.random.default_rng(0)
    result = label_metrics(
        ids, rng.integers(0, n_labels, n), rng.integers(0, n_labels, len(ids)), k
    )
    for values in (result.top_k_accuracy, result.precision, result.average_precision):
        assert ((0 <= values) & (values <= 1 + 1e-12)).all()
    assert (result.precision <= result.top_k_accuracy).all()


@pytest.fixture(scope="module")
def valid_bytes(tiny_path):
    return tiny_path.read_bytes()


@pytest.fixture(autouse=True, scope="module")
def quick_probe():
    """Some corrupt files make libhdf5 loop; the metadata probe gives up on them quickly here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("annbench.data.format.PROBE_SECONDS", 3.0)
        yield


@given(data=st.data())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_corrupt_hdf5_gives_a_clean_error_or_a_valid_dataset(valid_bytes, tmp_path, data):
    blob = bytearray(valid_bytes)
    how = data.draw(st.sampled_from(["truncate", "flip", "zero-run"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 50))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= data.draw(st.integers(1, 255))
    else:
        start = data.draw(st.integers(0, len(blob) - 1))
        end = min(len(blob), start + data.draw(st.integers(1, 4096)))
        blob[start:end] = bytes(end - start)
    path = tmp_path / f"fuzz-{os.getpid()}.hdf5"
    path.write_bytes(bytes(blob))
    try:
        data_ = read_dataset(path)
    except AnnbenchError as exc:
        assert "\n" not in str(exc)
    else:  # whatever survived must still be a consistent dataset
        assert data_.train.shape[1] == data_.test.shape[1]
        assert np.isfinite(data_.train).all()


@given(
    train=arrays(
        np.float32,
        st.tuples(st.integers(0, 5), st.integers(0, 4)),
        elements=st.floats(-1e6, 1e6, width=32) | st.just(np.nan),
    ),
    distance=st.sampled_from(["euclidean", "angular", "dot", "jaccard", ""]),
)
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_arbitrary_arrays_in_ann_benchmarks_layout(tmp_path, train, distance):
    path = tmp_path / "arb.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = distance
        f["train"] = train
        f["test"] = train[:2]
        f["neighbors"] = np.zeros((min(2, len(train)), 1), np.int64)
        f["distances"] = np.zeros((min(2, len(train)), 1), np.float32)
    try:
        read_dataset(path)
    except AnnbenchError as exc:
        assert "\n" not in str(exc)


def _bad_cli_inputs(tmp, tiny):
    """Command lines made of bad inputs of many kinds (seeded), none of them valid."""
    rng = np.random.default_rng(9)
    (tmp / "file").write_bytes(b"x")
    cases = []
    for suffix in (".npy", ".fvecs", ".ivecs", ".bvecs", ".parquet", ".hdf5", ".txt", ".csv"):
        for size in (0, 1, 3, 5, 64, 4096):
            path = tmp / f"r{size}{suffix}"
            path.write_bytes(rng.bytes(size))
            cases.append(["datasets", "import", str(path), "--name", "x", "--metric", "l2"])
            if suffix == ".hdf5":
                cases.append(["run", "-b", "faiss-flat", "-d", str(path)])
            if suffix in (".txt", ".csv"):
                cases.append(["datasets", "embed", str(path), "--name", "x", "--queries", "1"])
    for grid in (
        "=", "a=", "=1", "ef=1,,2", "ef=[1]", "ef={a: 1}", "ef=1e400", "ef=-1e400", "ef=nan",
        "ef=.inf", "M=99999999999999999999", "ef=1.5", "ef=x", "M=-3",
    ):  # fmt: skip
        cases.append(["run", "-d", str(tiny), "-b", "hnswlib", "-g", grid])
    for name in ("", " x", ".hidden", "a/b", "x" * 300, "sift-128-euclidean", "../up"):
        cases.append(["datasets", "create", name, "--n", "50", "--nq", "5", "--d", "2"])
    for out in ("", ".", "/", "/dev/null", "/proc/version", str(tmp / "file" / "x"), "x" * 5000):
        cases.append(["results", "--csv", out])
        cases.append(["plot", "-d", "tiny", "--out", out])
        cases.append(["report", "--out", out])
    for scheduler in ("tcp://", "tcp://:1", "udp://x:1", "tcp://h:p", "tcp://h:-1", " local"):
        cases.append(["run", "-d", str(tiny), "-b", "faiss-flat", "--scheduler", scheduler])
    for spec in (str(tmp), "/dev/null", str(tmp / "file" / "x.hdf5"), "", " "):
        cases.append(["run", "-b", "faiss-flat", "-d", spec])
        cases.append(["datasets", "info", spec])
    return cases


def test_no_bad_input_ends_in_the_catch_all_message(tiny_path, tmp_path, isolated_folders):
    """Every bad input is a missing check if it reaches the 'unexpected <Exception>' line."""
    from click.testing import CliRunner

    from annbench.cli import main
    from annbench.data.format import PROBE_SECONDS  # noqa: F401 - the probe stays in use

    unexpected = []
    for args in _bad_cli_inputs(tmp_path, tiny_path):
        result = CliRunner().invoke(main, args)
        if "unexpected" in result.output or "Traceback" in result.output or result.exit_code == 0:
            unexpected.append((args, result.exit_code, result.output.strip()[-300:]))
    assert not unexpected, "\n".join(map(str, unexpected))
