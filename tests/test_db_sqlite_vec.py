"""The sqlite-vec backend: exact search in a vec0 virtual table of a SQLite file, through the
conformance kit, its phases, its pre-filters, saved files shared by processes, and the
pipeline."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
import threading

import numpy as np
import pytest

pytest.importorskip("sqlite_vec")

from database_checks import (  # noqa: E402
    answers_of_processes,
    built_index,
    check_missing_library,
    check_pipeline,
    check_private_copy,
    check_private_folders,
    owned_folders,
    recall,
)

from annbench.backends.sqlite_vec_backend import K_MAX, SqliteVec  # noqa: E402
from annbench.data.groundtruth import exact_knn  # noqa: E402
from annbench.errors import AnnbenchError  # noqa: E402
from annbench.index import Condition  # noqa: E402
from annbench.metrics import Metric  # noqa: E402
from annbench.sweep.serving import measure_serving  # noqa: E402
from annbench.testing import check_backend, check_releases_gil  # noqa: E402

K = 10


@pytest.fixture(scope="module")
def built(tiny):
    yield from built_index(SqliteVec(Metric.EUCLIDEAN), tiny.train)


def test_sqlite_vec_conforms():
    check_backend(SqliteVec)


def test_sqlite_vec_search_releases_the_gil():
    measured = check_releases_gil(SqliteVec, n=4000, d=32)
    assert measured.releases is not False


def test_declared_as_an_exact_embedded_database():
    assert (SqliteVec.kind, SqliteVec.engine, SqliteVec.library) == (
        "embedded",
        None,
        "sqlite-vec",
    )
    assert SqliteVec.metrics == {Metric.EUCLIDEAN, Metric.ANGULAR}  # vec0 has no inner product
    assert SqliteVec.load_phases and SqliteVec.native_filter and SqliteVec.native_where
    with pytest.raises(AnnbenchError, match="does not support the dot metric"):
        SqliteVec(Metric.DOT)


def test_exact_search_in_phases(built, tiny):
    # the phases ran in build: one vec0 table of every row, cosine or l2 as asked
    schema = built._reader().execute("SELECT sql FROM sqlite_master WHERE name = 'items'")
    assert "USING vec0(embedding float[32] distance_metric=l2)" in schema.fetchone()[0]
    assert built._reader().execute("SELECT count(*) FROM items").fetchone()[0] == 2000
    xq = built.prepare_queries(tiny.test)
    found = built.search(xq, K)
    assert found.ids.dtype == np.int64 and found.ids.shape == (len(tiny.test), K)
    assert ((found.ids >= 0) & (found.ids < len(tiny.train))).all()
    assert recall(found.ids, tiny.neighbors[:, :K]) == 1.0  # an exact scan
    exact = np.linalg.norm(tiny.train[found.ids] - tiny.test[:, None, :], axis=2)
    assert np.allclose(found.distances, exact, rtol=1e-4, atol=1e-4)  # L2, not squared
    assert [list(built.search_one(q, K)) for q in xq[:5]] == found.ids[:5].tolist()
    wide = built.search(xq[:2], 2010)
    assert (wide.ids[:, :2000] >= 0).all() and (wide.ids[:, 2000:] == -1).all()
    with pytest.raises(AnnbenchError, match=f"at most {K_MAX} neighbours"):
        built.search(xq[:1], K_MAX + 1)


def test_angular_is_vec0_cosine(rng):
    xb = rng.standard_normal((500, 16)).astype(np.float32) * rng.uniform(0.1, 10, (500, 1))
    xq = rng.standard_normal((20, 16)).astype(np.float32)
    index = SqliteVec(Metric.ANGULAR)
    try:
        index.build(xb)  # not normalized: vec0 computes the cosine itself
        found = index.search(index.prepare_queries(xq), K)
        _, truth = exact_knn(xb, xq, K, Metric.ANGULAR)
        assert np.array_equal(found.ids, truth)
        unit = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        cosine = 1 - (
            unit[found.ids] * (xq / np.linalg.norm(xq, axis=1, keepdims=True))[:, None]
        ).sum(axis=2)
        assert np.allclose(found.distances, cosine, atol=1e-5)
    finally:
        index.close()


def test_threads_search_on_connections_of_their_own(built, tiny):
    xq = built.prepare_queries(tiny.test)
    expected = built.search(xq, K).ids
    seen, results = [], {}

    def client(slot: int) -> None:
        seen.append(built._reader())
        results[slot] = [list(built.search_one(q, K)) for q in xq[:20]]

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in seen} | {id(built._reader())}) == 3  # one per thread
    assert all(results[slot] == expected[:20].tolist() for slot in range(2))
    later = threading.Thread(target=built._reader)  # ended clients' readers are closed
    later.start()
    later.join()
    assert set(built._held["readers"]) == {threading.get_ident(), later.ident}
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        seen[0].execute("SELECT 1")


def test_pre_filters_by_row_and_by_field(tiny, rng):
    labels = tiny.train_labels.astype(np.int64)
    values = rng.random(len(tiny.train))
    index = SqliteVec(Metric.EUCLIDEAN)
    try:
        index.set_fields(labels, values)
        index.build(tiny.train)
        xq = index.prepare_queries(tiny.test)
        allowed = rng.random(len(tiny.train)) < 0.2
        for condition in (
            None,
            Condition("label", equals=3),
            Condition("value", low=0.2, high=0.4),
        ):
            mask = allowed if condition is None else condition.allows(labels, values)
            rows = np.flatnonzero(mask)
            _, top = exact_knn(tiny.train[rows], tiny.test, K, Metric.EUCLIDEAN)
            if condition is None:
                found = index.search_filtered(xq, K, mask).ids
            else:
                found = index.search_where(xq, K, condition).ids
            assert np.array_equal(found, rows[top]), condition  # exact under the filter
        # a pre-filter: three allowed rows come back whatever the query, not what a top-k
        # scan followed by a filter would leave
        few = np.zeros(len(tiny.train), dtype=bool)
        few[[5, 700, 1999]] = True
        padded = index.search_filtered(xq, K, few).ids
        assert (np.sort(padded[:, :3], axis=1) == [5, 700, 1999]).all()
        assert (padded[:, 3:] == -1).all()
        assert (index.search_filtered(xq, K, np.zeros(len(tiny.train), bool)).ids == -1).all()
        nothing = index.search_where(xq, K, Condition("label", equals=99))
        assert (nothing.ids == -1).all() and np.isinf(nothing.distances).all()
        with pytest.raises(AnnbenchError, match="metadata columns take no NULL"):
            index.add(tiny.test[:2], np.array([5000, 5001]))
    finally:
        index.close()
    plain = SqliteVec(Metric.EUCLIDEAN)
    try:
        plain.build(tiny.train[:100])
        with pytest.raises(AnnbenchError, match="no label column; set_fields"):
            plain.search_where(tiny.test[:1], K, Condition("label", equals=1))
    finally:
        plain.close()


_LOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from annbench.metrics import Metric
    from annbench.registry import load_backend

    index = load_backend("sqlite-vec")(Metric.EUCLIDEAN)
    index.load(sys.argv[1])
    queries = index.prepare_queries(np.load(sys.argv[2]))
    print(json.dumps(index.search(queries, 10).ids.tolist()))
    index.close()
    """
)


def test_saved_file_is_loaded_by_several_processes_and_never_written(built, tiny, tmp_path):
    expected = built.search(built.prepare_queries(tiny.test), K).ids
    saved = tmp_path / "index"
    built.save(saved)
    assert saved.is_file() and saved.stat().st_size > 2000 * 32 * 4
    before = saved.read_bytes()
    np.save(tmp_path / "queries.npy", tiny.test)
    for ids in answers_of_processes(_LOAD, saved, tmp_path / "queries.npy", count=3).values():
        assert np.array_equal(np.array(ids), expected)
    served = measure_serving("sqlite-vec", "euclidean", {}, saved, tiny.test, {}, K)
    assert served.note is None and served.memory_bytes > 0 and served.load_s > 0
    # writes to a loaded index go to a private copy; the saved file stays as it was
    loaded = SqliteVec(Metric.EUCLIDEAN)
    loaded.load(saved)
    check_private_copy(loaded, saved, before, tiny.test, expected)
    # the copy went with close
    assert owned_folders("sqlite-vec", {os.getpid()}) == [built._path.parent]
    with pytest.raises(AnnbenchError, match="not sqlite-vec|holds no sqlite-vec table"):
        bad = tmp_path / "empty.sqlite"
        sqlite3.connect(bad).execute("CREATE TABLE t (x)").connection.commit()
        SqliteVec(Metric.EUCLIDEAN).load(bad)
    with pytest.raises(AnnbenchError, match="load it with its own metric"):
        SqliteVec(Metric.ANGULAR).load(saved)


def test_extension_is_registered_only_while_its_connections_open(built):
    assert built._reader().execute("SELECT vec_version()").fetchone()[0].startswith("v0.1")
    other = sqlite3.connect(":memory:")  # any later connection of this process
    with pytest.raises(sqlite3.OperationalError, match="no such function: vec_version"):
        other.execute("SELECT vec_version()")
    other.close()


def test_close_removes_the_folder_and_a_killed_owners_folder_goes_next_time(tiny):
    check_private_folders(
        lambda: SqliteVec(Metric.EUCLIDEAN),
        tiny.train[:300],
        "sqlite-vec",
        lambda index: index._path.parent,
        "index.sqlite",
    )


def test_a_filtered_rate_sweep_times_the_phases_and_filters_in_the_database(tiny_path, tmp_path):
    frame = check_pipeline(
        "sqlite-vec", tiny_path, tmp_path, executor="thread", rows=None, filters="label"
    )
    strategy = frame["search_params"].map(lambda p: json.loads(p)["filter_strategy"])
    assert set(strategy) == {"where", "native", "post"}
    assert (frame[strategy != "post"]["recall"] == 1.0).all()  # pre-filtered exact scans


def test_missing_sqlite_vec_names_the_extra():
    check_missing_library("sqlite-vec", "sqlite_vec", "sqlite-vec")
