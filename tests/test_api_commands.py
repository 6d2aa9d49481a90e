"""The API functions the file-writing commands call (export, plot, report), called from Python
as a notebook would, without the command line."""

import h5py
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
