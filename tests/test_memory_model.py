"""Memory models per index family (annbench.scaling.memory): the terms, factory strings, the
fit-in-budget verdicts, validation against stored records, and the models checked against
indexes the real libraries build, save and load.

Tolerances checked here are the models' own (``TOLERANCES``): file sizes within 2 % for faiss,
hnswlib and Voyager, whose files hold exactly the modelled arrays; within 25 % for Annoy,
whose number of tree nodes depends on how evenly its random hyperplanes split the data.
Serving memory within 10 % (Annoy 30 %) on indexes of 4 MB or more, where the few hundred
kB a fresh process's loading leaves resident beside the index are a small share.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric
from annbench.registry import load_backend
from annbench.scaling.memory import (
    ANNOY_LEAF_FILL,
    FAISS_SERVING_RESIDUE,
    PRECOMPUTED_TABLE_MAX_BYTES,
    TOLERANCES,
    VALIDATION_COLUMNS,
    BaseShape,
    Calibration,
    MemoryModel,
    Term,
    calibrate,
    factory_layout,
    fits_in,
    memory_model,
    validate_memory_models,
)

# --- the models' terms ------------------------------------------------------------------------


def test_hnswlib_file_model_is_hnswlibs_element_layout():
    d, m = 384, 16
    model = memory_model("hnswlib", {"M": m, "ef_construction": 200}, d, figure="file")
    # size_data_per_element = 4d vector + (2M links + count) * 4 + 8 label; then per element
    # a 4-byte size of its upper levels, which it has 1 / (M - 1) of on average
    expected = 4 * d + (2 * m + 1) * 4 + 8 + 4 + (4 * m + 4) / (m - 1)
    assert model.vector_bytes == pytest.approx(expected)
    assert model.bytes_at(1_000_000) == pytest.approx(model.fixed_bytes + 1e6 * expected)
    text = model.explain()
    assert text.startswith("hnswlib M=16 ef_construction=200, file: 1,536 vector (4·d)")
    assert "132 level-0 links (2·M·4 + 4)" in text and "8 label" in text
    assert f"= {expected:,.1f} B/vector" in text


def test_serving_adds_what_hnswlib_builds_on_load():
    params = {"M": 16, "ef_construction": 100}
    file = memory_model("hnswlib", params, 32, figure="file")
    serving = memory_model("hnswlib", params, 32, figure="serving")
    extra = {term.what for term in serving.per_vector} - {term.what for term in file.per_vector}
    assert {"link-list mutex", "label hash table", "visited mark", "level"} <= extra
    assert serving.vector_bytes - file.vector_bytes == pytest.approx(94.3, abs=1)
    assert any(term.bytes == 65536 * 40 for term in serving.fixed)  # label-operation locks


def test_faiss_families_per_vector():
    d = 64
    flat = memory_model("faiss-flat", {}, d, figure="file")
    ivf = memory_model("faiss-ivf", {"nlist": 1024}, d, figure="file")
    pq = memory_model("faiss-ivfpq", {"nlist": 1024, "m": 16, "nbits": 8}, d, figure="file")
    pq6 = memory_model("faiss-ivfpq", {"nlist": 1024, "m": 16, "nbits": 6}, d, figure="file")
    hnsw = memory_model("faiss-hnsw", {"M": 32, "efConstruction": 40}, d, figure="file")
    assert flat.vector_bytes == 4 * d + 8  # vector + id map
    assert ivf.vector_bytes == 4 * d + 8  # vector + id in its list
    assert ivf.fixed_bytes > 1024 * d * 4  # the centroids
    assert pq.vector_bytes == 16 + 8 and pq6.vector_bytes == 12 + 8
    assert hnsw.vector_bytes == pytest.approx(4 * d + 8 + 4 * (2 * 32 + 32 / 31) + 4 + 8)
    refined = memory_model("faiss-ivfpq", {"nlist": 64, "m": 8, "refine": "Flat"}, d)
    assert refined.vector_bytes == 8 + 8 + 4 * d + 8  # code, list id, exact vector, id map
    sq8 = memory_model("faiss-ivfpq", {"nlist": 64, "m": 8, "refine": "SQ8"}, d)
    assert sq8.vector_bytes == 8 + 8 + d + 8
    assert memory_model("faiss-ivfpq", {"nlist": 64, "m": 8, "refine": "SQ4"}, d) is None


def test_ivfpq_precomputed_table_is_euclidean_only_and_bounded():
    params = {"nlist": 1024, "m": 16, "nbits": 8}
    l2 = memory_model("faiss-ivfpq", params, 64, "euclidean")
    for metric in ("angular", "dot"):
        assert l2.fixed_bytes - memory_model("faiss-ivfpq", params, 64, metric).fixed_bytes == (
            1024 * 16 * 256 * 4
        )
    huge = {"nlist": 2**20, "m": 64, "nbits": 8}  # 64 GiB of table: faiss skips it
    assert 2**20 * 64 * 256 * 4 > PRECOMPUTED_TABLE_MAX_BYTES
    without = memory_model("faiss-ivfpq", huge, 64, "angular").fixed_bytes
    assert memory_model("faiss-ivfpq", huge, 64, "euclidean").fixed_bytes == without


def test_serving_residue_only_for_faiss():
    flat = [memory_model("faiss-flat", {}, 8, figure=f).fixed_bytes for f in ("file", "serving")]
    assert flat[1] - flat[0] == FAISS_SERVING_RESIDUE
    annoy = [memory_model("annoy", {"n_trees": 4}, 8, figure=f) for f in ("file", "serving")]
    assert annoy[0].bytes_at(10**6) == annoy[1].bytes_at(10**6)  # served from a memory map


def test_annoy_trees_cost_about_the_same_per_tree_whatever_d():
    """Each tree has about 2n / (fill K) nodes of 16 + 4d bytes, with K = d + 2 ids a leaf
    holds: close to 8 / fill bytes per vector per tree for large d."""
    for d in (64, 256, 1024):
        one = memory_model("annoy", {"n_trees": 1}, d, figure="file")
        ten = memory_model("annoy", {"n_trees": 11}, d, figure="file")
        per_tree = (ten.vector_bytes - one.vector_bytes) / 10
        assert per_tree == pytest.approx(8 / ANNOY_LEAF_FILL[Metric.EUCLIDEAN], rel=0.07)
        assert one.vector_bytes - per_tree == 16 + 4 * d  # the item's own node


def test_voyager_storage_and_dot_dimension():
    base = {"M": 12, "ef_construction": 40}
    f32 = memory_model("voyager", base, 100, "angular", figure="file")
    e4m3 = memory_model("voyager", {**base, "storage": "e4m3"}, 100, "angular", figure="file")
    dot = memory_model("voyager", base, 100, "dot", figure="file")
    assert f32.vector_bytes - e4m3.vector_bytes == 300
    assert dot.vector_bytes - f32.vector_bytes == 4  # the order-preserving extra dimension


@pytest.mark.parametrize(
    "factory, expected",
    [
        ("Flat", {"kind": "flat", "idmap": True}),
        ("IDMap,Flat", {"kind": "flat", "idmap": True}),
        ("IVF256,Flat", {"kind": "ivf", "nlist": 256, "idmap": False}),
        ("IDMap,IVF256,Flat", {"kind": "ivf", "nlist": 256, "idmap": True}),
        ("IVF1024,PQ16", {"kind": "ivfpq", "nlist": 1024, "m": 16, "nbits": 8, "idmap": False}),
        ("IVF64,PQ8x6np", {"kind": "ivfpq", "nlist": 64, "m": 8, "nbits": 6, "idmap": False}),
        ("HNSW32", {"kind": "hnsw", "M": 32, "idmap": True}),
        (" HNSW16 , Flat ", {"kind": "hnsw", "M": 16, "idmap": True}),
    ],
)
def test_factory_strings_it_models(factory, expected):
    assert factory_layout(factory) == expected


@pytest.mark.parametrize(
    "factory",
    [
        "OPQ16,IVF256,PQ16",
        "IVF256,SQ8",
        "HNSW32,SQ8",
        "HNSW32_PQ8",
        "IDMap2,Flat",
        "PCA32,Flat",
        "IVF256_HNSW32,Flat",
        "IVF256,PQ16x4fs",
        "IVF256,PQ16,RFlat",
        "LSH",
        "",
    ],
)
def test_factory_strings_it_leaves_to_the_measured_fit(factory):
    assert factory_layout(factory) is None
    assert memory_model("faiss-factory", {"factory": factory}, 64) is None


@pytest.mark.parametrize(
    "factory, backend, params",
    [
        ("Flat", "faiss-flat", {}),
        ("IVF128,Flat", "faiss-ivf", {"nlist": 128}),
        ("IVF128,PQ8x8np", "faiss-ivfpq", {"nlist": 128, "m": 8, "nbits": 8}),
        ("HNSW24", "faiss-hnsw", {"M": 24, "efConstruction": 40}),
    ],
)
def test_a_factory_string_costs_what_the_same_backend_index_costs(factory, backend, params):
    for figure in ("file", "serving"):
        via_factory = memory_model("faiss-factory", {"factory": factory}, 32, figure=figure)
        direct = memory_model(backend, params, 32, figure=figure)
        assert via_factory.family == direct.family
        assert via_factory.bytes_at(123_456) == pytest.approx(direct.bytes_at(123_456))


@pytest.mark.parametrize("backend", ["usearch", "scann", "pynndescent", "milvus", "lancedb"])
def test_families_without_a_model_get_none(backend):
    assert memory_model(backend, {"M": 16, "connectivity": 16}, 32) is None


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(BadUsage, match="Memory figure 'disk' not valid"):
        memory_model("faiss-flat", {}, 32, figure="disk")
    with pytest.raises(AnnbenchError, match="Dimension d must be"):
        memory_model("faiss-flat", {}, 0)
    with pytest.raises(AnnbenchError, match="needs build parameter M as a whole number >= 2"):
        memory_model("hnswlib", {"ef_construction": 40}, 32)
    with pytest.raises(AnnbenchError, match="needs build parameter nlist"):
        memory_model("faiss-ivf", {"nlist": "many"}, 32)
    with pytest.raises(AnnbenchError, match="PQ m=7 does not divide the dimension d=32"):
        memory_model("faiss-ivfpq", {"nlist": 16, "m": 7}, 32)
    with pytest.raises(AnnbenchError, match="Metric 'hamming' not valid"):
        memory_model("faiss-flat", {}, 32, "hamming")


# --- fits_in ---------------------------------------------------------------------------------


def _model(per_vector: float = 100.0, tolerance: float = 0.10) -> MemoryModel:
    return MemoryModel(
        "hnswlib", "serving", "hnswlib M=16", (Term(per_vector, "v"),), (), tolerance
    )


def _calibration(worst: float, builds: int, family: str = "hnswlib") -> Calibration:
    return Calibration(family, "serving", builds, worst / 2, worst, worst / 2, 100_000)


@pytest.mark.parametrize(
    "budget, verdict",
    [(1.2e8, "yes"), (0.9e8, "no"), (1.05e8, "too close to call"), (0.95e8, "too close to call")],
)
def test_verdict_carries_the_models_tolerance_without_a_calibration(budget, verdict):
    answer = fits_in(_model(), 1_000_000, budget)  # 1e8 bytes predicted, 10 % either way
    assert answer.predicted_bytes == 1e8 and answer.margin == 0.10
    assert answer.low_bytes == pytest.approx(1e8 / 1.1) and answer.high_bytes == pytest.approx(
        1e8 / 0.9
    )
    assert answer.verdict == verdict
    assert "not validated against your results" in answer.margin_source


def test_calibration_sets_the_margin_and_the_extrapolation():
    answer = fits_in(_model(), 1_000_000, "105MB", calibration={"hnswlib": _calibration(0.02, 5)})
    assert answer.margin == 0.02 and answer.verdict == "yes"
    assert answer.budget_bytes == 105e6 and answer.extrapolation == pytest.approx(10)
    text = answer.text()
    assert text.startswith("hnswlib M=16 at 1,000,000 vectors: 100 MB serving memory predicted")
    assert "worst error in 5 validated builds, median 1.0%" in text
    assert "10x beyond the largest validated size" in text and text.endswith("fits in 105 MB")


def test_a_calibration_of_few_builds_widens_to_the_tolerance():
    answer = fits_in(_model(), 1_000_000, 1.05e8, calibration=_calibration(0.02, 1))
    assert answer.margin == 0.10 and answer.verdict == "too close to call"
    assert answer.margin_source.startswith("the model's tolerance (worst error in 1 validated")
    # a calibration worse than the tolerance is kept, whatever its size
    assert fits_in(_model(), 1_000_000, 1e9, calibration=_calibration(0.3, 1)).margin == 0.3


def test_fits_in_takes_predicted_bytes_with_a_margin():
    answer = fits_in(40e9, 50_000_000, "32GB", margin=0.1)
    assert answer.verdict == "no" and answer.margin_source == "given"
    assert "does not fit in 32 GB" in answer.text()
    with pytest.raises(BadUsage, match="needs margin="):
        fits_in(40e9, 50_000_000, "32GB")


def test_fits_in_bad_arguments():
    with pytest.raises(BadUsage, match="Vector count must be"):
        fits_in(_model(), 0, "1GB")
    with pytest.raises(AnnbenchError, match="Memory size 'lots' not understood"):
        fits_in(_model(), 10, "lots")
    with pytest.raises(BadUsage, match="Memory budget must be positive"):
        fits_in(_model(), 10, -5)
    with pytest.raises(BadUsage, match="Margin must be a fraction"):
        fits_in(_model(), 10, 1e9, margin=1.5)
    with pytest.raises(BadUsage, match="Calibration of annoy serving does not apply"):
        fits_in(_model(), 10, 1e9, calibration=_calibration(0.1, 5, family="annoy"))


# --- validation against stored records -------------------------------------------------------


def _records() -> pd.DataFrame:
    """Records as the store holds them: one build measured by several search settings."""
    hnsw = {"M": 16, "ef_construction": 100}
    rows = [
        # one hnswlib build searched at two ef: one build in the validation
        ("a", "hnswlib", hnsw, None, "ok", 5_531_896, 9_617_408),
        ("a", "hnswlib", hnsw, None, "ok", 5_531_896, 9_617_408),
        # the same configuration on a nested subset of 5,000 rows: a build of its own
        ("a", "hnswlib", hnsw, 5000, "ok", 1_382_876, 4_489_216),
        ("a", "faiss-ivf", {"nlist": 64}, None, "ok", 2_728_843, 3_141_632),
        ("a", "faiss-ivf", {"nlist": 64}, None, "failed", None, None),
        ("a", "usearch", {"connectivity": 16}, None, "ok", 5_530_144, 7_794_688),
    ]
    columns = ["dataset", "backend", "build_params", "base_size", "status"]
    frame = pd.DataFrame(rows, columns=[*columns, "index_bytes", "serving_memory_bytes"])
    frame["workload"] = "plain"
    frame["probe"] = False
    return frame


def test_validation_sets_predictions_beside_each_build():
    shapes = {"a": BaseShape(20_000, 32, Metric.EUCLIDEAN)}
    out = validate_memory_models(_records(), shapes)
    assert tuple(out.columns) == VALIDATION_COLUMNS
    assert list(zip(out["backend"], out["n"], out["records"], strict=True)) == [
        ("hnswlib", 20_000, 2),
        ("hnswlib", 5_000, 1),
        ("faiss-ivf", 20_000, 1),
    ]  # usearch has no model; the failed run is no build
    for row in out.itertuples():
        model = memory_model(row.backend, json.loads(_params(row.build)), 32, figure="file")
        assert row.file_predicted == pytest.approx(model.bytes_at(row.n))
        assert row.file_error == pytest.approx(
            (row.file_predicted - row.index_bytes) / row.index_bytes
        )
        assert (
            abs(row.file_error) < 0.02
        )  # these figures were measured with faiss 1.15, hnswlib 0.8


def _params(label: str) -> str:
    return json.dumps({k: int(v) for k, v in (part.split("=") for part in label.split())})


def test_validation_reads_flat_parameter_columns_and_json():
    flat = _records().drop(columns=["build_params"])
    flat["build.M"] = pd.array([16, 16, 16, None, None, None], dtype="Int64")
    flat["build.ef_construction"] = pd.array([100, 100, 100, None, None, None], dtype="Int64")
    flat["build.nlist"] = pd.array([None, None, None, 64, 64, None], dtype="Int64")
    flat["build.connectivity"] = pd.array([None] * 5 + [16], dtype="Int64")
    as_json = _records().assign(build_params=[json.dumps(p) for p in _records()["build_params"]])
    shapes = {"a": (20_000, 32, "euclidean")}
    expected = validate_memory_models(_records(), shapes)
    for frame in (flat, as_json):
        pd.testing.assert_frame_equal(validate_memory_models(frame, shapes), expected)


def test_validation_needs_every_datasets_shape():
    with pytest.raises(AnnbenchError, match="No base shape for dataset 'a'; pass datasets="):
        validate_memory_models(_records(), {"b": BaseShape(1, 1, Metric.DOT)})


def test_calibration_per_family_leaves_out_small_indexes():
    validation = pd.DataFrame(
        {
            "family": ["hnswlib", "hnswlib", "hnswlib", "faiss-ivf"],
            "n": [10_000, 40_000, 80_000, 1_000],
            "serving_memory_bytes": [5e6, 2e7, 4e7, 3e5],
            "serving_error": [0.04, -0.01, 0.02, 0.5],
            "index_bytes": [4e6, 1.6e7, 3.2e7, 2e5],
            "file_error": [0.001, -0.002, 0.0, 0.0],
        }
    )
    found = calibrate(validation)
    assert set(found) == {"hnswlib"}  # the 300 kB faiss-ivf index says nothing of large ones
    hnsw = found["hnswlib"]
    assert (hnsw.builds, hnsw.largest_n, hnsw.figure) == (3, 80_000, "serving")
    assert hnsw.median_error == pytest.approx(0.02) and hnsw.worst_error == pytest.approx(0.04)
    assert hnsw.bias == pytest.approx(0.02)
    assert calibrate(validation, "file", min_bytes=0)["faiss-ivf"].worst_error == 0.0
    with pytest.raises(BadUsage, match="Memory figure 'ram' not valid"):
        calibrate(validation, "ram")


# --- against the real libraries --------------------------------------------------------------

D = 32
SMALL, LARGE = 4_000, 12_000
#: (backend, build parameters, metric); those whose builds take more than 2 s are slow
FAST = [
    ("faiss-flat", {}, "euclidean"),
    ("faiss-ivf", {"nlist": 32}, "euclidean"),
    ("faiss-ivf", {"nlist": 32}, "angular"),
    ("hnswlib", {"M": 8, "ef_construction": 20}, "euclidean"),
    ("hnswlib", {"M": 24, "ef_construction": 20}, "angular"),
    ("annoy", {"n_trees": 5}, "euclidean"),
    ("annoy", {"n_trees": 20}, "angular"),
    ("annoy", {"n_trees": 20}, "dot"),
    ("voyager", {"M": 12, "ef_construction": 20}, "dot"),
    ("voyager", {"M": 12, "ef_construction": 20, "storage": "e4m3"}, "angular"),
    ("faiss-factory", {"factory": "IVF32,Flat"}, "dot"),
]
SLOW = [
    ("faiss-ivfpq", {"nlist": 32, "m": 8, "nbits": 8}, "euclidean"),
    ("faiss-ivfpq", {"nlist": 32, "m": 8, "nbits": 4, "refine": "Flat"}, "euclidean"),
    ("faiss-hnsw", {"M": 12, "efConstruction": 20}, "euclidean"),
    ("faiss-factory", {"factory": "HNSW8"}, "angular"),
]
CONFIGS = FAST + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW]


def _base(n: int, d: int, seed: int = 11) -> np.ndarray:
    """``n`` clustered vectors: 40 Gaussian clusters of unit spread around scattered centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)) * 3
    return (centres[rng.integers(0, 40, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(backend, params, metric, n, d)`` -> (path, file bytes) of an index the real
    library built over ``_base(n, d)`` and saved; built once per module."""
    folder = tmp_path_factory.mktemp("indexes")

    @functools.cache
    def build(backend: str, params: str, metric: str, n: int, d: int) -> tuple[Path, int]:
        index = load_backend(backend)(Metric(metric), **json.loads(params))
        index.set_num_threads(2)
        index.build(_base(n, d))
        path = folder / f"{backend}-{abs(hash((params, metric, n, d)))}" / "index"
        path.parent.mkdir()
        index.save(path)
        return path, sum(p.stat().st_size for p in path.parent.rglob("*") if p.is_file())

    return lambda backend, params, metric, n, d=D: build(
        backend, json.dumps(params, sort_keys=True), metric, n, d
    )


def _tolerance(backend: str, params: dict, figure: str) -> float:
    model = memory_model(backend, params, D, figure=figure)
    return TOLERANCES[model.family][0 if figure == "file" else 1]


@pytest.mark.parametrize("backend, params, metric", CONFIGS)
def test_file_size_matches_the_model(saved, backend, params, metric):
    _, size = saved(backend, params, metric, LARGE)
    predicted = memory_model(backend, params, D, metric, figure="file").bytes_at(LARGE)
    error = (predicted - size) / size
    assert abs(error) <= _tolerance(backend, params, "file"), f"{error:+.2%} off {size:,} B"


@pytest.mark.parametrize("backend, params, metric", CONFIGS)
def test_per_vector_slope_matches_the_measured_slope(saved, backend, params, metric):
    (_, small), (_, large) = (saved(backend, params, metric, n) for n in (SMALL, LARGE))
    measured = (large - small) / (LARGE - SMALL)
    modelled = memory_model(backend, params, D, metric, figure="file").vector_bytes
    error = (modelled - measured) / measured
    assert abs(error) <= _tolerance(backend, params, "file"), f"{modelled:.1f} vs {measured:.1f}"


def test_a_wrong_model_fails_the_file_check(saved):
    """The check can fail: faiss-flat without its 8-byte ids is 5.9 % off at d=32."""
    _, size = saved("faiss-flat", {}, "euclidean", LARGE)
    wrong = LARGE * 4 * D
    assert abs((wrong - size) / size) > TOLERANCES["faiss-flat"][0]


#: Serving memory: d=64 and sizes that make each index 4 MB or more
SERVED = [
    ("faiss-flat", {}, {}, "euclidean"),
    ("faiss-ivf", {"nlist": 64}, {"nprobe": 4}, "angular"),
    ("faiss-ivfpq", {"nlist": 128, "m": 16, "nbits": 8}, {"nprobe": 4}, "euclidean"),
    ("faiss-hnsw", {"M": 16, "efConstruction": 20}, {"efSearch": 32}, "euclidean"),
    ("hnswlib", {"M": 16, "ef_construction": 20}, {"ef": 32}, "euclidean"),
    ("voyager", {"M": 16, "ef_construction": 20}, {"ef": 32}, "angular"),
    ("annoy", {"n_trees": 10}, {"search_k": -1}, "euclidean"),
]


@pytest.mark.slow
@pytest.mark.parametrize("backend, params, search, metric", SERVED)
def test_serving_memory_matches_the_model(saved, backend, params, search, metric):
    from annbench.sweep.serving import measure_serving

    n, d = 16_000, 64
    path, _ = saved(backend, params, metric, n, d)
    served = measure_serving(backend, metric, params, path, _base(50, d, seed=3), search, 10)
    assert served.memory_bytes, served.note
    model = memory_model(backend, params, d, metric)
    error = (model.bytes_at(n) - served.memory_bytes) / served.memory_bytes
    # the premise: 4 MB or more; IVF-PQ codes are small, its 2.1 MB L2 table is most of its 3 MB
    assert served.memory_bytes >= (2.5e6 if backend == "faiss-ivfpq" else 4e6)
    assert abs(error) <= model.tolerance, f"{error:+.2%} off {served.memory_bytes:,} B"


@pytest.mark.slow
@pytest.mark.parametrize("backend, params, search, metric", [SERVED[0], SERVED[4]])
def test_serving_slope_matches_the_model(saved, backend, params, search, metric):
    """Two sizes 30,000 vectors apart: the loading residue mostly cancels."""
    from annbench.sweep.serving import measure_serving

    d, sizes = 64, (10_000, 40_000)
    served = []
    for n in sizes:
        path, _ = saved(backend, params, metric, n, d)
        queries = _base(50, d, seed=3)
        served.append(measure_serving(backend, metric, params, path, queries, search, 10))
    measured = (served[1].memory_bytes - served[0].memory_bytes) / (sizes[1] - sizes[0])
    modelled = memory_model(backend, params, d, metric).vector_bytes
    assert modelled == pytest.approx(measured, rel=0.10)


@pytest.mark.slow
def test_validated_sweep_answers_with_its_calibration(tmp_path):
    """A real sweep's stored records validate the models, calibrate them, and the answer at
    1M vectors carries that calibration."""
    import annbench
    from annbench.data.format import read_dataset
    from annbench.data.synthetic import create_synthetic

    path = create_synthetic(
        tmp_path / "mem.hdf5", n=16_000, nq=20, d=64, metric=Metric.EUCLIDEAN, seed=4
    )
    annbench.run(
        ["hnswlib", "faiss-ivf", "annoy"],
        dataset=path,
        grid={"M": 12, "ef_construction": 20, "ef": [10, 20], "nlist": 64, "nprobe": 4}
        | {"n_trees": 8, "search_k": -1},
        runs=1,
        min_time=0,
        results=tmp_path / "results",
        progress=False,
    )
    records = annbench.load_results(tmp_path / "results")
    validation = validate_memory_models(records, {"mem": BaseShape.of(read_dataset(path))})
    assert sorted(validation["family"]) == ["annoy", "faiss-ivf", "hnswlib"]
    assert validation.loc[validation["family"] == "hnswlib", "records"].item() == 2
    for row in validation.itertuples():
        file_tol, serving_tol = TOLERANCES[row.family]
        assert abs(row.file_error) <= file_tol, row
        assert abs(row.serving_error) <= serving_tol, row
    calibration = calibrate(validation)
    model = memory_model("hnswlib", {"M": 12, "ef_construction": 20}, 64)
    answer = fits_in(model, 1_000_000, "1GB", calibration=calibration)
    assert answer.margin == pytest.approx(max(calibration["hnswlib"].worst_error, model.tolerance))
    assert answer.verdict == "yes" and answer.extrapolation == pytest.approx(1e6 / 16_000)
    assert not math.isnan(answer.predicted_bytes)
