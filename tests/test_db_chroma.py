"""The chroma backend: Chroma's embedded persistent client with its HNSW (hnswlib) index,
through the conformance kit, its phases, filters, saved folders shared by processes, the
pipeline, and no network."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

pytest.importorskip("chromadb")

from database_checks import (  # noqa: E402
    answers_of_processes,
    built_index,
    check_missing_library,
    check_offline,
    check_pipeline,
    check_private_folders,
    owned_folders,
    recall,
)

from annbench.backends.chroma_backend import Chroma  # noqa: E402
from annbench.data.groundtruth import exact_knn  # noqa: E402
from annbench.errors import AnnbenchError  # noqa: E402
from annbench.metrics import Metric  # noqa: E402
from annbench.testing import check_backend, check_releases_gil  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # Chroma's word for "no embedding function"
    "ignore:legacy embedding function config:DeprecationWarning"
)
BUILD = {"M": 16, "ef_construction": 100}
#: a beam as wide as the tiny base: the search is exhaustive
EXACT = {"ef": 2000}


@pytest.fixture(scope="module")
def built(tiny):
    yield from built_index(Chroma(Metric.EUCLIDEAN, **BUILD), tiny.train)


def test_chroma_conforms():
    check_backend(Chroma)


def test_chroma_search_releases_the_gil():
    measured = check_releases_gil(Chroma, n=4000, d=32)
    assert measured.releases is not False


def test_declared_as_an_embedded_database_on_hnswlib():
    assert (Chroma.kind, Chroma.engine, Chroma.library) == ("embedded", "hnswlib", "chromadb")
    assert Chroma.load_phases and Chroma.metrics == frozenset(Metric)
    for build in ({"M": 1, "ef_construction": 100}, {"M": 16, "ef_construction": 0}):
        with pytest.raises(AnnbenchError, match="must be an integer"):
            Chroma(Metric.EUCLIDEAN, **build)
    with pytest.raises(AnnbenchError, match="must be an integer"):
        Chroma(Metric.EUCLIDEAN, **BUILD).set_search_params(ef=0)


def test_insert_builds_the_graph_before_it_returns(tiny):
    index = Chroma(Metric.EUCLIDEAN, **BUILD)
    try:
        index.set_search_params(**EXACT)
        index.insert(tiny.train)  # no create_index, no wait: the graph is complete already
        # the local client has no asynchronous indexing to wait for
        with pytest.raises(NotImplementedError):
            index._collection.get_indexing_status()
        assert index._collection.count() == len(tiny.train)
        found = index.search(index.prepare_queries(tiny.test), 10)
        assert found.ids.dtype == np.int64 and found.ids.shape == (len(tiny.test), 10)
        assert ((found.ids >= 0) & (found.ids < len(tiny.train))).all()
        assert recall(found.ids, tiny.neighbors[:, :10]) == 1.0
        configuration = index._collection.configuration["hnsw"]
        assert (configuration["max_neighbors"], configuration["ef_construction"]) == (16, 100)
        assert configuration["space"] == "l2" and configuration["ef_search"] == EXACT["ef"]
    finally:
        index.close()


def test_ef_search_takes_effect_by_reopening(rng):
    xb = rng.standard_normal((3000, 48)).astype(np.float32)
    xq = rng.standard_normal((50, 48)).astype(np.float32)
    _, truth = exact_knn(xb, xq, 10, Metric.EUCLIDEAN)
    index = Chroma(Metric.EUCLIDEAN, M=4, ef_construction=20)
    try:
        index.set_search_params(ef=10)
        index.build(xb)
        narrow = index.search(xq, 10).ids
        # modifying the collection alone leaves the graph in memory at its old ef_search
        index._collection.modify(configuration={"hnsw": {"ef_search": 400}})
        assert np.array_equal(index.search(xq, 10).ids, narrow)
        index._ef = 400  # as if set_search_params had stopped there
        index.set_search_params(ef=10)  # back to ef 10 through the reopen
        assert np.array_equal(index.search(xq, 10).ids, narrow)
        index.set_search_params(ef=400)
        assert index._collection.configuration["hnsw"]["ef_search"] == 400
        wide = index.search(xq, 10).ids
        assert recall(wide, truth) > recall(narrow, truth) + 0.1
        assert [list(index.search_one(q, 10)) for q in xq[:5]] == wide[:5].tolist()
    finally:
        index.close()


def test_native_filters_keep_only_allowed_rows_and_skip_removed_ones(built, tiny, rng):
    built.set_search_params(**EXACT)
    xq = built.prepare_queries(tiny.test)
    allowed = rng.random(len(tiny.train)) < 0.2
    rows = np.flatnonzero(allowed)
    _, top = exact_knn(tiny.train[rows], tiny.test, 10, Metric.EUCLIDEAN)
    found = built.search_filtered(xq, 10, allowed).ids
    assert np.array_equal(found, rows[top])
    assert np.array_equal(built.search_filtered(xq, 10, allowed).ids, found)  # cached ids
    few = np.zeros(len(tiny.train), dtype=bool)
    few[rows[:3]] = True
    padded = built.search_filtered(xq, 10, few).ids
    assert (np.sort(padded[:, :3], axis=1) == rows[:3]).all() and (padded[:, 3:] == -1).all()
    gone = np.unique(rows[top[:, 0]])
    built.remove(gone)  # Chroma refuses unknown ids in a filter: removed rows are left out
    after = built.search_filtered(xq, 10, allowed).ids
    assert not np.isin(after, gone).any() and allowed[after[after >= 0]].all()
    assert built.search_filtered(xq, 10, np.zeros(len(tiny.train), bool)).ids.max() == -1
    built.add(tiny.train[gone], gone)
    assert np.array_equal(built.search_filtered(xq, 10, allowed).ids, found)


def test_where_clauses_on_stored_fields(tiny, rng):
    try:
        from annbench.index import Condition
    except ImportError:
        pytest.skip("this annbench has no where-clauses")
    labels = rng.integers(0, 4, len(tiny.train))
    values = rng.random(len(tiny.train))
    index = Chroma(Metric.EUCLIDEAN, **BUILD)
    try:
        index.set_fields(labels, values)
        index.set_search_params(**EXACT)
        index.build(tiny.train)
        xq = index.prepare_queries(tiny.test)
        for condition in (Condition("label", equals=2), Condition("value", low=0.1, high=0.3)):
            allowed = condition.allows(labels, values)
            rows = np.flatnonzero(allowed)
            _, top = exact_knn(tiny.train[rows], tiny.test, 10, Metric.EUCLIDEAN)
            assert np.array_equal(index.search_where(xq, 10, condition).ids, rows[top])
        nothing = index.search_where(xq, 10, Condition("label", equals=9))
        assert (nothing.ids == -1).all() and np.isinf(nothing.distances).all()
    finally:
        index.close()


_LOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from annbench.metrics import Metric
    from annbench.registry import load_backend

    index = load_backend("chroma")(Metric.EUCLIDEAN, M=16, ef_construction=100)
    index.load(sys.argv[1])
    index.set_search_params(ef=int(sys.argv[3]))
    queries = index.prepare_queries(np.load(sys.argv[2]))
    print(json.dumps(index.search(queries, 10).ids.tolist()))
    index.close()
    """
)


def test_saved_folder_is_loaded_by_several_processes_at_once(built, tiny, tmp_path):
    built.set_search_params(ef=32)
    expected = built.search(built.prepare_queries(tiny.test), 10).ids
    built.save(tmp_path / "index")
    assert (tmp_path / "index").is_file() and (tmp_path / "index").stat().st_size > 0
    np.save(tmp_path / "queries.npy", tiny.test)
    answers = answers_of_processes(_LOAD, tmp_path / "index", tmp_path / "queries.npy", 32)
    for ids in answers.values():
        assert np.array_equal(np.array(ids), expected)
    assert not owned_folders("chroma", set(answers))  # removed by close()


def test_close_removes_the_folder_and_a_killed_owners_folder_goes_next_time(tiny):
    check_private_folders(
        lambda: Chroma(Metric.EUCLIDEAN, **BUILD),
        tiny.train[:300],
        "chroma",
        lambda index: index._folder,
        "db/chroma.sqlite3",
    )


def test_a_rate_sweep_times_the_phases_sizes_the_folder_and_serves_from_threads(
    tiny_path, tmp_path
):
    check_pipeline(
        "chroma",
        tiny_path,
        tmp_path,
        grid={"M": [16], "ef_construction": [100], "ef": [16, 64]},
        executor="thread",
        rows=2,
        min_recall=0.9,
    )


def test_missing_chromadb_names_the_extra():
    check_missing_library("chroma", "chromadb", "chroma")


_OFFLINE = textwrap.dedent(
    """
    import tempfile
    from pathlib import Path
    import numpy as np
    from annbench.metrics import Metric
    from annbench.registry import load_backend

    cls = load_backend("chroma")
    xb = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    index = cls(Metric.ANGULAR, M=8, ef_construction=40)
    index.build(xb)
    index.set_search_params(ef=20)
    index.search_one(xb[0], 5)
    with tempfile.TemporaryDirectory() as folder:
        index.save(Path(folder) / "index")
        loaded = cls(Metric.ANGULAR, M=8, ef_construction=40)
        loaded.load(Path(folder) / "index")
        assert list(loaded.search_one(xb[0], 5))[0] == 0
        loaded.close()
    index.close()
    """
)


def test_nothing_is_fetched(tmp_path):
    """No socket leaves the machine (every connect() traced, in all threads and children)
    and no embedding model lands in the cache."""
    check_offline(_OFFLINE, tmp_path)
    assert not (tmp_path / "home" / ".cache" / "chroma").exists()
