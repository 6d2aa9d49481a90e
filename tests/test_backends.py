"""Every backend on the same data, per metric: each must reach the recall it should."""

import faiss
import numpy as np
import pytest

from annbench.data.format import read_dataset
from annbench.data.runbooks import Step
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError, BackendUnavailable
from annbench.index import Index
from annbench.metrics import Metric, recall_at_k, true_distances
from annbench.registry import backend_names, capability_table, default_grid, load_backend
from annbench.sweep.replay import ReplayIndex

STRONG = {
    "faiss-flat": ({}, {}, 1.0),
    "faiss-ivf": ({"nlist": 16}, {"nprobe": 16}, 1.0),
    "faiss-ivfpq": ({"nlist": 16, "m": 8, "nbits": 6}, {"nprobe": 16}, 0.7),
    "faiss-hnsw": ({"M": 16, "efConstruction": 100}, {"efSearch": 128}, 0.97),
    "hnswlib": ({"M": 16, "ef_construction": 100}, {"ef": 128}, 0.97),
    "annoy": ({"n_trees": 20}, {"search_k": 20000}, 0.97),
}
MAIN_BACKENDS = ["annoy", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-ivfpq", "hnswlib"]


def test_all_six_backends_are_registered():
    assert set(MAIN_BACKENDS) <= set(backend_names())


@pytest.fixture(scope="module", params=list(Metric), ids=lambda m: m.value)
def data_per_metric(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("agree") / f"{request.param.value}.hdf5"
    create_synthetic(path, n=1500, nq=60, d=16, metric=request.param, n_clusters=8, seed=5)
    return read_dataset(path)


@pytest.mark.slow
def test_every_backend_reaches_its_recall(data_per_metric):
    data = data_per_metric
    failures = []
    for name in MAIN_BACKENDS:
        build, search, floor = STRONG[name]
        index = load_backend(name)(data.metric, **build)
        index.check(*data.train.shape)
        index.build(data.train)
        index.set_search_params(**search)
        xq = index.prepare_queries(data.test)
        result = index.search(xq, 10)
        assert result.ids.dtype == np.int64 and result.ids.shape == (60, 10), name
        found = true_distances(data.metric, data.train, data.test, result.ids)
        recall = recall_at_k(result.ids, found, data.neighbors, data.distances, 10).recall.mean()
        single = np.array([list(index.search_one(q, 10)) for q in xq[:5]])
        if recall < floor or not np.array_equal(single, result.ids[:5]):
            failures.append(f"{name}: recall {recall:.3f} < {floor} or search_one disagrees")
    assert not failures, f"{data.metric.value}: " + "; ".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("name", MAIN_BACKENDS)
def test_save_writes_a_file(name, tiny, tmp_path):
    build, search, _ = STRONG[name]
    index: Index = load_backend(name)(tiny.metric, **build)
    index.build(tiny.train)
    index.save(tmp_path / "index")
    assert (tmp_path / "index").stat().st_size > 0


@pytest.mark.parametrize(
    "name, build, message",
    [
        ("faiss-ivfpq", {"nlist": 4, "m": 5}, "m=5 does not divide the dimension d=32"),
        ("faiss-ivf", {"nlist": 5000}, "nlist=5000 exceeds the 2000 base vectors"),
        ("faiss-ivfpq", {"nlist": 4, "m": 8, "nbits": 12}, "needs at least 4096"),
    ],
)
def test_data_dependent_parameter_checks(name, build, message, tiny):
    with pytest.raises(AnnbenchError, match=message):
        load_backend(name)(tiny.metric, **build).check(*tiny.train.shape)


@pytest.mark.parametrize(
    "name, build",
    [
        ("faiss-hnsw", {"M": -1, "efConstruction": 40}),
        ("hnswlib", {"M": 16, "ef_construction": 0}),
        ("annoy", {"n_trees": 1.5}),
        ("faiss-ivf", {"nlist": "many"}),
    ],
)
def test_invalid_parameter_values(name, build):
    with pytest.raises(AnnbenchError, match="must be an integer"):
        load_backend(name)(Metric.EUCLIDEAN, **build)


@pytest.mark.slow
def test_packaged_grids_exist_for_every_backend():
    for name in MAIN_BACKENDS:
        grid = default_grid(name)
        cls = load_backend(name)
        if name != "faiss-flat":
            assert grid.search, name
            assert len(grid.search_configs()) >= 5, f"{name}: a sweep needs low to high recall"
        assert grid.build_configs(), name
        for params in grid.build_configs():
            cls(Metric.EUCLIDEAN, **params)


def test_missing_library_says_what_to_install(test_backends):
    with pytest.raises(BackendUnavailable, match="Install a-library-that-is-not-installed"):
        load_backend("test-missing")


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(AnnbenchError, match="Unknown backend 'nope'. Valid backends: annoy"):
        load_backend("nope")


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory, search",
    [
        ("IVF16,SQ8", {"nprobe": 16}),
        ("PCA16,IVF16,SQ8", {"nprobe": 16}),
        ("HNSW16,SQ8", {"efSearch": 64}),
        ("IVF16_HNSW16,PQ8x4fs,RFlat", {"nprobe": 16, "efSearch": 32, "k_factor": 16}),
    ],
)
def test_faiss_factory_strings_reach_recall(factory, search, tiny):
    index = load_backend("faiss-factory")(tiny.metric, factory=factory)
    index.check(*tiny.train.shape)
    index.build(tiny.train)
    index.set_search_params(**search)
    result = index.search(index.prepare_queries(tiny.test), 10)
    found = true_distances(tiny.metric, tiny.train, tiny.test, result.ids)
    recall = recall_at_k(result.ids, found, tiny.neighbors, tiny.distances, 10).recall.mean()
    assert recall >= 0.6, f"{factory}: recall {recall:.3f}"


def test_faiss_factory_sets_only_the_parameters_the_index_has(tiny):
    cls = load_backend("faiss-factory")
    ivf = cls(tiny.metric, factory="IVF16,Flat")
    ivf.build(tiny.train)
    xq = ivf.prepare_queries(tiny.test)
    ivf.set_search_params(nprobe=1)
    low = ivf.search(xq, 10).ids
    ivf.set_search_params(nprobe=16)
    assert not np.array_equal(low, ivf.search(xq, 10).ids)  # nprobe reached the index
    with pytest.raises(
        AnnbenchError, match="'IVF16,Flat' has no search parameter efSearch; it takes: nprobe"
    ):
        ivf.set_search_params(efSearch=32)
    hnsw = cls(tiny.metric, factory="HNSW16,SQ8")
    hnsw.check(*tiny.train.shape)  # knows its parameters before it is built
    with pytest.raises(AnnbenchError, match="no search parameter nprobe, k_factor; it takes: ef"):
        hnsw.set_search_params(nprobe=4, k_factor=2)


@pytest.mark.parametrize(
    "factory, message",
    [
        ("IVFxx,Foo", "faiss cannot make index 'IVFxx,Foo' for d=32: could not parse index"),
        ("PQ5", "faiss cannot make index 'PQ5' for d=32: .*multiple of the number of sub"),
        ("IVF4096,Flat", "IVF4096 needs at least 4096 training vectors, the base has 2000"),
        ("PCA16,IVF16,PQ8x12", "PQ8x12 needs at least 4096 training vectors"),
        ("", "must be a faiss index_factory string"),
    ],
)
def test_faiss_factory_bad_strings_are_one_line_errors(factory, message, tiny):
    with pytest.raises(AnnbenchError, match=message) as info:
        load_backend("faiss-factory")(tiny.metric, factory=factory).check(*tiny.train.shape)
    assert "\n" not in str(info.value)


def test_faiss_factory_default_grid_sweeps_what_each_string_has(tiny):
    grid = default_grid("faiss-factory")
    cls = load_backend("faiss-factory")
    for build in grid.build_configs():
        searches = grid.search_configs(build)
        assert len(searches) >= 5, build
        index = cls(Metric.ANGULAR, **build)
        index.check(22000, 384)
        for search in searches:
            index.set_search_params(**search)


@pytest.mark.slow
def test_ivfpq_skips_polysemous_training_and_refine_passes_the_codes_ceiling(tiny):
    """PQ4 codes on 32 dims are coarse; re-ranking 16 * k candidates exactly recovers recall."""
    cls = load_backend("faiss-ivfpq")
    recalls = {}
    for refine, k_factor in (("none", 1), ("Flat", 16)):
        index = cls(tiny.metric, nlist=16, m=4, refine=refine)
        index.build(tiny.train)
        index.set_search_params(nprobe=16, k_factor=k_factor)
        ids = index.search(index.prepare_queries(tiny.test), 10).ids
        found = true_distances(tiny.metric, tiny.train, tiny.test, ids)
        recalls[refine] = recall_at_k(ids, found, tiny.neighbors, tiny.distances, 10).recall.mean()
        inner = faiss.downcast_index(faiss.extract_index_ivf(index._index))
        assert not inner.do_polysemous_training
    assert recalls["none"] < 0.8 and recalls["Flat"] >= 0.95, recalls
    with pytest.raises(AnnbenchError, match="k_factor=4 re-ranks with a refine stage.*refine=Flat"):
        cls(tiny.metric, nlist=16, m=4).set_search_params(nprobe=4, k_factor=4)
    assert cls(tiny.metric, nlist=16, m=4).build_params == {"nlist": 16, "m": 4, "nbits": 8}


@pytest.mark.parametrize(
    ("name", "build", "removes"),
    [
        ("faiss-factory", {"factory": "IVF16,SQ8"}, True),
        ("faiss-factory", {"factory": "HNSW16"}, False),
        ("faiss-ivfpq", {"nlist": 16, "m": 4}, True),
        ("faiss-ivfpq", {"nlist": 16, "m": 4, "refine": "Flat"}, False),
    ],
)
def test_remove_is_answered_per_instance_and_replay_follows_it(name, build, removes, tiny):
    """The instance says whether faiss can remove from it; a runbook replay removes where it
    can and rebuilds from the live rows where it cannot."""
    index = load_backend(name)(tiny.metric, **build)
    assert index.supports_remove is removes
    index.build(tiny.train)
    if removes:
        index.remove(np.arange(5, dtype=np.int64))
    else:
        with pytest.raises(RuntimeError):  # faiss itself refuses: the answer is not too careful
            index._index.remove_ids(np.arange(5, dtype=np.int64))
    replay = ReplayIndex(load_backend(name), tiny.metric, build, tiny.train)
    replay.apply(Step("insert", insert=(0, 1000)))
    assert replay.apply(Step("delete", delete=(0, 100)))["rebuilt"] is not removes
    assert not replay.live[:100].any() and replay.live[100:1000].all()


@pytest.mark.slow
def test_capability_table_says_when_remove_depends_on_the_build():
    table = capability_table().set_index("backend")
    assert table.loc["faiss-factory", "remove"] == "depends: no for factory=HNSW32,SQ8"
    assert table.loc["faiss-ivfpq", "remove"] == "depends: no for refine=Flat"
    assert table.loc["faiss-ivf", "remove"] == "yes" and table.loc["faiss-hnsw", "remove"] == "no"
