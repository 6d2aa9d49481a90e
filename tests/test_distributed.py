"""Scale-out on a real Dask LocalCluster of two workers."""

import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.store import ResultStore

pytest.importorskip("distributed")

GRID = ["-g", "nlist=8,16", "-g", "nprobe=1,4", "-g", "n_trees=5", "-g", "search_k=50,500"]


def run(tiny_path, folder, *args):
    """``annbench run`` on the tiny dataset into the store in ``folder``."""
    return CliRunner().invoke(main, ["run", "-d", str(tiny_path), "--results", str(folder), *args])


def sweep(tiny_path, folder, *extra):
    backends = ["-b", "faiss-ivf", "-b", "annoy", "-b", "faiss-flat"]
    result = run(tiny_path, folder, *backends, "--runs", "1", "--build-threads", "1", *GRID, *extra)
    assert result.exit_code == 0, result.output
    with ResultStore(folder) as store:
        return {r.key: r for r in store.records()}


def test_dask_sweep_matches_local_sweep(tiny_path, tmp_path):
    local = sweep(tiny_path, tmp_path / "local")
    remote = sweep(tiny_path, tmp_path / "dask", "--scheduler", "local", "--workers", "2")
    assert local.keys() == remote.keys() and len(local) == 7
    for key, record in local.items():
        assert remote[key].status == "ok"
        assert remote[key].recall == record.recall, record.backend
        assert remote[key].qps > 0
        assert remote[key].provenance["build_threads"] == 1
    # a second run resumes: nothing left to do
    again = run(
        tiny_path, tmp_path / "dask", "-b", "faiss-flat", "--runs", "1", "--scheduler", "local"
    )
    assert "Stored 0 results (1 already stored" in again.output


def test_crash_on_a_dask_worker_is_recorded(tiny_path, tmp_path, test_backends):
    backends = ["-b", "test-crash", "-b", "faiss-flat"]
    result = run(
        tiny_path, tmp_path, *backends, "--runs", "1", "-g", "level=1", "--scheduler", "local"
    )
    assert result.exit_code == 0, result.output
    with ResultStore(tmp_path) as store:
        records = {r.backend: r for r in store.records()}
    assert records["test-crash"].status == "failed" and "SIGSEGV" in records["test-crash"].error
    assert records["faiss-flat"].status == "ok"


def test_unreachable_scheduler_is_one_line(tiny_path, tmp_path):
    result = run(tiny_path, tmp_path, "-b", "faiss-flat", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 1
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.output
    bad = run(tiny_path, tmp_path, "-b", "faiss-flat", "--scheduler", "nowhere")
    assert bad.exit_code == 1 and "--scheduler must be 'local' or tcp://HOST:PORT" in bad.output
