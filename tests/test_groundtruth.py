import numpy as np
import pytest

from annbench.data import groundtruth
from annbench.data.groundtruth import exact_knn
from annbench.metrics import Metric, pair_distances


def brute_force(xb, xq, k, metric):
    d = pair_distances(metric, xq, np.broadcast_to(xb, (len(xq), *xb.shape)))
    ids = np.lexsort((np.broadcast_to(np.arange(len(xb)), d.shape), d), axis=1)[:, :k]
    return np.take_along_axis(d, ids, axis=1), ids


@pytest.fixture(params=["numpy", "faiss"])
def candidate_path(request, monkeypatch):
    """Candidates found by numpy's product and partition, or by faiss' k-NN (as large
    products are), whatever the size."""
    if request.param == "faiss":
        monkeypatch.setattr(groundtruth, "SMALL_PRODUCT", 0)
        monkeypatch.setattr(groundtruth, "SMALL_BASE_PER_KEEP", 0)
    else:
        monkeypatch.setattr(groundtruth, "SMALL_PRODUCT", 1 << 40)
    return request.param


@pytest.mark.parametrize("metric", list(Metric))
def test_exact_knn_matches_brute_force_in_chunks(metric, rng, candidate_path):
    xb = rng.normal(size=(700, 12)).astype(np.float32)
    xq = rng.normal(size=(25, 12)).astype(np.float32)
    want_d, want_i = brute_force(xb, xq, 10, metric)
    for chunk in (64, 1000):
        got_d, got_i = exact_knn(xb, xq, 10, metric, base_chunk=chunk)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_allclose(got_d, want_d, rtol=1e-6, atol=1e-9)


def test_exact_knn_accepts_blocks_and_orders_ties_by_id(rng, candidate_path):
    xb = np.repeat(rng.normal(size=(50, 6)).astype(np.float32), 3, axis=0)  # every row thrice
    xq = rng.normal(size=(5, 6)).astype(np.float32)
    blocks = (xb[i : i + 40] for i in range(0, len(xb), 40))
    seen = []
    d, ids = exact_knn(blocks, xq, 6, Metric.EUCLIDEAN, progress=seen.append)
    assert seen[-1] == len(xb)
    assert (ids[:, 0] < ids[:, 1]).all() and (ids[:, 1] < ids[:, 2]).all()
    np.testing.assert_allclose(d[:, 0], d[:, 2])


@pytest.mark.parametrize("metric", list(Metric))
def test_duplicates_tie_by_id_however_many_and_wherever_they_sit(metric, rng, candidate_path):
    # 100 copies of one vector shuffled among 1,900 others, and every other row thrice, in 64
    # dimensions: equal vectors get equal distances, and the lowest ids win every tie
    others = np.repeat(rng.normal(size=(633, 64)).astype(np.float32), 3, axis=0)[:1900]
    xb = np.concatenate([others, np.repeat(others[:1], 100, axis=0)])
    xb = xb[rng.permutation(len(xb))]
    xq = np.concatenate([xb[:1], rng.normal(size=(7, 64)).astype(np.float32)])
    want_d, want_i = brute_force(xb, xq, 30, metric)
    for chunk in (None, 700):
        got_d, got_i = exact_knn(xb, xq, 30, metric, base_chunk=chunk)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_allclose(got_d, want_d, rtol=1e-6, atol=1e-9)


def test_zero_query_under_angular_returns_the_lowest_ids(rng, candidate_path):
    xb = rng.normal(size=(500, 16)).astype(np.float32)
    xq = np.zeros((2, 16), dtype=np.float32)
    d, ids = exact_knn(xb, xq, 10, Metric.ANGULAR)
    np.testing.assert_array_equal(ids, np.tile(np.arange(10), (2, 1)))
    np.testing.assert_allclose(d, 1.0)


def test_euclidean_is_exact_far_from_the_origin(rng, candidate_path):
    # a large common offset: float32 products of the raw vectors would be mostly rounding
    xb = (1000 + rng.normal(size=(3000, 64))).astype(np.float32)
    xq = (1000 + rng.normal(size=(20, 64))).astype(np.float32)
    want_d, want_i = brute_force(xb, xq, 50, Metric.EUCLIDEAN)
    got_d, got_i = exact_knn(xb, xq, 50, Metric.EUCLIDEAN)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-6)


def test_faiss_settings_are_restored_after_a_search(rng):
    import faiss

    names = (
        "distance_compute_blas_query_bs",
        "distance_compute_blas_database_bs",
        "distance_compute_blas_threshold",
    )
    before = [getattr(faiss.cvar, name) for name in names]
    xb = rng.normal(size=(3000, 8)).astype(np.float32)
    exact_knn(xb, rng.normal(size=(400, 8)).astype(np.float32), 5, Metric.DOT)
    assert [getattr(faiss.cvar, name) for name in names] == before


def test_chunked_synthetic_rows_do_not_depend_on_slicing():
    from annbench.data.synthetic import ClusteredGaussianRows

    rows = ClusteredGaussianRows(1000, 8, n_clusters=5, seed=2, chunk=128)
    whole = rows[0:1000]
    pieces = np.concatenate([rows[i : i + 97] for i in range(0, 1000, 97)])
    np.testing.assert_array_equal(whole, pieces)
    assert whole.shape == (1000, 8) and whole.dtype == np.float32
    assert rows.labels(0, 1000).shape == (1000,)
    assert not np.array_equal(rows[0:128], rows[128:256])
