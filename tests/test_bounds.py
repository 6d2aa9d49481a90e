"""Unbounded work refused or made linear: many filter workloads, two spellings of one range
filter, oversized and alias-bomb runbooks, and progress while runbook ground truth computes."""

from __future__ import annotations

import shutil

import h5py
import pytest
import yaml
from click.testing import CliRunner

from annbench import api
from annbench.cli import main
from annbench.data import fingerprint, workloads
from annbench.data.format import read_dataset
from annbench.data.runbooks import load_runbook
from annbench.data.synthetic import create_synthetic
from annbench.data.workloads import BadFilter, parse_filters, prepare_workloads, workload_hash
from annbench.errors import AnnbenchError
from annbench.metrics import Metric
from annbench.progress import Progress

N_FILTERS = 12
#: The documented limits (docs/guides/filtered-search.md and runbooks.md): filter workloads per
#: run; runbook bytes, steps, YAML values.
MAX_FILTERS, MAX_BYTES, MAX_STEPS, MAX_VALUES = 64, 1 << 20, 10_000, 200_000


@pytest.fixture
def attr_path(tmp_path):
    """A writable 800 x 8 dataset with one numeric attribute ``u``, 20 queries."""
    path = tmp_path / "attr.hdf5"
    return create_synthetic(
        path, n=800, nq=20, d=8, metric=Metric.EUCLIDEAN, n_clusters=8, seed=1, random_attr="u"
    )


class Work:
    """Counts file copies and the arrays hashed (by name) while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.copies = 0
        self.hashed: list[str] = []
        copyfile, copyfileobj, digest = (
            shutil.copyfile,
            shutil.copyfileobj,
            fingerprint.array_digest,
        )

        def count_copyfile(*args, **kwargs):
            self.copies += 1
            return copyfile(*args, **kwargs)

        def count_copyfileobj(*args, **kwargs):
            self.copies += 1
            return copyfileobj(*args, **kwargs)

        def count_digest(name, array):
            self.hashed.append(name)
            return digest(name, array)

        monkeypatch.setattr(shutil, "copyfile", count_copyfile)
        monkeypatch.setattr(shutil, "copyfileobj", count_copyfileobj)
        monkeypatch.setattr(fingerprint, "array_digest", count_digest)


@pytest.mark.parametrize("side_file", [False, True], ids=["in-file", "side-file"])
def test_filter_workloads_cost_does_not_grow_with_their_number(attr_path, monkeypatch, side_file):
    if side_file:  # as for the bundled dataset or a read-only file
        monkeypatch.setattr(workloads, "_read_only", lambda path: True)
    data = read_dataset(attr_path)
    names = parse_filters(
        [",".join(["range:0.1"] + [f"{0.2 + i / 100:g}" for i in range(1, N_FILTERS)])]
    )
    assert len(names) == N_FILTERS
    with pytest.MonkeyPatch.context() as counting:
        work = Work(counting)
        # what `annbench run --filter ...` does: prepare every workload, then the planner's hashes
        prepare_workloads(data, names)
        hashes = {name: workload_hash(data, name) for name in names}
        written = list(work.hashed)
        # one more workload's hash reads that workload's arrays only
        work.hashed.clear()
        workload_hash(data, names[0])
    assert work.copies <= 1, "every workload's arrays are written in one rewrite of the file"
    assert not [n for n in written if "@" not in n], "the dataset's arrays are not rehashed"
    for name in names:  # each workload's own 4 arrays: hashed when written and when keyed
        assert written.count(f"neighbors@{name}") <= 2
    assert len(written) <= 2 * len(workloads.ARRAYS) * N_FILTERS
    assert set(work.hashed) <= {f"{key}@{names[0]}" for key in workloads.ARRAYS}

    # and the hashes are those of the whole stored file, hashed afresh
    stored = workloads._side_file(data) if side_file else attr_path
    with h5py.File(stored, "r") as f:
        whole = fingerprint.hash_hdf5(f, {})
    fresh = read_dataset(attr_path)
    assert data.content_hash == fresh.content_hash
    for name in names:
        assert hashes[name] == fingerprint.Fingerprint(
            fresh.content_hash, whole.workloads
        ).workload_hash(name)


def test_more_filter_workloads_than_the_limit_is_a_one_line_usage_error(attr_path):
    values = ",".join(f"{(i + 1) / 1000:g}" for i in range(MAX_FILTERS))
    assert len(parse_filters([f"range:{values}", "none"])) == MAX_FILTERS + 1
    with pytest.raises(BadFilter, match=f"at most {MAX_FILTERS} per run"):
        parse_filters([f"range:{values}", "label"])
    many = ",".join(f"{(i + 1) / 10000:g}" for i in range(5000))
    result = CliRunner().invoke(
        main, ["run", "-b", "faiss-flat", "-d", str(attr_path), "--filter", f"range:{many}"]
    )
    assert result.exit_code == 2, result.output
    assert f"5000 filter workloads given, at most {MAX_FILTERS} per run" in result.output
    assert result.output.strip().count("\n") <= 3  # click's usage lines, then the one error


@pytest.mark.slow
def test_range_filter_with_its_attribute_named_or_implied_is_one_workload(attr_path, tmp_path):
    args = dict(dataset=str(attr_path), runs=1, min_time=0, progress=False, results=tmp_path)
    first = api.run(["faiss-flat"], filters=["range:u:0.3"], **args)
    assert first.attrs["sweep"]["stored"] > 0
    assert set(first["workload"]) == {"range:0.3"}
    again = api.run(["faiss-flat"], filters=["range:0.3"], **args)
    assert again.attrs["sweep"]["stored"] == 0
    assert again.attrs["sweep"]["skipped"] == first.attrs["sweep"]["stored"]
    with h5py.File(attr_path, "r") as f:
        assert [key for key in f if key.startswith("neighbors@")] == ["neighbors@range:0.3"]


# ---- runbooks ---------------------------------------------------------------------------------


def test_runbook_file_over_the_byte_limit_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("steps: [{insert: [0, 10]}, search]\n# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(AnnbenchError, match=f"larger than {MAX_BYTES:,} bytes") as err:
        load_runbook(str(path), 100)
    assert "\n" not in str(err.value)


def test_runbook_with_too_many_steps_is_refused(tmp_path):
    path = tmp_path / "long.yaml"
    steps = [{"insert": [0, 10]}] + ["search"] * MAX_STEPS
    path.write_text(yaml.safe_dump({"steps": steps}, default_flow_style=True, width=1 << 30))
    with pytest.raises(AnnbenchError, match=f"more than {MAX_STEPS:,}; merge"):
        load_runbook(str(path), 100)
    path.write_text(yaml.safe_dump({"steps": steps[:MAX_STEPS]}, default_flow_style=True))
    assert len(load_runbook(str(path), 100).steps) == MAX_STEPS


def test_yaml_alias_bomb_runbook_is_refused_before_it_is_expanded(tmp_path):
    # six levels of nine aliases: 531,441 strings in a 300-byte file (nine levels: 387 million)
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcde", "bcdef", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    text = "description: [" + ", ".join(line.split(": ", 1)[1] for line in lines) + "]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(text + "steps: [{insert: [0, 10]}, search]\n")
    assert len(text) < 400
    with pytest.raises(AnnbenchError, match=f"more than {MAX_VALUES:,} YAML values"):
        load_runbook(str(path), 100)
    # an alias used as the YAML spec meant it (a shared range) is fine
    path.write_text(
        "steps: [{insert: &r [0, 10]}, search, {delete: *r}, {insert: [10, 20]}, search]\n"
    )
    assert load_runbook(str(path), 100).steps[2].delete == (0, 10)


class Recorder(Progress):
    """A Progress that keeps the statuses and messages it is shown."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def status(self, text: str) -> None:
        self.seen.append(text)

    def message(self, text: str) -> None:
        self.seen.append(text)


@pytest.mark.slow
def test_runbook_ground_truth_shows_progress_through_the_display(tmp_path):
    path = tmp_path / "small.hdf5"
    create_synthetic(path, n=400, nq=10, d=8, metric=Metric.EUCLIDEAN, n_clusters=4, seed=2)
    runbook = tmp_path / "steps.yaml"
    runbook.write_text("steps: [{insert: [0, 50%]}, search, {insert: [50%, 100%]}, search]\n")
    shown = Recorder()
    api.run(
        ["faiss-flat"],
        dataset=str(path),
        runbook=str(runbook),
        runs=1,
        min_time=0,
        progress=shown,
        results=tmp_path / "results",
    )
    counts = [text for text in shown.seen if text.startswith("runbook ground truth")]
    assert counts, f"no ground-truth progress among {shown.seen}"
    assert counts[0].endswith("0/2 search steps") and counts[-1].endswith("2/2 search steps")
