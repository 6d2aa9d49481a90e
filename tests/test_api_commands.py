"""The API functions the file-writing commands call (export, plot, report, datasets import and
embed), called from Python as a notebook would, without the command line."""

import logging

import h5py
import numpy as np
import pytest

import annbench
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric
from annbench.results.store import ResultStore

PNG = b"\x89PNG\r\n\x1a\n"


def test_export_results_writes_a_file_per_successful_run(tiny_sweep, tiny_path, tmp_path):
    folder, frame = tiny_sweep
    exported = annbench.export_results(tiny_path, tmp_path / "ab", results=folder)
    assert exported.folder == tmp_path / "ab" / "tiny"
    assert len(exported.files) == (frame["status"] == "ok").sum() and exported.left_out == 0
    assert exported.left_out_note() == ""
    assert all(path.is_relative_to(exported.folder) for path in exported.files)
    with h5py.File(exported.files[0], "r") as f:
        assert f.attrs["dataset"] == "tiny" and f["neighbors"].shape[0] == 100


def test_export_results_of_a_dataset_without_runs_is_an_error(tiny_sweep, tmp_path, rng):
    folder, _ = tiny_sweep
    from annbench.data.format import write_dataset

    other = tmp_path / "other.hdf5"
    write_dataset(other, rng.normal(size=(50, 4)), rng.normal(size=(5, 4)), Metric.EUCLIDEAN)
    with pytest.raises(AnnbenchError, match="No successful runs of other"):
        annbench.export_results(other, tmp_path / "ab", results=folder)
    assert not (tmp_path / "ab").exists()


def test_plot_results_writes_the_png_asked_for(tiny_sweep, tiny_path, tmp_path):
    folder, _ = tiny_sweep
    out = annbench.plot_results(tiny_path, results=folder, out=tmp_path / "recall.png")
    assert out == tmp_path / "recall.png" and out.read_bytes()[:8] == PNG
    with pytest.raises(AnnbenchError, match="No successful batch-mode results"):
        annbench.plot_results(tiny_path, results=folder, threads=True, out=tmp_path / "t.png")
    with pytest.raises(BadUsage, match="does not end in .png"):
        annbench.plot_results(tiny_path, results=folder, out=tmp_path / "recall.svg")
    with pytest.raises(AnnbenchError, match="No successful single-mode runs of runbook grow"):
        annbench.plot_results(tiny_path, results=folder, runbook="grow", out=tmp_path / "g.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recall.png"]


def test_plot_results_names_its_file_beside_the_store(tmp_path):
    from tests_helpers import a_record

    with ResultStore(tmp_path) as store:
        for ef, recall, qps in ((16, 0.8, 900.0), (64, 0.95, 400.0)):
            store.put(a_record(ef=ef, dataset="mini", recall=recall, qps=qps))
    out = annbench.plot_results("mini", results=tmp_path)
    assert out == tmp_path / "mini-single-k10.png" and out.read_bytes()[:8] == PNG


def test_report_writes_index_and_neighbour_pages(tiny_sweep, tiny_path, tmp_path, capsys):
    folder, _ = tiny_sweep
    written = annbench.write_report(
        folder,
        dataset=str(tiny_path),
        out=tmp_path / "site",
        neighbours=True,
        queries=[0, 7],
        progress=False,
    )
    assert written == [tmp_path / "site" / "neighbours-tiny.html", tmp_path / "site/index.html"]
    assert "neighbours-tiny.html" in written[1].read_text()
    page = written[0].read_text()
    assert "hnswlib" in page and "faiss-ivf" in page
    assert capsys.readouterr().err == ""  # progress=False shows nothing


def test_report_refuses_what_cannot_work(tiny_sweep, tmp_path):
    folder, _ = tiny_sweep
    with pytest.raises(BadUsage, match="queries go with neighbours=True"):
        annbench.write_report(folder, queries=[1], out=tmp_path / "a", progress=False)
    with pytest.raises(AnnbenchError, match="No results stored for dataset nothing-here"):
        annbench.write_report(folder, dataset="nothing-here", out=tmp_path / "b", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AnnbenchError, match="Report folder .* give a folder"):
        annbench.write_report(folder, out=tmp_path / "file", progress=False)


def test_import_dataset_holds_out_labelled_queries(tmp_path, rng, isolated_folders, capsys):
    x = rng.normal(size=(300, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(f"c{i % 3}" for i in range(300)))
    data = annbench.import_dataset(
        tmp_path / "x.npy", "mine", "cosine", queries=30, labels=tmp_path / "labels.txt",
        progress=False,
    )  # fmt: skip
    assert data.path == isolated_folders / "data" / "mine.hdf5" and data.name == "mine"
    assert data.metric is Metric.ANGULAR and data.train.shape == (270, 6)
    assert len(data.test) == 30 and len(data.test_labels) == 30
    assert capsys.readouterr().err == ""
    rows = {tuple(np.round(r, 5)) for r in x}
    assert all(tuple(np.round(q, 5)) in rows for q in data.test)  # held out of the source
    assert annbench.load_dataset("mine").content_hash == data.content_hash


def test_import_dataset_refuses_contradictions_and_names_taken(tmp_path, rng, isolated_folders):
    np.save(tmp_path / "x.npy", rng.normal(size=(40, 3)))
    np.save(tmp_path / "q.npy", rng.normal(size=(4, 3)))
    with pytest.raises(BadUsage, match="--queries 3 and --queries-file contradict"):
        annbench.import_dataset(
            tmp_path / "x.npy", "x", "l2", queries=3, queries_file=tmp_path / "q.npy"
        )
    data = annbench.import_dataset(
        tmp_path / "x.npy", "x", "l2", queries_file=tmp_path / "q.npy", progress=False
    )
    assert data.train.shape == (40, 3) and data.test.shape == (4, 3)
    with pytest.raises(AnnbenchError, match="exists; pass --force"):
        annbench.import_dataset(tmp_path / "x.npy", "x", "l2", queries=3, progress=False)
    with pytest.raises(AnnbenchError, match="taken by a built-in dataset"):
        annbench.import_dataset(tmp_path / "x.npy", "clustered-10k-64-angular", "l2")
    with pytest.raises(BadUsage, match="queries must be a whole number"):
        annbench.import_dataset(tmp_path / "x.npy", "y", "l2", queries=0)


def test_a_dataset_name_with_the_suffix_is_named_without_it(tmp_path, rng, caplog):
    np.save(tmp_path / "x.npy", rng.normal(size=(40, 3)))
    with caplog.at_level(logging.WARNING, logger="annbench"):
        data = annbench.import_dataset(
            tmp_path / "x.npy", "plain.hdf5", "l2", queries=4, progress=False
        )
    assert data.name == "plain" and data.path.name == "plain.hdf5"
    assert "Dataset name: plain (annbench adds the .hdf5 suffix)" in caplog.text


class _Encoder:
    """A stand-in embedding model: a seeded vector per distinct text, unit length."""

    def encode(self, batch, batch_size, normalize_embeddings):
        out = []
        for text in batch:
            seed = sum(text.encode())
            v = np.random.default_rng(seed).normal(size=8)
            out.append(v / np.linalg.norm(v))
        return np.array(out)


def test_embed_dataset_writes_a_labelled_angular_dataset(tmp_path, monkeypatch, capsys):
    from annbench.data import embed

    monkeypatch.setattr(embed, "find_model", lambda name: name)
    monkeypatch.setattr(embed, "load_model", lambda name, threads=None: _Encoder())
    source = tmp_path / "notes.csv"
    rows = [f"note number {i},{'ab'[i % 2]},{i}" for i in range(40)]
    source.write_text("text,kind,price\n" + "\n".join(rows) + "\n")
    data = annbench.embed_dataset(
        source, "notes", label_column="kind", queries=5, attr_columns=["price"], progress=False
    )
    assert data.metric is Metric.ANGULAR and data.train.shape == (35, 8) and len(data.test) == 5
    np.testing.assert_allclose(np.linalg.norm(data.train, axis=1), 1, rtol=1e-5)
    assert data.attrs["command"] == (
        "annbench datasets embed notes.csv --name notes --label-column kind --queries 5 "
        "--seed 0 --attr-column price"
    )
    assert set(data.train_labels) | set(data.test_labels) == {0, 1}
    assert "price" in data.attr_names
    assert capsys.readouterr().err == ""
    with pytest.raises(AnnbenchError, match="exists; pass --force"):
        annbench.embed_dataset(source, "notes", queries=5, progress=False)
