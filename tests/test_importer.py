import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.data.format import read_dataset
from annbench.data.groundtruth import exact_knn
from annbench.data.importer import import_vectors, open_vectors
from annbench.errors import AnnbenchError
from annbench.metrics import Metric


@pytest.fixture
def vectors(rng):
    return rng.normal(size=(600, 12)).astype(np.float32)


def write_vecs(path, x, dtype):
    rows = np.asarray(x).astype(dtype)
    with open(path, "wb") as f:
        for row in rows:
            np.int32(len(row)).tofile(f)
            row.tofile(f)
    return path


def test_every_format_reads_the_same_vectors(tmp_path, vectors):
    import pandas as pd

    np.save(tmp_path / "x.npy", vectors)
    write_vecs(tmp_path / "x.fvecs", vectors, np.float32)
    pd.DataFrame({"id": range(600), "emb": list(vectors)}).to_parquet(tmp_path / "x.parquet")
    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f["embeddings"] = vectors
    for name in ("x.npy", "x.fvecs", "x.parquet", "x.hdf5"):
        np.testing.assert_array_equal(np.asarray(open_vectors(tmp_path / name)[:]), vectors, name)
    ints = (np.abs(vectors) * 10).astype(np.int32)
    np.testing.assert_array_equal(
        open_vectors(write_vecs(tmp_path / "x.ivecs", ints, np.int32))[:], ints
    )
    bytes_ = ints.clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(
        open_vectors(write_vecs(tmp_path / "x.bvecs", bytes_, np.uint8))[:], bytes_
    )


def test_import_holds_out_queries_and_computes_exact_truth(tmp_path, vectors):
    np.save(tmp_path / "x.npy", vectors)
    labels = np.arange(600) % 4
    path = import_vectors(
        tmp_path / "x.npy", tmp_path / "out.hdf5", Metric.ANGULAR, queries=50, labels=labels, seed=7
    )
    data = read_dataset(path)
    assert data.train.shape == (550, 12) and data.test.shape == (50, 12)
    # queries are rows of the source that are not in the base
    base_rows = {row.tobytes() for row in data.train}
    assert not any(q.tobytes() in base_rows for q in data.test)
    assert base_rows | {q.tobytes() for q in data.test} == {row.tobytes() for row in vectors}
    d, ids = exact_knn(data.train, data.test, 100, Metric.ANGULAR)
    np.testing.assert_array_equal(data.neighbors, ids)
    assert data.train_labels.shape == (550,) and data.test_labels.shape == (50,)
    # labels follow their rows
    source_label = {row.tobytes(): lab for row, lab in zip(vectors, labels, strict=True)}
    assert all(
        source_label[r.tobytes()] == lab
        for r, lab in zip(data.train, data.train_labels, strict=True)
    )
    # same seed, same split, same hash; the labels are part of the content
    again = import_vectors(
        tmp_path / "x.npy",
        tmp_path / "again.hdf5",
        Metric.ANGULAR,
        queries=50,
        labels=labels,
        seed=7,
    )
    assert read_dataset(again).content_hash == data.content_hash
    unlabelled = import_vectors(
        tmp_path / "x.npy", tmp_path / "plain.hdf5", Metric.ANGULAR, queries=50, seed=7
    )
    assert read_dataset(unlabelled).content_hash != data.content_hash


def test_import_in_chunks_matches_in_memory(tmp_path, rng, monkeypatch):
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    whole = read_dataset(
        import_vectors(tmp_path / "x.npy", tmp_path / "a.hdf5", Metric.EUCLIDEAN, 40)
    )
    monkeypatch.setattr("annbench.data.format.WRITE_CHUNK", 97)
    seen = []
    chunked = read_dataset(
        import_vectors(
            tmp_path / "x.npy",
            tmp_path / "b.hdf5",
            Metric.EUCLIDEAN,
            40,
            progress=lambda *a: seen.append(a),
        )
    )
    np.testing.assert_array_equal(whole.neighbors, chunked.neighbors)
    assert whole.content_hash == chunked.content_hash
    assert ("writing", 960, 960) in seen and ("ground truth", 960, 960) in seen


def test_queries_file_and_normalize(tmp_path, vectors):
    np.save(tmp_path / "base.npy", vectors)
    np.save(tmp_path / "q.npy", vectors[:10] * 3)
    data = read_dataset(
        import_vectors(
            tmp_path / "base.npy",
            tmp_path / "o.hdf5",
            Metric.ANGULAR,
            queries_file=tmp_path / "q.npy",
            normalize=True,
        )
    )
    assert len(data.train) == 600 and len(data.test) == 10
    np.testing.assert_allclose(np.linalg.norm(data.test, axis=1), 1, rtol=1e-5)
    assert (data.neighbors[:, 0] == np.arange(10)).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p / "s.npy", np.ones(5)), "non-empty 2-D"),
        (lambda p: (p / "s.npy").write_bytes(b""), "is empty"),
        (lambda p: (p / "s.npy").write_bytes(b"garbage!" * 10), "not a readable .npy"),
        (lambda p: (p / "s.fvecs").write_bytes(np.int32(4).tobytes() + b"\0" * 10), "truncated"),
        (
            lambda p: (p / "s.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50),
            "not a readable HDF5",
        ),
        (lambda p: (p / "s.csv").write_text("1,2\n"), "use one of"),
    ],
)
def test_bad_sources(tmp_path, make, message):
    make(tmp_path)
    (source,) = [p for p in tmp_path.iterdir()]
    with pytest.raises(AnnbenchError, match=message):
        import_vectors(source, tmp_path / "out.hdf5", Metric.EUCLIDEAN, queries=1)
    assert not (tmp_path / "out.hdf5").exists()


def test_nan_dimension_mismatch_and_bad_split(tmp_path, vectors):
    bad = vectors.copy()
    bad[555, 3] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(AnnbenchError, match="NaN or inf"):
        import_vectors(tmp_path / "bad.npy", tmp_path / "o.hdf5", Metric.EUCLIDEAN, queries=5)
    np.save(tmp_path / "x.npy", vectors)
    np.save(tmp_path / "q.npy", vectors[:, :5])
    with pytest.raises(AnnbenchError, match="dimension 5, the base has 12"):
        import_vectors(
            tmp_path / "x.npy",
            tmp_path / "o.hdf5",
            Metric.EUCLIDEAN,
            queries_file=tmp_path / "q.npy",
        )
    with pytest.raises(AnnbenchError, match="between 1 and 599"):
        import_vectors(tmp_path / "x.npy", tmp_path / "o.hdf5", Metric.EUCLIDEAN, queries=600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "q.npy", "x.npy"]


def test_cli_import_with_labels_then_run_records_label_metrics(tmp_path, rng, isolated_folders):
    centers = rng.normal(size=(4, 8)) * 5
    labels = np.repeat(np.arange(4), 150)
    x = (centers[labels] + rng.normal(size=(600, 8))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(f"class{v}" for v in labels))
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "datasets",
            "import",
            str(tmp_path / "x.npy"),
            "--name",
            "mine",
            "--metric",
            "cosine",
            "--queries",
            "40",
            "--labels",
            str(tmp_path / "labels.txt"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "560 base vectors, 40 queries" in result.output
    ran = runner.invoke(
        main, ["run", "-b", "faiss-flat", "-d", "mine", "--runs", "1", "--min-time", "0"]
    )
    assert ran.exit_code == 0, ran.output
    csv_path = tmp_path / "r.csv"
    runner.invoke(main, ["results", "--csv", str(csv_path)])
    import pandas as pd

    row = pd.read_csv(csv_path).iloc[0]
    assert (
        row["label_top_k_accuracy"] > 0.9
        and row["label_precision"] > 0.8
        and row["label_map"] > 0.8
    )
    bad = runner.invoke(
        main, ["datasets", "import", str(tmp_path / "x.npy"), "--name", "m2", "--metric", "hamming"]
    )
    assert bad.exit_code != 0 and "Metric 'hamming' not valid" in bad.output
