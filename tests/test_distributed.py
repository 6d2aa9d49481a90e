"""Scale-out on a real Dask LocalCluster of two workers."""

import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.results.store import ResultStore

pytestmark = pytest.mark.slow  # Dask clusters

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


@pytest.mark.parametrize(
    "address", ["tcp://", "tcp://host", "tcp://host:0", "tcp://host:99999", "tcp://:8786", ""]
)
def test_malformed_scheduler_address_is_refused_before_anything_runs(tiny_path, tmp_path, address):
    bad = run(tiny_path, tmp_path, "-b", "faiss-flat", "--scheduler", address)
    assert bad.exit_code == 1 and "--scheduler must be 'local' or tcp://HOST:PORT" in bad.output
    assert "Measuring" not in bad.output and not (tmp_path / "annbench.sqlite").exists()


def test_newcomer_cluster_without_the_resource_fails_in_seconds(tiny_path, tmp_path, monkeypatch):
    """A plain 'dask worker' (no --resources annbench=1) used to leave the sweep waiting."""
    from distributed import LocalCluster

    from annbench.sweep import distributed

    monkeypatch.setattr(distributed, "WORKER_WAIT_SECONDS", 1.0)
    with LocalCluster(
        n_workers=1, processes=False, protocol="tcp://", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        result = run(tiny_path, tmp_path, "-b", "faiss-flat", "--scheduler", address)
    assert result.exit_code == 1, result.output
    assert "none offering the 'annbench' resource" in result.output
    assert f"dask worker {address} --nthreads 1 --resources annbench=1" in result.output
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in result.output


def test_daemonic_workers_are_refused_with_the_command(tiny_path, tmp_path):
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        resources={"annbench": 1},
        dashboard_address=None,
    )
    with cluster:
        result = run(
            tiny_path, tmp_path, "-b", "faiss-flat", "--scheduler", cluster.scheduler_address
        )
    assert result.exit_code == 1, result.output
    assert "run as daemons" in result.output and "DAEMON=False dask worker" in result.output
