"""Runbooks: parsing and validation, per-step ground truth, replay with add/remove or rebuild,
records, resume, CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annbench.cli import main
from annbench.data.catalog import resolve_dataset
from annbench.data.format import read_dataset
from annbench.data.runbooks import (
    compute_truth,
    load_runbook,
    parse_runbook,
    prepare_runbook,
    read_truth,
    runbook_truth,
    shipped_runbooks,
    truth_path,
)
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError, BackendUnavailable
from annbench.metrics import Metric
from annbench.registry import backend_names, default_grid, load_backend
from annbench.results.runbook_analysis import runbook_summary
from annbench.results.store import ResultStore
from annbench.sweep.replay import ReplayIndex
from annbench.sweep.runner import pending_runs, plan_sweep, run_sweep

PLUGIN = Path(__file__).parent / "runbook_plugin"
SMALL_PARAMS = {
    "faiss-ivf": {"nlist": 8},
    "faiss-hnsw": {"M": 8, "efConstruction": 40},
    "hnswlib": {"M": 8, "ef_construction": 40},
    "annoy": {"n_trees": 4},
    "faiss-factory": {"factory": "IVF4,Flat"},
    "faiss-ivfpq": {"nlist": 4, "m": 4, "nbits": 4},
    "scann": {"num_leaves": 4, "avq_threshold": 0.2, "dims_per_block": 2},
}
SMALL_SEARCH = {"faiss-factory": {"nprobe": 2}}


@pytest.fixture
def rb_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the numpy test backends of tests/runbook_plugin, here and in workers."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.setenv("PYTHONPATH", str(PLUGIN))
    yield
    sys.modules.pop("annbench_runbook_backends", None)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    """600 x 16 euclidean vectors, 30 queries: a copy each module may write ground truth into."""
    path = tmp_path_factory.mktemp("rb") / "small.hdf5"
    create_synthetic(path, n=600, nq=30, d=16, metric=Metric.EUCLIDEAN, n_clusters=8, seed=5)
    return read_dataset(path)


# ---- format ----------------------------------------------------------------------------------


def test_shipped_runbooks_load_for_any_size():
    assert {"sliding-window", "grow"} <= set(shipped_runbooks())
    window = load_runbook("sliding-window", 21_000)
    assert window.steps[0].insert == (0, 10_500)
    assert window.steps[2].insert == (10_500, 12_600)
    assert window.steps[4].delete == (0, 2_100)
    live = window.live_masks()
    assert [int(live[i].sum()) for i in window.search_steps()][:3] == [10_500, 12_600, 10_500]
    assert np.flatnonzero(live[-1]).tolist() == list(range(10_500, 21_000))
    grow = load_runbook("grow", 1000)
    assert [int(m.sum()) for m in grow.live_masks()][1::2] == list(range(100, 1001, 100))


def test_replace_and_row_numbers():
    rb = parse_runbook(
        {
            "steps": [
                {"insert": [0, 60]},
                "search",
                {"replace": {"delete": [0, 10], "insert": ["60%", 70]}},
                "search",
            ]
        },  # noqa: E501
        "r",
        100,
    )
    assert rb.steps[2].kind == "replace" and rb.steps[2].changed == 20
    assert np.flatnonzero(rb.live_masks()[3]).tolist() == list(range(10, 70))


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"insert": [0, 50]}, {"insert": [40, 60]}, "search"],
            "step 1 (insert [40, 60)): inserts row 40, already inserted at step 0",
        ),  # noqa: E501
        (
            [{"insert": [0, 50]}, {"delete": [40, 60]}, "search"],
            "step 1 (delete [40, 60)): deletes row 50, which was never inserted",
        ),  # noqa: E501
        (
            [{"insert": [0, 50]}, {"delete": [0, 10]}, {"delete": [5, 8]}, "search"],
            "step 2 (delete [5, 8)): deletes row 5, already deleted at step 1",
        ),  # noqa: E501
        (
            [{"insert": [0, 50]}, {"delete": [0, 10]}, {"insert": [0, 5]}, "search"],
            "inserts row 0, already inserted at step 0",
        ),  # noqa: E501
        (
            [{"insert": [0, 101]}, "search"],
            "step 0 (insert): rows [0, 101) are outside the dataset's 100 base rows",
        ),  # noqa: E501
        ([{"insert": [0, "120%"]}, "search"], "outside the dataset's 100 base rows"),
        ([{"insert": [10, 10]}, "search"], "step 0 (insert): rows [10, 10) are empty"),
        ([{"insert": [0, 50]}, {"upsert": [0, 5]}], "step 1: unknown step kind 'upsert'"),
        ([{"insert": [0, 50]}, "flush"], "step 1: unknown step kind 'flush'"),
        ([{"insert": [0, "half"]}, "search"], "bound 'half' is not a row number"),
        ([{"insert": [0, 50]}], "has no search step"),
        (["search", {"insert": [0, 50]}], "step 0 (search): searches an empty index"),
        ([{"insert": [0, 50]}, {"replace": {"delete": [0, 5]}}, "search"], "replace needs both"),
        ([{"insert": 50}, "search"], "rows must be [start, end)"),
        ([], "non-empty 'steps' list"),
    ],
)
def test_bad_runbooks_fail_in_one_line_naming_the_step(steps, message):
    with pytest.raises(AnnbenchError) as info:
        parse_runbook({"steps": steps}, "bad", 100)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith("Runbook bad")


def test_unknown_runbook_and_bad_yaml(tmp_path):
    with pytest.raises(AnnbenchError, match="Unknown runbook 'nope'. Shipped runbooks: grow"):
        load_runbook("nope", 100)
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [insert: [0,")
    with pytest.raises(AnnbenchError, match="not valid YAML"):
        load_runbook(str(broken), 100)
    mine = tmp_path / "mine.yaml"
    mine.write_text("steps:\n  - insert: [0, 10]\n  - search\n")
    assert load_runbook(str(mine), 100).name == "mine"


# ---- ground truth ----------------------------------------------------------------------------


def test_step_ground_truth_matches_numpy_over_the_live_rows(small):
    rb = load_runbook("sliding-window", len(small.train))
    truth = compute_truth(small, rb, k=20)
    masks = rb.live_masks()
    assert sorted(truth.steps) == rb.search_steps()
    for i, (ids, distances) in truth.steps.items():
        rows = np.flatnonzero(masks[i])
        d = np.sqrt(((small.test[:, None, :] - small.train[rows][None]) ** 2).sum(axis=2))
        order = np.argsort(d, axis=1, kind="stable")[:, :20]
        np.testing.assert_array_equal(ids, rows[order])
        np.testing.assert_allclose(distances, np.take_along_axis(d, order, axis=1), rtol=1e-5)
        assert masks[i][ids].all()  # never a row that is not live


def test_ground_truth_is_cached_in_the_file_and_recomputed_when_the_runbook_changes(
    small, tmp_path
):
    rb = load_runbook("grow", len(small.train))
    _, path, computed = runbook_truth(small, rb)
    assert computed and path == small.path
    _, _, again = runbook_truth(small, rb)
    assert not again
    edited = parse_runbook({"steps": [{"insert": [0, 300]}, "search"]}, "grow", len(small.train))
    assert read_truth(path, edited) is None  # same name, other steps: stale
    _, _, computed = runbook_truth(small, edited)
    assert computed
    assert read_dataset(small.path).content_hash == small.content_hash  # plain results stand


def test_read_only_or_bundled_dataset_gets_a_sidecar(small, monkeypatch, isolated_folders):
    bundled = read_dataset(resolve_dataset("debian-packages-384-angular"))
    assert truth_path(bundled).parent == isolated_folders / "data"  # the shipped file stays
    monkeypatch.setattr("annbench.data.runbooks.os.access", lambda path, mode: False)
    path = truth_path(small)
    assert path.parent == isolated_folders / "data" and small.content_hash in path.name
    rb = load_runbook("grow", len(small.train))
    _, stored, computed = runbook_truth(small, rb)
    assert stored == path and computed
    assert not runbook_truth(small, rb)[2]


# ---- replay ----------------------------------------------------------------------------------


def _replay_recalls(cls, data, rb, k=10):
    """Recall@k at each search step, replaying ``rb`` on ``cls`` in this process."""
    replay = ReplayIndex(cls, data.metric, {}, data.train)
    truth = compute_truth(data, rb, k=k)
    out, rebuilt = [], []
    for i, step in enumerate(rb.steps):
        if step.kind != "search":
            rebuilt.append(replay.apply(step)["rebuilt"])
            continue
        ids = replay.search_rows(replay.index.search(data.test, k).ids)
        out.append(
            np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth.steps[i][0], strict=True)])
        )
    return out, rebuilt


def test_static_backend_rebuilds_and_reaches_the_recall_of_a_fresh_build(small, rb_backends):
    rb = load_runbook("sliding-window", len(small.train))
    static, rebuilt = _replay_recalls(load_backend("test-rb-static"), small, rb)
    assert rebuilt == [False] + [True] * 10  # the first insert is the build
    dynamic, native = _replay_recalls(load_backend("test-rb-dynamic"), small, rb)
    assert not any(native)
    mixed, partly = _replay_recalls(load_backend("test-rb-insert-only"), small, rb)
    assert partly == [False] + [False, True] * 5  # inserts native, deletes rebuild
    assert 0.3 < min(static) < 1.0  # approximate, so agreement is not trivial
    np.testing.assert_allclose(static, dynamic)
    np.testing.assert_allclose(static, mixed)


@pytest.mark.parametrize("name", backend_names())
def test_no_backend_returns_a_deleted_row(name, small):
    try:
        cls = load_backend(name)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    build, search = _small_config(name, cls)
    try:
        cls(small.metric, **build).check(20, small.train.shape[1])  # the smallest build here
    except AnnbenchError as exc:
        pytest.skip(f"{name} needs more rows than this test builds on: {exc}")
    for seed in range(3):
        steps = _random_runbook_steps(np.random.default_rng(seed))
        _check_never_deleted(cls, build, small, steps, search)


def _small_config(name, cls):
    """Build and search parameters of ``name`` fit for a few hundred rows."""
    grid = default_grid(name)
    first = grid.build_configs()[0] if grid.build_configs() else {}
    build = SMALL_PARAMS.get(name, first)
    searches = grid.search_configs(first)
    return build, SMALL_SEARCH.get(name, searches[0] if searches else {})


@st.composite
def _runbooks(draw):
    return _random_runbook_steps(np.random.default_rng(draw(st.integers(0, 2**32 - 1))))


def _random_runbook_steps(rng, n=600):
    """Random valid steps: insert fresh rows, delete random live blocks, search in between."""
    # blocks of 20 rows or more, so every search has at least k=10 live rows
    bounds = np.sort(rng.choice(np.arange(1, n // 20), size=5, replace=False)) * 20
    blocks = list(zip([0, *bounds[:-1]], bounds, strict=True))
    steps, live = [], []
    for start, end in blocks:
        steps += [{"insert": [int(start), int(end)]}, "search"]
        live.append((int(start), int(end)))
        if len(live) > 1 and rng.random() < 0.6:
            start, end = live.pop(int(rng.integers(len(live))))
            cut = int(rng.integers(start + 1, end + 1))
            steps += [{"delete": [start, cut]}, "search"]
            if cut < end:
                live.append((cut, end))
    return steps


def _check_never_deleted(cls, params, data, steps, search=None):
    rb = parse_runbook({"steps": steps}, "random", len(data.train))
    masks = rb.live_masks()
    replay = ReplayIndex(cls, data.metric, params, data.train)
    for i, step in enumerate(rb.steps):
        if step.kind != "search":
            replay.apply(step)
            continue
        replay.index.set_search_params(**(search or {}))
        xq = replay.index.prepare_queries(data.test)
        ids = replay.search_rows(replay.index.search(xq, 10).ids)
        returned = ids[ids >= 0]
        assert returned.size, f"{cls.__name__} returned nothing at step {i}"
        assert masks[i][returned].all(), f"{cls.__name__} returned a row not live at step {i}"


@pytest.mark.slow
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_runbooks())
def test_dynamic_backends_never_return_deleted_rows(steps, small, rb_backends):
    for name in ("test-rb-dynamic", "test-rb-insert-only", "hnswlib", "faiss-flat"):
        cls = load_backend(name)
        build, search = _small_config(name, cls)
        _check_never_deleted(cls, build, small, steps, search)


# ---- runner, records, resume -----------------------------------------------------------------


@pytest.mark.slow
def test_runbook_sweep_records_every_step_and_resumes(small, rb_backends, isolated_folders):
    plan, _ = prepare_runbook(small, "sliding-window")
    jobs = plan_sweep(
        small,
        ["test-rb-static", "test-rb-dynamic"],
        k=10,
        runs=1,
        runbook=plan,
        overrides={"dims": [4]},
    )
    store = ResultStore(isolated_folders / "results")
    assert pending_runs(jobs, store) == 2 * 22
    summary = run_sweep(jobs, store)
    assert summary.stored == 44 and not summary.failed
    frame = store.dataframe()
    assert set(frame["workload"]) == {"runbook:sliding-window"}
    assert set(frame["dataset_hash"]) == {plan.workload_hash} != {small.content_hash}
    static = frame[frame["backend"] == "test-rb-static"].sort_values("step")
    assert static["step"].tolist() == list(range(22))
    updates = static[static["step_kind"] != "search"]
    assert updates["rebuilt"].tolist() == [False] + [True] * 10
    assert updates["rebuild_s"].iloc[1:].notna().all() and updates["vectors_per_s"].gt(0).all()
    assert updates["build_s"].notna().tolist() == [True] + [False] * 10
    searches = static[static["step_kind"] == "search"]
    assert searches["live_size"].tolist()[:3] == [300, 360, 300]
    assert searches["recall"].between(0.3, 1).all() and searches["qps"].gt(0).all()
    assert searches["latency_p99_ms"].notna().all() and (searches["not_live"] == 0).all()
    assert searches["memory_bytes"].notna().all()
    dynamic = frame[(frame["backend"] == "test-rb-dynamic") & (frame["step_kind"] == "search")]
    np.testing.assert_allclose(dynamic.sort_values("step")["recall"], searches["recall"])
    assert not frame[frame["backend"] == "test-rb-dynamic"]["rebuilt"].any()

    again = run_sweep(jobs, store)  # resume: everything stored is skipped
    assert again.stored == 0 and again.skipped == 44
    table = runbook_summary(store.dataframe())
    row = table[table["backend"] == "test-rb-static"].iloc[0]
    assert row["worst_recall"] == searches["recall"].min() and row["rebuilds"] == 10
    assert row["last_recall"] == searches["recall"].iloc[-1]
    store.close()


def test_a_crashing_backend_fails_every_step(small, rb_backends, test_backends, isolated_folders):
    plan, _ = prepare_runbook(small, "grow")
    jobs = plan_sweep(small, ["test-crash"], k=10, runs=1, runbook=plan, overrides={"level": [1]})
    with ResultStore(isolated_folders / "results") as store:
        summary = run_sweep(jobs, store)
        frame = store.dataframe()
    assert summary.stored == 20 and len(summary.failed) == 20
    assert sorted(frame["step"]) == list(range(20))
    assert frame["error"].str.contains("SIGSEGV").all()


def test_k_larger_than_the_live_set_is_refused(small, rb_backends):
    plan, _ = prepare_runbook(small, "grow")
    with pytest.raises(AnnbenchError, match="k=100 exceeds the 60 rows live"):
        plan_sweep(small, ["test-rb-static"], k=100, runbook=plan)


# ---- command line ----------------------------------------------------------------------------


def test_cli_runbook_ground_truth_run_and_summary(rb_backends, tmp_path):
    runner = CliRunner()
    copy = create_synthetic(tmp_path / "cli.hdf5", n=300, nq=20, d=8, metric=Metric.EUCLIDEAN)
    result = runner.invoke(main, ["datasets", "runbook", str(copy), "grow"])
    assert result.exit_code == 0, result.output
    assert "ground truth of 10 search steps computed" in result.output
    assert "fewest live rows: 30" in result.output
    result = runner.invoke(main, ["datasets", "runbook", str(copy), "grow"])
    assert "already cached" in result.output
    args = ["run", "-d", str(copy), "--runbook", "grow", "-b", "test-rb-static", "--runs", "1",
            "--min-time", "0"]  # fmt: skip
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "20 runs to measure" in result.output and "worst_recall" in result.output
    result = runner.invoke(main, ["summary"])
    assert result.exit_code == 0, result.output
    assert "runbook grow (single mode, k=10)" in result.output
    assert "test-rb-static" in result.output
    result = runner.invoke(main, ["plot", "-d", "cli", "--runbook", "grow"])
    assert result.exit_code == 0, result.output
    assert Path(result.output.split("Wrote ")[1].strip()).stat().st_size > 10_000
    result = runner.invoke(main, ["plot", "-d", "cli"])  # runbook steps are no static sweep
    assert result.exit_code != 0 and "No successful single-mode results" in result.output
    result = runner.invoke(main, ["report", "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "cli, runbook grow, single mode, k=10" in page and "recall at last step" in page
    assert "recall vs QPS" not in page  # no static sweep figures made of runbook steps
    result = runner.invoke(main, ["run", "-d", str(copy), "--runbook", "nope", "-b", "faiss-flat"])
    assert result.exit_code != 0 and "Unknown runbook 'nope'" in result.output


def test_documented_runbook_example_is_valid():
    import yaml

    guide = Path(__file__).resolve().parent.parent / "docs" / "guides" / "runbooks.md"
    text = guide.read_text()
    start = text.index("# my-runbook.yaml")
    example = yaml.safe_load(text[start : text.index("```", start)])
    rb = parse_runbook(example, "my-runbook", 1000)
    assert [s.kind for s in rb.steps] == [
        "insert",
        "search",
        "delete",
        "search",
        "replace",
        "search",
    ]
    assert np.flatnonzero(rb.live_masks()[-1]).tolist() == list(range(200, 600))


def test_build_parameters_are_checked_against_the_smallest_live_set(small):
    plan, _ = prepare_runbook(small, "grow")  # 60 rows live at the first search
    with pytest.raises(AnnbenchError, match="nlist=100 exceeds the 60 base vectors"):
        plan_sweep(small, ["faiss-ivf"], k=10, runbook=plan, overrides={"nlist": [100]})
