"""Concurrent and rate modes through the one pipeline: plan, worker, record, store, CLI."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from click.testing import CliRunner

from annbench import api
from annbench.cli import main
from annbench.data.synthetic import create_synthetic
from annbench.metrics import Metric
from annbench.record import RunRecord, mode_label
from annbench.registry import load_backend
from annbench.results.store import ResultStore
from annbench.sweep.load import LoadOptions, available_cores, decode_histogram

FAST = LoadOptions(seconds=0.4, warmup=0.1)


@pytest.fixture(scope="module")
def labelled_path(tmp_path_factory):
    """1,500 x 16 clustered angular vectors with labels, 60 queries."""
    path = tmp_path_factory.mktemp("load") / "labelled.hdf5"
    return create_synthetic(path, n=1500, nq=60, d=16, metric=Metric.ANGULAR, n_clusters=20, seed=7)


@pytest.mark.slow
def test_concurrent_mode_stores_one_record_per_client_count_and_resumes(tiny_path, tmp_path):
    run = dict(
        dataset=tiny_path,
        mode="concurrent",
        clients=[1, 2],
        grid={"M": [8], "ef_construction": [40], "ef": [16, 32]},
        runs=1,
        load=FAST,
        results=tmp_path,
        progress=False,
    )
    frame = api.run("hnswlib", **run)
    assert len(frame) == 4 and (frame["status"] == "ok").all()
    assert sorted(frame["clients"]) == [1, 1, 2, 2]
    assert (frame["cores"] == available_cores()).all()
    assert (frame["recall"] > 0.8).all()
    assert (frame["generator_p99_ms"] > 0).all()  # the generator's own p99, beside each figure
    for _, rows in frame.groupby(frame["search_params"].astype(str)):
        assert rows["saturation_qps"].iloc[0] == pytest.approx(rows["qps"].max())
    with ResultStore(tmp_path) as store:
        records = store.records(with_raw=True)
    for record in records:
        histogram = decode_histogram(record.latency_histogram)
        assert histogram.get_total_count() > 0
        assert record.latency_percentile_ms(99) == pytest.approx(record.latency_p99_ms)
        assert record.provenance["load_executor"] == "thread"  # hnswlib releases the GIL
    again = api.run("hnswlib", **run)
    assert again.attrs["sweep"]["stored"] == 0 and again.attrs["sweep"]["skipped"] == 4
    shown = CliRunner().invoke(main, ["summary", "--results", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert f"concurrent mode on {available_cores()} cores" in shown.output
    assert "1 clients" in shown.output and "2 clients" in shown.output
    listed = CliRunner().invoke(main, ["results", "--results", str(tmp_path)])
    assert "concurrent 2 clients" in listed.output and "p999_ms" in listed.output
    assert api.summary(frame).empty  # offered load is no best-QPS figure


@pytest.mark.slow
def test_rate_mode_at_rates_and_shares_of_saturation(tiny_path, tmp_path):
    frame = api.run(
        "faiss-hnsw",
        dataset=tiny_path,
        mode="rate",
        rates=[150, "30%"],
        clients=1,
        grid={"M": [8], "efSearch": [16]},
        runs=1,
        load=LoadOptions(seconds=0.5, warmup=0.1, deadline_ms=50),
        results=tmp_path,
        progress=False,
    )
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    fixed = frame[frame["rate_share"].isna()].iloc[0]
    share = frame[frame["rate_share"].notna()].iloc[0]
    assert fixed["rate"] == 150 and fixed["saturation_qps"] == share["saturation_qps"]
    assert share["rate"] == pytest.approx(0.3 * share["saturation_qps"])
    assert share["saturation_qps"] > 150
    for row in (fixed, share):  # an index of microseconds keeps up with a light load
        assert row["qps"] == pytest.approx(row["rate"], rel=0.5)
        assert row["unfinished"] == 0 and row["deadline_miss"] < 0.05
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"] <= row["latency_max_ms"]
        assert row["generator_max_qps"] > 0 and row["generator_p99_ms"] > 0
    labels = {
        mode_label(r.mode, r.clients, r.rate, r.rate_share, r.cores) for r in frame.itertuples()
    }
    assert f"rate 150/s 1 client, {available_cores()} cores" in labels or (
        available_cores() == 1 and "rate 150/s 1 client, 1 core" in labels
    )


@pytest.mark.slow
def test_filtered_rate_mode_in_client_processes(labelled_path, tmp_path):
    pytest.importorskip("voyager")
    assert not load_backend("voyager").releases_gil  # served by client processes
    frame = api.run(
        "voyager",
        dataset=labelled_path,
        mode="rate",
        rates=[100],
        clients=2,
        filters=["label"],
        grid={
            "M": [8],
            "ef_construction": [40],
            "storage": ["float32"],
            "ef": [32],
            "filter_strategy": ["post"],
            "overfetch": [12],
        },
        runs=1,
        load=FAST,
        results=tmp_path,
        progress=False,
    )
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["workload"] == "label" and row["selectivity"] < 1
    assert row["recall"] > 0.5 and row["qps"] > 30
    with ResultStore(tmp_path) as store:
        (record,) = store.records()
    assert record.provenance["load_executor"] == "process"


def test_load_keys_keep_each_point_apart():
    base = dict(dataset="d", dataset_hash="h", backend="b", build_params={}, search_params={}, k=10)
    keys = {
        RunRecord(**base, mode="single", threads=1).key,
        RunRecord(**base, mode="concurrent", threads=1, clients=1, cores=2).key,
        RunRecord(**base, mode="concurrent", threads=1, clients=2, cores=2).key,
        RunRecord(**base, mode="concurrent", threads=1, clients=2, cores=4).key,
        RunRecord(**base, mode="rate", threads=1, clients=2, cores=2, rate=100.0).key,
        RunRecord(**base, mode="rate", threads=1, clients=2, cores=2, rate=200.0).key,
        RunRecord(**base, mode="rate", threads=1, clients=2, cores=2, rate_share=0.5).key,
        # a share is keyed by the share asked for, not by the rate it came to
        RunRecord(
            **base, mode="rate", threads=1, clients=2, cores=2, rate_share=0.5, rate=812.0
        ).key,
    }
    assert len(keys) == 7
    single = RunRecord(**base, mode="single", threads=1)
    assert single.key == '["h", "b", {}, {}, 10, "single", 1]'  # stored keys stay valid


BAD = [
    (["--mode", "concurrent", "--clients", "0"], "--clients"),
    (["--mode", "concurrent", "--clients", "-1"], "--clients"),
    (["--mode", "concurrent", "--clients", "nan"], "--clients"),
    (["--mode", "concurrent", "--clients", "1e9"], "--clients"),
    (["--mode", "concurrent", "--clients", "100000"], "--clients"),
    (["--mode", "rate", "--rate", "0"], "--rate"),
    (["--mode", "rate", "--rate", "-5"], "--rate"),
    (["--mode", "rate", "--rate", "nan"], "--rate"),
    (["--mode", "rate", "--rate", "inf"], "--rate"),
    (["--mode", "rate", "--rate", "1e12"], "--rate"),
    (["--mode", "rate", "--rate", "0%"], "--rate"),
    (["--mode", "rate", "--rate", "nan%"], "--rate"),
    (["--mode", "rate", "--rate", "5000%"], "--rate"),
    (["--mode", "rate", "--rate", "fast"], "--rate"),
    (["--mode", "rate"], "--rate"),
    (["--mode", "rate", "--rate", "100", "--clients", "1,2"], "one --clients"),
    (["--mode", "concurrent", "--rate", "100"], "--rate"),
    (["--rate", "100"], "--mode"),
    (["--clients", "2"], "--mode"),
    (["--mode", "concurrent", "--threads", "2"], "--clients"),
    (["--mode", "rate", "--rate", "100", "--load-seconds", "0"], "--load-seconds"),
    (["--mode", "rate", "--rate", "100", "--load-seconds", "nan"], "--load-seconds"),
    (["--mode", "rate", "--rate", "100", "--deadline-ms", "-1"], "--deadline-ms"),
    (["--mode", "rate", "--rate", "100", "--schedule", "bursty"], "--schedule"),
    (["--mode", "rate", "--rate", "100", "--runbook", "grow"], "runbook"),
    (["--mode", "rate", "--rate", "1e6", "--load-seconds", "100"], "--load-seconds"),
    (["--mode", "rate", "--rate", "10", "--load-seconds", "86400"], "--load-seconds"),
    (["--mode", "concurrent", "--load-seconds", "86400"], "--load-seconds"),
]


@pytest.mark.parametrize(("args", "names"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_load_options_are_one_line_usage_errors(tiny_path, tmp_path, args, names):
    result = CliRunner().invoke(
        main, ["run", "-b", "hnswlib", "-d", str(tiny_path), "--results", str(tmp_path), *args]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert names in lines[-1], result.output
    assert not (tmp_path / "annbench.sqlite").exists() or _count(tmp_path) == 0


@pytest.mark.slow
def test_ctrl_c_during_a_load_run_keeps_what_is_stored_and_leaves_no_client(tiny_path, tmp_path):
    pytest.importorskip("voyager")  # holds the GIL: its load clients are processes
    env = {**os.environ, "ANNBENCH_RESULTS": str(tmp_path)}
    args = ["-b", "voyager", "-g", "M=8", "-g", "ef_construction=40", "-g", "ef=8,16,32,64"]
    process = subprocess.Popen(
        [sys.executable, "-m", "annbench.cli", "run", "-d", str(tiny_path), *args]
        + ["--mode", "rate", "--rate", "100", "--clients", "2", "--load-seconds", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while _count(tmp_path) < 1:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no record stored in time"
        time.sleep(0.2)
    time.sleep(1.0)  # inside the next setting's load run: its client processes are up
    everything = psutil.Process(process.pid).children(recursive=True)
    assert len(everything) >= 3  # the worker and its two load clients (at least)
    before = _count(tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal does: the whole process group
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    assert _count(tmp_path) >= before >= 1
    for child in everything:
        try:
            child.wait(timeout=20)
        except psutil.NoSuchProcess:
            pass
    assert not [c for c in everything if _alive(c)]
    with sqlite3.connect(tmp_path / "annbench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_a_load_run_killed_by_its_timeout_leaves_no_folder(tiny_path, tmp_path, monkeypatch):
    pytest.importorskip("voyager")  # its load clients are processes sharing a saved index
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the worker's and its clients' temporary folders
    monkeypatch.setattr(tempfile, "tempdir", None)
    frame = api.run(
        "voyager",
        dataset=tiny_path,
        mode="concurrent",
        clients=[2],
        grid={"M": [8], "ef_construction": [40], "storage": ["float32"], "ef": [16]},
        runs=1,
        load=LoadOptions(seconds=60, warmup=0.1),
        timeout=12,
        results=tmp_path / "results",
        progress=False,
    )
    assert list(frame["status"]) == ["failed"] and "timed out" in frame["error"].iloc[0]
    assert not list(temp.glob("annbench-*")), list(temp.iterdir())


def _count(results) -> int:
    path = results / "annbench.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_a_plugin_gets_the_load_modes_without_writing_code(tiny_path, tmp_path, test_backends):
    """A third-party backend that declares nothing about the GIL is served by client
    processes loading its saved index, through the same worker, record and store."""
    frame = api.run(
        "test-where",
        dataset=tiny_path,
        mode="rate",
        rates=[50],
        clients=1,
        runs=1,
        load=FAST,
        results=tmp_path,
        progress=False,
    )
    (row,) = frame.itertuples()
    assert row.status == "ok", row.error
    assert row.recall == pytest.approx(1.0) and row.rate == 50
    with ResultStore(tmp_path) as store:
        (record,) = store.records()
    assert record.provenance["load_executor"] == "process"
    shown = CliRunner().invoke(main, ["summary", "--results", str(tmp_path)])
    assert shown.exit_code == 0, shown.output  # offered rates only: no saturation measured
    assert "50/s" in shown.output
