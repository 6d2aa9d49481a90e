"""The usearch, ScaNN, Voyager and PyNNDescent backends on tiny seeded data: recall, id
contract, save/load, add/remove, parameter errors and the missing-library message."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from annbench.data.format import read_dataset
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError, MissingDependency
from annbench.metrics import Metric, recall_at_k, true_distances
from annbench.param_grid import check_grid
from annbench.registry import backend_names, default_grid, load_backend

#: build parameters, search parameters at a generous setting, recall floor
STRONG = {
    "usearch": ({"connectivity": 16, "expansion_add": 64}, {"expansion_search": 128}, 0.95),
    "scann": ({"num_leaves": 16}, {"leaves_to_search": 16, "reorder": 200}, 0.95),
    "voyager": ({"M": 16, "ef_construction": 100}, {"ef": 128}, 0.95),
    "pynndescent": ({"n_neighbors": 15}, {"epsilon": 0.3}, 0.9),
}
NEW = sorted(STRONG)
MODULES = {
    "usearch": ("annbench.backends.usearch_backend", "usearch"),
    "scann": ("annbench.backends.scann_backend", "scann"),
    "voyager": ("annbench.backends.voyager_backend", "voyager"),
    "pynndescent": ("annbench.backends.pynndescent_backend", "pynndescent"),
}
N, NQ, K = 1000, 40, 10


def built_cases(cases):
    """``cases`` with those that build PyNNDescent marked slow: numba compiles it on its first
    build, for a minute or more on a busy host."""
    return [
        pytest.param(*c, marks=[pytest.mark.slow] if c[0] == "pynndescent" else []) for c in cases
    ]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """One tiny clustered dataset per metric, with exact ground truth."""
    folder = tmp_path_factory.mktemp("new-backends")
    return {
        metric: read_dataset(
            create_synthetic(
                folder / f"{metric.value}.hdf5",
                n=N,
                nq=NQ,
                d=16,
                metric=metric,
                n_clusters=8,
                seed=11,
            )
        )
        for metric in Metric
    }


@pytest.fixture(scope="module")
def built(datasets):
    """Built indexes by (backend, metric), each built once for the module (PyNNDescent's numba
    compilation makes its first build slow)."""
    cache = {}

    def get(name, metric):
        if (name, metric) not in cache:
            build, search, _ = STRONG[name]
            index = load_backend(name)(metric, **build)
            index.set_num_threads(2)
            index.check(*datasets[metric].train.shape)
            index.build(datasets[metric].train)
            index.set_search_params(**search)
            cache[name, metric] = index
        return cache[name, metric]

    return get


def claimed(name):
    return [(name, m) for m in sorted(load_backend(name).metrics, key=lambda m: m.value)]


def recall(data, ids):
    found = true_distances(data.metric, data.train, data.test, ids)
    return recall_at_k(ids, found, data.neighbors, data.distances, K).recall.mean()


def test_new_backends_are_registered_with_their_library():
    assert set(NEW) <= set(backend_names())
    for name in NEW:
        cls = load_backend(name)
        assert cls.library == name
        assert cls.library_version() != "unknown", name


@pytest.mark.parametrize("name, metric", built_cases([c for n in NEW for c in claimed(n)]))
def test_recall_and_id_contract(name, metric, datasets, built):
    data, index = datasets[metric], built(name, metric)
    xq = index.prepare_queries(data.test)
    result = index.search(xq, K)
    assert result.ids.dtype == np.int64 and result.ids.shape == (NQ, K)
    assert ((result.ids >= 0) & (result.ids < N)).all()
    assert recall(data, result.ids) >= STRONG[name][2]
    single = np.full((NQ, K), -1, dtype=np.int64)
    for i, q in enumerate(xq):
        found = np.asarray(index.search_one(q, K))
        single[i, : len(found)] = found
    assert recall(data, single) >= STRONG[name][2]


@pytest.mark.parametrize("name", built_cases([(n,) for n in NEW]))
def test_k_beyond_the_base_pads_with_minus_one(name, datasets, built):
    data = datasets[Metric.ANGULAR]
    index = built(name, Metric.ANGULAR)
    index.set_search_params(**{**STRONG[name][1], **_widest(name)})
    ids = index.search(index.prepare_queries(data.test[:3]), N + 7).ids
    index.set_search_params(**STRONG[name][1])
    assert ids.dtype == np.int64 and ids.shape == (3, N + 7)
    assert (ids[:, N:] == -1).all()
    for row in ids:
        real = row[row >= 0]
        assert len(real) == len(set(real.tolist())) and (real < N).all()


def _widest(name):
    """Search settings that can reach every base vector."""
    return {"scann": {"reorder": N + 7}, "voyager": {"ef": N + 7}}.get(name, {})


@pytest.mark.parametrize("name", built_cases([(n,) for n in NEW]))
def test_save_then_load_gives_the_same_ids(name, datasets, built, tmp_path):
    data = datasets[Metric.ANGULAR]
    index = built(name, Metric.ANGULAR)
    path = tmp_path / "index"
    index.save(path)
    assert path.is_file() and path.stat().st_size > 0
    build, search, _ = STRONG[name]
    loaded = load_backend(name)(Metric.ANGULAR, **build)
    loaded.set_num_threads(2)
    loaded.load(path)
    loaded.set_search_params(**search)
    xq = index.prepare_queries(data.test)
    np.testing.assert_array_equal(loaded.search(xq, K).ids, index.search(xq, K).ids)


@pytest.mark.parametrize("name", [n for n in NEW if load_backend(n).supports_add])
def test_add_then_remove(name, datasets):
    data = datasets[Metric.EUCLIDEAN]
    build, search, _ = STRONG[name]
    index = load_backend(name)(Metric.EUCLIDEAN, **build)
    index.set_num_threads(1)
    index.build(data.train[:800])
    index.add(data.train[800:], np.arange(800, N, dtype=np.int64))
    index.set_search_params(**search)
    xq = index.prepare_queries(data.train[800:840])
    assert (index.search(xq, 1).ids[:, 0] == np.arange(800, 840)).mean() >= 0.95
    gone = np.arange(0, N, 2, dtype=np.int64)  # every other id, old and added ones
    index.remove(gone)
    ids = index.search(index.prepare_queries(data.test), 50).ids
    assert not np.isin(ids, gone).any()
    assert (ids[:, 0] >= 0).all()
    assert not np.isin([index.search_one(q, 10) for q in xq], gone).any()


@pytest.mark.parametrize(
    "name, metric, build, message",
    [
        ("usearch", Metric.ANGULAR, {"connectivity": 1, "expansion_add": 64}, "connectivity"),
        (
            "usearch",
            Metric.ANGULAR,
            {"connectivity": 16, "expansion_add": 64, "dtype": "f64"},
            "dtype must be one of f32, f16, i8",
        ),
        (
            "usearch",
            Metric.EUCLIDEAN,
            {"connectivity": 16, "expansion_add": 64, "dtype": "i8"},
            "only fits the angular metric",
        ),
        ("voyager", Metric.DOT, {"M": 16, "ef_construction": 0}, "ef_construction"),
        (
            "voyager",
            Metric.DOT,
            {"M": 16, "ef_construction": 50, "storage": "bf16"},
            "storage must be one of float32, float8, e4m3",
        ),
        ("scann", Metric.DOT, {"num_leaves": 0}, "num_leaves"),
        ("scann", Metric.DOT, {"num_leaves": 8, "avq_threshold": "high"}, "avq_threshold"),
        ("pynndescent", Metric.ANGULAR, {"n_neighbors": 15, "diversify_prob": 2}, "in \\[0, 1\\]"),
        ("pynndescent", Metric.DOT, {"n_neighbors": 15}, "does not support the dot metric"),
    ],
)
def test_bad_build_parameter_is_one_line_error(name, metric, build, message):
    with pytest.raises(AnnbenchError, match=message) as caught:
        load_backend(name)(metric, **build)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "name, search, message",
    [
        ("usearch", {"expansion_search": 0}, "expansion_search must be an integer"),
        ("voyager", {"ef": -3}, "ef must be an integer"),
        ("scann", {"leaves_to_search": 4, "reorder": 0}, "reorder must be an integer"),
        ("pynndescent", {"epsilon": -0.1}, "epsilon must be a number >= 0"),
    ],
)
def test_bad_search_parameter_is_one_line_error(name, search, message):
    build = STRONG[name][0]
    with pytest.raises(AnnbenchError, match=message):
        load_backend(name)(Metric.ANGULAR, **build).set_search_params(**search)


def test_data_dependent_checks(datasets):
    data = datasets[Metric.EUCLIDEAN]
    with pytest.raises(AnnbenchError, match="num_leaves=5000 is more than the 1000"):
        load_backend("scann")(data.metric, num_leaves=5000).check(*data.train.shape)
    with pytest.raises(AnnbenchError, match="n_neighbors=1000 needs more than 1000"):
        load_backend("pynndescent")(data.metric, n_neighbors=1000).check(*data.train.shape)
    voyager = load_backend("voyager")(data.metric, M=8, ef_construction=20, storage="float8")
    with pytest.raises(AnnbenchError, match="float8 storage holds components in \\[-1, 1\\]"):
        voyager.build(data.train * 10)


@pytest.mark.parametrize(
    "name, storage",
    [("usearch", "f16"), ("usearch", "i8"), ("voyager", "float8"), ("voyager", "e4m3")],
)
def test_compressed_storage_keeps_recall_on_angular(name, storage, datasets):
    data = datasets[Metric.ANGULAR]
    build, search, _ = STRONG[name]
    key = "dtype" if name == "usearch" else "storage"
    index = load_backend(name)(data.metric, **build, **{key: storage})
    index.set_num_threads(1)
    index.build(data.train)
    index.set_search_params(**search)
    assert (
        recall(data, index.search(index.prepare_queries(data.test), K).ids) >= 0.8
    )  # lossy storage: a lower floor


@pytest.mark.parametrize("name", NEW)
def test_default_grid_fits_the_backend(name):
    grid = default_grid(name)
    cls = load_backend(name)
    check_grid(name, cls, grid)
    assert len(grid.search_configs()) >= 5, "a sweep needs low to high recall"
    for params in grid.build_configs():
        cls(Metric.ANGULAR, **params)


@pytest.mark.parametrize("name", NEW)
def test_missing_library_names_the_extra(name, monkeypatch):
    module, library = MODULES[name]
    monkeypatch.delitem(sys.modules, module, raising=False)
    for loaded in [m for m in sys.modules if m == library or m.startswith(f"{library}.")]:
        monkeypatch.setitem(sys.modules, loaded, None)  # importing the library now fails
    monkeypatch.setitem(sys.modules, library, None)
    with pytest.raises(MissingDependency) as caught:
        importlib.import_module(module)
    assert caught.value.package == name
    assert caught.value.install_command == f'pip install "annbench[{name}]"'


def test_registry_says_which_extra_to_install(monkeypatch):
    from annbench.errors import BackendUnavailable
    from annbench.registry import load_backend

    monkeypatch.delitem(sys.modules, "annbench.backends.scann_backend", raising=False)
    monkeypatch.setitem(sys.modules, "scann", None)  # importing scann now fails
    with pytest.raises(BackendUnavailable) as caught:
        load_backend("scann")
    assert str(caught.value) == (
        'Install scann to use the scann backend (pip install "annbench[scann]")'
    )


def test_missing_dependency_without_extra_keeps_the_old_form():
    exc = MissingDependency("hnswlib")
    assert (exc.package, exc.extra, str(exc)) == ("hnswlib", None, "install hnswlib")
    assert exc.install_command == "pip install hnswlib"


def test_scann_loads_in_a_process_that_imported_usearch_first(tmp_path):
    # usearch's static libstdc++ once made ScaNN's load crash with SIGSEGV in such a process
    script = f"""
import numpy as np
import annbench.backends.usearch_backend
from annbench.backends.scann_backend import Scann
from annbench.metrics import Metric
xb = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
index = Scann(Metric.EUCLIDEAN, num_leaves=8)
index.build(xb)
index.set_search_params(leaves_to_search=8, reorder=50)
index.save({str(tmp_path / "index")!r})
loaded = Scann(Metric.EUCLIDEAN, num_leaves=8)
loaded.load({str(tmp_path / "index")!r})
loaded.set_search_params(leaves_to_search=8, reorder=50)
assert (loaded.search(xb[:5], 3).ids == index.search(xb[:5], 3).ids).all()
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
