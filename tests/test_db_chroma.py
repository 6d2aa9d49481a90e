"""The chroma backend: Chroma's embedded persistent client with its HNSW (hnswlib) index,
through the conformance kit, its phases, filters, saved folders shared by processes, the
pipeline, and no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("chromadb")

from annbench import api  # noqa: E402
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


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth, strict=True)]))


def _folders_of(pids: set[int]) -> list[Path]:
    """Temporary Chroma folders whose owner is one of ``pids``."""
    found = []
    for folder in Path(tempfile.gettempdir()).glob("annbench-chroma-*"):
        owner = folder / "annbench-owner.pid"
        if owner.is_file() and int(owner.read_text() or -1) in pids:
            found.append(folder)
    return found


@pytest.fixture(scope="module")
def built(tiny):
    index = Chroma(Metric.EUCLIDEAN, **BUILD)
    index.build(tiny.train)
    yield index
    index.close()


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
        assert _recall(found.ids, tiny.neighbors[:, :10]) == 1.0
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
        assert _recall(wide, truth) > _recall(narrow, truth) + 0.1
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
    loaders = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LOAD,
                str(tmp_path / "index"),
                str(tmp_path / "queries.npy"),
                "32",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    for loader in loaders:
        out, err = loader.communicate(timeout=120)
        assert loader.returncode == 0, err
        assert np.array_equal(np.array(json.loads(out.splitlines()[-1])), expected)
    assert not _folders_of({loader.pid for loader in loaders})  # removed by close()


def test_close_removes_the_folder_and_a_killed_owners_folder_goes_next_time(tiny, tmp_path):
    index = Chroma(Metric.EUCLIDEAN, **BUILD)
    index.build(tiny.train[:300])
    folder = index._folder
    assert (folder / "db" / "chroma.sqlite3").is_file()
    index.close()
    index.close()
    assert not folder.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = Path(tempfile.mkdtemp(prefix="annbench-chroma-"))
    (stale / "annbench-owner.pid").write_text(dead.stdout.strip())
    other = Chroma(Metric.EUCLIDEAN, **BUILD)
    try:
        other.build(tiny.train[:300])
        assert not stale.exists()
    finally:
        other.close()
        shutil.rmtree(stale, ignore_errors=True)


def test_a_sweep_times_the_phases_and_sizes_the_folder(tiny_path, tmp_path):
    frame = api.run(
        "chroma",
        dataset=tiny_path,
        grid={"M": [16], "ef_construction": [100], "ef": [16, 64]},
        runs=1,
        min_time=0,
        results=tmp_path,
        progress=False,
    )
    assert len(frame) == 2 and (frame["status"] == "ok").all(), frame["error"].tolist()
    assert (frame["recall"] > 0.9).all()
    for column in ("insert_s", "index_build_s", "ready_s"):
        assert frame[column].notna().all() and (frame[column] >= 0).all()
    assert (frame["insert_s"] > 0).all() and (frame["index_bytes"] > 0).all()
    # loaded cold in a fresh process (annbench.sweep.serving) from the saved tar
    assert (frame["serving_memory_bytes"] > 0).all() and (frame["load_s"] > 0).all()


def test_a_rate_run_serves_from_threads(tiny_path, tmp_path):
    frame = api.run(
        "chroma",
        dataset=tiny_path,
        grid={"M": [16], "ef_construction": [100], "ef": [32]},
        mode="rate",
        rates=[100],
        runs=1,
        load=api.LoadOptions(seconds=0.3, warmup=0.1),
        results=tmp_path,
        progress=False,
    )
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert json.loads(row["provenance"])["load_executor"] == "thread"
    assert row["qps"] > 0 and row["recall"] > 0.9


def test_missing_chromadb_names_the_extra():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["chromadb"] = None  # importing chromadb now fails
        from annbench.errors import BackendUnavailable
        from annbench.registry import load_backend
        try:
            load_backend("chroma")
        except BackendUnavailable as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert 'pip install "annbench[chroma]"' in done.stdout, done.stderr


_OFFLINE = textwrap.dedent(
    """
    import socket, sys, tempfile
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
    probe = socket.socket(socket.AF_UNIX)  # shows that the trace sees connect()
    try:
        probe.connect("/nonexistent/annbench-probe")
    except OSError:
        pass
    print("done")
    """
)


def test_nothing_is_fetched(tmp_path):
    """No socket leaves the machine (every connect() traced, in all threads and children)
    and no embedding model lands in the cache."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    if subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True).returncode:
        pytest.skip("strace may not trace here")
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        ["strace", "-f", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
         sys.executable, "-c", _OFFLINE],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]
    calls = trace.read_text().splitlines()
    assert any("annbench-probe" in call for call in calls)
    network = [call for call in calls if "AF_INET" in call]  # AF_INET6 too
    assert not network, network[:5]
    assert not (tmp_path / "home" / ".cache" / "chroma").exists()
