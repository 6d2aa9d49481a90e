"""Input a hostile new user gives that annbench accepts but must not accept silently: each
command goes on with a one-line warning on stderr; and store or data folders whose paths the
file system cannot hold, which are one-line errors. Nothing stored is lost either way."""

import logging
import re

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from tests_helpers import a_record

from annbench.cli import main
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError
from annbench.metrics import Metric
from annbench.results.store import ResultStore
from annbench.sweep.distributed import check_scheduler_address


@pytest.fixture
def stored(isolated_folders):
    """A results store already holding one record; yields a check that it still does."""
    with ResultStore(isolated_folders / "results") as store:
        store.put(a_record())

    def still_there() -> None:
        with ResultStore(isolated_folders / "results") as store:
            assert store.count() == 1

    return still_there


def invoke(args, caplog):
    caplog.set_level(logging.WARNING)
    return CliRunner().invoke(main, [str(a) for a in args])


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def importing(source, *extra):
    return ["datasets", "import", source, "--name", "x", "--metric", "l2", "-q", *extra]


def test_train_labels_without_test_labels_warn(tmp_path, caplog, stored):
    path = create_synthetic(tmp_path / "l.hdf5", n=200, nq=10, d=4, metric=Metric.EUCLIDEAN)
    with h5py.File(path, "r+") as f:
        del f["test_labels"]
    result = invoke(["datasets", "info", path], caplog)
    assert result.exit_code == 0, result.output
    (line,) = warnings(caplog)
    assert "l.hdf5 has train_labels but no test_labels: label metrics and --filter label" in line
    stored()


def test_hdf5_source_labels_are_imported(tmp_path, caplog, stored, isolated_folders):
    """The train_labels of an HDF5 source are split with the held-out queries, not dropped."""
    with h5py.File(tmp_path / "s.hdf5", "w") as f:
        f["train"] = np.arange(120, dtype=np.float32).reshape(40, 3)
        f["train_labels"] = np.arange(40) % 4
    result = invoke(importing(tmp_path / "s.hdf5", "--queries", "5"), caplog)
    assert result.exit_code == 0, result.output
    with h5py.File(isolated_folders / "data" / "x.hdf5", "r") as f:
        assert f["train_labels"].shape == (35,) and f["test_labels"].shape == (5,)
    assert not warnings(caplog)
    stored()


def test_labels_for_the_base_only_warn(tmp_path, caplog, stored):
    np.save(tmp_path / "b.npy", np.arange(60, dtype=np.float32).reshape(20, 3))
    np.save(tmp_path / "q.npy", np.ones((4, 3), np.float32))
    (tmp_path / "l.txt").write_text("".join(f"c{i % 2}\n" for i in range(20)))
    result = invoke(
        importing(
            tmp_path / "b.npy", "--labels", tmp_path / "l.txt", "--queries-file", tmp_path / "q.npy"
        ),
        caplog,
    )
    assert result.exit_code == 0, result.output
    (line,) = warnings(caplog)
    assert line.startswith("Labels cover the base vectors only: the queries from q.npy have none")
    assert "leave out --queries-file" in line
    stored()


def test_normalizing_zero_vectors_warns(tmp_path, caplog, stored):
    vectors = np.ones((30, 4), np.float32)
    vectors[[2, 7, 11]] = 0
    np.save(tmp_path / "z.npy", vectors)
    result = invoke(importing(tmp_path / "z.npy", "--queries", "1", "--normalize"), caplog)
    assert result.exit_code == 0, result.output
    (line,) = warnings(caplog)
    found = re.search(r"(\d+) base vectors and (\d+) queries are all zeros, which cannot be", line)
    assert found and int(found[1]) + int(found[2]) == 3, line
    assert "--normalize leaves them zero" in line
    stored()


def test_integers_beyond_float32_warn(tmp_path, caplog, stored):
    vectors = np.arange(80, dtype=np.int64).reshape(20, 4)
    vectors[:3, 0] = [2**24 + 1, -(2**30), 2**40 + 1]
    np.save(tmp_path / "i.npy", vectors)
    result = invoke(importing(tmp_path / "i.npy", "--queries", "2"), caplog)
    assert result.exit_code == 0, result.output
    (line,) = warnings(caplog)
    assert "3 integer values exceed 2**24 in magnitude (largest 1099511627777)" in line
    assert "rounded in float32" in line
    stored()


def test_key_for_a_file_without_keys_warns(tmp_path, caplog, stored):
    np.save(tmp_path / "b.npy", np.arange(60, dtype=np.float32).reshape(20, 3))
    result = invoke(importing(tmp_path / "b.npy", "--queries", "2", "--key", "emb"), caplog)
    assert result.exit_code == 0, result.output
    assert warnings(caplog) == ["--key emb is ignored: b.npy is not an HDF5 file"]
    stored()


def test_results_store_path_too_long_in_environment(monkeypatch, tmp_path, stored):
    monkeypatch.setenv("ANNBENCH_RESULTS", str(tmp_path / ("r" * 300)))
    result = CliRunner().invoke(main, ["results"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "Error: Results store (--results or $ANNBENCH_RESULTS) path is too long for the file "
        "system (names up to 255 bytes, paths up to 4096)"
    ]
    stored()


def test_data_folder_path_too_long_in_environment(monkeypatch, tmp_path, stored):
    monkeypatch.setenv("ANNBENCH_DATA", str(tmp_path / ("d" * 300)))
    result = CliRunner().invoke(main, ["datasets", "list"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: Data folder ($ANNBENCH_DATA) path is too long for the file system (names up to "
        "255 bytes, paths up to 4096)"
    )
    stored()


def test_ipv6_scheduler_addresses():
    """A bracketed IPv6 address is accepted (nothing is started here); a broken one is one
    line saying how to write it, not Dask's ValueError."""
    assert check_scheduler_address("tcp://[::1]:8786") == "tcp://[::1]:8786"
    assert check_scheduler_address("tcp://[fe80::1%eth0]:8786")
    for broken in ("tcp://[::1:8786", "tcp://::1:8786", "tcp://[zz]:8786"):
        with pytest.raises(AnnbenchError, match=r"IPv6 host is written in brackets"):
            check_scheduler_address(broken)
