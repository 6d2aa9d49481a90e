"""Bytes-per-vector memory models per index family, checked against measured figures.

"Will it fit in 16 GB at 50M vectors?" needs a model that says what an index costs per vector
and in fixed bytes, and evidence that the model is right. ``memory_model`` gives the model of
one configuration, term by term from how its library lays the index out (``explain`` shows
the terms); ``validate_memory_models`` sets its prediction beside every stored measurement
of file size (``index_bytes``) and serving memory (``serving_memory_bytes``: the index loaded
fresh from its file, see ``annbench.sweep.serving``); ``calibrate`` sums that up per family
as the median and worst relative error; ``fits_in`` answers with that error as its margin.

Two figures per configuration: ``file`` (what ``save`` writes) and ``serving`` (resident
memory once loaded: the file's arrays plus what the library builds on load, such as hnswlib's
per-element mutexes and label hash table, or faiss IVF-PQ's precomputed distance table).

Families and their sources: faiss' index I/O (``index_write.cpp``) and the "Guidelines to
choose an index" wiki page; hnswlib's ``hnswalg.h`` (``size_data_per_element``, ``loadIndex``);
Voyager's fork of it (``cpp/src/hnswalg.h``); Annoy's ``annoylib.h`` node layout. Other
backends (databases, ScaNN, PyNNDescent) get None: callers then use the measured linear fit
of ``annbench.scaling.growth``. usearch gets None too: its key table has a power of two of
at least 1.5 N slots, its per-node arrays follow that capacity, and its vectors and nodes sit
in arenas that start at 4 MB and double, so its bytes step with N rather than follow a line.

Measured while writing this (faiss 1.15, hnswlib 0.8, Annoy 1.17, Voyager 2.2): on the
bundled dataset (21,000 x 384, angular) every file within 0.9 % of its model and every
serving figure within 1.1 %; at 400,000 x 64 (euclidean) faiss flat, IVF, IVF-PQ and HNSW
and hnswlib within 0.4 % on both figures. Off by more: Annoy's files, by up to 20 % under
the dot metric with many trees (the leaf fill varies with the data, see ``ANNOY_LEAF_FILL``);
Annoy's serving figure, which the model gives fully resident while a fresh process warmed by
32 queries holds only the pages they touched of its memory map (77 % of the file at 400k,
so the model reads 30 % high there: a margin on the safe side); and serving memory of indexes
of a few MB, where the loading residue's spread is a large share.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import pandas as pd

from annbench.backends.faiss_factory import split_parts
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric
from annbench.record import params_label
from annbench.results.analysis import parse_bytes
from annbench.results.columns import as_dict

log = logging.getLogger(__name__)

#: The two figures a model predicts: serving memory and file size.
FIGURES = ("serving", "file")
#: What faiss' loading and first searches leave resident in a fresh process beyond the
#: index's own arrays (allocator arenas, search buffers): 0.3 to 0.9 MB measured (flat, IVF,
#: IVF-PQ and HNSW, 1k to 200k vectors). hnswlib and Voyager leave within 0.5 MB of none.
FAISS_SERVING_RESIDUE = 500_000
#: ``calibrate`` leaves out builds measured below this: there the loading residue's spread
#: (a few hundred kB either way) is most of the error, which says nothing of large indexes.
MIN_CALIBRATION_BYTES = 4_000_000
#: Bytes of a std::mutex (glibc, x86-64 and aarch64).
MUTEX_BYTES = 40
#: hnswlib's per-label operation locks (MAX_LABEL_OPERATION_LOCKS), and Voyager's update locks.
LABEL_LOCKS = 65536
#: Heap block of an std::unordered_map<size_t, uint32> node: 24 bytes asked, 32 taken.
HASH_NODE_BYTES = 32
#: Mean buckets per element of an std::unordered_map filled one insert at a time: the table
#: doubles at load factor 1, so between 1 and 2 (1 / ln 2 on average over sizes).
HASH_BUCKETS_PER_ELEMENT = 1 / math.log(2)
#: faiss ArrayInvertedLists: per list two MaybeOwnedVector headers (64 B each) and the
#: heap-block header and rounding of its codes and ids (16 B each on average).
IVF_LIST_SERVING_BYTES = 2 * 64 + 2 * 16
#: faiss computes IVF-PQ's L2 precomputed table only when it is at most this big.
PRECOMPUTED_TABLE_MAX_BYTES = 2**31
#: Bytes per dimension of the stores faiss-ivfpq's ``refine`` re-ranks from.
REFINE_BYTES = {"Flat": 4, "SQfp16": 2, "SQ8": 1}
#: Annoy: mean items per leaf over the K a leaf can hold, per metric (medians measured on
#: Gaussian, clustered and anisotropic data, d 8 to 128, 5k to 80k vectors). Splits into
#: exactly even halves would give 1 / (2 ln 2) = 0.72; Annoy's two-means hyperplanes split
#: less evenly, and how much depends on the data: 0.64 to 0.77 seen under euclidean, 0.59 to
#: 0.77 under angular, 0.51 to 0.76 under dot (whose extra norm dimension unbalances splits).
ANNOY_LEAF_FILL = {Metric.EUCLIDEAN: 0.70, Metric.ANGULAR: 0.67, Metric.DOT: 0.62}
#: Relative error each family's model is held to (file; serving), by the tests and as the
#: margin ``fits_in`` uses when no validation of the family is at hand. Files of faiss and
#: the HNSW libraries are laid out exactly as modelled (errors under 0.1 % measured); serving
#: memory adds the loading residue's spread and allocator rounding (held on indexes of
#: ``MIN_CALIBRATION_BYTES`` or more). Annoy's tree count depends on the data (see
#: ``ANNOY_LEAF_FILL``), and Annoy serves from a memory map that a lightly warmed process
#: holds only partly.
TOLERANCES = {
    "faiss-flat": (0.02, 0.10),
    "faiss-ivf": (0.02, 0.10),
    "faiss-ivfpq": (0.02, 0.10),
    "faiss-hnsw": (0.02, 0.10),
    "hnswlib": (0.02, 0.10),
    "voyager": (0.02, 0.10),
    "annoy": (0.25, 0.30),
}
#: ``fits_in``: a calibration over fewer builds than this widens to the model's tolerance.
MIN_CALIBRATION_BUILDS = 3
VERDICTS = ("yes", "no", "too close to call")
#: Columns of ``validate_memory_models``' frame: per build, what it is, then per figure the
#: prediction, the measurement and the relative error.
VALIDATION_COLUMNS = (
    *("dataset", "backend", "family", "build", "n", "d", "metric", "records"),
    *("file_predicted", "index_bytes", "file_error"),
    *("serving_predicted", "serving_memory_bytes", "serving_error"),
)


@dataclass(frozen=True)
class Term:
    """One part of a model: its bytes (per vector, or fixed), what it is, and its formula."""

    bytes: float
    what: str
    formula: str = ""


@dataclass(frozen=True)
class MemoryModel:
    """Memory of one index configuration at N vectors: ``fixed_bytes + N * vector_bytes``."""

    family: str
    figure: str  # "serving" or "file"
    label: str  # backend and build parameters
    per_vector: tuple[Term, ...]
    fixed: tuple[Term, ...]
    tolerance: float  # relative error the tests hold this family's model to

    @property
    def vector_bytes(self) -> float:
        """Bytes each vector adds."""
        return sum(term.bytes for term in self.per_vector)

    @property
    def fixed_bytes(self) -> float:
        """Bytes whatever the number of vectors."""
        return sum(term.bytes for term in self.fixed)

    def bytes_at(self, n: int) -> float:
        """Predicted bytes at ``n`` vectors."""
        return self.fixed_bytes + n * self.vector_bytes

    def explain(self) -> str:
        """The terms in words: ``'128 vector (4·d) + 8 id = 136 B/vector; fixed 90 B (...)'``."""
        parts = " + ".join(_term_text(term, _amount) for term in self.per_vector)
        fixed = " + ".join(_term_text(term, _size) for term in self.fixed if term.bytes)
        text = f"{self.label}, {self.figure}: {parts} = {_amount(self.vector_bytes)} B/vector"
        return f"{text}; fixed {_size(self.fixed_bytes)}: {fixed or 'none'}"


@dataclass(frozen=True)
class BaseShape:
    """What a memory model needs to know of a dataset: base size, dimension, metric."""

    n: int
    d: int
    metric: Metric

    @classmethod
    def of(cls, dataset: Any) -> BaseShape:
        """The shape of an ``annbench.data.format.Dataset`` (its ``train`` and ``metric``)."""
        n, d = dataset.train.shape
        return cls(int(n), int(d), Metric.parse(dataset.metric))


@dataclass(frozen=True)
class Calibration:
    """How far one family's model was from the measurements: relative errors
    ``(predicted - measured) / measured`` over ``builds`` validated index builds."""

    family: str
    figure: str
    builds: int
    median_error: float  # median |relative error|
    worst_error: float  # largest |relative error|
    bias: float  # median signed relative error (> 0: the model predicts too much)
    largest_n: int  # largest base size validated


@dataclass(frozen=True)
class FitAnswer:
    """Whether an index fits a memory budget at ``n`` vectors, with the margin it carries."""

    n: int
    budget_bytes: float
    predicted_bytes: float
    low_bytes: float  # what the measurement would be if the model erred by +margin
    high_bytes: float  # ... and by -margin
    margin: float  # relative error allowed for
    margin_source: str  # where the margin comes from, in words
    verdict: str  # "yes", "no" or "too close to call"
    label: str = ""
    figure: str = "serving"
    extrapolation: float | None = None  # n over the largest validated size

    def text(self) -> str:
        """The answer in one line, margin and its source included."""
        what = {"serving": "serving memory", "file": "file size"}.get(self.figure, self.figure)
        head = f"{self.label} at {self.n:,} vectors: " if self.label else f"At {self.n:,} vectors: "
        beyond = ""
        if self.extrapolation is not None and self.extrapolation > 1:
            beyond = f"; {self.extrapolation:,.0f}x beyond the largest validated size"
        says = {
            "yes": "fits in",
            "no": "does not fit in",
            "too close to call": "too close to call against",
        }[self.verdict]
        return (
            f"{head}{_size(self.predicted_bytes)} {what} predicted "
            f"({_size(self.low_bytes)} to {_size(self.high_bytes)} with a "
            f"{self.margin:.1%} margin: {self.margin_source}{beyond}); "
            f"{says} {_size(self.budget_bytes)}"
        )


def memory_model(
    backend: str,
    build_params: Mapping[str, Any],
    d: int,
    metric: Metric | str = Metric.EUCLIDEAN,
    *,
    figure: str = "serving",
) -> MemoryModel | None:
    """The memory model of ``backend`` built with ``build_params`` over ``d``-dimensional
    vectors, for ``figure`` (``serving`` or ``file``); None for a family without one."""
    if figure not in FIGURES:
        raise BadUsage(f"Memory figure '{figure}' not valid. Use one of: {', '.join(FIGURES)}")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise AnnbenchError(f"Dimension d must be a whole number >= 1, got {d!r}")
    metric = Metric.parse(metric)
    params = dict(build_params)
    label = f"{backend} {params_label(params)}" if params else backend
    if backend.startswith("faiss"):
        layout = _faiss_layout(backend, params)
        if layout is None:
            return None
        family, per_vector, fixed = _faiss_terms(layout, d, metric, figure)
    elif backend in ("hnswlib", "voyager"):
        family = backend
        per_vector, fixed = _hnsw_terms(backend, params, d, metric, figure)
    elif backend == "annoy":
        family = backend
        per_vector, fixed = _annoy_terms(params, d, metric)
    else:
        return None
    if figure == "serving" and family.startswith("faiss"):
        fixed += (Term(FAISS_SERVING_RESIDUE, "loading residue"),)
    tolerance = TOLERANCES[family][0 if figure == "file" else 1]  # (file, serving)
    return MemoryModel(family, figure, label, tuple(per_vector), tuple(fixed), tolerance)


def factory_layout(factory: str) -> dict[str, Any] | None:
    """The structure of a faiss factory string this module models (``Flat``, ``IVFx,Flat``,
    ``IVFx,PQm[xb][np]``, ``HNSWm[,Flat]``, each optionally after ``IDMap,``), else None:
    ``{'kind': 'ivfpq', 'nlist': 1024, 'm': 16, 'nbits': 8, 'idmap': False}``."""
    parts = split_parts(str(factory))
    idmap = parts[0] == "IDMap"
    if idmap:
        parts = parts[1:]
    if parts == ["Flat"]:
        return {"kind": "flat", "idmap": True}
    if len(parts) == 2 and (ivf := re.fullmatch(r"IVF(\d+)", parts[0])):
        if parts[1] == "Flat":
            return {"kind": "ivf", "nlist": int(ivf[1]), "idmap": idmap}
        if pq := re.fullmatch(r"PQ(\d+)(?:x(\d+))?(?:np)?", parts[1]):
            m, nbits = int(pq[1]), int(pq[2] or 8)
            return {"kind": "ivfpq", "nlist": int(ivf[1]), "m": m, "nbits": nbits, "idmap": idmap}
    if 1 <= len(parts) <= 2 and (hnsw := re.fullmatch(r"HNSW(\d+)", parts[0])):
        if parts[1:] in ([], ["Flat"]):
            return {"kind": "hnsw", "M": int(hnsw[1]), "idmap": True}
    return None


def validate_memory_models(
    records: pd.DataFrame, datasets: Mapping[str, BaseShape | tuple[int, int, str]]
) -> pd.DataFrame:
    """Per index build in ``records`` (successful plain runs; ``annbench.api.load_results``'s
    frame, flat or raw), each model's prediction beside the measured file size and serving
    memory, and their relative errors ``(predicted - measured) / measured``. N is the
    record's ``base_size`` where set, else the dataset's n from ``datasets`` (name -> shape)."""
    builds: dict[tuple, dict[str, Any]] = {}
    for row in _usable(records).to_dict("records"):
        shape = _shape(datasets, row["dataset"])
        params = _build_params(row)
        size = row.get("base_size")
        n = int(size) if size is not None and pd.notna(size) else shape.n
        key = (row["dataset"], row["backend"], json.dumps(params, sort_keys=True), n)
        build = builds.setdefault(key, {"params": params, "shape": shape, "n": n, "rows": []})
        build["rows"].append(row)
    out = []
    for (dataset, backend, _, n), build in builds.items():
        shape, params = build["shape"], build["params"]
        models = {
            figure: memory_model(backend, params, shape.d, shape.metric, figure=figure)
            for figure in FIGURES
        }
        if models["file"] is None:
            log.debug("no memory model for %s %s", backend, params_label(params))
            continue
        family, label, metric = models["file"].family, params_label(params), shape.metric.value
        row: dict[str, Any] = {"dataset": dataset, "backend": backend, "family": family}
        row |= {"build": label, "n": n, "d": shape.d, "metric": metric}
        row["records"] = len(build["rows"])
        for figure, column in (("file", "index_bytes"), ("serving", "serving_memory_bytes")):
            measured = _median(build["rows"], column)
            predicted = models[figure].bytes_at(n)
            row[f"{figure}_predicted"] = predicted
            row[column] = measured
            row[f"{figure}_error"] = (predicted - measured) / measured if measured else math.nan
        out.append(row)
    return pd.DataFrame(out, columns=VALIDATION_COLUMNS)


def calibrate(
    validation: pd.DataFrame, figure: str = "serving", min_bytes: float = MIN_CALIBRATION_BYTES
) -> dict[str, Calibration]:
    """Per family, the relative errors of ``figure`` in ``validate_memory_models``' frame,
    over builds measured at ``min_bytes`` or more."""
    if figure not in FIGURES:
        raise BadUsage(f"Memory figure '{figure}' not valid. Use one of: {', '.join(FIGURES)}")
    measured = {"file": "index_bytes", "serving": "serving_memory_bytes"}[figure]
    errors = validation.dropna(subset=[f"{figure}_error"])
    errors = errors[errors[measured].astype(float) >= min_bytes]
    out = {}
    for family, rows in errors.groupby("family"):
        signed = rows[f"{figure}_error"].astype(float)
        out[str(family)] = Calibration(
            family=str(family),
            figure=figure,
            builds=len(rows),
            median_error=float(signed.abs().median()),
            worst_error=float(signed.abs().max()),
            bias=float(signed.median()),
            largest_n=int(rows["n"].max()),
        )
    return out


def fits_in(
    model: MemoryModel | float,
    n: int,
    budget: float | str,
    *,
    calibration: Calibration | Mapping[str, Calibration] | None = None,
    margin: float | None = None,
) -> FitAnswer:
    """Will it fit in ``budget`` (bytes, or text such as ``16GB``) at ``n`` vectors? ``model``
    is a MemoryModel, or bytes already predicted at ``n`` (then pass ``margin``). The margin
    is ``margin`` if given, else the worst error of the family's ``calibration`` (from
    ``calibrate``), else the model's stated tolerance; the verdict is "yes" when even the
    high end fits, "no" when even the low end does not, else "too close to call"."""
    if not isinstance(n, Integral) or isinstance(n, bool) or n < 1:
        raise BadUsage(f"Vector count must be a whole number >= 1, got {n!r}")
    n = int(n)
    budget_bytes = parse_bytes(budget) if isinstance(budget, str) else float(budget)
    if not budget_bytes > 0:
        raise BadUsage(f"Memory budget must be positive, e.g. 16GB; got {budget!r}")
    extrapolation = None
    if isinstance(model, MemoryModel):
        predicted, label, figure = model.bytes_at(n), model.label, model.figure
        found = _calibration_for(model, calibration)
        if margin is not None:
            source = "given"
        elif found is not None:
            extrapolation = n / found.largest_n if found.largest_n else None
            margin = found.worst_error
            seen = (
                f"worst error in {found.builds} validated build{'s' * (found.builds != 1)}, "
                f"median {found.median_error:.1%}"
            )
            if found.builds < MIN_CALIBRATION_BUILDS and model.tolerance > margin:
                margin, seen = model.tolerance, f"the model's tolerance ({seen})"
            source = seen
        else:
            margin = model.tolerance
            source = "the model's tolerance; not validated against your results"
    else:
        if margin is None:
            raise BadUsage(
                "fits_in with predicted bytes needs margin= (the prediction's held-out "
                "relative error); or pass a MemoryModel"
            )
        predicted, label, figure, source = float(model), "", "serving", "given"
    if not 0 <= margin < 1:
        raise BadUsage(f"Margin must be a fraction in [0, 1), got {margin!r}")
    low, high = predicted / (1 + margin), predicted / (1 - margin)
    verdict = "yes" if high <= budget_bytes else "no" if low > budget_bytes else VERDICTS[2]
    return FitAnswer(
        n=n,
        budget_bytes=budget_bytes,
        predicted_bytes=predicted,
        low_bytes=low,
        high_bytes=high,
        margin=margin,
        margin_source=source,
        verdict=verdict,
        label=label,
        figure=figure,
        extrapolation=extrapolation,
    )


# --- faiss ----------------------------------------------------------------------------------


def _faiss_layout(backend: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The structure annbench's faiss backends build (see ``faiss_backend``), or None."""
    if backend == "faiss-flat":
        return {"kind": "flat", "idmap": True}
    if backend == "faiss-ivf":
        return {"kind": "ivf", "nlist": _param(params, "nlist", backend), "idmap": False}
    if backend == "faiss-ivfpq":
        refine = params.get("refine", "none")
        if refine not in ("none", *REFINE_BYTES):
            return None
        return {
            "kind": "ivfpq",
            "nlist": _param(params, "nlist", backend),
            "m": _param(params, "m", backend),
            "nbits": _param({"nbits": 8, **params}, "nbits", backend),
            "idmap": refine != "none",  # FaissIVFPQ wraps a refined index in an IDMap
            "refine": refine,
        }
    if backend == "faiss-hnsw":
        return {"kind": "hnsw", "M": _param(params, "M", backend, least=2), "idmap": True}
    if backend in ("faiss-factory", "faiss") and "factory" in params:
        return factory_layout(params["factory"])
    return None


def _faiss_terms(
    layout: dict[str, Any], d: int, metric: Metric, figure: str
) -> tuple[str, list[Term], tuple[Term, ...]]:
    kind = layout["kind"]
    serving = figure == "serving"
    per_vector: list[Term] = []
    fixed: list[Term] = [Term(256, "headers")]
    if kind == "ivfpq":
        m, nbits, nlist = layout["m"], layout["nbits"], layout["nlist"]
        if d % m:
            raise AnnbenchError(f"PQ m={m} does not divide the dimension d={d}; use a divisor")
        per_vector.append(Term(math.ceil(m * nbits / 8), "PQ code", "⌈m·nbits/8⌉"))
        fixed.append(Term(2**nbits * d * 4, "PQ codebooks", "2^nbits·d·4"))
    else:
        per_vector.append(Term(4 * d, "vector", "4·d"))
    if kind in ("ivf", "ivfpq"):
        nlist = layout["nlist"]
        per_vector.append(Term(8, "id in its list"))
        fixed.append(Term(nlist * d * 4, "centroids", "nlist·d·4"))
        if serving:
            fixed.append(Term(nlist * IVF_LIST_SERVING_BYTES, "list headers", "nlist·160"))
        else:
            fixed.append(Term(nlist * 8, "list sizes", "nlist·8"))
    if kind == "ivfpq" and serving and metric is Metric.EUCLIDEAN:
        table = layout["nlist"] * layout["m"] * 2 ** layout["nbits"] * 4
        if table <= PRECOMPUTED_TABLE_MAX_BYTES:  # faiss computes it on load, L2 only
            fixed.append(Term(table, "precomputed L2 table", "nlist·m·2^nbits·4"))
    if kind == "hnsw":
        big_m = layout["M"]
        per_vector += [
            Term(8 * big_m, "level-0 links", "2·M·4"),
            Term(4 * big_m / (big_m - 1), "upper-level links", "4·M/(M−1)"),
            Term(4, "level"),
            Term(8, "offset"),
        ]
    refine = layout.get("refine", "none")
    if refine != "none":
        per_scalar = REFINE_BYTES[refine]
        per_vector.append(Term(per_scalar * d, f"refine {refine} vector", f"{per_scalar}·d"))
        if refine == "SQ8":
            fixed.append(Term(2 * d * 4, "SQ8 ranges", "2·d·4"))
    if layout.get("idmap"):
        per_vector.append(Term(8, "id map"))
    return f"faiss-{kind}", per_vector, tuple(fixed)


# --- HNSW graphs: hnswlib and its fork in Voyager -------------------------------------------


def _hnsw_terms(
    backend: str, params: dict[str, Any], d: int, metric: Metric, figure: str
) -> tuple[list[Term], tuple[Term, ...]]:
    big_m = _param(params, "M", backend, least=2)
    dims, per_scalar, what = d, 4, "vector"
    if backend == "voyager":
        storage = params.get("storage", "float32")
        per_scalar = 4 if storage == "float32" else 1  # float8 and E4M3: one byte
        what = f"{storage} vector"
        if metric is Metric.DOT:  # Voyager's order-preserving transform adds a dimension
            dims += 1
    upper = (4 * big_m + 4) / (big_m - 1)  # expected levels above 0 are 1 / (M - 1)
    per_vector = [
        Term(per_scalar * dims, what, f"{per_scalar}·" + ("d" if dims == d else "(d + 1)")),
        Term(8 * big_m + 4, "level-0 links", "2·M·4 + 4"),
        Term(8, "label"),
    ]
    fixed = [Term(128, "header")]
    if figure == "file":
        per_vector.append(Term(4, "upper-level size"))
        per_vector.append(Term(upper, "upper-level links", "(4·M + 4)/(M−1)"))
        return per_vector, tuple(fixed)
    per_vector += [
        Term(_upper_heap_bytes(big_m), "upper-level links (heap blocks)"),
        Term(8, "upper-level pointer"),
        Term(4, "level"),
        Term(MUTEX_BYTES, "link-list mutex"),
        Term(2, "visited mark"),
        Term(HASH_NODE_BYTES + 8 * HASH_BUCKETS_PER_ELEMENT, "label hash table"),
    ]
    locks = "label-operation" if backend == "hnswlib" else "update"
    fixed.append(Term(LABEL_LOCKS * MUTEX_BYTES, f"{locks} mutexes", "65,536·40"))
    return per_vector, tuple(fixed)


def _upper_heap_bytes(big_m: int) -> float:
    """Expected heap bytes per element of hnswlib's upper-level link lists: a level-l node
    (probability M^-l (1 - 1/M)) mallocs l·(4M + 4) bytes, taken as glibc chunks."""
    total, level = 0.0, 1
    while (share := big_m**-level * (1 - 1 / big_m)) > 1e-12:
        asked = level * (4 * big_m + 4)
        total += share * max(32, (asked + 8 + 15) // 16 * 16)
        level += 1
    return total


# --- Annoy ----------------------------------------------------------------------------------


def _annoy_terms(
    params: dict[str, Any], d: int, metric: Metric
) -> tuple[list[Term], tuple[Term, ...]]:
    n_trees = _param(params, "n_trees", "annoy")
    header = 12 if metric is Metric.ANGULAR else 16  # n_descendants, children[2] (+ a float)
    node = header + 4 * d
    leaf = d + 3 if metric is Metric.DOT else d + 2  # item ids a leaf node holds: K
    fill = ANNOY_LEAF_FILL[metric]
    per_tree = 2 * node / (fill * leaf)  # leaves of fill·K items, and as many splits
    per_vector = [
        Term(node, "item node", f"{header} + 4·d"),
        Term(n_trees * per_tree, "tree nodes", f"n_trees·2·node/({fill}·K), K={leaf}"),
    ]
    return per_vector, (Term(n_trees * node, "root copies", "n_trees·node"),)


# --- helpers --------------------------------------------------------------------------------


def _usable(records: pd.DataFrame) -> pd.DataFrame:
    """Successful, non-probe, plain-workload records with a measured figure."""
    rows = records
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    if "probe" in rows:
        rows = rows[~rows["probe"].fillna(False).astype(bool)]
    if "workload" in rows:
        rows = rows[rows["workload"].fillna("plain") == "plain"]
    figures = [c for c in ("index_bytes", "serving_memory_bytes") if c in rows]
    if not figures:
        raise AnnbenchError(
            "The results have neither index_bytes nor serving_memory_bytes; load them with "
            "annbench.api.load_results"
        )
    return rows[rows[figures].notna().any(axis=1)]


def _build_params(row: dict[str, Any]) -> dict[str, Any]:
    """A record's build parameters: its ``build_params`` (dict or JSON), else ``build.*``."""
    if "build_params" in row and row["build_params"] is not None:
        return dict(as_dict(row["build_params"]))
    found = {}
    for column, value in row.items():
        if str(column).startswith("build.") and value is not None and not _missing(value):
            found[column[len("build.") :]] = value.item() if hasattr(value, "item") else value
    return found


def _param(params: Mapping[str, Any], name: str, backend: str, least: int = 1) -> int:
    """Build parameter ``name`` as a whole number >= ``least``; a one-line error else."""
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise AnnbenchError(
            f"The memory model of {backend} needs build parameter {name} as a whole number "
            f">= {least}, got {value!r}"
        )
    return value


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts
        return False


def _shape(datasets: Mapping[str, BaseShape | tuple[int, int, str]], name: str) -> BaseShape:
    found = datasets.get(name)
    if found is None:
        raise AnnbenchError(
            f"No base shape for dataset '{name}'; pass datasets={{'{name}': BaseShape(n, d, "
            "metric)}} (BaseShape.of(annbench.api.load_dataset(name)) reads it)"
        )
    if isinstance(found, BaseShape):
        return found
    n, d, metric = found
    return BaseShape(int(n), int(d), Metric.parse(metric))


def _median(rows: list[dict[str, Any]], column: str) -> float:
    values = [float(r[column]) for r in rows if r.get(column) is not None and pd.notna(r[column])]
    return float(pd.Series(values).median()) if values else math.nan


def _calibration_for(
    model: MemoryModel, calibration: Calibration | Mapping[str, Calibration] | None
) -> Calibration | None:
    if calibration is None:
        return None
    found = calibration if isinstance(calibration, Calibration) else calibration.get(model.family)
    if found is not None and (found.family != model.family or found.figure != model.figure):
        raise BadUsage(
            f"Calibration of {found.family} {found.figure} does not apply to a "
            f"{model.family} {model.figure} model; calibrate that figure of that family"
        )
    return found


def _term_text(term: Term, show: Any) -> str:
    formula = f" ({term.formula})" if term.formula else ""
    return f"{show(term.bytes)} {term.what}{formula}"


def _amount(value: float) -> str:
    """Bytes per vector: whole numbers as such, else one decimal."""
    return f"{value:,.0f}" if abs(value - round(value)) < 0.05 else f"{value:,.1f}"


def _size(value: float) -> str:
    """Bytes in decimal units: ``'2.6 MB'``, ``'16 GB'``, ``'90 B'``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:,.3g} {unit}"
    return f"{value:,.0f} B"
