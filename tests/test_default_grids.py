"""Every built-in default grid reaches recall 0.95, fails nowhere and repeats no work.

Each installed backend's default grid is planned on a small clustered dataset of each metric;
its most thorough search setting per build (the last of each block's sweep) is measured, and
the whole plan is checked for settings that repeat another's work. The jobs run in this
process through the worker's own ``run_build_job``, without the serving-memory process: a
worker and a serving process per build would spend minutes here importing libraries (numba
compiling PyNNDescent twice per build), and isolation is tested elsewhere.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from annbench.backends.faiss_factory import read_factory
from annbench.data.format import read_dataset
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError, BackendUnavailable
from annbench.metrics import Metric
from annbench.param_grid import parse_grid
from annbench.registry import default_grid, load_backend
from annbench.sweep import measure
from annbench.sweep.grids import with_overrides
from annbench.sweep.measure import BuildJob, run_build_job
from annbench.sweep.runner import RejectedJob, plan_sweep
from annbench.sweep.serving import Serving

BUILTIN = [
    "faiss-flat",
    "faiss-ivf",
    "faiss-ivfpq",
    "faiss-hnsw",
    "faiss-factory",
    "hnswlib",
    "annoy",
    "usearch",
    "scann",
    "voyager",
    "pynndescent",
]
K = 10
#: A search value above this build parameter repeats the work of the value equal to it.
BOUNDED_BY = {"nprobe": "nlist", "leaves_to_search": "num_leaves"}
#: Beam widths below k repeat the work of a beam of k (the libraries widen it to k).
BEAMS = ("efSearch", "ef", "expansion_search")


@pytest.fixture(scope="module", params=[Metric.EUCLIDEAN, Metric.ANGULAR], ids=lambda m: m.value)
def clustered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """5,000 x 32 clustered vectors (values well outside [-1, 1] under euclidean)."""
    path = tmp_path_factory.mktemp("grids") / f"clustered-{request.param.value}.hdf5"
    return read_dataset(
        create_synthetic(path, n=5000, nq=100, d=32, metric=request.param, n_clusters=32, seed=7)
    )


def _installed(name: str) -> None:
    try:
        load_backend(name)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


def repeated_work(job: BuildJob) -> list[str]:
    """Why search settings of ``job`` repeat the work of another (empty when none does)."""
    problems = []
    limits = dict(job.build_params)
    if "factory" in limits:  # the string's own nlist
        found = read_factory(limits["factory"], 32)
        if found is not None and found.nlist:
            limits["nlist"] = found.nlist
    seen = set()
    for params in job.search_configs:
        key = tuple(sorted(params.items()))
        if key in seen:
            problems.append(f"{params} twice")
        seen.add(key)
        for name, bound in BOUNDED_BY.items():
            if name in params and bound in limits and params[name] > limits[bound]:
                problems.append(f"{name}={params[name]} > {bound}={limits[bound]}")
        problems += [f"{b}={params[b]} < k={K}" for b in BEAMS if b in params and params[b] < K]
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_default_grid_reaches_095_without_failing_or_repeating(name, clustered, monkeypatch):
    _installed(name)
    monkeypatch.setattr(measure, "_served", lambda *args: Serving(None, None, "not measured"))
    jobs = plan_sweep(clustered, [name], k=K, runs=1, min_seconds=0, build_threads=1)
    assert jobs, f"{name} plans nothing on {clustered.metric.value} data"
    rejected = {str(j.build_params): j.reason for j in jobs if isinstance(j, RejectedJob)}
    assert not rejected, f"{name} default grid has settings that cannot work: {rejected}"
    repeats = {str(j.build_params): repeated_work(j) for j in jobs if repeated_work(j)}
    assert not repeats, f"{name} default grid repeats work: {repeats}"
    records = []
    for job in jobs:  # its most thorough search setting
        try:
            run_build_job(replace(job, search_configs=job.search_configs[-1:]), records.append)
        except Exception as exc:
            pytest.fail(f"{name} [{job.build_params}] fails: {exc}")
    failed = {str(r.build_params): r.error for r in records if r.status != "ok"}
    assert not failed, f"{name} default grid fails: {failed}"
    best = max(r.recall for r in records)
    assert best >= 0.95, f"{name} default grid tops out at recall {best:.3f}"


def test_repeated_work_is_found():
    job = BuildJob(
        dataset_path="x.hdf5",
        dataset="x",
        dataset_hash="h",
        backend="faiss-ivf",
        build_params={"nlist": 64},
        search_configs=({"nprobe": 64}, {"nprobe": 128}, {"nprobe": 64}),
        k=K,
        mode="single",
        runs=1,
        threads=(1,),
    )
    assert repeated_work(job) == ["nprobe=128 > nlist=64", "{'nprobe': 64} twice"]
    factory = replace(job, backend="faiss-factory", build_params={"factory": "IVF16,SQ8"})
    assert repeated_work(factory)[0] == "nprobe=64 > nlist=16"


def test_a_block_with_metrics_applies_only_to_those_metrics():
    grid = parse_grid(
        [
            {"build": {"dtype": ["f32", "f16"]}, "search": {"ef": [10, 20]}},
            {"metrics": ["angular", "cosine"], "build": {"dtype": "i8"}, "search": {"ef": 10}},
        ],
        "usearch",
    )
    assert grid.size() == 5 and grid.size(Metric.ANGULAR) == 5 and grid.size(Metric.DOT) == 4
    assert grid.for_metric(Metric.EUCLIDEAN).build_configs() == [{"dtype": "f32"}, {"dtype": "f16"}]
    assert grid.for_metric(Metric.ANGULAR).search_configs({"dtype": "i8"}) == [{"ef": 10}]
    only = parse_grid({"metrics": "dot", "build": {"M": 8}}, "x").for_metric(Metric.ANGULAR)
    assert only.build_configs() == [] and only.size() == 0
    with pytest.raises(AnnbenchError, match="Grid for 'x': Metric 'hamming' not valid"):
        parse_grid({"metrics": ["hamming"], "build": {"M": 8}}, "x")
    with pytest.raises(AnnbenchError, match="optional 'metrics:' list"):
        parse_grid({"build": {"M": 8}, "metric": "dot"}, "x")


def test_a_build_override_on_per_build_blocks_sweeps_every_blocks_values():
    grid = default_grid("faiss-ivf")
    assert [grid.search_configs(b)[-1] for b in grid.build_configs()] == [
        {"nprobe": b["nlist"]} for b in grid.build_configs()
    ]
    wide = with_overrides(grid, load_backend("faiss-ivf"), {"nlist": [2048]})
    assert wide.build_configs() == [{"nlist": 2048}]
    assert [s["nprobe"] for s in wide.search_configs({"nlist": 2048})] == [2**i for i in range(10)]


def test_the_planner_skips_blocks_for_other_metrics(clustered):
    _installed("usearch")
    jobs = plan_sweep(clustered, ["usearch"], k=K, runs=1, min_seconds=0)
    angular = clustered.metric is Metric.ANGULAR
    expected = {"f32", "f16", "i8"} if angular else {"f32", "f16"}
    assert {j.build_params["dtype"] for j in jobs} == expected
    if not angular:  # asked for by name, it is still an error
        with pytest.raises(AnnbenchError, match="dtype i8 normalizes vectors"):
            plan_sweep(clustered, ["usearch"], runs=1, overrides={"dtype": ["i8"]})


def test_a_build_override_takes_the_block_that_sets_its_keys():
    grid = default_grid("redis")  # FLAT first, then HNSW with M
    assert grid.build_configs()[0] == {"algorithm": "FLAT"}
    hnsw = with_overrides(grid, load_backend("redis"), {"M": [32]})
    assert hnsw.build_configs() == [{"algorithm": "HNSW", "M": 32, "ef_construction": 200}]
    assert [s["ef"] for s in hnsw.search_configs(hnsw.build_configs()[0])][:2] == [10, 16]
    flat = with_overrides(grid, load_backend("redis"), {"algorithm": ["FLAT"]})
    assert flat.build_configs() == [{"algorithm": "FLAT"}]
