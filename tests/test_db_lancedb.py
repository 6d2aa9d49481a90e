"""The lancedb backend: LanceDB's own indexes in an embedded local database folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lancedb")

from database_checks import (  # noqa: E402
    answers_of_processes,
    check_missing_library,
    check_pipeline,
    recall,
)

from annbench.backends.lancedb_backend import INDEX_TYPES, LanceDB  # noqa: E402
from annbench.data.groundtruth import exact_knn  # noqa: E402
from annbench.data.synthetic import clustered_gaussian  # noqa: E402
from annbench.errors import AnnbenchError  # noqa: E402
from annbench.metrics import Metric  # noqa: E402
from annbench.testing import check_backend, check_releases_gil  # noqa: E402

N, NQ, D, K = 1500, 40, 16, 10


@pytest.fixture(scope="module")
def data():
    x, _ = clustered_gaussian(N + NQ, D, n_clusters=12, seed=5)
    return x[:N], x[N:]


def _params(index_type: str, partitions: int = 4) -> dict:
    params = {"index_type": index_type, "num_partitions": partitions}
    if "PQ" in index_type:
        params["num_sub_vectors"] = 4
    if "HNSW" in index_type:
        params.update(m=16, ef_construction=100)
    return params


def test_lancedb_conforms():
    # the default grid's blocks are checked by tests/test_conformance.py; one block here
    hnsw = {"index_type": "IVF_HNSW_SQ", "num_partitions": 1, "m": 16, "ef_construction": 100}
    check_backend(LanceDB, build=hnsw, search=[{"ef": 16}, {"ef": 64}])


def test_declares_an_embedded_database_with_its_own_index():
    assert (LanceDB.kind, LanceDB.engine, LanceDB.library) == ("embedded", None, "lancedb")
    assert LanceDB.load_phases and LanceDB.metrics == frozenset(Metric)


def test_its_search_releases_the_gil():
    # claimed: load clients are threads, each with its own event loop waiting on LanceDB
    assert LanceDB.releases_gil
    check_releases_gil(LanceDB, n=5000, seconds=0.3)


@pytest.mark.parametrize("metric", list(Metric))
def test_probing_every_partition_of_ivf_flat_is_exact(metric, data):
    xb, xq = data
    _, truth = exact_knn(xb, xq, K, metric)
    index = LanceDB(metric, index_type="IVF_FLAT", num_partitions=5)
    try:
        index.build(xb)
        index.set_search_params(nprobes=5)
        ids = index.search(index.prepare_queries(xq), K).ids
        one = [index.search_one(q, K) for q in index.prepare_queries(xq)[:5]]
    finally:
        index.close()
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < N
    assert recall(ids, truth) == 1.0
    assert all(np.array_equal(a, b) for a, b in zip(one, ids[:5], strict=False))


@pytest.mark.parametrize("index_type", list(INDEX_TYPES))
def test_every_index_type_builds_and_refines_to_exact(index_type, data):
    xb, xq = data
    _, truth = exact_knn(xb, xq, K, Metric.EUCLIDEAN)
    index = LanceDB(Metric.EUCLIDEAN, **_params(index_type))
    try:
        index.build(xb)
        # every partition probed, every row re-ranked by its stored vector: exact
        index.set_search_params(nprobes=4, refine_factor=N // K + 1)
        ids = index.search(xq, K).ids
    finally:
        index.close()
    assert recall(ids, truth) == 1.0


def test_parameters_are_checked_in_one_line():
    with pytest.raises(AnnbenchError, match="index_type must be one of IVF_FLAT"):
        LanceDB(Metric.EUCLIDEAN, index_type="HNSW", num_partitions=1)
    with pytest.raises(AnnbenchError, match="IVF_FLAT takes no num_sub_vectors"):
        LanceDB(Metric.EUCLIDEAN, index_type="IVF_FLAT", num_partitions=4, num_sub_vectors=8)
    with pytest.raises(AnnbenchError, match="needs the parameter m"):
        LanceDB(Metric.EUCLIDEAN, index_type="IVF_HNSW_SQ", num_partitions=1, ef_construction=9)
    with pytest.raises(AnnbenchError, match="num_bits of IVF_PQ must be one of 4, 8"):
        LanceDB(Metric.EUCLIDEAN, **_params("IVF_PQ"), num_bits=6)
    index = LanceDB(Metric.EUCLIDEAN, **_params("IVF_PQ", 83), num_bits=4)
    with pytest.raises(AnnbenchError, match="ef is for the IVF_HNSW"):
        index.set_search_params(ef=10)
    with pytest.raises(AnnbenchError, match="nprobes must be an integer >= 1"):
        index.set_search_params(nprobes=0)
    with pytest.raises(AnnbenchError, match="at most 82 IVF partitions"):
        index.check(21_000, 16)  # LanceDB would silently train 82
    with pytest.raises(AnnbenchError, match="does not divide the dimension d=18"):
        index.check(83 * 256, 18)
    index.check(83 * 256, 16)
    assert LanceDB(Metric.EUCLIDEAN, **_params("IVF_FLAT", 64)).build_warnings(1000, 16)


def test_filters_are_the_databases_own_prefilter(data, rng):
    xb, xq = data
    index = LanceDB(Metric.EUCLIDEAN, index_type="IVF_FLAT", num_partitions=4)
    try:
        index.build(xb)
        index.set_search_params(nprobes=4)
        for share in (0.05, 0.9):  # an IN list, then a NOT IN list of the excluded rows
            allowed = rng.random(N) < share
            rows = np.flatnonzero(allowed)
            _, top = exact_knn(xb[rows], xq, K, Metric.EUCLIDEAN)
            ids = index.search_filtered(xq, K, allowed).ids
            assert np.array_equal(ids, rows[top]), share  # exact under the filter
            assert np.array_equal(index.search_filtered(xq[:1], K, allowed).ids, ids[:1])
        none = index.search_filtered(xq, K, np.zeros(N, bool))
        assert (none.ids == -1).all()
        # rows added past the mask are not allowed by it
        index.add(xq[:3], np.arange(N, N + 3))
        ids = index.search_filtered(xq[:3], K, np.ones(N, bool)).ids
        assert (ids < N).all()
    finally:
        index.close()


def test_added_rows_are_indexed_and_removed_rows_never_return(data):
    xb, xq = data
    index = LanceDB(Metric.EUCLIDEAN, **_params("IVF_HNSW_SQ", 1))
    try:
        index.build(xb)
        index.set_search_params(ef=64)
        gone = index.search(xq, 3).ids.ravel()
        index.remove(gone)
        assert not np.isin(index.search(xq, K).ids, gone).any()
        index.add(xq, np.arange(N, N + NQ))
        assert (index.search(xq, 1).ids[:, 0] == np.arange(N, N + NQ)).all()
        stats = index._run(index._table.index_stats("vector_idx"))
        assert stats.num_unindexed_rows == 0  # optimize() put the new rows in the index
    finally:
        index.close()


def test_saved_folder_loads_in_several_processes_at_once(data, tmp_path):
    xb, xq = data
    params = _params("IVF_HNSW_SQ", 1)
    index = LanceDB(Metric.EUCLIDEAN, **params)
    index.build(xb)
    index.set_search_params(ef=32)
    expected = index.search(xq, K).ids
    folder = index._folder
    path = tmp_path / "index"
    index.save(path)
    index.close()
    index.close()  # twice is fine
    assert path.is_file() and not folder.exists()
    np.save(tmp_path / "xq.npy", xq)
    script = f"""
import json, sys, numpy as np
from annbench.backends.lancedb_backend import LanceDB
from annbench.metrics import Metric
index = LanceDB(Metric.EUCLIDEAN, **{params!r})
index.load({str(path)!r})
index.set_search_params(ef=32)
print(json.dumps([index.search(np.load({str(tmp_path / "xq.npy")!r}), {K}).ids.tolist(),
                  str(index._folder)]))
index.close()
"""
    for ids, private in answers_of_processes(script, timeout=60).values():
        assert np.array_equal(ids, expected) and not Path(private).exists()


def test_a_rate_sweep_times_the_three_phases_and_serves_from_threads(tiny_path, tmp_path):
    check_pipeline(
        "lancedb",
        tiny_path,
        tmp_path,
        grid={"index_type": "IVF_FLAT", "num_partitions": 7, "nprobes": [1, 7]},
        executor="thread",  # each client thread with its own event loop waiting on LanceDB
        rows=2,
        best_recall=1.0,  # all 7 partitions probed
    )


def test_a_missing_library_names_the_extra():
    check_missing_library("lancedb", "lancedb", "lancedb")
