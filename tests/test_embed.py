"""Embedding texts and images into labelled datasets (the [embed] extra), all offline."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.data.embed import embed, load_corpus
from annbench.data.format import read_dataset
from annbench.errors import AnnbenchError

pytestmark = pytest.mark.slow  # torch models

pytest.importorskip("sentence_transformers")

TEXTS = [
    ("HTTP client library for Python with connection pooling", "python"),
    ("Python module to send HTTP requests and parse responses", "python"),
    ("first-person shooter game with network multiplayer", "games"),
    ("arcade space shooter game for the terminal", "games"),
    ("Perl module for parsing HTTP headers", "perl"),
    ("Perl interface to the HTTP protocol", "perl"),
] * 5


def test_text_embeddings_are_unit_norm_and_semantic(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("text,label\n" + "\n".join(f'"{t}",{label}' for t, label in TEXTS))
    corpus = load_corpus(path, label_column="label")
    assert corpus.label_names == ["games", "perl", "python"] and len(corpus.items) == 30
    vectors = embed(corpus)
    assert vectors.shape == (30, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    sims = vectors[:6] @ vectors[:6].T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 0]


def test_cli_embeds_texts_into_a_labelled_dataset(tmp_path, isolated_folders):
    path = tmp_path / "texts.tsv"
    path.write_text(
        "text\tsection\n" + "\n".join(f"{t} {i}\t{label}" for i, (t, label) in enumerate(TEXTS))
    )
    result = CliRunner().invoke(
        main,
        [
            "datasets",
            "embed",
            str(path),
            "--name",
            "mine",
            "--label-column",
            "section",
            "--queries",
            "5",
            "--threads",
            "1",
        ],
    )
    import torch

    threads, _ = torch.get_num_threads(), torch.set_num_threads(os.cpu_count() or 1)
    assert result.exit_code == 0, result.output
    assert threads == 1  # --threads reached torch
    assert "Loading embedding model all-MiniLM-L6-v2" in result.output
    assert "Embedding texts: 30/30" in result.output  # the log line at the end of the step
    data = read_dataset(isolated_folders / "data" / "mine.hdf5")
    assert data.train.shape == (25, 384) and len(data.test) == 5
    assert json.loads(data.attrs["label_names"]) == ["games", "perl", "python"]
    assert set(data.train_labels.tolist()) <= {0, 1, 2}
    assert "all-MiniLM-L6-v2" in json.loads(data.attrs["embedding"])["model"]


def tiny_clip(folder):
    """A small, randomly initialised CLIP model saved locally (no download)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    raw = folder / "clip"
    raw.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "a</w>": 3}
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt")),
    )
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, **small),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(raw)
    processor.save_pretrained(raw)
    SentenceTransformer(modules=[models.CLIPModel(str(raw))]).save(str(folder / "st"))
    return folder / "st"


def test_image_folder_becomes_a_labelled_dataset(tmp_path, isolated_folders):
    from PIL import Image

    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label, tint in (("cats", (200, 40, 40)), ("dogs", (40, 40, 200))):
        (images / label).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(rng.normal(tint, 30, size=(40, 40, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(images / label / f"{i}.png")
    (images / "notes.txt").write_text("not an image")
    model = tiny_clip(tmp_path)
    corpus = load_corpus(images)
    assert (
        corpus.kind == "image"
        and corpus.label_names == ["cats", "dogs"]
        and len(corpus.items) == 16
    )
    result = CliRunner().invoke(
        main,
        [
            "datasets",
            "embed",
            str(images),
            "--name",
            "pets",
            "--model",
            str(model),
            "--queries",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    data = read_dataset(isolated_folders / "data" / "pets.hdf5")
    assert data.train.shape == (12, 8) and data.metric.value == "angular"
    assert json.loads(data.attrs["label_names"]) == ["cats", "dogs"]


def test_corpus_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnbenchError, match="holds no images in class sub-folders"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "t.csv").write_text("body\nhello\n")
    with pytest.raises(AnnbenchError, match="has no column 'text'; columns: body"):
        load_corpus(tmp_path / "t.csv")
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(AnnbenchError, match="holds no texts"):
        load_corpus(tmp_path / "blank.txt")
