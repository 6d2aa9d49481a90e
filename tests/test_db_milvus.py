"""The milvus backend: Milvus through milvus-lite, in this process, through the conformance kit,
its three load phases, the index types milvus-lite builds, filters, saved databases opened by
several processes, the pipeline, and what a killed worker leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from database_checks import (  # noqa: E402
    built_index,
    check_missing_library,
    check_pipeline,
    owned_folders,
    recall,
)

from annbench.backends.milvus_backend import INDEX_TYPES, Milvus  # noqa: E402
from annbench.data.groundtruth import exact_knn  # noqa: E402
from annbench.errors import AnnbenchError  # noqa: E402
from annbench.metrics import Metric  # noqa: E402
from annbench.testing import check_backend  # noqa: E402

HNSW = {"index_type": "HNSW", "M": 16, "efConstruction": 100}
#: a beam as wide as the tiny base: the search is exhaustive
EXACT = {"efSearch": 2000}
#: each index type on the tiny data, and the search setting that makes it exact or nearly
SETTINGS = {
    "FLAT": ({}, {}, 1.0),
    "AUTOINDEX": ({}, {"efSearch": 2000}, 1.0),
    "HNSW": ({"M": 16, "efConstruction": 100}, {"efSearch": 2000}, 1.0),
    "HNSW_SQ": ({"M": 16, "efConstruction": 100}, {"efSearch": 2000}, 0.9),
    "IVF_FLAT": ({"nlist": 16}, {"nprobe": 16}, 1.0),
    "IVF_SQ8": ({"nlist": 16}, {"nprobe": 16}, 0.9),
}


@pytest.fixture(scope="module")
def built(tiny):
    yield from built_index(Milvus(Metric.EUCLIDEAN, **HNSW), tiny.train)


def test_milvus_conforms():
    check_backend(Milvus)


def test_declared_as_an_embedded_database_on_faiss():
    assert (Milvus.kind, Milvus.engine, Milvus.library) == ("embedded", "faiss-hnsw", "milvus-lite")
    assert Milvus.load_phases and Milvus.metrics == frozenset(Metric)
    assert not Milvus.releases_gil  # its search is Python in milvus-lite's threads
    bad = [
        ({"index_type": "IVF_PQ"}, "not one milvus-lite builds"),
        ({"index_type": "DISKANN"}, "not one milvus-lite builds"),
        ({"index_type": "HNSW", "M": 16}, "needs efConstruction"),
        ({"index_type": "HNSW", "M": 1, "efConstruction": 100}, "must be an integer >= 2"),
        ({"index_type": "FLAT", "nlist": 16}, "takes no build parameters, not nlist"),
        ({"index_type": "IVF_FLAT", "nlist": 0}, "must be an integer >= 1"),
    ]
    for build, message in bad:
        with pytest.raises(AnnbenchError, match=message):
            Milvus(Metric.EUCLIDEAN, **build)
    hnsw = Milvus(Metric.EUCLIDEAN, **HNSW)
    with pytest.raises(AnnbenchError, match="takes efSearch, not nprobe"):
        hnsw.set_search_params(nprobe=4)
    with pytest.raises(AnnbenchError, match="must be an integer"):
        hnsw.set_search_params(efSearch=0)
    with pytest.raises(AnnbenchError, match="nlist=5000 exceeds the 2000"):
        Milvus(Metric.EUCLIDEAN, index_type="IVF_FLAT", nlist=5000).check(2000, 32)


@pytest.mark.parametrize("index_type", list(INDEX_TYPES))
def test_every_index_type_milvus_lite_builds(index_type, tiny):
    build, search, floor = SETTINGS[index_type]
    index = Milvus(Metric.EUCLIDEAN, index_type=index_type, **build)
    try:
        index.build(tiny.train)
        described = index._client.describe_index("annbench", "vector")
        # the build parameters reached milvus-lite (pymilvus 3 would drop them unnested)
        assert (described["index_type"], described.get("params") or {}) == (index_type, build)
        index.set_search_params(**search)
        found = index.search(index.prepare_queries(tiny.test), 10)
        assert found.ids.dtype == np.int64 and found.ids.shape == (len(tiny.test), 10)
        assert ((found.ids >= 0) & (found.ids < len(tiny.train))).all()
        assert recall(found.ids, tiny.neighbors[:, :10]) >= floor
    finally:
        index.close()


def test_the_phases_are_milvus_calls_and_ready_means_loaded(tiny):
    index = Milvus(Metric.EUCLIDEAN, index_type="IVF_FLAT", nlist=32)
    try:
        index.insert(tiny.train)
        client = index._client
        assert client.get_collection_stats("annbench")["row_count"] == len(tiny.train)
        index.create_index()
        index.wait_until_ready()
        assert str(client.get_load_state("annbench")["state"]) == "Loaded"
        described = client.describe_index("annbench", "vector")
        assert described["indexed_rows"] == described["total_rows"] == len(tiny.train)
        assert described["params"] == {"nlist": 32}
        index.set_search_params(nprobe=32)  # every list: exact
        found = index.search(index.prepare_queries(tiny.test), 10).ids
        assert recall(found, tiny.neighbors[:, :10]) == 1.0
        one = [list(index.search_one(q, 10)) for q in index.prepare_queries(tiny.test[:5])]
        assert one == found[:5].tolist()
    finally:
        index.close()


def test_ivf_flat_answers_as_its_engine_at_the_same_parameters(tiny):
    from annbench.registry import load_backend

    milvus = Milvus(Metric.EUCLIDEAN, index_type="IVF_FLAT", nlist=32)
    engine = load_backend("faiss-ivf")(Metric.EUCLIDEAN, nlist=32)
    try:
        for index in (milvus, engine):
            index.build(tiny.train)
            index.set_search_params(nprobe=4)  # an eighth of the lists: approximate
        ids = [index.search(index.prepare_queries(tiny.test), 10).ids for index in (milvus, engine)]
        assert np.array_equal(*ids)  # one segment: the same faiss IVF<nlist>,Flat, trained alike
        assert recall(ids[0], tiny.neighbors[:, :10]) < 1.0
    finally:
        milvus.close()


def test_native_filters_keep_only_allowed_rows_exactly(built, tiny, rng):
    built.set_search_params(**EXACT)
    xq = built.prepare_queries(tiny.test)
    allowed = rng.random(len(tiny.train)) < 0.2
    rows = np.flatnonzero(allowed)
    _, top = exact_knn(tiny.train[rows], tiny.test, 10, Metric.EUCLIDEAN)
    found = built.search_filtered(xq, 10, allowed).ids
    assert recall(found, rows[top]) == 1.0 and allowed[found].all()
    few = np.zeros(len(tiny.train), dtype=bool)
    few[rows[:3]] = True
    padded = built.search_filtered(xq, 10, few).ids
    assert (np.sort(padded[:, :3], axis=1) == rows[:3]).all() and (padded[:, 3:] == -1).all()
    assert built.search_filtered(xq, 10, np.zeros(len(tiny.train), bool)).ids.max() == -1


def test_add_and_remove_go_through_milvus(tiny):
    index = Milvus(Metric.EUCLIDEAN, index_type="FLAT")
    try:
        index.build(tiny.train)
        xq = index.prepare_queries(tiny.test[:20])
        first = index.search(xq, 1).ids[:, 0]
        index.remove(first)
        after = index.search(xq, 10).ids
        assert not np.isin(after, first).any()
        new = np.arange(50_000, 50_020)
        index.add(tiny.test[:20], new)
        assert (index.search(xq, 1).ids[:, 0] == new).all()
    finally:
        index.close()


def test_where_clauses_on_stored_fields(tiny, rng):
    try:
        from annbench.index import Condition
    except ImportError:
        pytest.skip("this annbench has no where-clauses")
    labels = rng.integers(0, 4, len(tiny.train))
    values = rng.random(len(tiny.train))
    index = Milvus(Metric.EUCLIDEAN, index_type="FLAT")
    try:
        index.set_fields(labels, values)
        index.build(tiny.train)
        xq = index.prepare_queries(tiny.test)
        for condition in (Condition("label", equals=2), Condition("value", low=0.1, high=0.3)):
            rows = np.flatnonzero(condition.allows(labels, values))
            _, top = exact_knn(tiny.train[rows], tiny.test, 10, Metric.EUCLIDEAN)
            assert np.array_equal(index.search_where(xq, 10, condition).ids, rows[top])
        assert index.search_where(xq, 10, Condition("label", equals=9)).ids.max() == -1
    finally:
        index.close()


LOAD = """
import json, sys
import numpy as np
from annbench.backends.milvus_backend import Milvus
from annbench.metrics import Metric
index = Milvus(Metric.EUCLIDEAN, index_type="HNSW", M=16, efConstruction=100)
index.load(sys.argv[1])
index.set_search_params(efSearch=2000)
print(json.dumps(index.search(np.load(sys.argv[2]), 10).ids.tolist()), flush=True)
sys.stdin.read()  # hold the copy open until the parent says so
index.close()
"""


def test_a_saved_database_opens_in_several_processes_at_once(built, tiny, tmp_path):
    built.set_search_params(**EXACT)
    expected = built.search(built.prepare_queries(tiny.test), 10).ids
    path = tmp_path / "index"
    built.save(path)
    assert path.is_file() and path.stat().st_size > 0
    np.save(tmp_path / "q.npy", tiny.test)
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    other = subprocess.Popen(
        [sys.executable, str(script), str(path), str(tmp_path / "q.npy")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    here = Milvus(Metric.EUCLIDEAN, **HNSW)
    try:  # this process and the other hold the saved database open at once, each a copy
        assert np.array_equal(np.array(json.loads(other.stdout.readline())), expected)
        here.load(path)
        here.set_search_params(**EXACT)
        assert np.array_equal(here.search(here.prepare_queries(tiny.test), 10).ids, expected)
        # built's, here's, the other's
        assert len(owned_folders("milvus", {other.pid, os.getpid()})) == 3
    finally:
        here.close()
        other.communicate("", timeout=60)
    assert other.returncode == 0
    assert not owned_folders("milvus", {other.pid})  # close() removed it
    # the saved index still serves here after save
    assert np.array_equal(built.search(built.prepare_queries(tiny.test), 10).ids, expected)


def test_milvus_lite_runs_inside_this_process_and_close_leaves_nothing(tiny):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    index = Milvus(Metric.EUCLIDEAN, index_type="FLAT")
    index.build(tiny.train[:200])
    folder = index._folder
    assert folder is not None and (folder / "milvus.db").is_dir()
    assert index.process_ids() == []
    # no process was started: milvus-lite serves from threads of this one
    assert not {p.pid for p in psutil.Process().children(recursive=True)} - before
    index.close()
    index.close()  # idempotent
    assert not folder.exists()
    from milvus_lite.server_manager import server_manager_instance

    assert str(folder / "milvus.db") not in server_manager_instance._servers


KILLED = """
import sys, time
from annbench.backends.milvus_backend import Milvus
from annbench.metrics import Metric
import numpy as np
index = Milvus(Metric.EUCLIDEAN, index_type="FLAT")
index.build(np.random.default_rng(0).standard_normal((200, 8)).astype("float32"))
print(index._folder, flush=True)
time.sleep(600)
"""


def test_a_killed_worker_leaves_no_process_and_its_folder_goes_next_time(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    worker = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    folder = Path(worker.stdout.readline().strip())
    assert folder.is_dir() and psutil.Process(worker.pid).children(recursive=True) == []
    os.kill(worker.pid, signal.SIGKILL)  # no finally, no atexit
    worker.wait()
    assert not psutil.pid_exists(worker.pid)
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(folder) in " ".join(
        p.info["cmdline"] or [])]  # fmt: skip
    assert folder.is_dir()  # an embedded database cannot clean up after SIGKILL ...
    index = Milvus(Metric.EUCLIDEAN, index_type="FLAT")
    try:
        index.insert(np.zeros((10, 8), dtype=np.float32))
        assert not folder.exists()  # ... the next instance removes what its dead owner left
    finally:
        index.close()


def test_a_rate_sweep_times_the_phases_with_load_clients_that_load_the_saved_database(
    tiny_path, tmp_path
):
    start = time.monotonic()
    frame = check_pipeline(
        "milvus",
        tiny_path,
        tmp_path,
        grid={"efSearch": [16, 2000]},  # on the default grid's HNSW build
        executor="process",  # it holds the GIL: clients load copies
        rows=2,
    )
    exhaustive = frame["search_params"].map(lambda p: json.loads(p)["efSearch"]) == 2000
    assert frame[exhaustive]["recall"].tolist() == [1.0]
    assert time.monotonic() - start < 120
    assert not owned_folders("milvus", {p.pid for p in psutil.process_iter()} - {os.getpid()})


@pytest.mark.parametrize("library", ["pymilvus", "milvus_lite"])
def test_a_missing_library_names_the_extra(library):
    check_missing_library("milvus", library, "milvus")
