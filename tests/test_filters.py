"""Filter workloads: specs, filtered ground truth, strategies, resume and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annbench.cli import main
from annbench.data import groundtruth
from annbench.data.catalog import resolve_dataset
from annbench.data.format import read_dataset, write_dataset
from annbench.data.groundtruth import filtered_knn
from annbench.data.synthetic import create_synthetic
from annbench.data.workloads import (
    FilterWorkload,
    compute_workload,
    load_workload,
    parse_filters,
    prepare_workloads,
)
from annbench.errors import AnnbenchError
from annbench.metrics import Metric, pair_distances
from annbench.registry import backend_names, load_backend
from annbench.results.store import ResultStore
from annbench.sweep.filtering import FilteredSearch, check_strategy, keep_allowed
from annbench.sweep.runner import pending_jobs, plan_sweep, run_sweep


@pytest.fixture(scope="module")
def attr_path(tmp_path_factory):
    """1,500 x 16 clustered angular vectors with labels and a random attribute, 60 queries."""
    path = tmp_path_factory.mktemp("filters") / "attr.hdf5"
    return create_synthetic(
        path, n=1500, nq=60, d=16, metric=Metric.ANGULAR, n_clusters=40, seed=5, random_attr="u"
    )


@pytest.fixture(scope="module")
def attr_data(attr_path):
    return read_dataset(attr_path)


def reference_knn(xb, xq, k, metric, allowed):
    """Per query: exact distances to its allowed rows, ties by id; -1/inf past the count."""
    ids = np.full((len(xq), k), -1)
    dist = np.full((len(xq), k), np.inf)
    for q in range(len(xq)):
        rows = np.flatnonzero(allowed[q])
        d = pair_distances(metric, xq[q : q + 1], xb[rows][None])[0]
        order = np.lexsort((rows, d))[:k]
        ids[q, : len(order)] = rows[order]
        dist[q, : len(order)] = d[order]
    return dist, ids


def test_parse_filters_expands_selectivities_and_rejects_bad_specs():
    assert parse_filters([]) == ["plain"]
    assert parse_filters(["none", "label", "range:0.01,.1,0.50", "range:u:0.5", "label"]) == [
        "plain",
        "label",
        "range:0.01",
        "range:0.1",
        "range:0.5",
        "range:u:0.5",
    ]
    for bad in ("range:0", "range:1.5", "range:-0.1", "range:abc", "range", "colour", "label:x"):
        with pytest.raises(AnnbenchError) as info:
            parse_filters([bad])
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("path", ["numpy", "faiss"])
@pytest.mark.parametrize("metric", list(Metric))
def test_filtered_knn_matches_numpy_with_ties_and_short_filters(metric, path, rng, monkeypatch):
    if path == "faiss":  # as groups with many queries and allowed rows are searched
        monkeypatch.setattr(groundtruth, "SMALL_PRODUCT", 0)
        monkeypatch.setattr(groundtruth, "SMALL_BASE_PER_KEEP", 0)
    base = rng.normal(size=(300, 8)).astype(np.float32)
    xb = np.concatenate([base, base[:40]])  # rows 300.. repeat rows 0..39: exact ties
    xq = rng.normal(size=(30, 8)).astype(np.float32)
    masks = [
        rng.random(len(xb)) < 0.5,
        rng.random(len(xb)) < 0.05,
        np.zeros(len(xb), bool),  # allows nothing
        np.isin(np.arange(len(xb)), [3, 303, 7]),  # fewer than k, with a tie
        np.ones(len(xb), bool),
    ]
    group = np.arange(len(xq)) % len(masks)
    got_d, got_i = filtered_knn(xb, xq, 20, metric, group, masks)
    want_d, want_i = reference_knn(xb, xq, 20, metric, [masks[g] for g in group])
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-6, atol=1e-9)
    assert (got_i[group == 2] == -1).all()
    assert ((got_i >= 0).sum(axis=1)[group == 3] == 3).all()


@pytest.mark.parametrize("metric", list(Metric))
def test_filtered_knn_with_narrow_filters_mixes_small_and_large_groups(metric, rng, monkeypatch):
    # narrow filters (the base is prepared per group, not whole) and a group large enough for
    # faiss beside small ones searched in threads
    monkeypatch.setattr(groundtruth, "SMALL_PRODUCT", 4000)
    monkeypatch.setattr(groundtruth, "SMALL_BASE_PER_KEEP", 1)
    xb = rng.normal(size=(2000, 8)).astype(np.float32) * 3
    xq = rng.normal(size=(60, 8)).astype(np.float32)
    masks = [np.arange(len(xb)) % 10 == r for r in range(3)]  # 200 rows each
    group = np.r_[np.zeros(50, int), np.ones(5, int), np.full(5, 2)]
    got_d, got_i = filtered_knn(xb, xq, 15, metric, group, masks)
    want_d, want_i = reference_knn(xb, xq, 15, metric, [masks[g] for g in group])
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-6, atol=1e-9)


def test_workload_ground_truth_selectivity_and_missing(attr_data):
    n = len(attr_data.train)
    for workload, selectivity in (("range:0.01", 0.01), ("range:u:0.2", 0.2), ("range:1", 1.0)):
        arrays = compute_workload(attr_data, workload)
        np.testing.assert_allclose(arrays["selectivity"], selectivity, atol=1 / n)
        lows, highs = arrays["filter"][:, 0], arrays["filter"][:, 1]
        assert len(np.unique(lows)) <= 16
        allowed = (attr_data.train_attrs[:, 0][None] >= lows[:, None]) & (
            attr_data.train_attrs[:, 0][None] <= highs[:, None]
        )
        want_d, want_i = reference_knn(
            attr_data.train, attr_data.test, 100, attr_data.metric, allowed
        )
        np.testing.assert_array_equal(arrays["neighbors"], want_i)
        # 1% of 1,500 is 15 vectors: 85 of the top-100 slots per query are empty
        assert (arrays["neighbors"] < 0).sum() == len(attr_data.test) * max(
            0, 100 - round(selectivity * n)
        )
    label = compute_workload(attr_data, "label")
    same = attr_data.train_labels[None] == attr_data.test_labels[:, None]
    np.testing.assert_allclose(label["selectivity"], same.mean(axis=1))
    ids = label["neighbors"]
    assert (attr_data.train_labels[np.where(ids >= 0, ids, 0)] == attr_data.test_labels[:, None])[
        ids >= 0
    ].all()


def test_recall_under_a_filter_allowing_fewer_than_k(attr_data):
    workload = load_workload(attr_data, "range:0.005")  # 8 allowed vectors per query
    k = 10
    perfect = np.full((len(attr_data.test), k), -1)
    perfect[:, :8] = workload.neighbors[:, :8]
    result = workload.recall(attr_data, perfect, k)
    assert (result.recall == 1).all() and result.missing == 2 * len(attr_data.test)
    wrong = perfect.copy()
    wrong[:, 0] = np.flatnonzero(~workload.allowed(0))[0]  # a disallowed id is a miss
    assert workload.recall(attr_data, wrong, k).recall.max() < 1


@pytest.mark.slow
def test_ground_truth_is_cached_in_the_file_and_bundled_files_stay_untouched(
    attr_path, isolated_folders
):
    data = read_dataset(attr_path)
    prepare_workloads(data, ["range:u:0.3"])
    again = read_dataset(attr_path)
    assert again.content_hash == data.content_hash
    import h5py

    with h5py.File(attr_path) as f:
        assert {"neighbors@range:u:0.3", "distances@range:u:0.3", "filter@range:u:0.3"} <= set(f)
    bundled = resolve_dataset("debian-packages-384-angular")
    before = bundled.stat().st_mtime_ns
    shipped = read_dataset(bundled)
    load_workload(shipped, "range:0.1")  # shipped with the package
    load_workload(shipped, "range:0.02")  # computed into a side file in the data folder
    assert bundled.stat().st_mtime_ns == before
    assert list((isolated_folders / "data").glob("*.workloads.h5"))


def test_check_strategy_messages():
    with pytest.raises(AnnbenchError, match="no native filtered search"):
        check_strategy("native", None, "annoy", False)
    with pytest.raises(AnnbenchError, match="overfetch"):
        check_strategy("post", 0.5, "annoy", False)
    with pytest.raises(AnnbenchError, match="not valid"):
        check_strategy("pre", None, "annoy", False)


def test_keep_allowed_keeps_order_and_pads():
    allowed = np.zeros(10, bool)
    allowed[[2, 5, 7]] = True
    ids = np.array([[5, 1, 2, -1, 7, 3], [0, 1, 3, 4, 6, 8]])
    np.testing.assert_array_equal(keep_allowed(ids, allowed, 3), [[5, 2, 7], [-1, -1, -1]])


def _installed():
    names = []
    for name in backend_names():
        try:
            cls = load_backend(name)
        except AnnbenchError:
            continue
        names.append((name, cls))
    return names


SMALL_BUILD = {
    "faiss-ivf": {"nlist": 8},
    "faiss-ivfpq": {"nlist": 8, "m": 4, "nbits": 4},
    "faiss-hnsw": {"M": 8, "efConstruction": 40},
    "hnswlib": {"M": 8, "ef_construction": 40},
    "annoy": {"n_trees": 5},
}


@pytest.fixture(scope="module")
def built(attr_data):
    """Every installed backend built once on the small dataset (small parameters)."""
    from annbench.index import build_param_names
    from annbench.registry import default_grid

    indexes = {}
    for name, cls in _installed():
        grid = default_grid(name)
        params = {key: values[0] for key, values in grid.build.items()}
        params.update(SMALL_BUILD.get(name, {}))
        params = {k: v for k, v in params.items() if k in build_param_names(cls)}
        try:
            index = cls(attr_data.metric, **params)
        except AnnbenchError:
            continue  # e.g. a backend without this metric
        index.build(attr_data.train)
        search = {key: values[-1] for key, values in grid.search.items()}
        index.set_search_params(**search)
        indexes[name] = index
    assert {"faiss-flat", "hnswlib", "annoy"} <= set(indexes)
    yield indexes
    for index in indexes.values():
        index.close()  # a database backend's server stops here, not at garbage collection


@pytest.mark.slow
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    density=st.sampled_from([0.0, 0.003, 0.02, 0.3, 1.0]),
    seed=st.integers(0, 2**16),
    strategy=st.sampled_from(["native", "post", "brute"]),
    overfetch=st.sampled_from([1, 3.5, 50]),
    mode=st.sampled_from(["batch", "single"]),
)
def test_every_backend_and_strategy_returns_only_allowed_ids(
    built, attr_data, density, seed, strategy, overfetch, mode
):
    rng = np.random.default_rng(seed)
    n, nq, k = len(attr_data.train), 12, 10
    masks = [rng.random(n) < density, rng.random(n) < density * 3]
    group = rng.integers(2, size=nq)
    workload = FilterWorkload(
        "test", np.zeros(nq), group, masks, np.zeros((nq, k), int), np.zeros((nq, k)), np.ones(nq)
    )
    for name, index in built.items():
        if strategy == "native" and not index.native_filter:
            with pytest.raises(AnnbenchError, match="native"):
                FilteredSearch(index, workload, attr_data.train, attr_data.metric, k, strategy)
            continue
        searcher = FilteredSearch(
            index, workload, attr_data.train, attr_data.metric, k, strategy, overfetch
        )
        xq = searcher.prepare_queries(attr_data.test[:nq])
        if mode == "batch":
            ids = searcher.batch(xq)
        else:
            ids = np.full((nq, k), -1)
            for i in range(nq):
                found = np.asarray(searcher.one(i, xq[i]))
                assert len(found) <= k, name
                ids[i, : len(found)] = found
        assert ids.shape == (nq, k), name
        for q in range(nq):
            row = ids[q][ids[q] >= 0]
            assert masks[group[q]][row].all(), f"{name} {strategy} returned a disallowed id"
            assert len(set(row.tolist())) == len(row), f"{name} {strategy} repeated an id"
            if strategy == "brute":
                assert len(row) == min(k, masks[group[q]].sum()), name


def test_brute_force_is_exact(attr_data):
    workload = load_workload(attr_data, "label")
    searcher = FilteredSearch(
        None, workload, attr_data.train, attr_data.metric, 10, "brute"
    )  # brute force needs no index
    xq = searcher.prepare_queries(attr_data.test)
    assert workload.recall(attr_data, searcher.batch(xq), 10).recall.min() == 1
    single = np.full((len(xq), 10), -1)
    for i, q in enumerate(xq):
        found = searcher.one(i, q)
        single[i, : len(found)] = found
    assert workload.recall(attr_data, single, 10).recall.min() == 1


@pytest.mark.slow
def test_sweep_with_filters_resumes(attr_data, isolated_folders):
    jobs = plan_sweep(
        attr_data,
        ["faiss-flat", "hnswlib"],
        k=10,
        mode="batch",
        runs=1,
        overrides={"M": [8], "ef": [32], "overfetch": [20]},
        workloads=["plain", "label", "range:0.1"],
    )
    assert {job.workload for job in jobs} == {"plain", "label", "range:0.1"}
    hashes = {job.workload: job.dataset_hash for job in jobs}
    assert hashes["plain"] == attr_data.content_hash
    assert hashes["label"] == attr_data.workload_hash("label") != hashes["plain"]
    flat_label = next(j for j in jobs if j.backend == "faiss-flat" and j.workload == "label")
    assert flat_label.search_configs == (
        {"filter_strategy": "native"},
        {"filter_strategy": "post", "overfetch": 20},
    )
    with ResultStore(isolated_folders / "results") as store:
        summary = run_sweep(jobs, store)
        assert summary.stored == 10 and not summary.failed, [r.error for r in summary.failed]
        frame = store.dataframe()
        filtered = frame[frame["workload"] != "plain"]
        assert filtered["selectivity"].between(0, 0.5).all()
        assert frame[frame["workload"] == "plain"]["selectivity"].isna().all()
        assert (filtered["recall"] > 0.8).all(), filtered["recall"]
        # serving memory is measured under filters too (the warm-up drops filter parameters)
        assert filtered["serving_memory_bytes"].notna().all(), filtered["provenance"].tolist()
        todo, skipped = pending_jobs(jobs, store)
        assert todo == [] and skipped == 10


@pytest.mark.slow
def test_serving_memory_is_measured_when_brute_force_comes_last(attr_data, isolated_folders):
    jobs = plan_sweep(
        attr_data,
        ["hnswlib"],
        k=10,
        mode="batch",
        runs=1,
        overrides={"M": [8], "ef": [32], "filter_strategy": ["native", "brute"]},
        workloads=["range:0.1"],
    )
    assert jobs[0].search_configs[-1] == {"filter_strategy": "brute"}
    with ResultStore(isolated_folders / "results") as store:
        summary = run_sweep(jobs, store)
        assert summary.stored == 2 and not summary.failed
        frame = store.dataframe()
    assert frame["serving_memory_bytes"].notna().all(), frame["provenance"].tolist()
    # brute force is its own row in the summary, not hnswlib's best
    import annbench

    table = annbench.summary(frame)
    assert sorted(table["backend"]) == ["brute force", "hnswlib"]
    assert table.set_index("backend").loc["brute force", "qps@0.99"] > 0


def test_adaptive_search_keeps_filtered_grids_whole():
    from annbench.sweep.runner import search_ladder

    assert search_ladder(({"ef": 16}, {"ef": 64})) == tuple(
        {"ef": v} for v in (16, 20, 25, 31, 39, 49, 61, 64)
    )
    filtered = (
        {"ef": 16, "filter_strategy": "native"},
        {"ef": 16, "filter_strategy": "post", "overfetch": 2.0},
        {"filter_strategy": "brute"},
    )
    assert search_ladder(filtered) is None
    assert search_ladder(({"filter_strategy": "brute"},)) is None


def test_native_strategy_is_refused_at_planning_for_backends_without_it(attr_data):
    with pytest.raises(AnnbenchError, match="annoy.*no native filtered search"):
        plan_sweep(
            attr_data, ["annoy"], overrides={"filter_strategy": ["native"]}, workloads=["label"]
        )
    with pytest.raises(AnnbenchError, match="--filter"):
        plan_sweep(attr_data, ["annoy"], overrides={"filter_strategy": ["post"]})


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_cli_run_with_filters_then_summary_recommend_and_resume(cli, attr_path, tmp_path):
    args = ["run", "-b", "faiss-flat", "-d", str(attr_path), "--runs", "1", "--min-time", "0"]
    args += ["--filter", "label", "--filter", "range:u:0.2", "-g", "overfetch=8"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "Stored 4 results (0 already stored, 0 failed)" in result.output
    # u is attr's only attribute, so range:u:0.2 is stored under its one name, range:0.2
    assert "range:0.2" in result.output and "selectivity" in result.output
    again = cli(*args)
    assert "Stored 0 results (4 already stored" in again.output
    summary = cli("summary", "-d", "attr", "--filter", "range:0.2")
    assert summary.exit_code == 0 and "filter range:0.2, selectivity 0.2" in summary.output
    assert "label" not in summary.output
    nothing = cli("summary", "-d", "attr", "--filter", "range:0.7")
    assert nothing.exit_code == 1 and "Traceback" not in nothing.output
    assert nothing.output.strip() == "Error: No successful results stored for attr under range:0.7"
    before = attr_path.read_bytes()
    unmeasured = cli(
        "recommend", "-d", str(attr_path), "--min-recall", "0.5", "--filter", "range:0.33"
    )
    assert unmeasured.exit_code == 1, unmeasured.output
    assert "Nothing measured on attr under filter range:0.33; measure it with" in unmeasured.output
    assert attr_path.read_bytes() == before  # read-only: no ground truth computed or written
    chosen = cli("recommend", "-d", str(attr_path), "--min-recall", "0.5", "--filter", "label")
    assert chosen.exit_code == 0, chosen.output
    assert "filter_strategy=" in chosen.output
    export = cli(
        "results", "--export", "ann-benchmarks", "-d", str(attr_path), "--out", str(tmp_path / "ab")
    )
    assert export.exit_code == 1
    assert "4 results of filters and runbooks left out" in export.output
    report = cli("report", "-d", "attr", "--out", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "filter label (selectivity" in page and "filter range:0.2 (selectivity 0.2)" in page


@pytest.mark.parametrize(
    "spec, message",
    [
        ("range:0", "must be in (0, 1]"),
        ("range:1.5", "must be in (0, 1]"),
        ("label", "needs class labels"),
        ("range:0.1", "needs a numeric attribute"),
        ("range:size:0.1", "needs a numeric attribute"),
    ],
)
def test_cli_bad_filter_specs_exit_2_with_one_line(cli, tmp_path, rng, spec, message):
    plain = write_dataset(
        tmp_path / "plain.hdf5",
        rng.normal(size=(200, 4)).astype(np.float32),
        rng.normal(size=(5, 4)).astype(np.float32),
        Metric.EUCLIDEAN,
    )
    result = cli("run", "-b", "faiss-flat", "-d", str(plain), "--filter", spec)
    assert result.exit_code == 2
    assert message in result.output and result.output.strip().count("\n") == 0
