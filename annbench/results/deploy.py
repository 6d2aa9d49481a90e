"""A recommended configuration made usable: a runnable snippet with the library itself, or the
index built on the dataset and saved with a JSON description beside it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from annbench.data.format import Dataset
from annbench.errors import AnnbenchError, one_line_error
from annbench.metrics import TIE_ATOL, TIE_RTOL, Metric
from annbench.paths import check_output_file, output_file, write_text_file
from annbench.registry import load_backend

log = logging.getLogger(__name__)

_FAISS_METRIC = {
    Metric.EUCLIDEAN: "faiss.METRIC_L2",
    Metric.ANGULAR: "faiss.METRIC_INNER_PRODUCT",
    Metric.DOT: "faiss.METRIC_INNER_PRODUCT",
}
_HNSWLIB_SPACE = {Metric.EUCLIDEAN: "l2", Metric.ANGULAR: "cosine", Metric.DOT: "ip"}
_ANNOY_METRIC = {Metric.EUCLIDEAN: "euclidean", Metric.ANGULAR: "angular", Metric.DOT: "dot"}
_USEARCH_METRIC = {Metric.EUCLIDEAN: "l2sq", Metric.ANGULAR: "cos", Metric.DOT: "ip"}
#: faiss ParameterSpace names of the faiss-factory search parameters.
_FAISS_SEARCH = {"nprobe": "nprobe", "efSearch": "efSearch", "k_factor": "k_factor_rf"}


def faiss_factory(backend: str, build_params: Mapping[str, Any]) -> str | None:
    """The faiss ``index_factory`` string of a faiss backend's configuration (None if not)."""
    if backend == "faiss-factory":
        return str(build_params["factory"])
    if backend == "faiss-flat":
        return "Flat"
    if backend == "faiss-ivf":
        return f"IVF{build_params['nlist']},Flat"
    if backend == "faiss-ivfpq":
        return f"IVF{build_params['nlist']},PQ{build_params['m']}x{build_params.get('nbits', 8)}"
    if backend == "faiss-hnsw":
        return f"HNSW{build_params['M']},Flat"
    return None


def emit_python(choice: Mapping[str, Any], dataset: Dataset, k: int) -> str:
    """A short, runnable Python snippet that builds and queries ``choice`` (a recommended row:
    backend, build_params, search_params) on ``dataset`` with the library itself, printing
    its recall@k; it imports numpy, h5py and the library, never annbench."""
    backend, build, search = choice["backend"], choice["build_params"], choice["search_params"]
    header = [
        f"# {choice.get('config', backend)} on {dataset.name}",
        f"# annbench measured recall@{k} {choice['recall']:.4f} (ties counted) on these held-out "
        "queries",
        "import h5py",
        "import numpy as np",
    ]
    load = [
        f"with h5py.File({str(Path(dataset.path).resolve())!r}, 'r') as f:",
        "    xb = np.ascontiguousarray(f['train'][:], dtype='float32')",
        "    xq = np.ascontiguousarray(f['test'][:], dtype='float32')",
        f"    gt = f['neighbors'][:, :{k}]",
        f"    gd = f['distances'][:, :{k}]",
    ]
    factory = faiss_factory(backend, build)
    if factory is not None:
        body = _faiss(dataset.metric, factory, backend, build, search, k)
    elif backend == "hnswlib":
        body = _hnswlib(dataset.metric, build, search, k)
    elif backend == "annoy":
        body = _annoy(dataset.metric, build, search, k)
    elif backend == "usearch":
        body = _usearch(dataset.metric, build, search, k)
    else:
        raise AnnbenchError(
            f"--emit python knows the faiss backends, hnswlib, annoy and usearch, not "
            f"'{backend}'; "
            "use --save-index or --json for this pick"
        )
    imports, code = body
    tail = [
        "# recall two ways: ids in the true top-k (set intersection), and annbench's, which also",
        "# counts an id whose exact distance ties the k-th true one (as a tie, it is as near)",
        f"plain = np.mean([len(set(found) & set(truth)) / {k} for found, truth in zip(ids, gt)])",
        "xb64, xq64 = xb.astype('float64'), xq.astype('float64')",
        *_distance_lines(dataset.metric),
        f"tie = gd[:, {k - 1}] + {TIE_RTOL!r} * np.abs(gd[:, {k - 1}]) + {TIE_ATOL!r}",
        "hits = 0",
        "for q, (found, truth) in enumerate(zip(ids, gt)):",
        "    seen = set()",
        "    for i in found:",
        "        if i >= 0 and i not in seen and (i in truth or distance(q, i) <= tie[q]):",
        "            hits += 1",
        "        seen.add(i)",
        f"ties = hits / ids[:, :{k}].size",
        f"print(f'recall@{k}, ids only (set intersection): {{plain:.4f}}')",
        f"print(f'recall@{k}, ties counted (annbench): {{ties:.4f}}')",
    ]
    return "\n".join(header + imports + [""] + load + code + tail) + "\n"


def _distance_lines(metric: Metric) -> list[str]:
    """Snippet lines defining ``distance(q, i)``, the exact distance as the dataset stores it."""
    if metric is Metric.EUCLIDEAN:
        return ["def distance(q, i):", "    return np.sqrt(((xb64[i] - xq64[q]) ** 2).sum())"]
    if metric is Metric.DOT:
        return ["def distance(q, i):", "    return -(xb64[i] @ xq64[q])"]
    return [
        "def distance(q, i):",
        "    norms = np.linalg.norm(xb64[i]) * np.linalg.norm(xq64[q])",
        "    return 1.0 - (xb64[i] @ xq64[q]) / (norms or 1.0)",
    ]


def _faiss(
    metric: Metric,
    factory: str,
    backend: str,
    build: Mapping[str, Any],
    search: Mapping[str, Any],
    k: int,
) -> tuple[list[str], list[str]]:
    code = []
    if metric is Metric.ANGULAR:
        code += ["faiss.normalize_L2(xb)", "faiss.normalize_L2(xq)"]
    code.append(f"index = faiss.index_factory(xb.shape[1], {factory!r}, {_FAISS_METRIC[metric]})")
    if backend == "faiss-hnsw":
        code.append(f"index.hnsw.efConstruction = {int(build['efConstruction'])}")
    code += ["index.train(xb)", "index.add(xb)"]
    params = ",".join(
        f"{_FAISS_SEARCH.get(name, name)}={value}"
        for name, value in search.items()
        if value is not None
    )
    if params:
        code.append(f"faiss.ParameterSpace().set_index_parameters(index, {params!r})")
    code.append(f"_, ids = index.search(xq, {k})")
    return ["import faiss"], code


def _hnswlib(
    metric: Metric, build: Mapping[str, Any], search: Mapping[str, Any], k: int
) -> tuple[list[str], list[str]]:
    code = [
        f"index = hnswlib.Index(space={_HNSWLIB_SPACE[metric]!r}, dim=xb.shape[1])",
        f"index.init_index(max_elements=len(xb), M={int(build['M'])}, "
        f"ef_construction={int(build['ef_construction'])}, random_seed=100)",
        "index.add_items(xb, np.arange(len(xb)))",
        f"index.set_ef({int(search['ef'])})",
        f"ids, _ = index.knn_query(xq, k={k})",
    ]
    return ["import hnswlib"], code


def _annoy(
    metric: Metric, build: Mapping[str, Any], search: Mapping[str, Any], k: int
) -> tuple[list[str], list[str]]:
    code = [
        f"index = AnnoyIndex(xb.shape[1], {_ANNOY_METRIC[metric]!r})",
        "index.set_seed(42)",
        "for i, vector in enumerate(xb):",
        "    index.add_item(i, vector)",
        f"index.build({int(build['n_trees'])})",
        f"ids = [index.get_nns_by_vector(q, {k}, {int(search['search_k'])}) for q in xq]",
    ]
    return ["from annoy import AnnoyIndex"], code


def _usearch(
    metric: Metric, build: Mapping[str, Any], search: Mapping[str, Any], k: int
) -> tuple[list[str], list[str]]:
    code = []
    if metric is Metric.ANGULAR:  # as annbench does: cosine on unit vectors
        code += [
            "xb /= np.maximum(np.linalg.norm(xb, axis=1, keepdims=True), 1e-30)",
            "xq /= np.maximum(np.linalg.norm(xq, axis=1, keepdims=True), 1e-30)",
        ]
    code += [
        f"index = Index(ndim=xb.shape[1], metric={_USEARCH_METRIC[metric]!r}, "
        f"dtype={build.get('dtype', 'f32')!r}, connectivity={int(build['connectivity'])}, "
        f"expansion_add={int(build['expansion_add'])})",
        "index.add(np.arange(len(xb)), xb)",
        f"index.expansion_search = {int(search['expansion_search'])}",
        f"ids = index.search(xq, {k}).keys",
    ]
    return ["from usearch.index import Index"], code


def load_hint(backend: str, metric: Metric, d: int, path: Path) -> str:
    """A Python expression that loads the saved index with the library itself."""
    if backend.startswith("faiss-"):
        return f"faiss.read_index({str(path)!r})"
    if backend == "hnswlib":
        return (
            f"hnswlib.Index(space={_HNSWLIB_SPACE[metric]!r}, dim={d}); "
            f"index.load_index({str(path)!r})"
        )
    if backend == "annoy":
        return f"AnnoyIndex({d}, {_ANNOY_METRIC[metric]!r}); index.load({str(path)!r})"
    if backend == "usearch":
        return f"usearch.index.Index.restore({str(path)!r})"
    return f"annbench.registry.load_backend({backend!r})(metric, **build_params).load(path)"


def save_index(
    choice: Mapping[str, Any], dataset: Dataset, path: Path, k: int, query_mode: str = ""
) -> Path:
    """Build ``choice`` on ``dataset``, save it to ``path`` and write ``<path>.json`` beside it
    (library, version, parameters, metric, measured recall/latency/memory, dataset hash).
    Returns the JSON's path."""
    path = check_output_file(path, "--save-index")
    meta_path = check_output_file(path.with_name(path.name + ".json"), "--save-index's JSON")
    backend = str(choice["backend"])
    cls = load_backend(backend)
    index = cls(dataset.metric, **choice["build_params"])
    index.check(*dataset.train.shape)
    start = time.perf_counter()
    index.build(dataset.train)
    build_s = time.perf_counter() - start
    index.set_search_params(**choice["search_params"])
    sample = dataset.test[:_CHECK_QUERIES]

    def reads_back(saved: Path) -> None:
        _check_reads_back(cls, choice, dataset, saved, index.search(sample, k).ids, sample, k)

    with output_file(path, "--save-index", verify=reads_back) as temp:
        try:
            index.save(temp)
        except NotImplementedError as exc:
            raise AnnbenchError(f"The {backend} backend cannot save its index") from exc
        except (AnnbenchError, OSError):
            raise
        except Exception as exc:  # a library's own write error (faiss: RuntimeError)
            raise AnnbenchError(f"Cannot write --save-index {path}: {one_line_error(exc)}") from exc
    size = path.stat().st_size if path.is_file() else None
    meta = {
        "backend": backend,
        "library": cls.library,
        "library_version": cls.library_version(),
        "build_params": choice["build_params"],
        "search_params": choice["search_params"],
        "faiss_factory": faiss_factory(backend, choice["build_params"]),
        "metric": dataset.metric.value,
        "normalize_queries": dataset.metric is Metric.ANGULAR,
        "k": k,
        "query_mode": query_mode,
        "measured": {
            name: _plain(choice.get(name), whole=name.endswith("bytes") or name == "runs")
            for name in (
                "recall",
                "qps",
                "latency_mean_ms",
                "latency_p50_ms",
                "latency_p99_ms",
                "serving_memory_bytes",
                "memory_footprint",
                "index_bytes",
                "peak_rss_bytes",
                "build_s",
                "runs",
            )
        },
        "dataset": dataset.name,
        "dataset_hash": dataset.content_hash,
        "dataset_path": str(Path(dataset.path).resolve()),
        "n": int(dataset.train.shape[0]),
        "d": int(dataset.train.shape[1]),
        "file": path.name,
        "file_bytes": size,
        "build_s_here": round(build_s, 3),
        "load": load_hint(backend, dataset.metric, int(dataset.train.shape[1]), path),
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    write_text_file(
        meta_path, json.dumps(meta, indent=2, default=str) + "\n", "--save-index's JSON"
    )
    log.info("Saved %s (%d bytes) and %s", path, size, meta_path)
    return meta_path


#: Queries the saved index answers before it replaces the target file.
_CHECK_QUERIES = 20


def _check_reads_back(
    cls: Any,
    choice: Mapping[str, Any],
    dataset: Dataset,
    saved: Path,
    expected: np.ndarray,
    sample: np.ndarray,
    k: int,
) -> None:
    """Load ``saved`` as a new index and check it answers ``sample`` as the built index did: a
    write the library did not check (a full disk, a size limit) fails here, not after "Saved"."""
    loaded = cls(dataset.metric, **choice["build_params"])
    try:
        loaded.load(saved)
        loaded.set_search_params(**choice["search_params"])
        ids = loaded.search(sample, k).ids
    except Exception as exc:  # any library error while reading back: the file is unusable
        raise AnnbenchError(
            f"The saved index does not read back ({one_line_error(exc)}); the disk may be full"
        ) from exc
    finally:
        del loaded
    same = np.mean(np.asarray(ids) == expected) if np.shape(ids) == np.shape(expected) else 0.0
    if same < 0.9:
        raise AnnbenchError(
            f"The saved index answers differently from the one built ({same:.0%} of ids agree); "
            "the file is incomplete, the disk may be full"
        )


def _plain(value: Any, whole: bool = False) -> Any:
    """A plain JSON value: numpy scalars unwrapped, NaN as None, counts as ints."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN
        return None
    return int(value) if whole and isinstance(value, float) else value
