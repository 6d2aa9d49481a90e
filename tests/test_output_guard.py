"""Every option that writes a file goes through one guard: never a results store or its journal
files, never a dataset, never a device; and a write that fails never reports success."""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from tests_helpers import a_record

from annbench.cli import main
from annbench.cli.types import InputPath, OutputPath, StoreLocation
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError
from annbench.metrics import Metric
from annbench.paths import output_file, protected
from annbench.results.store import ResultStore

#: One invocation per writing option; the option's value is appended last. A new writing
#: option fails test_every_writing_option_is_listed until it is added here.
WRITE_CASES = {
    ("results", "--csv"): ["results", "--csv"],
    ("results", "--parquet"): ["results", "--parquet"],
    ("results", "--out"): ["results", "--export", "ann-benchmarks", "-d", "tiny", "--out"],
    ("plot", "--out"): ["plot", "-d", "tiny", "--out"],
    ("report", "--out"): ["report", "--out"],
    ("recommend", "--save-index"): [
        "recommend",
        "-d",
        "tiny",
        "--min-recall",
        "0.5",
        "--save-index",
    ],
    ("datasets synth", "--save-model"): [
        "datasets",
        "synth",
        "guarded",
        "--like",
        "tiny",
        "--save-model",
    ],
}


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def _writing_options() -> dict[tuple[str, str], click.Parameter]:
    found = {}
    for name, command in _commands(main):
        for param in command.params:
            if isinstance(param.type, OutputPath):
                found[(name, max(param.opts, key=len))] = param
    return found


def test_every_path_parameter_says_whether_it_is_read_or_written():
    for name, command in _commands(main):
        for param in command.params:
            if isinstance(param.type, click.Path) and not isinstance(param.type, InputPath):
                pytest.fail(
                    f"'{name}' {param.name}: a bare click.Path; use InputPath for a file read, "
                    "OutputPath for one written (it goes through the output guard)"
                )


def test_every_writing_option_is_listed():
    assert set(_writing_options()) == set(WRITE_CASES), "add new writing options to WRITE_CASES"


def test_every_command_with_a_store_takes_it_through_the_store_guard():
    for name, command in _commands(main):
        for param in command.params:
            if "--results" in param.opts:
                assert isinstance(param.type, StoreLocation), name


@pytest.fixture
def kept(tmp_path, tiny_path):
    """A store with a result, a dataset in the data folder and one elsewhere, with digests."""
    store = Path(os.environ["ANNBENCH_RESULTS"]) / "annbench.sqlite"
    with ResultStore(store) as opened:
        opened.put(a_record())
    data = Path(os.environ["ANNBENCH_DATA"])
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_path, data / "tiny.hdf5")
    elsewhere = shutil.copy(tiny_path, tmp_path / "elsewhere.hdf5")
    link = tmp_path / "link.csv"
    link.symlink_to(store)
    files = [store, data / "tiny.hdf5", Path(elsewhere)]
    return {
        "targets": [*files, Path(f"{store}-wal"), Path(f"{store}-shm"), link],
        "digests": {path: _digest(path) for path in files},
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", sorted(WRITE_CASES))
def test_no_writing_option_can_destroy_a_store_or_dataset(case, kept):
    runner = CliRunner()
    for target in [*kept["targets"], Path(os.devnull)]:
        result = runner.invoke(main, [*WRITE_CASES[case], str(target)])
        message = result.output.strip()
        assert result.exit_code == 2, (case, target, message)
        assert len(message.splitlines()) == 1, message
        assert case[1] in message and ("would destroy it" in message or "device" in message)
    for path, digest in kept["digests"].items():
        assert _digest(path) == digest, f"{case} changed {path}"


def test_a_dataset_or_a_device_is_no_results_store(kept, tiny_path):
    runner = CliRunner()
    for name, command in _commands(main):
        if not any("--results" in p.opts for p in command.params):
            continue
        for target in (kept["targets"][1], kept["targets"][2], Path(os.devnull)):
            result = runner.invoke(main, [*name.split(), "--results", str(target)])
            assert result.exit_code == 2, (name, target, result.output)
            assert "--results" in result.output
    for path, digest in kept["digests"].items():
        assert _digest(path) == digest


def test_the_python_api_goes_through_the_same_guard(kept):
    import pandas as pd

    from annbench import api
    from annbench.report.plot import save_png

    for target in kept["targets"]:
        with pytest.raises(AnnbenchError, match="would destroy it"):
            api.write_parquet(pd.DataFrame({"a": [1]}), target)
        with pytest.raises(AnnbenchError, match="would destroy it"):
            save_png(None, target)  # refused before the figure is touched
    for path, digest in kept["digests"].items():
        assert _digest(path) == digest


def test_protected_judges_by_content_wherever_the_file_is(tmp_path, tiny_path):
    store = tmp_path / "anywhere" / "mine.db"
    with ResultStore(store) as opened:
        opened.put(a_record())
    assert "results store" in protected(store)
    assert "journal" in protected(f"{store}-wal")
    assert "dataset" in protected(shutil.copy(tiny_path, tmp_path / "renamed.bin"))
    exported = tmp_path / "run.hdf5"  # an HDF5 file without train vectors is no dataset
    import h5py

    with h5py.File(exported, "w") as f:
        f.create_dataset("neighbors", data=[[1, 2]])
    assert protected(exported) is None
    assert protected(tmp_path / "new.csv") is None


def test_a_failed_write_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("earlier\n")

    def full_disk(path: Path) -> None:
        path.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    def bad_file(path: Path) -> None:
        raise AnnbenchError("does not read back")

    for write, verify, message in [
        (full_disk, None, "No space left"),
        (lambda path: None, None, "nothing was written"),
        (lambda path: path.write_text("x"), bad_file, "does not read back"),
    ]:
        with pytest.raises(AnnbenchError, match=message):
            with output_file(target, "--csv", verify=verify) as temp:
                write(temp)
        assert target.read_text() == "earlier\n"
        assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left
    with output_file(target, "--csv") as temp:
        temp.write_text("new\n")
    assert target.read_text() == "new\n"


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faiss-flat", "hnswlib"])
def test_save_index_onto_a_full_device_fails_with_one_line(backend, tmp_path):
    """A real short write: the file-size limit makes the index write fail part-way. faiss
    checks its writes; hnswlib does not, so reading the index back is what catches it."""
    env = {**os.environ, "ANNBENCH_DATA": str(tmp_path / "data")}
    env["ANNBENCH_RESULTS"] = str(tmp_path / "results")
    create_synthetic(
        tmp_path / "data" / "small.hdf5",
        n=2000,
        nq=50,
        d=32,
        metric=Metric.EUCLIDEAN,
        n_clusters=8,
        seed=1,
    )
    annbench = [sys.executable, "-m", "annbench.cli"]
    grid = ["-g", "M=8", "-g", "ef=32"] if backend == "hnswlib" else []
    run = [*annbench, "run", "-b", backend, "-d", "small", "--runs", "1", "--min-time", "0", "-q"]
    subprocess.run([*run, *grid], env=env, check=True, capture_output=True)
    target = tmp_path / "index.bin"
    target.write_bytes(b"an earlier index")
    recommend = [*annbench, "recommend", "-d", "small", "--min-recall", "0.5"]
    result = subprocess.run(
        [*recommend, "--save-index", str(target)],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(100_000),  # the store's pages fit, the 256 kB index does not
    )
    assert result.returncode == 1, result.stderr
    assert "Saved" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--save-index" in result.stderr or "read back" in result.stderr
    assert target.read_bytes() == b"an earlier index"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "index.bin", "results"]
    saved = subprocess.run(
        [*recommend, "--save-index", str(target)], env=env, capture_output=True, text=True
    )
    assert saved.returncode == 0 and "Saved" in saved.stdout, saved.stderr
    assert target.stat().st_size > 100_000
