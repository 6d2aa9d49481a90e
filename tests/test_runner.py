import numpy as np
import pytest

from annbench.errors import AnnbenchError
from annbench.results.store import ResultStore
from annbench.sweep.measure import MAX_REPEATS, Timing, _repeat
from annbench.sweep.runner import pending_runs, plan_sweep, run_sweep

SMALL = {"M": [8], "ef_construction": [40], "ef": [10, 40]}


def test_sweep_builds_once_per_config_and_stores_every_setting(tiny, tmp_path):
    jobs = plan_sweep(tiny, ["hnswlib", "faiss-flat"], k=10, runs=2, min_seconds=0, overrides=SMALL)
    assert [(j.backend, len(j.search_configs)) for j in jobs] == [("hnswlib", 2), ("faiss-flat", 1)]
    seen = []
    with ResultStore(tmp_path) as store:
        summary = run_sweep(jobs, store, progress=seen.append)
        records = store.records(with_raw=True)
    assert summary.stored == 3 and not summary.failed and len(seen) == 3
    by_ef = {r.search_params.get("ef"): r for r in records if r.backend == "hnswlib"}
    assert by_ef[40].recall >= by_ef[10].recall
    flat = next(r for r in records if r.backend == "faiss-flat")
    assert flat.recall == 1.0 and flat.ann_benchmarks_recall == 1.0
    for r in records:
        assert r.status == "ok" and r.runs == 2 and r.n_queries == 100
        assert r.qps > 0 and r.qps_min <= r.qps_q1 <= r.qps <= r.qps_q3 <= r.qps_max
        assert 0 < r.latency_p50_ms <= r.latency_p95_ms <= r.latency_p99_ms <= r.latency_p999_ms
        assert r.build_s > 0 and r.index_bytes > 0 and r.peak_rss_bytes > 0
        assert r.threads == 1 and "hnswlib" in r.provenance["libraries"]
        assert r.provenance["build_threads"] >= 1 and r.provenance["cpu_count"] >= 1
        assert r.ids.shape == (100, 10) and r.latencies_ns.shape == (100,)
    # builds are shared: both hnswlib settings report the same build time
    assert by_ef[10].build_s == by_ef[40].build_s


def test_rerun_resumes_and_force_redoes(tiny, tmp_path):
    jobs = plan_sweep(tiny, ["hnswlib"], runs=1, min_seconds=0, overrides=SMALL)
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store)
        assert pending_runs(jobs, store) == 0
        again = run_sweep(jobs, store)
        assert again.stored == 0 and again.skipped == 2
        forced = run_sweep(jobs, store, force=True)
        assert forced.stored == 2 and store.count() == 2


def test_batch_mode_records_threads_and_no_latency_percentiles(tiny, tmp_path):
    jobs = plan_sweep(
        tiny,
        ["faiss-ivf"],
        mode="batch",
        threads=2,
        runs=1,
        min_seconds=0,
        overrides={"nlist": [16], "nprobe": [4]},
    )
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store)
        (record,) = store.records()
    assert record.mode == "batch" and record.threads == 2
    assert record.latency_p50_ms is None and record.qps > 0 and record.recall > 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be between 1"),
        ({"k": 5000}, "k must be between 1 and the 2000"),
        ({"k": 101}, "exceeds the 100 true neighbours"),
        ({"overrides": {"nprobe": [1]}}, "Grid key 'nprobe' is not a parameter of hnswlib"),
        ({"overrides": {"ef": [-3]}}, "ef must be an integer >= 1"),
        ({"mode": "turbo"}, "Mode 'turbo' not valid"),
        ({"runs": 0}, "runs must be at least 1"),
        ({"min_seconds": -0.5}, "minimum timing seconds must be 0 or more"),
        ({"min_seconds": float("nan")}, "minimum timing seconds must be 0 or more"),
    ],
)
def test_bad_sweep_parameters_fail_before_running(tiny, kwargs, message):
    with pytest.raises(AnnbenchError, match=message):
        plan_sweep(tiny, ["hnswlib"], **kwargs)


def test_crashing_worker_is_recorded_and_the_sweep_goes_on(tiny, tmp_path, test_backends):
    jobs = plan_sweep(
        tiny, ["test-crash", "faiss-flat"], runs=1, min_seconds=0, overrides={"level": [1, 2]}
    )
    with ResultStore(tmp_path) as store:
        summary = run_sweep(jobs, store)
        records = store.records()
    failed = [r for r in records if r.status == "failed"]
    assert len(failed) == 2 and all("SIGSEGV" in r.error for r in failed)
    assert any(r.backend == "faiss-flat" and r.status == "ok" for r in records)
    assert len(summary.failed) == 2


@pytest.mark.slow
def test_hanging_worker_times_out(tiny, tmp_path, test_backends):
    jobs = plan_sweep(tiny, ["test-hang"], runs=1, min_seconds=0, overrides={"level": [1, 2]})
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store, timeout=10)
        records = {r.search_params["level"]: r for r in store.records()}
    assert records[1].status == "ok"
    assert records[2].status == "failed" and "timed out after 10 s" in records[2].error


def test_one_failing_search_setting_keeps_the_others(tiny, tmp_path, test_backends):
    jobs = plan_sweep(tiny, ["test-raise"], runs=1, min_seconds=0, overrides={"level": [1, 2, 3]})
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store)
        records = {r.search_params["level"]: r for r in store.records()}
    assert records[1].status == records[3].status == "ok"
    assert records[2].status == "failed" and "library refused level 2" in records[2].error


def test_duplicate_ids_are_counted_as_misses(tiny, tmp_path, test_backends):
    jobs = plan_sweep(tiny, ["test-duplicates"], runs=1, min_seconds=0, overrides={"level": [1]})
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store)
        (record,) = store.records()
    assert record.duplicates == 100
    assert record.recall == pytest.approx(0.9)


def test_labelled_dataset_records_label_metrics(tiny, tmp_path):
    jobs = plan_sweep(tiny, ["faiss-flat"], runs=1, min_seconds=0)
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store)
        (record,) = store.records()
    assert 0 < record.label_precision <= record.label_top_k_accuracy <= 1
    assert 0 < record.label_map <= 1


def test_batch_mode_measures_each_thread_count_on_one_build(tiny, tmp_path):
    jobs = plan_sweep(
        tiny,
        ["faiss-ivf"],
        mode="batch",
        threads=(1, 2),
        runs=1,
        min_seconds=0,
        overrides={"nlist": [16], "nprobe": [4, 8]},
    )
    with ResultStore(tmp_path) as store:
        summary = run_sweep(jobs, store)
        records = store.records()
        assert pending_runs(jobs, store) == 0
    assert summary.stored == 4
    assert sorted((r.search_params["nprobe"], r.threads) for r in records) == [
        (4, 1),
        (4, 2),
        (8, 1),
        (8, 2),
    ]
    assert len({r.build_s for r in records}) == 1  # one build served every thread count
    by = {(r.search_params["nprobe"], r.threads): r.recall for r in records}
    assert by[(4, 1)] == by[(4, 2)] and by[(8, 1)] == by[(8, 2)]


def test_single_mode_refuses_thread_counts(tiny):
    with pytest.raises(AnnbenchError, match="use --mode batch"):
        plan_sweep(tiny, ["faiss-flat"], threads=(1, 2))


def test_min_time_adds_repeats_until_the_timed_total_is_reached(tiny, tmp_path):
    def repeat_taking(seconds):
        return lambda: Timing(qps=[100 / seconds], ids=np.zeros((100, 1)), latencies_ns=None)

    assert len(_repeat(3, 0.0, repeat_taking(0.1)).qps) == 3
    assert len(_repeat(3, 0.55, repeat_taking(0.1)).qps) == 6  # 0.6 s timed
    assert len(_repeat(3, 0.15, repeat_taking(0.1)).qps) == 3  # runs is still the minimum
    assert len(_repeat(1, 5.0, repeat_taking(1e-6)).qps) == MAX_REPEATS

    jobs = plan_sweep(tiny, ["faiss-flat"], runs=1, min_seconds=0.25)
    with ResultStore(tmp_path) as store:
        run_sweep(jobs, store)
        (record,) = store.records()
    assert record.runs > 1  # 100 tiny queries take far less than 0.25 s per repeat
