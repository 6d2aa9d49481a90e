"""recommend at an offered rate (--at-qps): each configuration judged by its record at the
lowest measured rate at or above the target, only if it kept up, best recall among those
whose p99 fits; the figure's client and core counts stated; usage errors and exit codes;
--measure within its time budget, faked and for real on a tiny dataset."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from tests_helpers import a_record

import annbench
from annbench.cli import main
from annbench.rate_candidates import measure_at_rate
from annbench.recommend_load import at_rate, recommend_at
from annbench.recommender import EXIT_NOTHING_FITS, MeasurementPolicy, recommend_index
from annbench.record import RunRecord
from annbench.registry import load_backend
from annbench.results.analysis import Constraints
from annbench.results.store import ResultStore
from annbench.sweep import runner
from annbench.sweep.load import LoadOptions, available_cores
from annbench.time_budget import Budget

CORES = available_cores()
BUILD = {"M": 8, "ef_construction": 40}


def _rate(tiny, ef: int, rate: float, p99: float, recall: float, **fields) -> RunRecord:
    """A stored rate-mode record of hnswlib ``BUILD`` at ``ef`` on ``tiny``, kept up with
    (achieved = offered) on this machine's cores unless ``fields`` say otherwise."""
    values = dict(
        dataset=tiny.name,
        dataset_hash=tiny.content_hash,
        build_params=BUILD,
        mode="rate",
        threads=1,
        runs=1,
        rate=rate,
        qps=rate,
        clients=2,
        cores=CORES,
        recall=recall,
        latency_p50_ms=p99 / 4,
        latency_p99_ms=p99,
        latency_p999_ms=p99 * 2,
        latency_mean_ms=p99 / 3,
        load_seconds=3.0,
        unfinished=0,
        generator_max_qps=500_000.0,
        serving_memory_bytes=1_000_000,
        build_s=0.5,
        latencies_ns=None,
    )
    return a_record(ef, **(values | fields))


def _store(tmp_path, records) -> ResultStore:
    store = ResultStore(tmp_path)
    for record in records:
        store.put(record)
    return store


def _pick(tiny, store, at_qps, **limits):
    outcome = recommend_index(
        tiny, store, Constraints(**({"max_p99_ms": 1.0} | limits)), at_qps=at_qps
    )
    choice = outcome.recommendation.choice
    return outcome, None if choice is None else choice["search_params"]["ef"]


def test_the_pick_is_the_best_recall_whose_p99_fits_at_the_rate(tiny, tmp_path):
    records = [
        _rate(tiny, 16, 2000, p99=0.4, recall=0.90),
        _rate(tiny, 32, 2000, p99=0.8, recall=0.95),
        _rate(tiny, 64, 2000, p99=1.5, recall=0.98),  # too slow at 2,000 q/s
        a_record(  # single mode: not an answer at a rate
            128, dataset=tiny.name, dataset_hash=tiny.content_hash, recall=0.99, latency_p99_ms=0.5
        ),
    ]
    with _store(tmp_path, records) as store:
        outcome, ef = _pick(tiny, store, 2000)
        assert ef == 32 and outcome.objective == "recall" and outcome.mode == "rate"
        assert _pick(tiny, store, 2000, max_p99_ms=2.0)[1] == 64
        assert _pick(tiny, store, 2000, min_recall=0.96)[1] is None  # 64 has it, too slow
        frame = store.dataframe()
    # the Python API picks the same from a DataFrame holding other modes too
    api = annbench.recommend(frame, max_p99_ms=1.0, at_qps=2000)
    assert api.choice["search_params"] == {"ef": 32} and api.choice["rate"] == 2000
    single = frame[frame["mode"] == "single"]
    assert annbench.recommend(single, max_p99_ms=1.0).choice["search_params"] == {"ef": 128}


def test_a_record_at_a_lower_rate_cannot_vouch_for_the_target(tiny, tmp_path):
    records = [
        _rate(tiny, 64, 1000, p99=0.3, recall=0.98),  # fast, but only measured at 1,000 q/s
        _rate(tiny, 32, 2000, p99=0.8, recall=0.95),
        _rate(tiny, 16, 1000, p99=0.2, recall=0.90),  # fits at 1,000 q/s ...
        _rate(tiny, 16, 4000, p99=3.0, recall=0.90),  # ... but 4,000 is the rate to judge 2,000
    ]
    with _store(tmp_path, records) as store:
        outcome, ef = _pick(tiny, store, 2000)
        assert ef == 32
        assert _pick(tiny, store, 1000)[1] == 64  # at 1,000 q/s it answers
        found = at_rate(store.dataframe(), 2000, CORES)
        by_ef = {row["search_params"]["ef"]: row for _, row in found.rows.iterrows()}
        assert set(by_ef) == {16, 32} and by_ef[16]["rate"] == 4000
        assert [p["ef"] for p in found.below["search_params"]] == [64]
        # between measured rates, the figure is the next rate up, and says so
        outcome, ef = _pick(tiny, store, 1500)
        assert ef == 32
        figure = outcome.to_dict()["choice"]["figure"]
        assert "at 2,000 q/s (the lowest rate measured at or above 1,500 q/s)" in figure


def test_a_rate_not_kept_up_with_is_not_met(tiny, tmp_path):
    records = [
        _rate(tiny, 64, 2000, p99=0.5, recall=0.98, qps=1700.0),  # 15 % short
        _rate(tiny, 48, 2000, p99=0.5, recall=0.97, unfinished=3),  # left queries unanswered
        _rate(tiny, 32, 2000, p99=0.8, recall=0.95, qps=1930.0),  # 3.5 % short: kept up
    ]
    with _store(tmp_path, records) as store:
        outcome, ef = _pick(tiny, store, 2000)
        assert ef == 32
        _, none = _pick(tiny, store, 2000, min_recall=0.96)
        assert none is None
        closest = _pick(tiny, store, 2000, min_recall=0.96)[0].recommendation.closest
        reasons = dict(zip(closest["config"], closest["violations"], strict=True))
        assert any("served 1,700 of 2,000 queries/s offered" in r for r in reasons.values())
        assert any("3 queries unanswered" in r for r in reasons.values())


def test_a_short_low_rate_run_is_judged_by_its_poisson_spread(tiny, tmp_path):
    """200 q/s for 1 s offers 200 +- 14 arrivals: 10 % short is noise; 6 % short over
    20,000 arrivals is not."""
    records = [
        _rate(tiny, 16, 200, p99=0.5, recall=0.9, qps=180.0, load_seconds=1.0),
        _rate(tiny, 32, 2000, p99=0.5, recall=0.9, qps=1880.0, load_seconds=10.0),
    ]
    with _store(tmp_path, records) as store:
        frame = store.dataframe()
    low = at_rate(frame, 200, CORES).rows
    high = at_rate(frame, 2000, CORES).rows
    assert low.set_index(low["search_params"].map(lambda p: p["ef"]))["sustained"].to_dict() == {
        16: True,
        32: False,
    }
    assert not high["sustained"].any()


def test_the_core_count_of_the_figure_is_stated(tiny, tmp_path):
    other = CORES + 6
    records = [
        _rate(tiny, 32, 2000, p99=0.8, recall=0.95, cores=other, clients=8),
        _rate(tiny, 16, 2000, p99=0.9, recall=0.90),
        # the same configuration on this machine's cores and on others: this machine's wins
        _rate(tiny, 16, 2000, p99=0.1, recall=0.90, cores=other),
    ]
    with _store(tmp_path, records) as store:
        outcome, ef = _pick(tiny, store, 2000)
        assert ef == 32
        rows = at_rate(store.dataframe(), 2000, CORES).rows
    sixteen = rows[rows["search_params"].map(lambda p: p["ef"]) == 16].iloc[0]
    assert sixteen["cores"] == CORES and sixteen["latency_p99_ms"] == 0.9
    payload = outcome.to_dict()
    assert payload["choice"]["cores"] == other and payload["machine_cores"] == CORES
    assert payload["choice"]["figure"] == (
        f"p99 0.800 ms at 2,000 q/s measured with 8 clients on {other} cores "
        f"(this machine has {CORES}: the figure is for {other})"
    )
    out = CliRunner().invoke(
        main,
        [
            "recommend",
            "-d",
            str(tiny.path),
            "--results",
            str(tmp_path),
            "--at-qps",
            "2000",
            "--max-p99-ms",
            "1",
        ],
    )
    assert out.exit_code == 0, out.output
    assert f"p99 0.800 ms at 2,000 q/s measured with 8 clients on {other} cores" in out.output
    assert f"this machine has {CORES}" in out.output
    js = CliRunner().invoke(
        main,
        [
            "recommend",
            "-d",
            str(tiny.path),
            "--results",
            str(tmp_path),
            "--at-qps",
            "2000",
            "--max-p99-ms",
            "1",
            "--json",
        ],
    )
    payload = json.loads(js.stdout)
    assert payload["choice"]["cores"] == other and payload["at_qps"] == 2000
    assert f"on {other} cores" in payload["choice"]["figure"]


@pytest.mark.parametrize(
    ("generator", "said"),
    [
        ({"generator_max_qps": 3000.0}, "near the load generator's own ceiling (3,000 q/s)"),
        (
            {"generator_max_qps": 1e6, "generator_p99_ms": 0.5},
            "p99 (0.8 ms) is under 2x the load generator's own p99 at this load (0.5 ms)",
        ),
    ],
    ids=["offered near its ceiling", "p99 near its own"],
)
def test_a_figure_near_the_generators_own_limits_says_so(tiny, tmp_path, generator, said):
    records = [_rate(tiny, 32, 2000, p99=0.8, recall=0.95, **generator)]
    with _store(tmp_path, records) as store:
        outcome, ef = _pick(tiny, store, 2000)
    assert ef == 32
    (warning,) = outcome.to_dict()["choice"]["warnings"]
    assert said in warning
    assert outcome.to_dict()["choice"]["near_generator_ceiling"] is True


def _cli(tiny, tmp_path, *args):
    base = ["recommend", "-d", str(tiny.path), "--results", str(tmp_path)]
    return CliRunner().invoke(main, [*base, *args])


def test_nothing_fits_or_nothing_measured_at_the_rate_exits_3(tiny, tmp_path):
    records = [
        _rate(tiny, 32, 2000, p99=0.8, recall=0.95),
        _rate(tiny, 64, 1000, p99=0.5, recall=0.98),
    ]
    _store(tmp_path, records).close()
    slow = _cli(tiny, tmp_path, "--at-qps", "2000", "--max-p99-ms", "0.5")
    assert slow.exit_code == EXIT_NOTHING_FITS, slow.output
    assert "breaks p99 0.800 ms > 0.5 ms" in slow.output
    unmeasured = _cli(tiny, tmp_path, "--at-qps", "3000", "--max-p99-ms", "5", "--json")
    assert unmeasured.exit_code == EXIT_NOTHING_FITS, unmeasured.output
    payload = json.loads(unmeasured.stdout)
    assert not payload["found"]
    assert f"annbench run -d {tiny.name} -b hnswlib --mode rate --rate 3000" in payload["hint"]
    assert "measured only below it, up to 2,000 queries/s" in payload["hint"]
    empty = tmp_path / "empty"
    _store(empty, [a_record(dataset=tiny.name, dataset_hash=tiny.content_hash)]).close()
    none = _cli(tiny, empty, "--at-qps", "2000", "--max-p99-ms", "1")
    assert none.exit_code == EXIT_NOTHING_FITS, none.output
    assert "--mode rate --rate 2000" in none.output and "or add --measure" in none.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--at-qps", "0", "--max-p99-ms", "1"], "--at-qps"),
        (["--at-qps", "-5", "--max-p99-ms", "1"], "--at-qps"),
        (["--at-qps", "nan", "--max-p99-ms", "1"], "--at-qps"),
        (["--at-qps", "inf", "--max-p99-ms", "1"], "--at-qps"),
        (["--at-qps", "1e9", "--max-p99-ms", "1"], "--at-qps"),
        (["--at-qps", "lots", "--max-p99-ms", "1"], "--at-qps"),
        (["--at-qps", "2000"], "needs --max-p99-ms"),
        (["--at-qps", "2000", "--max-p99-ms", "0"], "--max-p99-ms"),
        (["--at-qps", "2000", "--max-p99-ms", "1", "--mode", "batch"], "--mode batch"),
        (["--at-qps", "2000", "--max-p99-ms", "1", "--threads", "2"], "--threads"),
        (["--at-qps", "2000", "--max-p99-ms", "1", "--max-latency-ms", "1"], "--max-p99-ms"),
        (
            ["--at-qps", "2000", "--max-p99-ms", "1", "--optimize", "qps", "--min-recall", "0.9"],
            "qps",
        ),
        (["--at-qps", "2000", "--max-p99-ms", "1", "--load-seconds", "1"], "--measure"),
        (["--max-p99-ms", "1", "--load-seconds", "1"], "--at-qps"),
        (["--mode", "rate", "--max-p99-ms", "1"], "--at-qps"),
        (["--mode", "concurrent", "--max-p99-ms", "1"], "--at-qps"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(tiny, tmp_path, args, says):
    _store(tmp_path, [_rate(tiny, 32, 2000, p99=0.8, recall=0.95)]).close()
    out = _cli(tiny, tmp_path, *args)
    assert out.exit_code == 2, out.output
    assert len(out.output.strip().splitlines()) == 1 and says in out.output


def test_rate_mode_with_mode_rate_spelled_out_is_the_same_question(tiny, tmp_path):
    _store(tmp_path, [_rate(tiny, 32, 2000, p99=0.8, recall=0.95)]).close()
    out = _cli(tiny, tmp_path, "--at-qps", "2000", "--max-p99-ms", "1", "--mode", "rate")
    assert out.exit_code == 0 and "Recommended: hnswlib [M=8 ef_construction=40] [ef=32]" in (
        out.output
    )


# --- --measure -----------------------------------------------------------------------------


def _single(tiny, ef: int, recall: float, **fields) -> RunRecord:
    """A stored single-mode full measurement of hnswlib ``BUILD`` at ``ef``."""
    values = dict(
        dataset=tiny.name,
        dataset_hash=tiny.content_hash,
        build_params=BUILD,
        library_version=load_backend("hnswlib").library_version(),
        recall=recall,
        qps=20_000.0,  # 0.05 ms a query
        latency_p99_ms=0.1,
        build_s=10.0,
        serving_memory_bytes=1_000_000,
        provenance={},  # measured on this machine: its build time counts
        created_at=f"2024-01-01T00:00:{ef:02d}+00:00",
    )
    return a_record(ef, **(values | fields))


def _measure(tiny, store, budget_s, at_qps=1000.0, **constraints):
    return measure_at_rate(
        tiny,
        store,
        Constraints(**({"max_p99_ms": 1.0} | constraints)),
        "recall",
        at_qps=at_qps,
        k=10,
        workload="plain",
        dataset_hash=tiny.content_hash,
        backends=None,
        budget=Budget(budget_s),
        build_threads=None,
        load=LoadOptions(seconds=5.0, warmup=0.5),
        frame=lambda: store.dataframe(),
        say=lambda text: None,
    )


@pytest.fixture
def load_jobs(monkeypatch):
    """Fake workers for load jobs: each setting kept up with at p99 0.5 ms; the jobs run."""
    jobs = []

    def run_in_worker(job, timeout=None, memory_limit=None, status=None):
        jobs.append((job, timeout))
        for params in job.search_configs:
            yield from job.records(
                params, recall=0.9, qps=job.rates[0], latency_p99_ms=0.5, load_seconds=5.0
            )

    monkeypatch.setattr(runner, "run_in_worker", run_in_worker)
    return jobs


def test_measure_never_starts_a_load_job_the_budget_cannot_hold(tiny, tmp_path, load_jobs):
    singles = [_single(tiny, 10, 0.80), _single(tiny, 20, 0.90), _single(tiny, 40, 0.95)]
    # a 10 s build, then 6 s a setting: 3 settings need over 30 s, one about 23 s
    with _store(tmp_path, singles) as store:
        steps, skips = _measure(tiny, store, 12.0)
        assert not load_jobs and not steps
        (skip,) = skips
        assert skip.reason.startswith("needs about") and "for one setting" in skip.reason
        steps, skips = _measure(tiny, store, 30.0)
        ((job, timeout),) = load_jobs
        assert job.search_configs == ({"ef": 40},)  # the likeliest winner, alone
        assert job.mode == "rate" and job.rates == (1000.0,) and job.clients == (CORES,)
        assert job.cores == CORES and job.load.seconds == 5.0 and timeout <= 30.0
        (step,) = steps
        assert step.label.endswith("at 1,000 q/s") and "ef=40: recall 0.9000" in step.outcome
        # measured at the rate now: settled, and the rest cannot beat what is stored
        steps, skips = _measure(tiny, store, 60.0)
        assert len(load_jobs) == 1 and not steps
        assert "cannot beat" in skips[0].reason or "earlier call" in skips[0].reason


def test_measure_keeps_only_settings_that_make_the_rate_plausible(tiny, tmp_path, load_jobs):
    singles = [
        _single(tiny, 10, 0.80),
        _single(tiny, 20, 0.90, latency_p99_ms=2.0),  # single p99 over the limit
        _single(tiny, 40, 0.95, qps=20.0),  # 50 ms a query: 1,000 q/s would swamp the clients
    ]
    with _store(tmp_path, singles) as store:
        _measure(tiny, store, 60.0)
    ((job, _),) = load_jobs
    assert job.search_configs == ({"ef": 10},)


@pytest.mark.slow
def test_measure_at_qps_for_real_on_a_tiny_dataset(tiny, tmp_path):
    """Single-query bisection finds the candidates, a load run measures them at the rate,
    and the answer comes from the rate-mode record it stored, within the time budget."""
    heard = []
    with ResultStore(tmp_path) as store:
        outcome = recommend_index(
            tiny,
            store,
            Constraints(max_p99_ms=20.0),
            measure=True,
            backends=["hnswlib"],
            overrides={"M": [8], "ef_construction": [40], "ef": [10, 40]},
            time_budget_s=45.0,
            policy=MeasurementPolicy(runs=1, min_seconds=0.0),
            progress=heard.append,
            at_qps=200.0,
            load=LoadOptions(seconds=0.5, warmup=0.2),
        )
        stored = [r for r in store.records() if r.mode == "rate"]
    assert outcome.elapsed_s <= 45.0
    assert stored and all(r.rate == 200.0 and r.cores == CORES for r in stored)
    assert any(step.label.endswith("at 200 q/s") for step in outcome.steps)
    choice = outcome.recommendation.choice
    assert choice is not None and choice["mode"] == "rate" and choice["rate"] == 200.0
    assert choice["latency_p99_ms"] <= 20.0 and choice["recall"] > 0.5
    assert f"on {CORES} core" in outcome.to_dict()["choice"]["figure"]
    assert any("Measuring at 200 q/s" in line for line in heard)


def test_rows_that_vouch_keep_their_load_mean(tiny, tmp_path):
    with _store(tmp_path, [_rate(tiny, 32, 2000, p99=0.9, recall=0.95)]) as store:
        result, found = recommend_at(
            store.dataframe(), Constraints(max_p99_ms=1.0), "recall", 2000, CORES
        )
    assert result.choice["load_mean_ms"] == pytest.approx(0.3)
    assert isinstance(found.rows, pd.DataFrame) and len(found.rows) == 1


# --- --measure: cheaper settings of a build found too slow at the rate ----------------------


def _ef_recall(ef: int) -> float:
    """The fake index's recall at ``ef``: 0.9 is first reached at ef=75 on the default ladder
    (..., 48, 60, 75, 94, 118, ..., 451, 512)."""
    return 1 - 6.4 / ef


@pytest.fixture
def ladder_jobs(monkeypatch):
    """Fake workers for an index whose recall grows with ef (``_ef_recall``) and whose p99 at
    the rate is ``p99_per_ef[0] * ef`` ms: single-mode jobs bisect the ladder for the recall
    target as the real worker does, load jobs keep up at the offered rate."""
    from annbench.sweep.measure import bisect_ladder

    jobs, p99_per_ef = [], [0.01]

    def run_in_worker(job, timeout=None, memory_limit=None, status=None):
        jobs.append(job)
        if job.mode == "single":
            probes = []

            def meets(i):
                ef = job.search_configs[i]["ef"]
                probes.append(job.record({"ef": ef}, recall=_ef_recall(ef), qps=20_000.0))
                return _ef_recall(ef) >= job.target_recall

            chosen = bisect_ladder(len(job.search_configs), meets)
            yield from probes
            if chosen is not None:
                ef = job.search_configs[chosen]["ef"]
                yield job.record({"ef": ef}, recall=_ef_recall(ef), qps=20_000.0, runs=1)
            return
        for params in job.search_configs:
            yield from job.records(
                params,
                recall=_ef_recall(params["ef"]),
                qps=job.rates[0],
                latency_p99_ms=p99_per_ef[0] * params["ef"],
                load_seconds=5.0,
            )

    monkeypatch.setattr(runner, "run_in_worker", run_in_worker)
    return jobs, p99_per_ef


def _measure_pick(tiny, store, budget_s):
    """``_measure`` for recall >= 0.9 and p99 <= 1 ms at 1,000 q/s, then the pick."""
    steps, skips = _measure(tiny, store, budget_s, min_recall=0.9)
    constraints = Constraints(max_p99_ms=1.0, min_recall=0.9)
    result, _ = recommend_at(store.dataframe(), constraints, "recall", 1000.0, CORES)
    return steps, skips, None if result.choice is None else result.choice["search_params"]["ef"]


@pytest.mark.parametrize("single_p99", [0.1, 2.0], ids=["plausible", "single-p99-over"])
def test_measure_tries_cheaper_settings_when_the_candidate_is_too_slow(
    tiny, tmp_path, ladder_jobs, single_p99
):
    """The single-query bisection left one candidate, ef=512 (too slow at the rate: 5.12 ms,
    or already over the p99 limit in single mode); ef=75 reaches recall 0.9 and ef=94 is the
    best recall whose p99 fits. Until the budget is spent, recommend does not give up."""
    jobs, _ = ladder_jobs
    singles = [_single(tiny, 512, _ef_recall(512), latency_p99_ms=single_p99)]
    with _store(tmp_path, singles) as store:
        steps, skips, ef = _measure_pick(tiny, store, 600.0)
        assert ef == 94, [s.outcome for s in steps]
        stored = store.dataframe(history=True)
    modes = [job.mode for job in jobs]
    probe = next(job for job in jobs if job.mode == "single")
    # the cheapest ef reaching the floor, by single-query probes below the too-slow one
    assert probe.target_recall == 0.9 and max(p["ef"] for p in probe.search_configs) < 512
    first_cheaper = jobs[modes.index("single") + 1]
    assert first_cheaper.mode == "rate" and first_cheaper.search_configs[0] == {"ef": 75}
    assert not any("nothing fits" in skip.reason for skip in skips)
    # probes stay probes: never an ordinary single-mode result
    cheaper = stored["search_params"].map(lambda p: p["ef"] < 512)
    single = stored[(stored["mode"] == "single") & cheaper]
    assert len(single) and single["probe"].astype(bool).all()
    # measured at the rate, nothing is measured again
    before = len(jobs)
    with ResultStore(tmp_path) as store:
        assert _measure_pick(tiny, store, 600.0)[2] == 94
    assert len(jobs) == before


def test_measure_says_nothing_fits_only_when_the_cheapest_setting_is_too_slow(
    tiny, tmp_path, ladder_jobs
):
    jobs, p99_per_ef = ladder_jobs
    p99_per_ef[0] = 0.02  # ef=75, the cheapest reaching recall 0.9, has p99 1.5 ms
    with _store(tmp_path, [_single(tiny, 512, _ef_recall(512))]) as store:
        steps, skips, ef = _measure_pick(tiny, store, 600.0)
    assert ef is None
    assert [job.mode for job in jobs] == ["rate", "single", "rate"]
    assert jobs[-1].search_configs[0] == {"ef": 75}
    (skip,) = skips
    assert skip.reason == "ef=75 is too slow at 1,000 q/s and no cheaper ef reaches recall 0.9"


def test_measure_says_when_the_budget_cannot_hold_a_cheaper_setting(tiny, tmp_path, ladder_jobs):
    jobs, _ = ladder_jobs
    with _store(tmp_path, [_single(tiny, 512, _ef_recall(512))]) as store:
        steps, skips, ef = _measure_pick(tiny, store, 30.0)  # one load job of one setting
    assert ef is None and [job.mode for job in jobs] == ["rate"]
    (skip,) = skips
    assert "ef=512 is too slow at 1,000 q/s" in skip.reason
    assert "needs about" in skip.reason and "s left" in skip.reason


def test_measure_keeps_cheaper_settings_within_the_grid_given(tiny, tmp_path, ladder_jobs):
    """-g ef=80,512: the ladder below the too-slow ef=512 starts at 80, as the bisection's."""
    jobs, _ = ladder_jobs
    with _store(tmp_path, [_single(tiny, 512, _ef_recall(512))]) as store:
        measure_at_rate(
            tiny,
            store,
            Constraints(max_p99_ms=1.0, min_recall=0.9),
            "recall",
            at_qps=1000.0,
            k=10,
            workload="plain",
            dataset_hash=tiny.content_hash,
            backends=None,
            budget=Budget(600.0),
            build_threads=None,
            load=LoadOptions(seconds=5.0, warmup=0.5),
            frame=lambda: store.dataframe(),
            say=lambda text: None,
            overrides={"ef": [80, 512]},
        )
    measured = [p["ef"] for job in jobs for p in job.search_configs]
    assert len(jobs) > 1 and min(measured) == 80
