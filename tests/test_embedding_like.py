"""Synthetic embedding-like data: fitted to the bundled real dataset, a sample of the same size
has its intrinsic dimension, relative contrast and HNSW recall (within resemblance.TOLERANCE),
while an isotropic Gaussian does not; samples are reproducible and stream in bounded blocks;
a dataset file can be made from a user's own file, with provenance saying it is synthetic."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from annbench.api import load_dataset
from annbench.cli import main
from annbench.data import resemblance
from annbench.data.catalog import DEFAULT_DATASET
from annbench.data.embedding_like import (
    BLOCK,
    EmbeddingModel,
    SampledRows,
    create_like,
    fit_embedding_model,
    held_out_sample,
    sample,
)
from annbench.data.format import read_dataset, recompute_truth
from annbench.data.synthetic import create_synthetic
from annbench.errors import AnnbenchError
from annbench.metrics import Metric, normalize_rows


@pytest.fixture(autouse=True)
def _folders(isolated_folders):
    """Data and results folders of the test's own (file hashes are cached there)."""


@pytest.fixture(scope="module")
def real():
    return load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def real_profile(real):
    return resemblance.profile(real.train, real.test, real.metric)


@pytest.fixture(scope="module")
def model(real):
    return fit_embedding_model(real, seed=0)


@pytest.fixture(scope="module")
def small_model():
    x = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    return fit_embedding_model(x, n_clusters=6, seed=0)


def _failed(checks):
    return {name: check for name, check in checks.items() if not check["ok"]}


@pytest.mark.slow
def test_sample_of_the_bundled_dataset_resembles_it(real, real_profile, model):
    base, queries, _, _ = held_out_sample(model, len(real.train), len(real.test), seed=1)
    synthetic = resemblance.profile(np.asarray(base), queries, real.metric)
    checks = resemblance.compare(real_profile, synthetic)
    assert set(checks) >= {"intrinsic_dim", "contrast median", "recall ef=16", "recall ef=64"}
    assert not _failed(checks), _failed(checks)
    assert model.info["fitted from"]["name"] == DEFAULT_DATASET


@pytest.mark.slow
def test_an_isotropic_gaussian_fails_the_checks(real, real_profile):
    x = normalize_rows(real.train)
    rng = np.random.default_rng(0)
    spread = np.sqrt(x.var(axis=0).mean())
    wrong = x.mean(axis=0) + spread * rng.standard_normal((len(x) + 1000, x.shape[1]))
    wrong = wrong.astype(np.float32)
    checks = resemblance.compare(
        real_profile, resemblance.profile(wrong[1000:], wrong[:1000], real.metric, recall=False)
    )
    assert {"intrinsic_dim", "contrast median"} <= set(_failed(checks)), checks


def test_intrinsic_dimension_of_a_known_subspace():
    rng = np.random.default_rng(1)
    for dim in (3, 12):
        x = rng.normal(size=(4000, dim)) @ rng.normal(size=(dim, 64))
        assert resemblance.intrinsic_dimension(x) == pytest.approx(dim, rel=0.2)
        assert resemblance.twonn_dimension(x) == pytest.approx(dim, rel=0.2)


@pytest.mark.slow
def test_chosen_intrinsic_dimension_sets_each_clusters_rank(real):
    found = {}
    for dim in (4, 16):
        chosen = fit_embedding_model(real.train[:6000], 150, intrinsic_dim=dim, metric="angular")
        assert np.median(chosen.rank) == dim and chosen.rank.max() == dim
        x = np.asarray(sample(chosen, 6000, seed=2))
        found[dim] = resemblance.intrinsic_dimension(x, "angular")
    # estimates read low where variances decay, but follow the chosen dimension
    assert found[4] == pytest.approx(4, rel=0.25)
    assert found[16] > 1.5 * found[4]


def test_seeds_reproduce_rows_whatever_the_chunks(small_model):
    rows = sample(small_model, BLOCK + 5000, seed=3, chunk_rows=7000)
    whole = np.asarray(rows)
    assert whole.shape == (BLOCK + 5000, 8) and whole.dtype == np.float32
    assert np.array_equal(np.concatenate(list(rows)), whole)
    assert np.array_equal(rows[BLOCK - 10 : BLOCK + 10], whole[BLOCK - 10 : BLOCK + 10])
    with threadpool_limits(1, user_api="blas"):  # BLAS sums in an order that depends on this
        again = np.asarray(sample(small_model, BLOCK + 5000, seed=3))
    assert np.array_equal(again, whole)
    assert not np.allclose(np.asarray(sample(small_model, 1000, seed=4)), whole[:1000])
    refit = fit_embedding_model(
        np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32), n_clusters=6, seed=0
    )
    assert np.array_equal(np.asarray(sample(refit, 500, seed=3)), whole[:500])


def test_streaming_holds_a_few_blocks(small_model):
    rows = SampledRows(small_model, 6 * BLOCK, seed=0, chunk_rows=BLOCK // 2, ahead=1)
    held = 0
    for chunk in rows:
        held = max(held, len(rows._blocks))
        assert len(chunk) == BLOCK // 2
    assert held <= 3


def test_sizes_drawn_with_one_seed_are_nested(small_model):
    small, small_queries, small_labels, _ = held_out_sample(small_model, 20_000, 300, seed=6)
    large, large_queries, large_labels, _ = held_out_sample(small_model, 50_000, 300, seed=6)
    assert np.array_equal(small_queries, large_queries)
    assert np.array_equal(np.asarray(small), large[:20_000])
    assert np.array_equal(small_labels, large_labels[:20_000])


def test_held_out_queries_are_drawn_rows_not_in_the_base(small_model):
    base, queries, base_labels, query_labels = held_out_sample(small_model, 3000, 200, seed=5)
    drawn = np.asarray(SampledRows(small_model, 3200, seed=5))
    labels = SampledRows(small_model, 3200, seed=5).labels()
    in_base = np.isin(drawn[:, 0], np.asarray(base)[:, 0])
    assert in_base.sum() == 3000 and np.array_equal(drawn[in_base], np.asarray(base))
    assert np.array_equal(drawn[~in_base], queries)
    assert np.array_equal(labels[in_base], base_labels)
    assert np.array_equal(labels[~in_base], query_labels)


def test_saved_model_draws_the_same_rows(small_model, tmp_path):
    path = small_model.save(tmp_path / "model.npz")
    loaded = EmbeddingModel.load(path)
    assert loaded.summary() == small_model.summary()
    drawn = np.asarray(sample(small_model, 300, 1))
    assert np.array_equal(np.asarray(sample(loaded, 300, 1)), drawn)
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(AnnbenchError, match="not a saved embedding model"):
        EmbeddingModel.load(tmp_path / "bad.npz")


def test_create_like_from_a_users_own_file(tmp_path):
    own = create_synthetic(tmp_path / "mine.hdf5", 3000, 100, 16, Metric.EUCLIDEAN, seed=4)
    out = create_like(tmp_path / "like.hdf5", own, n=5000, nq=150, seed=2, n_clusters=20)
    data = read_dataset(out)  # checks the ground truth against a recomputed sample
    assert data.train.shape == (5000, 16) and data.test.shape == (150, 16)
    assert data.metric is Metric.EUCLIDEAN
    assert data.attrs["synthetic"].startswith("yes")
    assert "fitted to mine" in data.attrs["source"]
    fitted = read_dataset(own)
    assert f'"content_hash": "{fitted.content_hash}"' in data.attrs["fitted_from"]
    assert data.distances[:, 0].min() > 0  # queries are held out, not copies of base rows
    assert data.train_labels.max() < 20 and len(data.test_labels) == 150


def test_create_like_without_truth_then_add_it(small_model, tmp_path):
    path = create_like(tmp_path / "nt.hdf5", small_model, n=2000, nq=50, seed=1, truth=False)
    with h5py.File(path) as f:
        assert "neighbors" not in f and f["train"].shape == (2000, 8)
        assert f.attrs["distance"] == "euclidean"
    recompute_truth(path, path)
    full = create_like(tmp_path / "full.hdf5", small_model, n=2000, nq=50, seed=1)
    assert np.array_equal(read_dataset(path).neighbors, read_dataset(full).neighbors)


def test_bad_input_is_one_clear_error(small_model):
    x = np.random.default_rng(0).normal(size=(100, 4))
    with pytest.raises(AnnbenchError, match="n_clusters must be between 1 and half"):
        fit_embedding_model(x, n_clusters=80)
    with pytest.raises(AnnbenchError, match="intrinsic_dim must be between 1 and 4"):
        fit_embedding_model(x, intrinsic_dim=9)
    with pytest.raises(AnnbenchError, match="explained must be in"):
        fit_embedding_model(x, explained=0)
    with pytest.raises(AnnbenchError, match="NaN"):
        fit_embedding_model(np.full((10, 4), np.nan))
    with pytest.raises(AnnbenchError, match="seed must be a non-negative"):
        sample(small_model, 10, seed=-1)
    with pytest.raises(AnnbenchError, match="need a dataset, not a model"):
        create_like("x.hdf5", small_model, 10, 2, n_clusters=3)


def test_cli_synth_from_a_file_then_from_its_saved_model(tiny_path, tmp_path):
    runner = CliRunner()
    model = tmp_path / "tiny-model.npz"
    args = ["datasets", "synth", "tiny-like", "--like", str(tiny_path), "--n", "4000"]
    args += ["--nq", "60", "--clusters", "12", "--save-model", str(model), "-q"]
    done = runner.invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "SYNTHETIC vectors" in done.output and "fitted to tiny" in done.output
    data = load_dataset("tiny-like")
    assert data.train.shape == (4000, 32) and data.attrs["synthetic"].startswith("yes")
    args = ["datasets", "synth", "tiny-more", "--like", str(model), "--n", "9000", "--no-truth"]
    done = runner.invoke(main, args + ["-q"])
    assert done.exit_code == 0, done.output
    assert "annbench datasets truth tiny-more --force" in done.output
    assert runner.invoke(main, ["datasets", "truth", "tiny-more", "--force"]).exit_code == 0
    assert load_dataset("tiny-more").train.shape == (9000, 32)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--clusters", "5000"], "n_clusters must be between 1 and half"),
        (["--metric", "manhattan"], "Metric 'manhattan' not valid"),
        (["--n", "0"], "--n"),
    ],
)
def test_cli_synth_bad_options_exit_2(tiny_path, extra, message):
    args = ["datasets", "synth", "bad", "--like", str(tiny_path), "-q", *extra]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2, done.output
    assert message in done.output


def test_cli_synth_saved_model_takes_no_fit_options(small_model, tmp_path):
    path = small_model.save(tmp_path / "m.npz")
    args = ["datasets", "synth", "x", "--like", str(path), "--clusters", "3"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2 and "a saved model" in done.output
