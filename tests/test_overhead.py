"""The timed call is each library's fastest: Annoy's queries prepared as lists, and
benchmarks/overhead.py's comparison (its output structure, never its timings)."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from annbench.index import as_float32
from annbench.registry import load_backend
from annbench.sweep.filtering import keep_allowed
from annbench.sweep.measure import time_search

OVERHEAD = Path(__file__).parent.parent / "benchmarks" / "overhead.py"
TINY_CASES = {
    "annoy": ({"n_trees": 5}, {"search_k": 200}),
    "faiss-flat": ({}, {}),
    "hnswlib": ({"M": 8, "ef_construction": 40}, {"ef": 20}),
}


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead_benchmark", OVERHEAD)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def annoy_index(tiny):
    index = load_backend("annoy")(tiny.metric, n_trees=5)
    index.build(tiny.train)
    index.set_search_params(search_k=200)
    return index


def test_annoy_prepares_each_query_as_a_list_of_the_same_values(annoy_index, tiny):
    prepared = annoy_index.prepare_queries(tiny.test)
    assert len(prepared) == len(tiny.test)
    assert all(type(q) is list for q in prepared)
    assert np.array_equal(np.array(prepared.tolist(), dtype=np.float32), as_float32(tiny.test))
    # indexed as the callers index it: one row, a slice (warm-up), rows (filter groups)
    assert type(prepared[3]) is list
    assert all(type(q) is list for q in prepared[:5])
    assert [len(q) for q in prepared[np.array([7, 2])]] == [tiny.test.shape[1]] * 2


def test_annoy_lists_find_what_array_rows_find(annoy_index, tiny):
    rows = as_float32(tiny.test)
    prepared = annoy_index.prepare_queries(tiny.test)
    from_lists, from_rows = annoy_index.search(prepared, 10), annoy_index.search(rows, 10)
    assert np.array_equal(from_lists.ids, from_rows.ids)
    assert np.array_equal(from_lists.distances, from_rows.distances)
    for i in range(len(rows)):
        assert annoy_index.search_one(prepared[i], 10) == annoy_index.search_one(rows[i], 10)


@pytest.mark.parametrize("mode", ["single", "batch"])
def test_annoy_lists_go_through_the_runner_and_filters(annoy_index, tiny, mode):
    expected = annoy_index.search(as_float32(tiny.test), 10).ids
    timing = time_search(annoy_index, tiny.test, 10, mode, 1, n=len(tiny.train), backend="annoy")
    assert np.array_equal(timing.ids, expected)
    # post-filtering (the filter workloads' path) takes rows of the prepared queries
    allowed = np.arange(len(tiny.train)) % 2 == 0
    prepared = annoy_index.prepare_queries(tiny.test)
    group = np.array([0, 5, 9])
    found = keep_allowed(annoy_index.search(prepared[group], 40).ids, allowed, 10)
    assert np.array_equal(
        found, keep_allowed(annoy_index.search(as_float32(tiny.test[group]), 40).ids, allowed, 10)
    )


def test_library_loops_search_what_annbench_searches(overhead, tiny):
    """The control loops make the same search as annbench, on the library's own query form."""
    for backend, (build, search) in TINY_CASES.items():
        index = load_backend(backend)(tiny.metric, **build)
        index.build(tiny.train)
        index.set_search_params(**search)
        direct = overhead.direct_calls(backend, index, search)
        ours = index.prepare_queries(tiny.test)
        theirs = direct.prepare(as_float32(tiny.test))
        assert backend != "annoy" or type(theirs[0]) is list  # Annoy's fastest form
        for i in range(5):
            found = direct.single(theirs[i], 10)
            ids = found if backend == "annoy" else found[backend == "faiss-flat"][0]
            assert list(ids) == list(index.search_one(ours[i], 10)), backend


def test_overhead_reports_every_backend_and_mode(overhead, tiny):
    rows = list(
        overhead.measure_overhead(
            tiny, ["annoy", "faiss-flat"], k=5, rounds=7, block_ms=0.2, cases=TINY_CASES
        )
    )
    assert [(r.backend, r.mode) for r in rows] == [
        ("annoy", "single"),
        ("annoy", "batch"),
        ("faiss-flat", "single"),
        ("faiss-flat", "batch"),
    ]
    for row in rows:
        assert row.rounds == 7 and 10 <= row.block <= len(tiny.test)
        assert row.annbench_qps > 0 and row.library_qps > 0
        for ratio in (row.wall, row.cpu, row.control_wall, row.control_cpu):
            assert 0 < ratio.q1 <= ratio.median <= ratio.q3 and math.isfinite(ratio.q3)
            assert ratio.ci95 >= 0
        line = overhead.format_row(row)
        assert line.split()[:2] == [row.backend, row.mode]
        for ratio in (row.wall, row.cpu, row.control_wall, row.control_cpu):
            assert str(ratio) in line
    assert "A/A control" in overhead.resolution(rows)


def test_ratio_summary(overhead):
    ratio = overhead.Ratio.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (ratio.median, ratio.q1, ratio.q3) == (3.0, 2.0, 4.0)
    assert ratio.ci95 == 2.0  # ranks 0 and 4 bound the median of 5 at 95%
    assert str(ratio) == "3.000 (2.000-4.000)"
