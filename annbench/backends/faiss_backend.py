"""Faiss indexes: exact Flat, IVF-Flat, IVF-PQ, HNSW-Flat and any ``index_factory`` string."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from annbench.backends.faiss_factory import POINTS_PER_CENTROID, Factory, read_factory
from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, cosine_ready, positive_int
from annbench.metrics import Metric

try:
    import faiss
except ImportError as exc:
    raise MissingDependency("faiss-cpu") from exc

FACTORY_HELP = "https://github.com/facebookresearch/faiss/wiki/The-index-factory"
#: Seconds, and bytes of address space, faiss may take to make an index the factory reader
#: does not know (in a child process: a crash or a huge allocation there cannot hurt us).
PROBE_SECONDS = 10.0
PROBE_ADDRESS_SPACE = 4 * 2**30

log = logging.getLogger(__name__)


class _FaissIndex(Index):
    """Shared plumbing: angular is inner product on normalized vectors; ids are kept by the
    index itself (IVF natively, others inside an ``IndexIDMap``), so ``add`` and ``remove``
    take any int64 ids and filtered search uses faiss' ``IDSelectorBitmap``."""

    library = "faiss-cpu"
    releases_gil = True  # search runs in C++ without the GIL: load clients are threads
    supports_add = True
    supports_remove = True
    native_filter = True

    def __init__(self, metric: Metric, **build_params: object) -> None:
        super().__init__(metric, **build_params)
        self._index: faiss.Index | None = None

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        return cosine_ready(self.metric, xq)

    def _faiss_metric(self) -> int:
        if self.metric is Metric.EUCLIDEAN:
            return faiss.METRIC_L2
        return faiss.METRIC_INNER_PRODUCT

    def spec(self) -> str:
        """The faiss index_factory string this index is made from."""
        raise NotImplementedError

    def _make(self, d: int) -> faiss.Index:
        return faiss.index_factory(d, self.spec(), self._faiss_metric())

    def _read(self, d: int) -> Factory | None:
        """What ``spec()`` makes over ``d`` dims, read without building anything."""
        return read_factory(self.spec(), d)

    def estimate_memory_bytes(self, n: int, d: int) -> int | None:
        found = self._read(d)
        return None if found is None else found.memory_bytes(n)

    def build_warnings(self, n: int, d: int) -> list[str]:
        found = self._read(d)
        if found is None or not found.nlist or n >= POINTS_PER_CENTROID * found.nlist:
            return []
        return [
            f"{self.spec()}: {n} base vectors give {n / found.nlist:.1f} per list, faiss wants "
            f"{POINTS_PER_CENTROID} for k-means; nlist <= {n // POINTS_PER_CENTROID} trains better"
        ]

    def _apply_search_params(self) -> None:
        """Put the stored search parameters on the built or loaded index."""

    def build(self, xb: np.ndarray) -> None:
        xb = self.prepare_queries(xb)  # base vectors need the same treatment
        index = self._make(xb.shape[1])
        if not index.is_trained:
            try:
                index.train(xb)
            except RuntimeError as exc:
                raise AnnbenchError(
                    f"faiss could not train {type(self).__name__} on {len(xb)} vectors: "
                    f"{faiss_message(exc)}"
                ) from exc
        index.add_with_ids(xb, np.arange(len(xb), dtype=np.int64))
        self._index = index
        self._apply_search_params()

    def load(self, path: Path) -> None:
        self._index = faiss.read_index(str(path))
        self._apply_search_params()

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        distances, ids = self._index.search(xq, k)
        return Neighbors(distances, ids)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._index.search(q[None], k)[1][0]

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        distances, ids = _filtered_search(self._index, xq, k, np.asarray(allowed, dtype=bool))
        return Neighbors(distances, ids)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        self._index.add_with_ids(self.prepare_queries(xb), _as_ids(ids))

    def remove(self, ids: np.ndarray) -> None:
        if not self.supports_remove:
            raise AnnbenchError(
                f"{type(self).__name__} cannot remove vectors (faiss has no remove)"
            )
        try:
            self._index.remove_ids(_as_ids(ids))
        except RuntimeError as exc:
            raise AnnbenchError(
                f"faiss cannot remove from this index: {faiss_message(exc)}"
            ) from exc

    def set_num_threads(self, n: int) -> None:
        faiss.omp_set_num_threads(n)

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))


class FaissFlat(_FaissIndex):
    """Exact brute-force search (faiss IndexFlat): the recall-1.0 reference point."""

    def __init__(self, metric: Metric) -> None:
        super().__init__(metric)

    def spec(self) -> str:
        return "IDMap,Flat"


class FaissIVF(_FaissIndex):
    """Inverted file with exact vectors (faiss IVF<nlist>,Flat)."""

    def __init__(self, metric: Metric, *, nlist: int) -> None:
        super().__init__(metric, nlist=positive_int("nlist", nlist))
        self.nlist = self.build_params["nlist"]
        self._nprobe = 1

    def check(self, n: int, d: int) -> None:
        if self.nlist > n:
            raise AnnbenchError(
                f"nlist={self.nlist} exceeds the {n} base vectors; use nlist <= {n} "
                "(about sqrt(n) to 16*sqrt(n) is usual)"
            )

    def spec(self) -> str:
        return f"IVF{self.nlist},Flat"

    def set_search_params(self, *, nprobe: int) -> None:
        self._nprobe = positive_int("nprobe", nprobe)
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self._index is not None:
            faiss.extract_index_ivf(self._index).nprobe = self._nprobe


class FaissIVFPQ(FaissIVF):
    """Inverted file with product-quantized codes (faiss IVF<nlist>,PQ<m>x<nbits>np, trained
    without the polysemous codes its search never uses); ``refine`` keeps the vectors in a
    second store (Flat: exact) to re-rank the best ``k_factor * k`` candidates, which lifts
    recall past the codes' ceiling. faiss cannot remove from a refined index."""

    #: Stores a refine stage can re-rank from, beside "none".
    REFINES = ("Flat", "SQfp16", "SQ8")

    def __init__(
        self, metric: Metric, *, nlist: int, m: int, nbits: int = 8, refine: str = "none"
    ) -> None:
        super().__init__(metric, nlist=nlist)
        self.m = positive_int("m", m)
        self.nbits = positive_int("nbits", nbits)
        if self.nbits > 16:
            raise AnnbenchError(f"Parameter nbits must be <= 16, got {nbits}")
        if refine != "none" and refine not in self.REFINES:
            raise AnnbenchError(
                f"Parameter refine must be none or one of {', '.join(self.REFINES)}, got {refine!r}"
            )
        self.refine = refine
        self.build_params.update(m=self.m, nbits=self.nbits)
        if refine != "none":  # keyed as before when there is no refine stage
            self.build_params["refine"] = refine
        self.supports_remove = refine == "none"  # instance-level: IndexRefine has no remove
        self._k_factor = 1

    def check(self, n: int, d: int) -> None:
        super().check(n, d)
        if d % self.m:
            raise AnnbenchError(
                f"PQ m={self.m} does not divide the dimension d={d}; "
                f"use a divisor of {d} such as {_divisors_near(d, self.m)}"
            )
        if n < 2**self.nbits:
            raise AnnbenchError(
                f"PQ nbits={self.nbits} needs at least {2**self.nbits} training vectors, "
                f"the base has {n}; lower nbits"
            )

    def spec(self) -> str:
        base = f"IVF{self.nlist},PQ{self.m}x{self.nbits}np"
        if self.refine == "none":
            return base
        return f"{base},RFlat" if self.refine == "Flat" else f"{base},Refine({self.refine})"

    def _make(self, d: int) -> faiss.Index:
        index = super()._make(d)
        return index if _keeps_ids(index) else faiss.IndexIDMap(index)

    def set_search_params(self, *, nprobe: int, k_factor: int = 1) -> None:
        k_factor = positive_int("k_factor", k_factor)
        if k_factor != 1 and self.refine == "none":
            raise AnnbenchError(
                f"k_factor={k_factor} re-ranks with a refine stage, which this index has not; "
                "add --grid refine=Flat"
            )
        self._k_factor = k_factor
        super().set_search_params(nprobe=nprobe)

    def _apply_search_params(self) -> None:
        super()._apply_search_params()
        if self._index is not None and self.refine != "none":
            _unwrap(self._index).k_factor = self._k_factor


class FaissHNSW(_FaissIndex):
    """HNSW graph over exact vectors (faiss IndexHNSWFlat); add but no remove."""

    supports_remove = False

    def __init__(self, metric: Metric, *, M: int, efConstruction: int) -> None:
        super().__init__(
            metric,
            M=positive_int("M", M, 2),
            efConstruction=positive_int("efConstruction", efConstruction),
        )
        self._ef_search = 16

    def spec(self) -> str:
        return f"IDMap,HNSW{self.build_params['M']}"

    def _make(self, d: int) -> faiss.Index:
        index = super()._make(d)
        _unwrap(index).hnsw.efConstruction = self.build_params["efConstruction"]
        return index

    def set_search_params(self, *, efSearch: int) -> None:
        self._ef_search = positive_int("efSearch", efSearch)
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self._index is not None:
            _unwrap(self._index).hnsw.efSearch = self._ef_search


class FaissFactory(_FaissIndex):
    """Any ``faiss.index_factory`` string (``OPQ32,IVF256,PQ32``, ``HNSW32,SQ8``, ...); the
    search parameters it has (nprobe, efSearch, k_factor) are set through faiss'
    ParameterSpace."""

    #: annbench name -> faiss ParameterSpace names it maps to, first present wins
    SEARCH_PARAMS = {
        "nprobe": ("nprobe",),
        "efSearch": ("efSearch", "quantizer_efSearch"),
        "k_factor": ("k_factor_rf", "k_factor"),
    }

    def __init__(self, metric: Metric, *, factory: str) -> None:
        if not isinstance(factory, str) or not factory.strip():
            raise AnnbenchError(
                f"Parameter factory must be a faiss index_factory string such as "
                f"'IVF256,SQ8', got {factory!r}"
            )
        super().__init__(metric, factory=factory.strip())
        self.factory = self.build_params["factory"]
        # instance-level: whether faiss can remove depends on the string
        self.supports_remove = _removable(self.factory)
        self._search: dict[str, int] = {}
        self._takes: list[str] | None = None

    def spec(self) -> str:
        return self.factory

    def _read(self, d: int) -> Factory | None:
        """Read by ``read_factory`` or, for strings it does not know, by faiss in a child
        process; None when faiss did not answer in time."""
        return read_factory(self.factory, d) or probe_factory(self.factory, d, self._faiss_metric())

    def check(self, n: int, d: int) -> None:
        found = self._read(d)
        if found is None:
            return  # faiss did not answer: the worker will tell
        self._takes = [key for key in self.SEARCH_PARAMS if key in found.search_params]
        for what, needed in found.training:
            if n < needed:
                raise AnnbenchError(
                    f"faiss-factory '{self.factory}': {what} needs at least {needed} training "
                    f"vectors, the base has {n}; use fewer lists/centroids in the string"
                )

    def _make(self, d: int) -> faiss.Index:
        try:
            index = faiss.index_factory(d, self.factory, self._faiss_metric())
        except RuntimeError as exc:
            raise AnnbenchError(
                f"faiss cannot make index '{self.factory}' for d={d}: {faiss_message(exc)}; "
                f"see {FACTORY_HELP}"
            ) from exc
        if not _keeps_ids(index):
            index = faiss.IndexIDMap(index)
        return index

    def set_search_params(
        self, *, nprobe: int | None = None, efSearch: int | None = None, k_factor: int | None = None
    ) -> None:
        given = {"nprobe": nprobe, "efSearch": efSearch, "k_factor": k_factor}
        self._search = {key: positive_int(key, v) for key, v in given.items() if v is not None}
        if self._takes is not None:
            self._check_takes(self._takes)
        self._apply_search_params()

    def _check_takes(self, takes: list[str]) -> None:
        lacking = [key for key in self._search if key not in takes]
        if lacking:
            raise AnnbenchError(
                f"faiss index '{self.factory}' has no search parameter {', '.join(lacking)}; "
                f"it takes: {', '.join(takes) or '(none)'}"
            )

    def _apply_search_params(self) -> None:
        if self._index is None:
            return
        core = _unwrap(self._index)
        present = _space_names(core)
        self._check_takes([k for k, names in self.SEARCH_PARAMS.items() if present & set(names)])
        space = faiss.ParameterSpace()
        for key, value in self._search.items():
            name = next(n for n in self.SEARCH_PARAMS[key] if n in present)
            space.set_index_parameter(core, name, value)


@functools.lru_cache(maxsize=256)
def probe_factory(factory: str, d: int, metric: int) -> Factory | None:
    """What faiss makes of ``factory`` over ``d`` dims (training needs, search parameters; no
    memory estimate), asked in a child process with limited memory and time, so that a string
    that crashes faiss or allocates gigabytes cannot hurt this one; None if it did not answer."""
    code = "from annbench.backends.faiss_backend import _probe_main; _probe_main()"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, factory, str(d), str(metric)],
            capture_output=True,
            text=True,
            timeout=PROBE_SECONDS,
            env=env,
        )
    except subprocess.TimeoutExpired:
        log.warning("faiss took over %g s to make '%s'; not checked", PROBE_SECONDS, factory)
        return None
    if done.returncode < 0:
        raise AnnbenchError(
            f"faiss crashes ({signal.Signals(-done.returncode).name}) making index '{factory}' "
            f"for d={d}; fix the string, see {FACTORY_HELP}"
        )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        reason = " ".join(done.stderr.split()[-30:]) or f"exit status {done.returncode}"
        log.warning("could not ask faiss about '%s' (%s); not checked", factory, reason)
        return None
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise AnnbenchError(
            f"faiss cannot make index '{factory}' for d={d}: {answer['error']}; see {FACTORY_HELP}"
        )
    training = [(what, needed) for what, needed in answer["training"]]
    return Factory(training, answer["nlist"], set(answer["search_params"]), sized=False)


def _probe_main() -> None:
    """Child process of ``probe_factory``: print what faiss makes of argv's string as JSON."""
    import resource

    factory, d, metric = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (PROBE_ADDRESS_SPACE, PROBE_ADDRESS_SPACE))
    try:
        index = faiss.index_factory(d, factory, metric)
    except RuntimeError as exc:
        print(json.dumps({"error": faiss_message(exc)}))
        return
    except MemoryError:
        gigabytes = PROBE_ADDRESS_SPACE / 2**30
        print(json.dumps({"error": f"it needs over {gigabytes:g} GB before any vector is added"}))
        return
    core = _unwrap(index)
    present = _space_names(core)
    ivf = faiss.try_extract_index_ivf(core)
    answer = {
        "training": _training_needs(index),
        "nlist": int(ivf.nlist) if ivf is not None else 0,
        "search_params": [
            key for key, names in FaissFactory.SEARCH_PARAMS.items() if present & set(names)
        ],
    }
    print(json.dumps(answer))


def _space_names(index: faiss.Index) -> set[str]:
    """Search parameters faiss' ParameterSpace can set on ``index``."""
    space = faiss.ParameterSpace()
    space.initialize(index)
    ranges = space.parameter_ranges
    names = {ranges.at(i).name for i in range(ranges.size())}
    if isinstance(index, faiss.IndexRefine):  # listed only once k_factor differs from 1
        names.add("k_factor_rf")
    return names


def faiss_message(exc: Exception) -> str:
    """Faiss' exception text on one line, without the C++ location prefix."""
    text = " ".join(str(exc).split())
    found = re.search(r" at \S+:\d+: (.*)$", text)
    return found.group(1) if found else text


def _as_ids(ids: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ids, dtype=np.int64)


def _unwrap(index: faiss.Index) -> faiss.Index:
    """The index inside an ``IndexIDMap`` (or the index itself)."""
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def _keeps_ids(index: faiss.Index) -> bool:
    """Whether ``add_with_ids`` works without an IDMap: IVF indexes, possibly pre-transformed."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return isinstance(index, (faiss.IndexIVF, faiss.IndexIDMap))


def _removable(factory: str) -> bool:
    """Whether faiss can ``remove_ids`` from the index a factory string makes: not from graphs
    (HNSW, NSG) nor a refine stage."""
    parts = [p.strip() for p in factory.split(",")]
    return not any(re.match(r"(HNSW|NSG|NNDescent|RFlat$|Refine\()", p) for p in parts)


def _training_needs(index: Any) -> list[tuple[str, int]]:
    """(what, least number of training vectors) for every trained part of ``index``."""
    index = faiss.downcast_index(index)
    needs: list[tuple[str, int]] = []
    if isinstance(index, faiss.IndexIDMap):
        return _training_needs(index.index)
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            transform = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(transform, faiss.OPQMatrix):
                needs.append((f"OPQ{transform.M}", 256))
        return needs + _training_needs(index.index)
    if isinstance(index, faiss.IndexRefine):
        return _training_needs(index.base_index) + _training_needs(index.refine_index)
    if isinstance(index, faiss.IndexIVF):
        needs.append((f"IVF{index.nlist}", index.nlist))
    if isinstance(index, faiss.IndexHNSW):
        return _training_needs(index.storage)
    pq = getattr(index, "pq", None)
    if pq is not None:
        needs.append((f"PQ{pq.M}x{pq.nbits}", 2**pq.nbits))
    return needs


def _filtered_search(
    index: faiss.Index, xq: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Search returning only ids where ``allowed`` is True, through faiss' IDSelectorBitmap
    with the index's current nprobe/efSearch/k_factor carried in the search parameters."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):  # select on inner positions, map the ids back
        id_map = faiss.vector_to_array(index.id_map)
        inner = np.zeros(len(id_map), dtype=bool)
        known = id_map < len(allowed)
        inner[known] = allowed[id_map[known]]
        distances, labels = _filtered_search(index.index, xq, k, inner)
        return distances, np.where(labels >= 0, id_map[labels], -1)
    packed = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
    keep: list[Any] = [packed, selector]  # faiss holds raw pointers to these
    params = _search_parameters(index, selector, keep)
    try:
        return index.search(xq, k, params=params)
    except RuntimeError as exc:
        raise AnnbenchError(
            f"faiss {type(index).__name__} has no filtered search: {faiss_message(exc)}"
        ) from exc


def _search_parameters(index: Any, selector: Any, keep: list[Any]) -> Any:
    """SearchParameters for ``index`` carrying ``selector`` and its current settings."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        params = faiss.SearchParametersPreTransform()
        params.index_params = _search_parameters(index.index, selector, keep)
    elif isinstance(index, faiss.IndexRefine):
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = index.k_factor
        params.base_index_params = _search_parameters(index.base_index, selector, keep)
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = index.nprobe
        params.max_codes = index.max_codes
        params.sel = selector
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = index.hnsw.efSearch
        params.sel = selector
    else:
        params = faiss.SearchParameters()
        params.sel = selector
    keep.append(params)
    return params


def _divisors_near(d: int, m: int) -> str:
    divisors = [x for x in range(1, d + 1) if d % x == 0]
    nearest = sorted(divisors, key=lambda x: (abs(x - m), x))[:3]
    return ", ".join(str(x) for x in sorted(nearest))
