"""Streamed and sharded ground truth equal the in-memory ground truth, ties included."""

import tracemalloc

import h5py
import numpy as np
import pytest

from annbench.data import groundtruth
from annbench.data.fingerprint import fingerprint
from annbench.data.format import read_dataset, recompute_truth, write_dataset
from annbench.data.groundtruth import _exact, exact_knn
from annbench.data.scale_truth import (
    _shard_knn,
    recompute_ground_truth,
    sharded_knn,
    streamed_knn,
    streamed_peak_bytes,
)
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric

K = 100


def tied(kind: str, n: int, d: int, nq: int, seed: int = 0):
    """Base and queries full of exact ties: small integers, or a few vectors each repeated
    many times (shuffled, far from the origin, with zero rows) and queries among them."""
    rng = np.random.default_rng(seed)
    if kind == "int":
        xb = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
        return xb, rng.integers(-2, 3, size=(nq, d)).astype(np.float32)
    distinct = rng.normal(size=(n // 25, d)).astype(np.float32) + 5
    xb = distinct[rng.integers(len(distinct), size=n)]
    xb[rng.choice(n, size=3, replace=False)] = 0
    xq = np.concatenate([distinct[: nq // 2], rng.normal(size=(nq - nq // 2, d)) + 5])
    xq[-1] = 0
    return xb, xq.astype(np.float32)


def write(path, xb, xq, metric="euclidean", **create):
    """A dataset file holding only what the streamed search reads."""
    with h5py.File(path, "w") as f:
        f.create_dataset("train", data=xb, chunks=(min(64, len(xb)), xb.shape[1]), **create)
        f.create_dataset("test", data=xq)
        f.attrs["distance"] = metric
    return path


def brute_force(xb, xq, k, metric):
    """Every distance by the re-ranking's own formula, sorted by (distance, id)."""
    every = np.broadcast_to(np.arange(len(xb)), (len(xq), len(xb)))
    d = _exact(metric, xq, xb, every)
    ids = np.lexsort((every, d), axis=1)[:, :k]
    return np.take_along_axis(d, ids, axis=1), ids


def assert_same(got, want):
    np.testing.assert_array_equal(got[1], want[1])  # ids, ties included
    np.testing.assert_array_equal(got[0], want[0])  # distances, bit for bit


@pytest.fixture(params=["numpy", "faiss"])
def candidate_path(request, monkeypatch):
    """Chunk candidates by numpy's product (small problems), or by faiss' k-NN as large
    chunks are found, whatever the size (set after the in-memory reference is computed)."""

    def use() -> None:
        if request.param == "faiss":
            monkeypatch.setattr(groundtruth, "SMALL_PRODUCT", 0)
            monkeypatch.setattr(groundtruth, "SMALL_BASE_PER_KEEP", 0)

    return use


@pytest.mark.parametrize("kind", ["int", "dup"])
@pytest.mark.parametrize("metric", list(Metric))
def test_streamed_equals_in_memory_with_ties(tmp_path, metric, kind, candidate_path):
    xb, xq = tied(kind, 1200, 8, 24)
    path = write(tmp_path / "t.hdf5", xb, xq, compression="gzip")
    want = exact_knn(xb, xq, K, metric)
    assert_same(want, brute_force(xb, xq, K, metric))  # the reference breaks ties by id
    candidate_path()
    for chunk in (K - 1, 97, 500, len(xb)):  # k larger than a chunk, a prime, uneven, whole
        assert_same(streamed_knn(path, None, K, metric, chunk_rows=chunk), want)


@pytest.mark.parametrize("metric", list(Metric))
def test_chunks_of_one_row_and_a_base_smaller_than_k(tmp_path, metric):
    xb, xq = tied("int", 150, 4, 9)
    path = write(tmp_path / "t.hdf5", xb, xq)
    for k in (10, 200):
        want = exact_knn(xb, xq, k, metric)
        assert want[1].shape == (9, min(k, 150))
        for chunk in (1, k - 1, 7):
            assert_same(streamed_knn(path, None, k, metric, chunk_rows=chunk), want)


def test_stored_float16_and_integer_bases_stream_as_read_dataset_reads_them(tmp_path):
    xb, xq = tied("dup", 600, 8, 10)
    for stored in (np.float16, np.int16):
        base = (xb * 10).astype(stored)
        path = write(tmp_path / f"{np.dtype(stored).name}.hdf5", base, xq)
        want = exact_knn(base.astype(np.float32), xq, 20, Metric.EUCLIDEAN)
        assert_same(streamed_knn(path, k=20, chunk_rows=61), want)


def test_in_memory_exact_knn_through_faiss_breaks_ties_by_id(monkeypatch):
    xb, xq = tied("int", 5000, 16, 20)
    want = brute_force(xb, xq, K, Metric.DOT)
    monkeypatch.setattr(groundtruth, "SMALL_PRODUCT", 0)
    monkeypatch.setattr(groundtruth, "SMALL_BASE_PER_KEEP", 0)
    assert_same(exact_knn(xb, xq, K, Metric.DOT), want)


def test_streamed_through_faiss_keeps_the_lowest_tied_ids(tmp_path, monkeypatch):
    """Where exact_knn through faiss loses tied ids (above), the streamed search does not."""
    xb, xq = tied("int", 5000, 16, 20)
    want = brute_force(xb, xq, K, Metric.DOT)
    path = write(tmp_path / "t.hdf5", xb, xq, metric="dot")
    monkeypatch.setattr(groundtruth, "SMALL_PRODUCT", 0)
    monkeypatch.setattr(groundtruth, "SMALL_BASE_PER_KEEP", 0)
    for chunk in (len(xb), 1733):
        assert_same(streamed_knn(path, chunk_rows=chunk), want)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.parametrize("kind", ["int", "dup"])
@pytest.mark.parametrize("metric", list(Metric))
def test_sharded_equals_in_memory_with_ties(tmp_path, client, metric, kind):
    xb, xq = tied(kind, 1500, 8, 20, seed=1)
    path = write(tmp_path / "t.hdf5", xb, xq)
    want = exact_knn(xb, xq, K, metric)
    seen = []
    got = sharded_knn(
        path, None, K, metric, client=client, shards=3, chunk_rows=97, progress=seen.append
    )
    assert_same(got, want)
    assert seen[-1] == len(xb) and len(seen) == 3
    assert_same(
        sharded_knn(path, xq[:5], 7, metric, client=client), exact_knn(xb, xq[:5], 7, metric)
    )


def test_worker_without_the_file_says_it_needs_a_shared_path(tmp_path):
    queries = np.zeros((2, 4), np.float32)
    with pytest.raises(AnnbenchError, match="every worker needs the dataset file at the same path"):
        _shard_knn(str(tmp_path / "gone.hdf5"), "train", 0, 10, queries, 5, "dot", 4, 1)


def test_peak_memory_is_bounded_by_the_chunk_not_the_base(tmp_path):
    rng = np.random.default_rng(3)
    n, d, nq, k, chunk = 100_000, 128, 8, 10, 10_000  # the base is 10 chunks
    xb = rng.normal(size=(n, d)).astype(np.float32)
    xq = rng.normal(size=(nq, d)).astype(np.float32)
    path = write(tmp_path / "big.hdf5", xb, xq)
    base_bytes = xb.nbytes
    want = exact_knn(xb, xq, k, Metric.EUCLIDEAN)
    del xb

    def peak(func):
        tracemalloc.start()
        try:
            result = func()
            return tracemalloc.get_traced_memory()[1], result
        finally:
            tracemalloc.stop()

    used, got = peak(lambda: streamed_knn(path, k=k, chunk_rows=chunk, threads=2))
    assert_same(got, want)
    bound = streamed_peak_bytes(chunk, d, nq, k, threads=2)
    assert used <= bound, (used, bound)
    assert used < base_bytes / 3, (used, base_bytes)
    # the control: the same search on the base read whole is seen holding the whole base
    with h5py.File(path, "r") as f:
        whole, _ = peak(lambda: exact_knn(f["train"][()], xq, k, Metric.EUCLIDEAN))
    assert whole > base_bytes


def dataset_file(path, seed=0, n=900):
    rng = np.random.default_rng(seed)
    xb = rng.normal(size=(n, 12)).astype(np.float32)
    xq = rng.normal(size=(30, 12)).astype(np.float32)
    labels = rng.integers(3, size=n)
    write_dataset(path, xb, xq, Metric.ANGULAR, labels, labels[:30], {"source": "test"})
    with h5py.File(path, "a") as f:  # a workload's ground truth, stale once recomputed
        f.create_dataset("neighbors@label", data=np.zeros((30, 5), np.int32))
        f["neighbors"][0, 0] = 7  # and the file's own ground truth spoilt
    return path


def test_recompute_ground_truth_writes_what_recompute_truth_writes(tmp_path, client):
    old = dataset_file(tmp_path / "old.hdf5")
    recompute_truth(old, tmp_path / "reference.hdf5")
    reference = fingerprint(tmp_path / "reference.hdf5").content
    for name, options in (("streamed", {"chunk_rows": 101}), ("sharded", {"client": client})):
        dest = tmp_path / f"{name}.hdf5"
        assert recompute_ground_truth(old, dest=dest, **options) == dest
        assert fingerprint(dest).content == reference, name
        data = read_dataset(dest)  # its ground truth is checked on first read
        with h5py.File(dest, "r") as f:
            assert not [key for key in f if "@" in key]  # the stale workload array dropped
        assert data.attrs["ground_truth"].startswith("recomputed by annbench")
        assert data.train_labels is not None and data.attrs["source"] == "test"
    before = old.read_bytes()
    recompute_ground_truth(old)  # in place
    assert fingerprint(old).content == reference and old.read_bytes() != before


def test_bad_input_is_one_line(tmp_path):
    xb, xq = tied("int", 100, 4, 3)
    path = write(tmp_path / "t.hdf5", xb, xq)
    cases = [
        (BadUsage, "chunk_rows must be at least 1", {"chunk_rows": 0}),
        (BadUsage, "k must be a positive whole number", {"k": 0}),
        (BadUsage, r"queries must be a non-empty \(nq, 4\) array", {"queries": xq[:, :3]}),
        (AnnbenchError, "'vectors' is missing", {"dataset": "vectors"}),
    ]
    for error, message, options in cases:
        with pytest.raises(error, match=message) as caught:
            streamed_knn(path, **options)
        assert "\n" not in str(caught.value)
    with pytest.raises(AnnbenchError, match="not found"):
        streamed_knn(tmp_path / "nowhere.hdf5")
    xb[57, 2] = np.nan
    write(path, xb, xq)
    with pytest.raises(AnnbenchError, match=r"NaN or inf.*first: row 57"):
        streamed_knn(path, chunk_rows=10)


def near_ties():
    """60 copies of a vector at distance 10 from the first query (ids 960-1019) and 60 of
    one 3e-6 farther (ids 0-59): within float32 rounding of each other, together more than
    k + MARGIN."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=16)
    v = (v / np.linalg.norm(v)).astype(np.float32)
    near, far = v * np.float32(10), v * np.float32(10 * (1 + 3e-6))
    others = rng.normal(size=(1800, 16)).astype(np.float32) * 30
    groups = [np.repeat(far[None], 60, 0), others[:900], np.repeat(near[None], 60, 0)]
    xb = np.concatenate([*groups, others[900:]])
    return xb, np.stack([np.zeros(16), v * 0.01, -v * 0.02]).astype(np.float32)


def test_near_ties_within_rounding_are_ranked_by_distance_before_id(tmp_path, candidate_path):
    xb, xq = near_ties()
    want = brute_force(xb, xq, K, Metric.EUCLIDEAN)
    assert set(want[1][0, :60]) == set(range(960, 1020))  # the nearer copies, though later
    path = write(tmp_path / "t.hdf5", xb, xq)
    candidate_path()
    for chunk in (len(xb), 1111):
        assert_same(streamed_knn(path, chunk_rows=chunk), want)


def test_in_memory_exact_knn_ranks_near_ties_by_distance():
    xb, xq = near_ties()
    assert_same(exact_knn(xb, xq, K, Metric.EUCLIDEAN), brute_force(xb, xq, K, Metric.EUCLIDEAN))


@pytest.mark.slow
@pytest.mark.parametrize(
    "options", [["--chunk-rows", "700"], ["--scheduler", "local", "--workers", "2"]]
)
def test_the_truth_command_streams_or_shards_to_the_same_ids(tmp_path, monkeypatch, options):
    from click.testing import CliRunner

    from annbench.cli import main
    from annbench.data.synthetic import create_synthetic

    if "--scheduler" in options:
        pytest.importorskip("distributed")
    monkeypatch.setenv("ANNBENCH_DATA", str(tmp_path))
    create_synthetic(tmp_path / "src.hdf5", n=3000, nq=40, d=16, metric=Metric.ANGULAR, seed=2)
    result = CliRunner().invoke(main, ["datasets", "truth", "src", "--name", "out", *options])
    assert result.exit_code == 0, result.output
    assert "held at most" in result.output and "MiB" in result.output
    with h5py.File(tmp_path / "src.hdf5") as a, h5py.File(tmp_path / "out.hdf5") as b:
        np.testing.assert_array_equal(a["neighbors"][:], b["neighbors"][:])
