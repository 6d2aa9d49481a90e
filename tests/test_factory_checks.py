"""Build configurations that cannot work fail while the sweep is planned: no worker starts,
no index is made in this process, and the user reads one line saying what to change."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import annbench
from annbench.candidates import propose
from annbench.cli import main
from annbench.data.format import read_dataset
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric
from annbench.registry import load_backend
from annbench.sweep import runner
from annbench.sweep.runner import RejectedJob, plan_sweep, run_in_worker

faiss = pytest.importorskip("faiss")
from annbench.backends import faiss_backend  # noqa: E402 - after the faiss skip
from annbench.backends.faiss_factory import read_factory  # noqa: E402

#: (factory string, words of the one-line error) on the 1,000 x 64 dataset
UNWORKABLE = [
    ("OPQ", "could not parse index string OPQ"),
    ("HNSW0", "HNSW M=0 cannot work"),
    ("IVF100000000,Flat", "IVF100000000 needs at least 100000000 training vectors, the base has"),
    ("PQ7", "PQ7 needs the dimension d=64 to be a multiple of the number of sub-quantizers 7"),
]


@pytest.fixture(scope="module")
def d64_path(tmp_path_factory):
    """1,000 x 64 clustered euclidean vectors, 20 held-out queries."""
    path = tmp_path_factory.mktemp("d64") / "d64.hdf5"
    return create_synthetic(path, n=1000, nq=20, d=64, metric=Metric.EUCLIDEAN, seed=5)


@pytest.fixture
def no_worker(monkeypatch):
    """Fail the test if a worker process starts."""

    def start(worker):
        raise AssertionError("a worker was started")

    monkeypatch.setattr(runner, "_start", start)


@pytest.fixture
def no_faiss_here(monkeypatch):
    """Fail the test if this process asks faiss to make an index (a child process may)."""
    calls = []

    def index_factory(*args):
        calls.append(args)
        raise AssertionError(f"faiss.index_factory{args} called in the planning process")

    monkeypatch.setattr(faiss, "index_factory", index_factory)
    yield
    assert calls == [], "faiss made an index in the planning process"


def cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("factory, message", UNWORKABLE)
def test_unworkable_factory_string_is_one_line_usage_error(
    factory, message, d64_path, no_worker, no_faiss_here
):
    result = cli("run", "-b", "faiss-factory", "-d", str(d64_path), "-g", f'factory="{factory}"')
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.strip().count("\n") == 0, result.output


@pytest.mark.parametrize("factory, message", UNWORKABLE)
def test_unworkable_factory_string_raises_from_run(
    factory, message, d64_path, no_worker, no_faiss_here
):
    with pytest.raises(BadUsage, match=message) as info:
        annbench.run("faiss-factory", dataset=d64_path, grid={"factory": factory}, progress=False)
    assert "\n" not in str(info.value)


def test_memory_estimate_over_the_limit_fails_before_any_worker(tiny_path, no_worker):
    args = ["run", "-b", "faiss-ivf", "-d", str(tiny_path), "-g", "nlist=16"]
    result = cli(*args, "--memory-limit", "300KB")
    assert result.exit_code == 2, result.output
    assert "over the memory limit of 0.3 MB" in result.output
    assert result.output.strip().count("\n") == 0, result.output


def test_memory_estimate_over_the_machine_fails(tiny, monkeypatch, no_worker):
    monkeypatch.setattr(runner.psutil, "virtual_memory", lambda: type("M", (), {"total": 1e5}))
    with pytest.raises(BadUsage, match="over this machine's 0.1 MB"):
        plan_sweep(tiny, ["faiss-hnsw"], overrides={"M": [16]})


def test_default_grid_entry_that_cannot_work_is_recorded_failed(tmp_path, no_worker):
    path = create_synthetic(tmp_path / "n500.hdf5", n=500, nq=10, d=16, metric=Metric.EUCLIDEAN)
    jobs = plan_sweep(read_dataset(path), ["faiss-ivf"])  # default nlist 64, 256, 512
    rejected = [job for job in jobs if isinstance(job, RejectedJob)]
    assert [job.build_params["nlist"] for job in rejected] == [512]
    records = list(run_in_worker(rejected[0]))
    assert len(records) == len(rejected[0].search_configs)
    assert {r.status for r in records} == {"failed"}
    assert "nlist=512 exceeds the 500 base vectors" in records[0].error


@pytest.mark.slow
def test_valid_factory_string_still_runs_without_faiss_in_the_planner(
    d64_path, no_faiss_here, isolated_folders
):
    frame = annbench.run(
        "faiss-factory",
        dataset=d64_path,
        grid={"factory": "IVF16,SQ8", "nprobe": [4]},
        runs=1,
        min_time=0,
        progress=False,
    )
    assert list(frame["status"]) == ["ok"] and frame["recall"].iloc[0] > 0.5


def test_unknown_strings_are_asked_of_faiss_in_a_child_process(no_faiss_here):
    assert read_factory("IVF16,RQ2x4", 32) is None  # the reader does not know RQ
    index = load_backend("faiss-factory")(Metric.EUCLIDEAN, factory="IVF16,RQ2x4")
    index.check(2000, 32)
    with pytest.raises(AnnbenchError, match="has no search parameter efSearch; it takes: nprobe"):
        index.set_search_params(efSearch=16)
    with pytest.raises(AnnbenchError, match="IVF4096 needs at least 4096 training vectors"):
        load_backend("faiss-factory")(Metric.EUCLIDEAN, factory="IVF4096,RQ2x4").check(2000, 32)


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory",
    [
        "Flat",
        "IVF16,Flat",
        "IVF16,SQ8",
        "IVF16,SQfp16",
        "IVF16,PQ8x4fs",
        "IVF16_HNSW8,PQ4,RFlat",
        "IVF16,PQ8np,Refine(SQ8)",
        "OPQ8_32,IVF16,PQ8",
        "PCA16,IVF16,SQ8",
        "PCAR16,HNSW8_SQ8",
        "HNSW8",
        "HNSW8,SQ4",
        "NSG16",
        "PQ8x6",
        "LSH",
    ],
)
def test_reader_agrees_with_faiss(factory, rng):
    """Training needs and search parameters as faiss' own index says; the memory estimate
    covers the saved index."""
    n, d = 1000, 32
    index = load_backend("faiss-factory")(Metric.EUCLIDEAN, factory=factory)
    found = read_factory(factory, d)
    made = index._make(d)
    assert sorted(found.training) == sorted(faiss_backend._training_needs(made))
    present = faiss_backend._space_names(faiss_backend._unwrap(made))
    takes = {k for k, names in index.SEARCH_PARAMS.items() if present & set(names)}
    assert found.search_params == takes
    xb = rng.standard_normal((n, d)).astype("float32")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        made.train(xb)
        made.add_with_ids(xb, np.arange(n))
    finally:
        faiss.omp_set_num_threads(threads)
    assert len(faiss.serialize_index(made)) <= found.memory_bytes(n)


def test_too_few_vectors_per_list_is_a_warning(tiny):
    ivf = load_backend("faiss-ivf")
    assert "nlist <= 51 trains better" in ivf(tiny.metric, nlist=64).build_warnings(2000, 32)[0]
    assert ivf(tiny.metric, nlist=16).build_warnings(2000, 32) == []


@pytest.mark.parametrize("n", [100, 300, 21000])
def test_proposed_candidates_pass_their_own_check(n):
    cls = load_backend("faiss-factory")
    for candidate in propose(n, 32, None, {"faiss-factory"}):
        cls(Metric.EUCLIDEAN, **candidate.build_params).check(n, 32)
