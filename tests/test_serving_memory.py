"""Serving memory and load time: the saved index loaded cold in a fresh process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from annbench.data.format import read_dataset
from annbench.data.synthetic import create_synthetic
from annbench.metrics import Metric
from annbench.results.analysis import successful
from annbench.results.store import ResultStore
from annbench.sweep.memory import drop_from_page_cache
from annbench.sweep.runner import plan_sweep, run_sweep

pytestmark = pytest.mark.slow  # indexes loaded in fresh processes

SERVING_PLUGIN = Path(__file__).parent / "serving_plugin"


@pytest.fixture
def serving_backends(monkeypatch: pytest.MonkeyPatch):
    """Register the faiss test backends in tests/serving_plugin, for this process and workers."""
    monkeypatch.syspath_prepend(str(SERVING_PLUGIN))
    monkeypatch.setenv("PYTHONPATH", str(SERVING_PLUGIN))
    yield
    sys.modules.pop("annbench_serving_backends", None)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory):
    """20,000 x 64 clustered vectors: enough for a compact index to be much smaller than the
    memory its build goes through."""
    path = tmp_path_factory.mktemp("medium") / "medium.hdf5"
    create_synthetic(path, n=20_000, nq=50, d=64, metric=Metric.EUCLIDEAN, n_clusters=32, seed=5)
    return read_dataset(path)


def sweep(dataset, backend, folder, **overrides):
    jobs = plan_sweep(dataset, [backend], runs=1, overrides=overrides, build_threads=1)
    with ResultStore(folder) as store:
        summary = run_sweep(jobs, store)
        records = store.records()
    assert not summary.failed, summary.failed[0].error
    return records


def test_serving_memory_of_a_compact_index_is_near_its_file_size_and_used_by_recommend(
    medium, tmp_path, serving_backends
):
    (record,) = sweep(medium, "test-ivfpq-np", tmp_path, nlist=[16], m=[16], nprobe=[4])
    file_size, serving = record.index_bytes, record.serving_memory_bytes
    assert file_size > 500_000  # 20,000 x 16-byte codes and 8-byte ids, plus codebooks
    assert serving is not None and file_size / 2 <= serving <= 3 * file_size
    assert serving < record.peak_rss_bytes / 10  # far below what the build went through
    assert record.load_s > 0
    assert "serving_memory" not in record.provenance
    with ResultStore(tmp_path) as store:  # the three figures are stored
        frame = successful(store.dataframe())
    row = frame.iloc[0]
    assert (row["serving_memory_bytes"], row["index_bytes"]) == (serving, file_size)
    assert row["peak_rss_bytes"] == record.peak_rss_bytes and row["load_s"] == record.load_s
    assert row["memory_footprint"] == serving  # what recommend --max-memory checks


def test_a_backend_that_cannot_load_has_no_serving_memory_and_says_why(
    tiny, tmp_path, serving_backends
):
    (record,) = sweep(tiny, "test-save-only", tmp_path)
    assert record.status == "ok" and record.index_bytes > 0 and record.recall == 1.0
    assert record.serving_memory_bytes is None and record.load_s is None
    assert record.provenance["serving_memory"] == (
        "not measured: test-save-only cannot load a saved index"
    )


def test_a_load_that_fails_is_noted_not_fatal(tiny, tmp_path, serving_backends):
    (record,) = sweep(tiny, "test-load-breaks", tmp_path)
    assert record.status == "ok" and record.serving_memory_bytes is None
    assert "corrupt header" in record.provenance["serving_memory"]


def test_a_backend_without_save_has_neither_file_nor_serving_memory(tiny, tmp_path, test_backends):
    (record,) = sweep(tiny, "test-duplicates", tmp_path, level=[1])
    assert record.status == "ok" and record.index_bytes is None
    assert record.serving_memory_bytes is None and record.load_s is None
    assert record.provenance["serving_memory"] == (
        "not measured: test-duplicates cannot save an index"
    )


def test_drop_from_page_cache_keeps_the_file(tmp_path):
    path = tmp_path / "index"
    path.write_bytes(b"x" * 100_000)
    (tmp_path / "index.meta").write_text("m")
    assert drop_from_page_cache(path) is (sys.platform != "darwin")
    assert path.read_bytes() == b"x" * 100_000


@pytest.mark.parametrize(
    "backend, grid",
    [
        ("hnswlib", {"M": [8], "ef_construction": [20], "ef": [10]}),
        ("annoy", {"n_trees": [4], "search_k": [200]}),
        ("faiss-ivf", {"nlist": [16], "nprobe": [4]}),
    ],
)
def test_every_built_in_backend_reports_serving_memory(tiny, tmp_path, backend, grid):
    (record,) = sweep(tiny, backend, tmp_path, **grid)
    assert record.index_bytes > 0 and record.load_s > 0
    # plus fixed costs of the library: hnswlib allocates 65,536 label locks (2.6 MB) on load
    assert 0 < record.serving_memory_bytes <= 3 * record.index_bytes + 4_000_000
    assert "serving_memory" not in record.provenance
    # the whole resident set gain counts what serving memory leaves out (library code pages)
    assert record.serving_rss_bytes is not None and record.serving_rss_bytes > 0
