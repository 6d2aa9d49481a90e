"""The neighbours page: what "recall 0.83" looks like. For a few sample queries, the query and
its exact top-k beside the top-k that each chosen configuration returned, hits and misses
marked, labels compared with the query's; texts for text datasets, thumbnails for pixel
datasets.

Row ids map back to the items they were made from through the dataset's attributes: a dataset
made by ``annbench datasets embed`` records its corpus (``texts``: file, columns, query split),
or, for files made before that attribute, the command that made it; one embedded from image
files records their folder (``images``); a dataset of pixels records ``image_shape`` (or is
recognised as 8x8 or 28x28 non-negative whole-number pixels). Thumbnails are drawn only for the
rows shown.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from annbench.data.format import Dataset
from annbench.data.split import held_out_rows
from annbench.errors import AnnbenchError
from annbench.metrics import TIE_ATOL, TIE_RTOL, true_distances
from annbench.paths import check_input_file
from annbench.progress import Progress
from annbench.record import RunRecord, params_label
from annbench.report.colors import backend_color

log = logging.getLogger(__name__)

#: Configurations shown per backend: its lowest-, middle- and highest-recall runs.
PER_BACKEND = 3
TEXT_CHARS = 110


@dataclass
class Items:
    """How to show base (``"train"``) and query (``"test"``) rows: texts, thumbnails (PNG data
    URIs, drawn only for the rows shown) or plain ids."""

    kind: str  # "text", "image" or "id"
    show: Callable[[str, int], str] = lambda part, i: f"#{i}"
    name: Callable[[str, int], str] = lambda part, i: ""  # e.g. the package name of a text
    note: str = ""  # why plain ids are shown where texts or images were meant to be


def choose_queries(nq: int, count: int = 5, seed: int = 0) -> list[int]:
    """``count`` query ids out of ``nq``, drawn with ``seed``, ascending."""
    count = min(count, nq)
    return sorted(np.random.default_rng(seed).choice(nq, size=count, replace=False).tolist())


def dataset_items(dataset: Dataset, corpus: Path | None = None) -> Items:
    """Texts or thumbnails of the dataset's base and query rows, where it says how to get
    them (``corpus``: the recorded corpus file is here instead); else plain ids, with a note
    saying why."""
    texts = _text_source(dataset)
    if corpus is not None and texts is None:
        raise AnnbenchError(
            f"{dataset.name} records no corpus (it was not made by 'annbench datasets embed'), "
            "so --corpus has no rows to match; leave --corpus out"
        )
    note = ""
    if texts is not None:
        try:
            return _texts(dataset, **texts, corpus=corpus)
        except AnnbenchError as exc:
            if corpus is not None:
                raise
            note = f"texts of {dataset.name} not shown: {exc}"
            log.warning("%s", note)
    images = dataset.attrs.get("images")
    if images:
        try:
            return _image_files(dataset, **json.loads(images))
        except AnnbenchError as exc:
            note = f"images of {dataset.name} not shown: {exc}"
            log.warning("%s", note)
    shape = _image_shape(dataset)
    if shape is not None:
        rows = {"train": dataset.train, "test": dataset.test}
        return Items("image", _cached(lambda part, i: _thumbnail(rows[part][i], shape)))
    return Items("id", note=note)


def chosen_records(records: list[RunRecord], dataset: Dataset, k: int) -> list[RunRecord]:
    """Successful records of ``dataset``'s content with stored ids at ``k``: per backend, its
    lowest-, middle- and highest-recall configurations."""
    usable = [
        r
        for r in records
        if r.status == "ok"
        and r.ids is not None
        and r.k == k
        and r.dataset_hash == dataset.content_hash
        and r.recall is not None
        and r.workload == "plain"
        and len(r.ids) == len(dataset.test)
    ]
    by_backend: dict[str, list[RunRecord]] = {}
    for record in usable:
        by_backend.setdefault(record.backend, []).append(record)
    out = []
    for backend in sorted(by_backend):
        runs = sorted(by_backend[backend], key=lambda r: (r.recall, -(r.qps or 0)))
        picks = sorted({0, len(runs) // 2, len(runs) - 1})[:PER_BACKEND]
        out += [runs[i] for i in picks]
    return out


def neighbours_page(
    dataset: Dataset,
    records: list[RunRecord],
    queries: list[int] | None = None,
    k: int | None = None,
    seed: int = 0,
    corpus: Path | None = None,
) -> str:
    """The HTML page (self-contained) for ``dataset``'s sample queries (``corpus``: where the
    texts the dataset was embedded from are, when not where it recorded them)."""
    from markupsafe import Markup

    from annbench.report.html import environment

    if k is None:
        ks = [r.k for r in records if r.status == "ok" and r.ids is not None]
        k = max(set(ks), key=ks.count) if ks else 10
    k = min(k, dataset.neighbors.shape[1])
    nq = len(dataset.test)
    queries = choose_queries(nq, seed=seed) if queries is None else list(queries)
    bad = [q for q in queries if not 0 <= q < nq]
    if bad:
        raise AnnbenchError(
            f"Query ids {', '.join(map(str, bad))} are outside 0..{nq - 1} of {dataset.name}"
        )
    chosen = chosen_records(records, dataset, k)
    items = dataset_items(dataset, corpus)
    names = _label_names(dataset)
    blocks = []
    for q in queries:
        truth = dataset.neighbors[q, :k]
        exact = _column("exact top-k", "", truth, [True] * len(truth), dataset, q, items, names)
        columns = [exact | {"color": None}]
        for record in chosen:
            ids = np.asarray(record.ids[q, :k])
            hits = _hits(dataset, q, ids, k)
            title = f"{record.backend}"
            detail = (
                f"{params_label(record.build_params)} | {params_label(record.search_params)} | "
                f"recall {record.recall:.3f} overall, {int(hits.sum())}/{k} here"
            )
            column = _column(title, detail, ids, hits.tolist(), dataset, q, items, names)
            columns.append(column | {"color": backend_color(record.backend)})
        blocks.append(
            {
                "id": q,
                "query": _item(items, "test", q),
                "query_title": _title(items, "test", q),
                "label": _label(dataset.test_labels, q, names),
                "columns": columns,
            }
        )
    env = environment()
    return env.from_string(_PAGE).render(
        dataset=dataset.name,
        k=k,
        kind=items.kind,
        blocks=blocks,
        items_note=items.note,
        shown=len(chosen),
        has_labels=dataset.train_labels is not None,
        style=Markup(_STYLE),
    )


def _column(
    title: str,
    detail: str,
    ids: np.ndarray,
    hits: list[bool],
    dataset: Dataset,
    q: int,
    items: Items,
    names: list[str] | None,
) -> dict[str, Any]:
    query_label = None if dataset.test_labels is None else int(dataset.test_labels[q])
    rows = []
    for rank, (i, hit) in enumerate(zip(ids.tolist(), hits, strict=True), start=1):
        if i < 0 or i >= len(dataset.train):
            rows.append({"rank": rank, "id": "-", "item": "(nothing returned)", "hit": False})
            continue
        label = None if dataset.train_labels is None else int(dataset.train_labels[i])
        rows.append(
            {
                "rank": rank,
                "id": i,
                "item": _item(items, "train", i),
                "title": _title(items, "train", i),
                "name": items.name("train", i),
                "hit": hit,
                "label": _label(dataset.train_labels, i, names),
                "same_label": None if label is None else label == query_label,
            }
        )
    return {"title": title, "detail": detail, "rows": rows}


def _hits(dataset: Dataset, q: int, ids: np.ndarray, k: int) -> np.ndarray:
    """Which returned ids count as hits in annbench's recall: in the true top-k or tying the
    k-th true distance, first occurrence only."""
    found = true_distances(dataset.metric, dataset.train, dataset.test[q : q + 1], ids[None, :])[0]
    kth = float(dataset.distances[q, k - 1])
    truth = set(dataset.neighbors[q, :k].tolist())
    seen: set[int] = set()
    out = np.zeros(len(ids), dtype=bool)
    for j, (i, d) in enumerate(zip(ids.tolist(), found.tolist(), strict=True)):
        if i >= 0 and i not in seen:
            out[j] = i in truth or d <= kth + TIE_RTOL * abs(kth) + TIE_ATOL
        seen.add(i)
    return out


def _item(items: Items, part: str, i: int) -> str:
    shown = items.show(part, i)
    if items.kind == "text" and len(shown) > TEXT_CHARS:
        return shown[: TEXT_CHARS - 1].rstrip() + "…"
    return shown


def _title(items: Items, part: str, i: int) -> str:
    head = items.name(part, i)
    if items.kind != "text":
        return head
    return f"{head}: {items.show(part, i)}" if head else items.show(part, i)


def _cached(render: Callable[[str, int], str]) -> Callable[[str, int], str]:
    """``render`` computed once per row."""
    done: dict[tuple[str, int], str] = {}

    def show(part: str, i: int) -> str:
        if (part, i) not in done:
            done[part, i] = render(part, i)
        return done[part, i]

    return show


def _label(labels: np.ndarray | None, i: int, names: list[str] | None) -> str | None:
    if labels is None:
        return None
    code = int(labels[i])
    return names[code] if names and 0 <= code < len(names) else str(code)


def _label_names(dataset: Dataset) -> list[str] | None:
    raw = dataset.attrs.get("label_names")
    if not raw:
        return None
    try:
        names = json.loads(raw) if isinstance(raw, str) else list(raw)
    except ValueError:
        return None
    return [str(n) for n in names]


def _text_source(dataset: Dataset) -> dict[str, Any] | None:
    """Where the dataset's texts are: its ``texts`` attribute, or the embed command it records."""
    raw = dataset.attrs.get("texts")
    if raw:
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    command = dataset.attrs.get("command")
    if not isinstance(command, str) or not command.startswith("annbench datasets embed "):
        return None
    words = shlex.split(command)[3:]
    source: dict[str, Any] = {"file": words[0], "text_column": "text", "queries": 1000, "seed": 0}
    options = {"--text-column": "text_column", "--queries": "queries", "--seed": "seed"}
    for option, key in options.items():
        if option in words[:-1]:
            value = words[words.index(option) + 1]
            source[key] = int(value) if key in ("queries", "seed") else value
    return source


def _texts(
    dataset: Dataset,
    file: str,
    text_column: str,
    queries: int,
    seed: int,
    corpus: Path | None = None,
) -> Items:
    """The corpus rows of the base and queries, split as ``datasets embed`` split them."""
    import pandas as pd

    path = _find_corpus(dataset, file, corpus)
    suffixes = [s for s in path.suffixes if s != ".gz"]
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        sep = "\t" if suffixes[-1] == ".tsv" else ","
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        if text_column not in table:
            raise AnnbenchError(f"{path.name} has no column '{text_column}'")
        texts = table[text_column].tolist()
        first = table.columns[0]
        titles = table[first].tolist() if first != text_column else []
    else:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        texts, titles = [t for t in lines if t], []
    rows = _split_as_dataset(dataset, len(texts), path.name, "texts", queries, seed)
    return Items(
        "text",
        lambda part, i: texts[rows[part][i]],
        lambda part, i: titles[rows[part][i]] if titles else "",
    )


def _split_as_dataset(
    dataset: Dataset, count: int, source: str, what: str, queries: int, seed: int
) -> dict[str, np.ndarray]:
    """Item positions of the dataset's ``train`` and ``test`` rows, for ``count`` items
    (``what``, from ``source``) split as the dataset split them."""
    rows = len(dataset.train) + len(dataset.test)
    if count != rows:
        raise AnnbenchError(f"{source} holds {count} {what}, the dataset {rows} rows")
    base, held = held_out_rows(count, queries, seed)
    return {"train": base, "test": held}


def _image_files(dataset: Dataset, folder: str, queries: int, seed: int) -> Items:
    """Thumbnails of the image files a dataset was embedded from (``datasets embed FOLDER``),
    split as it split them."""
    from annbench.data.embed import load_corpus

    if not Path(folder).is_dir():
        raise AnnbenchError(f"image folder {folder} not found")
    paths = load_corpus(Path(folder)).items
    rows = _split_as_dataset(dataset, len(paths), str(folder), "images", queries, seed)
    return Items(
        "image",
        _cached(lambda part, i: _file_thumbnail(Path(paths[rows[part][i]]))),
        lambda part, i: Path(paths[rows[part][i]]).name,
    )


def _file_thumbnail(path: Path, size: int = 96) -> str:
    """A PNG data URI of the image file at ``path``, at most ``size`` pixels a side."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise AnnbenchError("Thumbnails of image files need Pillow: pip install pillow") from exc
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError as exc:
        raise AnnbenchError(f"Cannot read image {path}: {exc}") from exc
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _find_corpus(dataset: Dataset, file: str, corpus: Path | None = None) -> Path:
    """The corpus file: ``corpus`` when given; else beside the dataset, where the embed command
    read it, or shipped in the package with the bundled dataset."""
    if corpus is not None:
        return check_input_file(corpus, "--corpus")
    name = Path(file).name
    places = [Path(dataset.path).parent / name, Path(file)]
    for candidate in places:
        if candidate.is_file():
            return candidate
    bundled = resources.files("annbench.bundled") / name
    if bundled.is_file():
        return Path(str(bundled))
    looked = ", ".join(dict.fromkeys(str(p) for p in places))
    raise AnnbenchError(
        f"corpus {name} not found (looked in {looked} and annbench's bundled files); "
        "give its path with 'annbench report --neighbours --corpus FILE'"
    )


def _image_shape(dataset: Dataset) -> tuple[int, int] | None:
    """Height and width when the vectors are pixels."""
    raw = dataset.attrs.get("image_shape")
    if raw is not None:
        shape = json.loads(raw) if isinstance(raw, str) else list(raw)
        return int(shape[0]), int(shape[1])
    side = {64: 8, 784: 28}.get(dataset.train.shape[1])
    sample = dataset.train[:200]
    if side and sample.min() >= 0 and np.allclose(sample, np.round(sample)):
        return side, side
    return None


def _thumbnail(row: np.ndarray, shape: tuple[int, int]) -> str:
    """A PNG data URI of ``row`` drawn as a grayscale image (dark = high)."""
    from matplotlib.image import imsave

    pixels = np.asarray(row, dtype=np.float64).reshape(shape)
    top = pixels.max() or 1.0
    buffer = io.BytesIO()
    imsave(buffer, pixels / top, cmap="gray_r", vmin=0, vmax=1, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px;
       padding: 0 12px; color: #222; }
.query { border-top: 2px solid #888; margin-top: 1.5em; padding-top: 0.5em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(290px, 1fr));
        gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: 0.4em; font-size: 0.8em; }
.card h4 { margin: 0; font-size: 1em; } .card p { margin: 0 0 0.3em; color: #555; }
.card ol { margin: 0; padding-left: 2.2em; }
.card li { margin: 1px 0; overflow-wrap: anywhere; }
li.hit::marker { color: #080; } li.miss { background: #fde8e8; }
.mark { font-weight: bold; } li.hit .mark { color: #080; } li.miss .mark { color: #b00; }
.label { color: #555; font-size: 0.9em; } .label.same { color: #080; }
.label.other { color: #b00; }
img.thumb { width: 40px; height: 40px; image-rendering: pixelated; vertical-align: middle;
            border: 1px solid #ccc; }
img.query { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #888; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>annbench neighbours: {{ dataset }}</title><style>{{ style }}</style></head><body>
<h1>Neighbours: {{ dataset }}</h1>
{% if items_note %}<p class="note"><b>Row ids shown:</b> {{ items_note }}</p>{% endif %}
<p class="note">For each sample query: its exact top-{{ k }} and the top-{{ k }} that
{{ shown }} configurations returned (per backend its lowest-, middle- and highest-recall
runs). <span class="mark">✓</span> a hit (a true top-{{ k }} neighbour, or one as near as the
{{ k }}-th), <span class="mark">✗</span> a miss, highlighted.{% if has_labels %} The label
after each item is green when it agrees with the query's, red when not.{% endif %}
<a href="index.html">Back to the report</a>.</p>
{% for block in blocks %}
<section class="query" id="query-{{ block.id }}">
<h2>Query {{ block.id }}{% if block.label %}
<span class="label">[{{ block.label }}]</span>{% endif %}</h2>
{% if kind == "image" %}<img class="query" alt="query {{ block.id }}" src="{{ block.query }}">
{{ block.query_title }}
{% elif kind == "text" %}<p title="{{ block.query_title }}">{{ block.query_title }}</p>
{% endif %}
<div class="grid">{% for column in block.columns %}
<div class="card"><h4{% if column.color %} style="border-left: 6px solid {{ column.color }}; \
padding-left: 6px"{% endif %}>{{ column.title }}</h4><p>{{ column.detail }}</p><ol>
{% for row in column.rows %}
<li class="{{ 'hit' if row.hit else 'miss' }}" title="{{ row.title or '' }}">
<span class="mark">{{ '✓' if row.hit else '✗' }}</span>
{% if kind == "image" and row.id != '-' %}
<img class="thumb" alt="{{ row.id }}" src="{{ row.item }}">
{% else %}{% if row.name %}<b>{{ row.name }}</b> {% endif %}{{ row.item }}{% endif %}
<span class="label">#{{ row.id }}</span>
{% if row.label %}
<span class="label {{ 'same' if row.same_label else 'other' }}">[{{ row.label }}]</span>
{% endif %}
</li>{% endfor %}</ol></div>{% endfor %}
</div></section>
{% endfor %}
</body></html>
"""


def write_neighbour_pages(
    datasets: list[str],
    folder: Path,
    store_path: Path,
    queries: Sequence[int] | None = None,
    seed: int = 0,
    corpus: Path | None = None,
    required: bool = False,
    progress: Progress | None = None,
) -> list[tuple[str, str]]:
    """Write ``neighbours-<dataset>.html`` into ``folder`` for each of ``datasets`` (names or
    paths) from the runs stored in ``store_path``; returns (file name, link text) pairs for
    the report. A dataset whose file cannot be found is skipped with a note on ``progress``
    (an ``annbench.progress.Progress``), or raises when ``required``."""
    from annbench.data.catalog import resolve_dataset
    from annbench.data.format import read_dataset
    from annbench.paths import write_text_file
    from annbench.results.store import ResultStore

    shown = progress if progress is not None else Progress()
    links = []
    for spec in datasets:
        shown.status(f"neighbours of {spec}")
        try:
            data = read_dataset(resolve_dataset(spec))
        except AnnbenchError as exc:
            if required:
                raise
            shown.message(f"No neighbours page for {spec}: {exc}")
            shown.update(1)
            continue
        with ResultStore.open_existing(store_path) as store:
            records = store.records(data.name, with_raw=True, content_hash=data.content_hash)
        page = f"neighbours-{data.name}.html"
        text = neighbours_page(
            data, records, list(queries) if queries else None, seed=seed, corpus=corpus
        )
        write_text_file(folder / page, text, "Neighbours page")
        links.append((page, f"neighbours: {data.name}"))
        shown.update(1)
    return links
