"""The neighbours page: texts for text datasets, thumbnails for pixel datasets, hits and
misses, label agreement, seeded or chosen queries."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.data.catalog import resolve_dataset
from annbench.data.format import read_dataset, write_dataset
from annbench.data.split import held_out_rows, split_queries
from annbench.metrics import Metric
from annbench.report.neighbours import choose_queries, dataset_items, neighbours_page
from annbench.results.store import ResultStore
from annbench.sweep.runner import plan_sweep, run_sweep

pytestmark = pytest.mark.slow  # neighbours pages of texts and images, sklearn's digits

WORDS = "red green blue cat dog fish tree rock star moon sun rain snow wind fire".split()


def sweep(data, folder, backends, grid):
    with ResultStore(folder) as store:
        run_sweep(plan_sweep(data, backends, runs=1, min_seconds=0, overrides=grid), store)
        return store.records(data.name, with_raw=True)


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    """A corpus file and a dataset made from it the way 'datasets embed' makes one."""
    folder = tmp_path_factory.mktemp("texts")
    rng = np.random.default_rng(0)
    n = 400
    sections = rng.choice(["games", "math", "mail"], size=n)
    texts = [" ".join(rng.choice(WORDS, size=6)) + f" item {i}" for i in range(n)]
    corpus = pd.DataFrame({"package": [f"pkg{i}" for i in range(n)], "section": sections})
    corpus["text"] = texts
    corpus.to_csv(folder / "corpus.tsv", sep="\t", index=False)
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    codes = np.array([["games", "mail", "math"].index(s) for s in sections], dtype=np.int32)
    train, test, train_labels, test_labels = split_queries(vectors, codes, 40, seed=3)
    attrs = {
        "texts": json.dumps(
            {"file": "corpus.tsv", "text_column": "text", "queries": 40, "seed": 3}
        ),
        "label_names": json.dumps(["games", "mail", "math"]),
    }
    path = folder / "words.hdf5"
    write_dataset(path, train, test, Metric.ANGULAR, train_labels, test_labels, attrs)
    return read_dataset(path)


def test_text_page_shows_the_texts_the_vectors_were_made_from(text_dataset, tmp_path):
    records = sweep(text_dataset, tmp_path, ["faiss-ivf"], {"nlist": [8], "nprobe": [1, 8]})
    html = neighbours_page(text_dataset, records, queries=[0, 7], k=10)
    _, held = held_out_rows(400, 40, 3)
    assert f"pkg{held[7]}: " in html and f"item {held[7]}" in html  # query 7 is corpus row held[7]
    assert html.count('<section class="query"') == 2
    assert html.count('<div class="card">') == 2 * 3  # exact + lowest/highest of one backend
    assert '<li class="miss"' in html and '<li class="hit"' in html  # nprobe=1 misses
    assert re.search(r'class="label (same|other)">\[(games|mail|math)\]', html)
    truth = text_dataset.neighbors[7, 0]
    base, _ = held_out_rows(400, 40, 3)
    assert f"item {base[truth]}" in html  # the true nearest neighbour's own text


def test_bundled_dataset_texts_line_up_with_its_labels():
    data = read_dataset(resolve_dataset("debian-packages-384-angular"))
    items = dataset_items(data)
    assert items.kind == "text"
    names = json.loads(data.attrs["label_names"])
    corpus = pd.read_csv(
        resolve_dataset("debian-packages-384-angular").parent / "debian-packages.tsv.gz",
        sep="\t",
        dtype=str,
        keep_default_na=False,
    )
    section = dict(zip(corpus["package"], corpus["section"], strict=True))
    for i in (0, 1234, len(data.train) - 1):
        assert section[items.name("train", i)] == names[data.train_labels[i]]
    for i in (0, 500, len(data.test) - 1):
        assert section[items.name("test", i)] == names[data.test_labels[i]]
    assert items.name("test", 17) == "audmes"  # as in docs/neighbours.png


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's bundled 8x8 digits: pixels as vectors, offline."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    vectors, labels = bunch.data.astype(np.float32), bunch.target.astype(np.int32)
    train, test, train_labels, test_labels = split_queries(vectors, labels, 100, seed=0)
    path = tmp_path_factory.mktemp("digits") / "digits.hdf5"
    write_dataset(path, train, test, Metric.EUCLIDEAN, train_labels, test_labels)
    return read_dataset(path)


def test_image_page_draws_thumbnails_from_the_pixels(digits, tmp_path):
    records = sweep(digits, tmp_path, ["faiss-ivf"], {"nlist": [16], "nprobe": [1, 16]})
    html = neighbours_page(digits, records, seed=5)
    queries = choose_queries(len(digits.test), seed=5)
    assert len(queries) == 5 and queries == choose_queries(len(digits.test), seed=5)
    for q in queries:
        assert f'id="query-{q}"' in html
    thumbs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(thumbs) == 5 * (1 + 3 * 10)  # each query, and 10 per card of 3 cards
    import base64

    assert base64.b64decode(thumbs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'class="label same">[' in html  # digits near a digit mostly share its label


def test_cli_neighbours_pages_linked_from_the_report(digits, tmp_path):
    sweep(digits, tmp_path, ["hnswlib"], {"M": [8], "ef_construction": [20], "ef": [10, 40]})
    out = tmp_path / "site"
    args = ["report", "--results", str(tmp_path), "--out", str(out), "-d", str(digits.path)]
    result = CliRunner().invoke(main, [*args, "--neighbours", "--queries", "3,99"])
    assert result.exit_code == 0, result.output
    page = (out / "neighbours-digits.html").read_text()
    assert 'id="query-3"' in page and 'id="query-99"' in page and "hnswlib" in page
    assert 'href="neighbours-digits.html"' in (out / "index.html").read_text()
    bad = CliRunner().invoke(main, [*args, "--neighbours", "--queries", "100"])
    assert bad.exit_code == 1 and "outside 0..99" in bad.output
    alone = CliRunner().invoke(main, [*args, "--queries", "1"])
    assert alone.exit_code == 2 and "--queries goes with --neighbours" in alone.output


def test_image_files_a_dataset_was_embedded_from_become_thumbnails(tmp_path):
    image = pytest.importorskip("PIL.Image")
    from annbench.data.embed import load_corpus

    folder = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (folder / label).mkdir(parents=True)
        for i in range(30):
            shade = tuple(int(c * rng.uniform(0.6, 1.0)) for c in colour)
            image.new("RGB", (120, 80), shade).save(folder / label / f"{label}{i:02}.png")
    corpus = load_corpus(folder)  # the order 'datasets embed' embeds the files in
    colours = np.array([np.asarray(image.open(p)).mean(axis=(0, 1)) for p in corpus.items])
    train, test, train_labels, test_labels = split_queries(
        colours.astype(np.float32), corpus.labels, 6, seed=2
    )
    attrs = {
        "images": json.dumps({"folder": str(folder), "queries": 6, "seed": 2}),
        "label_names": json.dumps(corpus.label_names),
    }
    path = tmp_path / "photos.hdf5"
    write_dataset(path, train, test, Metric.EUCLIDEAN, train_labels, test_labels, attrs, gt_k=20)
    data = read_dataset(path)
    records = sweep(data, tmp_path / "store", ["faiss-flat"], {})
    html = neighbours_page(data, records, queries=[0, 5], k=10)
    _, held = held_out_rows(60, 6, 2)
    assert corpus.items[held[5]].name in html and corpus.items[held[0]].name in html
    thumbs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(thumbs) == 2 * (1 + 2 * 10)  # each query; exact top-10 and faiss-flat's
    import base64
    import io

    first = image.open(io.BytesIO(base64.b64decode(thumbs[0])))
    assert first.size == (96, 64)  # at most 96 px a side, aspect kept
    assert 'class="miss"' not in html and 'class="label other"' not in html  # exact, 2 colours


def test_a_corpus_not_beside_the_dataset_is_named_and_can_be_given(text_dataset, tmp_path):
    moved = tmp_path / "elsewhere" / "words.hdf5"
    moved.parent.mkdir()
    shutil.copy(text_dataset.path, moved)
    data = read_dataset(moved)
    sweep(data, tmp_path, ["faiss-flat"], {})
    out = tmp_path / "site"
    args = ["report", "--results", str(tmp_path), "--out", str(out), "-d", str(moved)]
    lost = CliRunner().invoke(main, [*args, "--neighbours", "--queries", "7"])
    assert lost.exit_code == 0, lost.output
    page = (out / "neighbours-words.html").read_text()
    assert "Row ids shown:" in page and f"looked in {moved.parent / 'corpus.tsv'}" in page
    _, held = held_out_rows(400, 40, 3)
    assert "--corpus FILE" in page and f"item {held[7]}" not in page
    corpus = Path(text_dataset.path).parent / "corpus.tsv"
    found = CliRunner().invoke(
        main, [*args, "--neighbours", "--queries", "7", "--corpus", str(corpus)]
    )
    assert found.exit_code == 0, found.output
    page = (out / "neighbours-words.html").read_text()
    _, held = held_out_rows(400, 40, 3)
    assert f"item {held[7]}" in page and "Row ids shown:" not in page
    missing = CliRunner().invoke(
        main, [*args, "--neighbours", "--corpus", str(tmp_path / "no.tsv")]
    )
    assert missing.exit_code == 1 and "--corpus" in missing.output and "not found" in missing.output
    alone = CliRunner().invoke(main, [*args, "--corpus", str(corpus)])
    assert alone.exit_code == 2 and "--corpus goes with --neighbours" in alone.output
