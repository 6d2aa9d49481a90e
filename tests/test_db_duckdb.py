"""The duckdb-vss backend: DuckDB's HNSW index (vss, on usearch) in an embedded database file,
through the conformance kit, its phases, the query plan, saved files shared by processes, the
pipeline, and an extension that comes from its package, never from the network."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

pytest.importorskip("duckdb_extension_vss")

from database_checks import (  # noqa: E402
    answers_of_processes,
    built_index,
    check_missing_library,
    check_offline,
    check_pipeline,
    check_private_copy,
    check_private_folders,
    owned_folders,
    recall,
)

from annbench.backends.duckdb_backend import DuckDBVSS, extension_path  # noqa: E402
from annbench.data.groundtruth import exact_knn  # noqa: E402
from annbench.errors import AnnbenchError  # noqa: E402
from annbench.metrics import Metric  # noqa: E402
from annbench.sweep.grids import default_grid  # noqa: E402
from annbench.sweep.serving import measure_serving  # noqa: E402
from annbench.testing import check_backend  # noqa: E402

K = 10
BUILD = {"M": 16, "ef_construction": 64}
#: a beam as wide as the tiny base: the search is exhaustive
EXACT = {"ef_search": 2000}


@pytest.fixture(scope="module")
def built(tiny):
    yield from built_index(DuckDBVSS(Metric.EUCLIDEAN, **BUILD), tiny.train)


def test_duckdb_vss_conforms():
    check_backend(DuckDBVSS)


_CONCURRENT = textwrap.dedent(
    """
    import threading
    import numpy as np
    from annbench.backends.duckdb_backend import DuckDBVSS
    from annbench.metrics import Metric

    xb = np.random.default_rng(0).standard_normal((4000, 32)).astype(np.float32)

    def two_clients(threads, queries):
        index = DuckDBVSS(Metric.EUCLIDEAN, M=16, ef_construction=32)
        index.set_num_threads(threads)  # DuckDB's threads while the index is built
        index.build(xb)

        def client(slot):
            for i in range(queries):
                index.search_one(xb[(7 * i + slot) % len(xb)], 10)

        clients = [threading.Thread(target=client, args=(slot,)) for slot in range(2)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        index.close()

    two_clients(2, 300)
    print("two contexts served two clients", flush=True)
    for _ in range(5):  # a race: it has crashed at the first try in most runs seen
        two_clients(1, 2000)
    print("one context served two clients", flush=True)
    """
)


def test_load_clients_are_processes_as_concurrent_scans_can_crash_vss():
    """Why releases_gil is False: two client threads are safe while VSS has a search
    context for each (DuckDB threads >= 2 when the index was built) and crash the process
    when it has one (usearch pops a free context from an empty list)."""
    assert not DuckDBVSS.releases_gil
    done = subprocess.run(
        [sys.executable, "-c", _CONCURRENT], capture_output=True, text=True, timeout=120
    )
    assert "two contexts served two clients" in done.stdout, done.stderr[-2000:]
    if done.returncode == 0:
        pytest.fail("concurrent HNSW scans no longer crash DuckDB VSS: reconsider releases_gil")
    assert done.returncode in (-11, -6), done.stderr[-2000:]  # SIGSEGV, or SIGABRT


def test_declared_as_an_embedded_database_on_usearch():
    assert (DuckDBVSS.kind, DuckDBVSS.engine, DuckDBVSS.library) == (
        "embedded",
        "usearch",
        "duckdb",
    )
    assert DuckDBVSS.load_phases and DuckDBVSS.metrics == frozenset(Metric)
    assert not DuckDBVSS.native_filter and not DuckDBVSS.native_where  # VSS filters after
    for build in ({"M": 1, "ef_construction": 64}, {"M": 16, "ef_construction": 0}):
        with pytest.raises(AnnbenchError, match="must be an integer"):
            DuckDBVSS(Metric.EUCLIDEAN, **build)
    with pytest.raises(AnnbenchError, match="must be an integer"):
        DuckDBVSS(Metric.EUCLIDEAN, **BUILD).set_search_params(ef_search=0)


def test_grid_matches_usearchs():
    ours, theirs = default_grid("duckdb-vss"), default_grid("usearch")
    renamed = {"M": "connectivity", "ef_construction": "expansion_add"}
    for build in ours.build_configs():
        mapped = {renamed[name]: value for name, value in build.items()}
        assert any(mapped.items() <= other.items() for other in theirs.build_configs()), build
        searches = [s["ef_search"] for s in ours.search_configs(build)]
        usearch = theirs.search_configs(theirs.build_configs()[0])
        assert searches == [s["expansion_search"] for s in usearch]


def test_phases_build_an_hnsw_index_that_the_query_plan_uses(built, tiny):
    con = built._con
    info = con.execute("SELECT metric, dimensions, count FROM pragma_hnsw_index_info()").fetchall()
    assert info == [("l2sq", 32, 2000)]
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 2000
    plan = built.plan(K)
    assert "HNSW_INDEX_SCAN" in plan and "SEQ_SCAN" not in plan, plan
    built.set_search_params(**EXACT)
    xq = built.prepare_queries(tiny.test)
    found = built.search(xq, K)
    assert found.ids.dtype == np.int64 and found.ids.shape == (len(tiny.test), K)
    assert ((found.ids >= 0) & (found.ids < len(tiny.train))).all()
    assert recall(found.ids, tiny.neighbors[:, :K]) == 1.0
    exact = np.linalg.norm(tiny.train[found.ids] - tiny.test[:, None, :], axis=2)
    assert np.allclose(found.distances, exact, rtol=1e-4, atol=1e-4)  # array_distance: L2
    assert [list(built.search_one(q, K)) for q in xq[:5]] == found.ids[:5].tolist()
    wide = built.search(xq[:2], 2010)
    assert (wide.ids[:, :2000] >= 0).all() and (wide.ids[:, 2000:] == -1).all()


@pytest.mark.parametrize("metric", [Metric.ANGULAR, Metric.DOT], ids=lambda m: m.value)
def test_each_metric_is_an_index_scan(metric, rng):
    xb = rng.standard_normal((400, 16)).astype(np.float32)
    index = DuckDBVSS(metric, **BUILD)
    try:
        index.build(xb)
        function = {Metric.ANGULAR: "array_cosine_distance", Metric.DOT: "negative_inner"}
        assert "ORDER BY distance LIMIT" in index._sql_rows and function[metric] in index._sql_rows
        plan = index.plan(K)  # the distance is computed inside the index scan
        assert "HNSW_INDEX_SCAN" in plan and "SEQ_SCAN" not in plan, plan
        index.set_search_params(ef_search=400)
        _, truth = exact_knn(xb, xb[:20], K, metric)
        assert recall(index.search(index.prepare_queries(xb[:20]), K).ids, truth) >= 0.99
    finally:
        index.close()


def test_ef_search_is_set_for_every_threads_cursor(rng):
    xb = rng.standard_normal((3000, 48)).astype(np.float32)
    xq = rng.standard_normal((50, 48)).astype(np.float32)
    _, truth = exact_knn(xb, xq, K, Metric.EUCLIDEAN)
    index = DuckDBVSS(Metric.EUCLIDEAN, M=4, ef_construction=20)
    try:
        index.build(xb)
        index.set_search_params(ef_search=10)
        narrow = index.search(xq, K).ids
        index.set_search_params(ef_search=400)
        wide = index.search(xq, K).ids
        assert recall(wide, truth) > recall(narrow, truth) + 0.1
        got = {}
        thread = threading.Thread(target=lambda: got.update(ids=index.search(xq, K).ids))
        thread.start()
        thread.join()
        assert np.array_equal(got["ids"], wide)  # the same setting in a thread of its own
    finally:
        index.close()


_LOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from annbench.metrics import Metric
    from annbench.registry import load_backend

    index = load_backend("duckdb-vss")(Metric.EUCLIDEAN, M=16, ef_construction=64)
    index.load(sys.argv[1])
    index.set_search_params(ef_search=int(sys.argv[3]))
    assert "HNSW_INDEX_SCAN" in index.plan()
    queries = index.prepare_queries(np.load(sys.argv[2]))
    print(json.dumps(index.search(queries, 10).ids.tolist()))
    index.close()
    """
)


def test_saved_file_is_loaded_by_several_processes_and_never_written(built, tiny, tmp_path):
    built.set_search_params(ef_search=32)
    expected = built.search(built.prepare_queries(tiny.test), K).ids
    saved = tmp_path / "index"
    built.save(saved)
    assert saved.is_file() and saved.stat().st_size > 2000 * 32 * 4
    before = saved.read_bytes()
    np.save(tmp_path / "queries.npy", tiny.test)
    for ids in answers_of_processes(_LOAD, saved, tmp_path / "queries.npy", 32).values():
        assert np.array_equal(np.array(ids), expected)
    served = measure_serving(
        "duckdb-vss", "euclidean", BUILD, saved, tiny.test, {"ef_search": 32}, K
    )
    assert served.note is None and served.memory_bytes > 0 and served.load_s > 0
    # writes to a loaded (read-only) index go to a private database; the saved file stays
    loaded = DuckDBVSS(Metric.EUCLIDEAN, **BUILD)
    loaded.load(saved)
    loaded.set_search_params(**EXACT)
    check_private_copy(loaded, saved, before, tiny.test, expected)
    # the copy went with close
    assert owned_folders("duckdb", {os.getpid()}) == [built._path.parent]
    with pytest.raises(AnnbenchError, match="load it with its own metric"):
        DuckDBVSS(Metric.ANGULAR, **BUILD).load(saved)


def test_close_removes_the_folder_and_a_killed_owners_folder_goes_next_time(tiny):
    check_private_folders(
        lambda: DuckDBVSS(Metric.EUCLIDEAN, **BUILD),
        tiny.train[:300],
        "duckdb",
        lambda index: index._path.parent,
        "index.duckdb",
    )


def test_a_rate_sweep_times_the_phases_sizes_the_file_and_serves_from_processes(
    tiny_path, tmp_path
):
    check_pipeline(
        "duckdb-vss",
        tiny_path,
        tmp_path,
        grid={"M": [16], "ef_construction": [64], "ef_search": [64]},
        executor="process",
        rows=1,
        min_recall=0.9,
    )


@pytest.mark.parametrize("module", ["duckdb", "duckdb_extension_vss"])
def test_missing_duckdb_names_the_extra(module):
    check_missing_library("duckdb-vss", module, "duckdb")


_OFFLINE = textwrap.dedent(
    """
    import tempfile
    from pathlib import Path
    import numpy as np
    from annbench.metrics import Metric
    from annbench.registry import load_backend

    cls = load_backend("duckdb-vss")
    xb = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    index = cls(Metric.ANGULAR, M=8, ef_construction=40)
    index.build(xb)
    index.set_search_params(ef_search=20)
    index.search_one(xb[0], 5)
    with tempfile.TemporaryDirectory() as folder:
        index.save(Path(folder) / "index")
        loaded = cls(Metric.ANGULAR, M=8, ef_construction=40)
        loaded.load(Path(folder) / "index")
        assert list(loaded.search_one(xb[0], 5))[0] == 0
        print(loaded._con.execute(
            "SELECT loaded, installed, install_mode FROM duckdb_extensions() "
            "WHERE extension_name = 'vss'").fetchall())
        loaded.close()
    index.close()
    """
)


def test_the_extension_comes_from_its_package_and_nothing_is_fetched(tmp_path):
    """vss is loaded from the duckdb-extension-vss package's file, not installed into
    DuckDB's extension folder, and no socket leaves the machine (every connect() traced, in
    all threads and children)."""
    assert extension_path().is_file() and "duckdb_extension_vss" in str(extension_path())
    out = check_offline(_OFFLINE, tmp_path)
    assert "[(True, False, 'NOT_INSTALLED')]" in out  # loaded from the file given
    assert not (tmp_path / "home" / ".duckdb").exists()  # no extension folder made
