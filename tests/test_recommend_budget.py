"""recommend --measure spends its time budget on contenders: a slow candidate is skipped with
a reason, a timeout is remembered across calls, a candidate that cannot contend is not
rebuilt, the whole call stays within the budget, and the answer says what the budget bought.

Workers are faked (``run_in_worker``) and time is a fake clock (``time.monotonic``): each fake
build advances the clock by its cost, or by the timeout it is given when it costs more."""

import json
import time

import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.recommender import MeasurementPolicy, recommend_index
from annbench.record import RunRecord
from annbench.results.analysis import Constraints
from annbench.results.store import ResultStore
from annbench.sweep import runner

FLAT = "faiss-flat"
IVF = "faiss-ivf"
GRID = {"nlist": [16], "nprobe": [1, 4, 16]}
POLICY = MeasurementPolicy(runs=2, min_seconds=0.0)


class FakeTime:
    """A clock that moves only when a fake worker works."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(time, "monotonic", clock)
    return clock


@pytest.fixture
def workers(monkeypatch, fake_time):
    """Fake workers: ``costs[backend]`` seconds per build (default 5); returns the calls."""
    calls: list[tuple[str, float | None]] = []
    costs: dict[str, float] = {}

    def run_in_worker(job, timeout=None, memory_limit=None, status=None):
        calls.append((job.backend, timeout))
        cost = costs.get(job.backend, 5.0)
        if timeout is not None and cost > timeout:
            fake_time.now += timeout
            for params in job.search_configs:
                yield job.record(params, status="failed", error=f"timed out after {timeout:g} s")
            return
        fake_time.now += cost
        yield _measured(job, job.search_configs[-1])

    monkeypatch.setattr(runner, "run_in_worker", run_in_worker)
    return calls, costs


def _measured(job, params, **fields) -> RunRecord:
    values = dict(
        status="ok",
        recall=0.99,
        qps=1000.0,
        qps_min=990.0,
        qps_max=1010.0,
        runs=job.runs,
        latency_p50_ms=1.0,
        latency_p99_ms=1.5,
        build_s=1.0,
        serving_memory_bytes=100_000,
        index_bytes=100_000,
        n_queries=100,
    )
    return job.record(params, **(values | fields))


def _recommend(tiny, store, budget_s, **kwargs):
    return recommend_index(
        tiny,
        store,
        kwargs.pop("constraints", Constraints(min_recall=0.9)),
        "qps",
        measure=True,
        backends=[FLAT, IVF],
        overrides=GRID,
        time_budget_s=budget_s,
        policy=POLICY,
        **kwargs,
    )


def _stored(tiny, store, **fields) -> None:
    """A past attempt of faiss-ivf nlist=16 on ``tiny`` (as a probe: never a result)."""
    from annbench.registry import load_backend

    values = dict(
        dataset=tiny.name,
        dataset_hash=tiny.content_hash,
        backend=IVF,
        build_params={"nlist": 16},
        search_params={"nprobe": 1},
        k=10,
        mode="single",
        threads=1,
        library_version=load_backend(IVF).library_version(),
        probe=True,
        runs=2,
        recall=0.5,
        qps=5000.0,
        latency_p99_ms=0.5,
        build_s=900.0,
        serving_memory_bytes=100_000,
    )
    store.put(RunRecord(**(values | fields)))


def _skips(outcome) -> dict[str, str]:
    payload = outcome.to_dict()
    return {skip["config"]: skip["reason"] for skip in payload["budget"]["skipped"]}


def test_a_candidate_too_slow_for_the_budget_is_skipped_with_a_reason(tiny, tmp_path, workers):
    calls, costs = workers
    costs[IVF] = 900.0  # as its stored build took
    with ResultStore(tmp_path) as store:
        _stored(tiny, store)
        outcome = _recommend(tiny, store, 120.0)
    assert [backend for backend, _ in calls] == [FLAT]  # never started, so never killed
    (reason,) = [r for config, r in _skips(outcome).items() if config.startswith(IVF)]
    assert "needs about" in reason and "stored build" in reason
    assert outcome.found and outcome.recommendation.choice["backend"] == FLAT


def test_a_timed_out_candidate_is_remembered_and_not_retried_with_the_same_budget(
    tiny, tmp_path, workers
):
    calls, costs = workers
    costs[IVF] = 10_000.0  # never finishes
    with ResultStore(tmp_path) as store:
        first = _recommend(tiny, store, 40.0)
        (timeout,) = [t for backend, t in calls if backend == IVF]
        assert timeout is not None and 2 * timeout > 40.0  # the premise: a retry needs more
        assert any(s.label.startswith(IVF) and "timed out" in s.outcome for s in first.steps)
        calls.clear()
        second = _recommend(tiny, store, 40.0)
        assert IVF not in [backend for backend, _ in calls]
        (reason,) = [r for c, r in _skips(second).items() if c.startswith(IVF)]
        assert f"timed out after {timeout:g} s" in reason
        calls.clear()
        _recommend(tiny, store, 40.0 * 20)  # a budget that gives it clearly more: retried
    assert [t for backend, t in calls if backend == IVF][0] >= 2 * timeout


def test_a_candidate_that_cannot_reach_the_target_is_not_rebuilt(tiny, tmp_path, workers):
    calls, _ = workers
    with ResultStore(tmp_path) as store:
        _stored(tiny, store, search_params={"nprobe": 16}, recall=0.8, build_s=1.0)
        outcome = _recommend(tiny, store, 120.0)
    assert IVF not in [backend for backend, _ in calls]
    (reason,) = [r for c, r in _skips(outcome).items() if c.startswith(IVF)]
    assert "best recall 0.8000" in reason and "below 0.9" in reason


def test_what_is_stored_answers_for_the_candidates_that_cannot_contend(tiny, tmp_path, workers):
    calls, _ = workers
    with ResultStore(tmp_path) as store:
        # flat's answer is stored; faiss-ivf missed the target at nprobe=4 with half its QPS,
        # and each higher nprobe is slower: it cannot beat flat whatever it finds
        flat = dict(backend=FLAT, build_params={}, search_params={}, probe=False, recall=0.99)
        _stored(tiny, store, **flat, qps=1000.0, build_s=0.1)
        _stored(tiny, store, search_params={"nprobe": 4}, recall=0.85, qps=500.0, build_s=1.0)
        outcome = _recommend(tiny, store, 120.0)
    assert calls == [] and outcome.steps == []
    reasons = _skips(outcome)
    assert reasons["faiss-flat [-]"] == "measured on an earlier call (stored)"
    assert reasons["faiss-ivf [nlist=16]"].startswith("cannot contend: at most 500 QPS")
    assert outcome.recommendation.choice["backend"] == FLAT


def test_the_whole_call_stays_within_the_time_budget(tiny, tmp_path, workers, fake_time):
    calls, costs = workers
    costs[FLAT], costs[IVF] = 30.0, 45.0
    with ResultStore(tmp_path) as store:
        # the best stored point, measured with fewer repeats than asked: re-measured at the end
        pick = dict(build_params={"nlist": 32}, probe=False, runs=1, recall=0.99, qps=1e6)
        _stored(tiny, store, **pick)
        start = fake_time.now
        outcome = _recommend(tiny, store, 60.0)
        assert fake_time.now - start <= 60.0
        assert outcome.elapsed_s <= 60.0
    assert all(t is not None and t <= 60.0 for _, t in calls)
    (reason,) = [r for c, r in _skips(outcome).items() if "nlist=32" in c]
    assert reason.startswith("re-measuring the pick needs about")


def test_the_answer_reports_measured_and_skipped_with_reasons(tiny, tiny_path, tmp_path, workers):
    calls, costs = workers
    costs[IVF] = 900.0
    with ResultStore(tmp_path) as store:
        _stored(tiny, store)
    args = ["recommend", "-d", str(tiny_path), "--results", str(tmp_path), "--min-recall", "0.9"]
    args += ["--measure", "-b", FLAT, "-b", IVF, "-g", "nlist=16", "-g", "nprobe=1,4,16"]
    args += ["--time-budget", "120", "--runs", "2", "--min-time", "0"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "measured 1 candidate, skipped 1:" in out.stdout
    assert "faiss-ivf [nlist=16]: needs about" in out.stdout
    payload = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    budget = payload["budget"]
    assert budget["time_budget_s"] == 120 and budget["elapsed_s"] <= 120
    assert budget["measured"] == len(payload["measured"])
    assert {s["config"] for s in budget["skipped"]} >= {"faiss-ivf [nlist=16]"}
    assert all(s["reason"] for s in budget["skipped"])
