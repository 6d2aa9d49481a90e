"""Growth curves from ladder records: per-size figures, effort at a recall target, fitted laws,
held-out checks and stored predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annbench.record import RunRecord
from annbench.results.store import ResultStore
from annbench.scaling.curves import (
    growth_table,
    ladder_records,
    pick_at_size,
    prediction_rows,
    size_points,
)

SIZES = [10_000, 20_000, 40_000, 80_000]


def _record(size, ef, recall, qps, build_s, memory, backend="hnswlib", M=16):
    return RunRecord(
        dataset="synthetic",
        dataset_hash=f"h{size}",
        backend=backend,
        build_params={"M": M},
        search_params={"ef": ef},
        k=10,
        mode="single",
        threads=1,
        base_size=size,
        recall=recall,
        qps=qps,
        runs=3,
        build_s=build_s,
        index_bytes=int(memory),
        serving_memory_bytes=int(memory * 1.05),
    )


def _frame(tmp_path, records):
    with ResultStore(tmp_path) as store:
        for record in records:
            store.put(record)
        return store.dataframe()


def _ladder(memory=lambda n: 2e6 + 1600 * n, build=lambda n: 3e-5 * n**1.2):
    """Recall falls with size at a fixed ef; the ef reaching 0.95 grows as 4 * (n/1e4)^0.3."""
    records = []
    for n in SIZES:
        needed = 4 * (n / 1e4) ** 0.3  # ef where recall crosses 0.95
        for ef in (2, 4, 8, 16, 32, 64):
            # recall linear in log(ef) around the crossing, capped
            recall = min(0.999, 0.95 + 0.05 * math.log2(ef / needed))
            qps = 1e6 / (ef * (n / 1e4) ** 0.1)
            records.append(_record(n, ef, max(recall, 0.1), qps, build(n), memory(n)))
    return records


def test_effort_and_qps_at_a_recall_are_interpolated_between_settings(tmp_path):
    ok = ladder_records(_frame(tmp_path, _ladder()))
    points = size_points(ok, targets=[0.95])
    effort = points[points["quantity"] == "effort@0.95"].set_index("size")["value"]
    for n in SIZES:
        assert effort[n] == pytest.approx(4 * (n / 1e4) ** 0.3, rel=1e-6)
    qps = points[points["quantity"] == "qps@0.95"].set_index("size")["value"]
    for n in SIZES:
        assert qps[n] == pytest.approx(1e6 / (effort[n] * (n / 1e4) ** 0.1), rel=1e-6)
    assert set(points["quantity"]) >= {"build_s", "index_bytes", "serving_memory_bytes"}


def test_a_target_reached_by_the_smallest_setting_gives_no_effort_point(tmp_path):
    ok = ladder_records(_frame(tmp_path, _ladder()))
    points = size_points(ok, targets=[0.5, 0.9999])
    assert not (points["quantity"] == "effort@0.5").any()  # ef=2 already does: only "at most"
    assert (points["quantity"] == "qps@0.5").sum() == len(SIZES)
    assert not points["quantity"].str.endswith("@0.9999").any()  # never reached


def test_known_laws_are_recovered_and_pass_their_held_out_check(tmp_path):
    ok = ladder_records(_frame(tmp_path, _ladder()))
    table = growth_table(size_points(ok, targets=[0.95]), at_size=8_000_000).set_index("quantity")
    memory = table.loc["index_bytes"]
    assert memory["model"] == "linear" and memory["held_out_passed"]
    assert memory["predicted"] == pytest.approx(2e6 + 1600 * 8e6, rel=1e-4)
    assert memory["extrapolation"] == pytest.approx(100)
    build = table.loc["build_s"]
    assert build["predicted"] == pytest.approx(3e-5 * 8e6**1.2, rel=1e-4)
    effort = table.loc["effort@0.95"]
    assert effort["predicted"] == pytest.approx(4 * 800**0.3, rel=1e-3)
    assert effort["label"] == "ef for recall 0.95"
    assert table["held_out_passed"].all()
    assert (table["held_out_size"] == SIZES[-1]).all()


def test_the_held_out_check_flags_memory_that_grows_faster_than_a_line(tmp_path):
    records = _ladder(memory=lambda n: 50 * n**1.5)
    ok = ladder_records(_frame(tmp_path, records))
    table = growth_table(size_points(ok, targets=[0.95])).set_index("quantity")
    assert not table.loc["index_bytes", "held_out_passed"]
    assert table.loc["index_bytes", "held_out_error"] < -0.10  # a line bends too little
    assert table.loc["build_s", "held_out_passed"]


def test_predictions_are_rows_of_their_own_with_their_checks(tmp_path):
    ok = ladder_records(_frame(tmp_path, _ladder()))
    table = growth_table(size_points(ok, targets=[0.95]), at_size=10**8)
    rows = prediction_rows(table, "synthetic", "abc")
    assert len(rows) == len(table)
    with ResultStore(tmp_path) as store:
        before = store.count()
        store.put_predictions(rows)
        stored = store.predictions("synthetic")
        assert store.count() == before  # not measurements
    assert len(stored) == len(rows) and (stored["at_size"] == 10**8).all()
    assert stored["extrapolation"].to_numpy() == pytest.approx(np.full(len(rows), 1250))
    assert stored["held_out_error"].notna().all()


def test_sizes_below_two_give_no_law(tmp_path):
    records = [r for r in _ladder() if r.base_size == SIZES[0]]
    ok = ladder_records(_frame(tmp_path, records))
    assert growth_table(size_points(ok)).empty


def test_the_pick_at_a_size_keeps_the_memory_limit_at_the_interval_high_end(tmp_path):
    records = _ladder() + [
        _record(
            r.base_size,
            r.search_params["ef"],
            r.recall,
            r.qps * 2,
            r.build_s,
            r.index_bytes * 3,
            M=32,
        )
        for r in _ladder()
    ]
    ok = ladder_records(_frame(tmp_path, records))
    table = growth_table(size_points(ok, targets=[0.9, 0.95]), at_size=8_000_000)
    free = pick_at_size(table)
    assert free.choice["config"] == "hnswlib [M=32]" and free.choice["recall"] == 0.95
    small = 2e6 + 1600 * 8e6  # M=16's memory; M=32 needs three times as much
    limited = pick_at_size(table, max_memory_bytes=small * 1.5)
    assert limited.choice["config"] == "hnswlib [M=16]"
    assert limited.choice["memory_high"] <= small * 1.5
    too_small = pick_at_size(table, max_memory_bytes=small / 2)
    assert too_small.choice is None and too_small.candidates["problem"].notna().all()
    fast = pick_at_size(table, max_latency_ms=1e-9)
    assert fast.choice is None and fast.candidates["problem"].str.startswith("latency").all()
    only = pick_at_size(table, min_recall=0.9)
    assert set(only.candidates["recall"]) == {0.9}


def test_no_prediction_without_a_held_out_check(tmp_path):
    records = [r for r in _ladder() if r.base_size in SIZES[:2]]
    ok = ladder_records(_frame(tmp_path, records))
    table = growth_table(size_points(ok, targets=[0.95]), at_size=10**7)
    assert len(table) and table["predicted"].isna().all()
    assert prediction_rows(table, "synthetic", None) == []
    assert pick_at_size(table).choice is None


def test_summaries_and_picks_of_a_dataset_leave_subset_runs_out(tmp_path):
    from annbench.results.analysis import successful

    whole = _record(SIZES[-1], 8, 0.9, 100.0, 1.0, 1e6)
    whole.base_size = None
    frame = _frame(tmp_path, [*_ladder(), whole])
    assert len(successful(frame)) == 1
    assert len(successful(frame, subsets=True)) == len(frame)


def test_throughput_is_fitted_as_time_per_query_and_the_model_is_chosen_below_the_held_out():
    from annbench.scaling.curves import fit_quantity

    sizes = np.array([62_500, 125_000, 250_000, 500_000, 1_000_000], float)
    qps = 1 / (50e-6 + 4e-10 * sizes)  # a fixed cost per query plus a part linear in N
    law = fit_quantity("qps@0.95", sizes, qps)
    assert law.model == "linear" and law.per_query
    assert law.held_out.error == pytest.approx(0, abs=1e-9) and law.held_out.passed
    assert law.predict(1e7).value == pytest.approx(1 / (50e-6 + 4e-3), rel=1e-9)
    value, low, high = law.band(np.array([1e7]))
    assert low[0] <= value[0] <= high[0]
    assert law.formula("q/s").startswith("per query: ") and "s * N" in law.formula("q/s")
    power = fit_quantity("qps@0.95", sizes, 3e6 * sizes**-0.5)
    assert power.model == "power" and power.held_out.passed


def test_a_time_interval_reaching_zero_leaves_the_throughput_unbounded_above():
    from annbench.scaling.curves import _inverted
    from annbench.scaling.growth import Prediction

    told = _inverted(Prediction(1e6, 1e-3, -2e-4, 3e-3, 0.9, 10.0, "linear"))
    assert told.value == pytest.approx(1000) and told.low == pytest.approx(1 / 3e-3)
    assert told.high == math.inf


def test_a_line_s_interval_stops_at_zero():
    from annbench.scaling.curves import fit_quantity

    sizes = np.array([1e4, 2e4, 4e4, 8e4])
    law = fit_quantity("build_s", sizes, np.array([1.0, 9.0, 2.0, 12.0]))  # scattered
    _, low, _ = law.band(np.array([1e3, 1e6]))
    assert (low >= 0).all() and law.predict(1e3).low >= 0
