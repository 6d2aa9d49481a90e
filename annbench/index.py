"""The one interface every backend implements, batch-first like faiss' ``search(xq, k)``."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from annbench.errors import AnnbenchError
from annbench.metrics import Metric, normalize_rows


class Neighbors(NamedTuple):
    """Search result: ``distances (nq, k)`` as the library reports them, ``ids (nq, k)`` int64."""

    distances: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class Condition:
    """A filter as a database states it in its own query language, on the fields
    ``Index.set_fields`` stored: ``label == equals`` (an integer or tag field), or
    ``low <= value <= high`` (a numeric field)."""

    field: str  # "label" or "value"
    equals: int | None = None
    low: float | None = None
    high: float | None = None

    def allows(self, labels: np.ndarray | None, values: np.ndarray | None) -> np.ndarray:
        """The bool mask of the rows this condition allows, given the stored fields."""
        if self.field == "label":
            return np.asarray(labels) == self.equals
        column = np.asarray(values)
        return (column >= self.low) & (column <= self.high)


class Index(ABC):
    """An ANN index: build once with build parameters, then search under search parameters.

    Subclasses declare their build parameters as keyword-only constructor arguments and their
    search parameters as keyword-only arguments of ``set_search_params``; those signatures are
    what grids are checked against. Adapters never time themselves: the runner does.
    """

    #: Metrics this backend supports.
    metrics: ClassVar[frozenset[Metric]] = frozenset(Metric)
    #: PyPI distribution of the wrapped library; its version goes into every record's key.
    library: ClassVar[str] = ""
    #: ``add(xb, ids)`` inserts into a built index (else a runbook rebuilds from the live set).
    supports_add: ClassVar[bool] = False
    #: ``remove(ids)`` deletes from a built index (else a runbook rebuilds from the live set).
    supports_remove: ClassVar[bool] = False
    #: ``search_filtered`` uses the library's own filtered search (else only post-filtering).
    native_filter: ClassVar[bool] = False
    #: ``search_where`` filters with the database's own where-clause on fields stored with
    #: the vectors (``set_fields``): filter_strategy ``where``.
    native_where: ClassVar[bool] = False
    #: ``search``/``search_one`` release the GIL, so load clients can be threads (else each
    #: client is a process serving the saved index); ``annbench.testing`` checks the claim.
    releases_gil: ClassVar[bool] = False
    #: What serves the index: ``"library"`` (in this process), ``"embedded"`` (a database
    #: inside this process) or ``"server"`` (a database server process the backend starts,
    #: see ``annbench.backends.server``).
    kind: ClassVar[str] = "library"
    #: The annbench backend of the library a database is built on (``"hnswlib"``), measured
    #: beside it at matched parameters; None for libraries.
    engine: ClassVar[str | None] = None
    #: ``build`` runs in phases the runner times apart: ``insert`` the vectors, ``create_index``
    #: over them, ``wait_until_ready`` for the database's own "index built/loaded" state.
    load_phases: ClassVar[bool] = False
    #: Default grid shipped with the class, ``{"build": {...}, "search": {...}}``; None: the
    #: packaged ``backends/<name>.yaml`` (built-ins) or a ``<name>.yaml`` beside the module.
    default_grid: ClassVar[dict[str, dict[str, Any]] | None] = None

    @classmethod
    def library_version(cls) -> str:
        """Installed version of ``library`` ("unknown" when it cannot be told)."""
        if not cls.library:
            return "unknown"
        try:
            return metadata.version(cls.library)
        except metadata.PackageNotFoundError:
            return "unknown"

    def __init__(self, metric: Metric, **build_params: Any) -> None:
        if metric not in self.metrics:
            supported = ", ".join(sorted(m.value for m in self.metrics))
            raise AnnbenchError(
                f"{type(self).__name__} does not support the {metric.value} metric; "
                f"it supports: {supported}"
            )
        self.metric = metric
        self.build_params = build_params

    def check(self, n: int, d: int) -> None:  # noqa: B027 - optional hook
        """Raise AnnbenchError if the build parameters cannot work on n vectors of d dims."""

    def estimate_memory_bytes(self, n: int, d: int) -> int | None:
        """Estimated bytes of the built index over n vectors of d dims (None: unknown); the
        planner rejects a configuration whose estimate exceeds the memory limit or the machine."""
        return None

    def build_warnings(self, n: int, d: int) -> list[str]:
        """Why the build parameters will work, but poorly, on n vectors of d dims; logged once
        by the planner (e.g. too few training vectors per k-means centroid)."""
        return []

    @abstractmethod
    def build(self, xb: np.ndarray) -> None:
        """Index the base vectors ``xb (n, d)`` float32; ids are row numbers."""

    def insert(self, xb: np.ndarray) -> None:
        """Phase 1 of a ``load_phases`` build: store the base vectors ``xb`` (ids: row numbers)."""
        raise NotImplementedError

    def create_index(self) -> None:
        """Phase 2 of a ``load_phases`` build: build the index over what ``insert`` stored."""
        raise NotImplementedError

    def wait_until_ready(self) -> None:  # noqa: B027 - databases that are ready at once
        """Phase 3 of a ``load_phases`` build (and after ``load``): return once the database
        says the index is built and loaded, so no search is timed against half an index."""

    def build_in_phases(self, xb: np.ndarray) -> None:
        """``build`` of a ``load_phases`` backend: the three phases in order."""
        self.insert(xb)
        self.create_index()
        self.wait_until_ready()

    def process_ids(self) -> list[int]:
        """Processes besides this one that serve the index (a database server), whose
        resident memory counts as the index's serving memory."""
        return []

    def problem(self) -> str | None:
        """Why the index can no longer serve, for the record of a failed run (a database
        server that died, with the tail of its log); None when nothing is known."""
        return None

    def close(self) -> None:  # noqa: B027 - libraries hold nothing outside this process
        """Release what the index holds outside this object: stop a server, close files.
        Called once the index is no longer used; safe to call twice."""

    def set_search_params(self) -> None:  # noqa: B027 - backends without search parameters
        """Apply search parameters (keyword-only in subclasses)."""

    def prepare_queries(self, xq: np.ndarray) -> np.ndarray:
        """Queries ``xq (nq, d)`` in the form the library takes fastest, which ``search`` and
        ``search_one`` are then given: here float32, C-contiguous, normalized where the backend
        needs it. Done once, outside any timing. A backend may return another array of ``nq``
        rows, e.g. a 1-D object array of Python lists (Annoy): callers only take ``len``, one
        row ``xq[i]`` (for ``search_one``; ``xq[i][None, :]`` for ``search_filtered`` when
        ``native_filter``), slices and rows by an index array (for ``search``), and iterate."""
        return as_float32(xq)

    @abstractmethod
    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        """The ``k`` nearest neighbours of each prepared query in ``xq (nq, d)``; -1 where
        missing."""

    def search_one(self, q: np.ndarray, k: int) -> Sequence[int]:
        """Ids of up to ``k`` nearest neighbours of one prepared query ``q (d,)``, for latency
        timing: as little work around the library call as possible."""
        return self.search(q[None, :], k).ids[0]

    def set_num_threads(self, n: int) -> None:  # noqa: B027 - single-threaded libraries
        """Use ``n`` threads for searching from now on."""

    def save(self, path: Path) -> None:
        """Write the index to ``path``, a file or a folder of files (their total size is the
        reported index size)."""
        raise NotImplementedError

    def load(self, path: Path) -> None:
        """Read an index written by ``save`` into this (unbuilt, same-parameter) object; ready
        to search after ``set_search_params``. Serving memory is measured around this call."""
        raise NotImplementedError

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        """Insert ``xb (n, d)`` under ``ids (n,)`` int64 into the built index
        (when ``supports_add``)."""
        raise NotImplementedError

    def remove(self, ids: np.ndarray) -> None:
        """Delete ``ids (n,)`` from the index so no search returns them
        (when ``supports_remove``)."""
        raise NotImplementedError

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        """Like ``search``, returning only ids where the bool mask ``allowed (n_base,)`` is
        True, with the library's own filtered search (when ``native_filter``)."""
        raise NotImplementedError

    def set_fields(self, labels: np.ndarray | None, values: np.ndarray | None) -> None:
        """Before ``build`` (when ``native_where``): each base vector's integer ``labels``
        and numeric ``values`` (either may be None), to store as fields the database filters
        on."""
        raise NotImplementedError

    def search_where(self, xq: np.ndarray, k: int, condition: Condition) -> Neighbors:
        """Like ``search``, returning only rows the ``condition`` allows, stated as the
        database's own where-clause (when ``native_where``)."""
        raise NotImplementedError

    def memory_bytes(self) -> int | None:
        """Bytes the index holds in memory, when the library can tell."""
        return None

    def stats(self) -> dict[str, float]:
        """Library counters from the last searches (e.g. distance computations)."""
        return {}


class CheckedSearches:
    """``index`` with what ``search``, ``search_one``, ``search_filtered`` and
    ``search_where`` return checked by
    ``check_neighbors`` against ``n`` base ids; for warming up, never inside timing."""

    def __init__(self, index: Index, n: int, backend: str) -> None:
        self.index, self.n, self.backend = index, n, backend

    def __getattr__(self, name: str) -> Any:  # only for what the instance itself lacks
        if name == "index":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.index, name)

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        """``index.search``, checked."""
        result = self.index.search(xq, k)
        check_neighbors(result, len(xq), k, self.n, self.backend)
        return result

    def search_one(self, q: np.ndarray, k: int) -> Sequence[int]:
        """``index.search_one``, checked."""
        found = self.index.search_one(q, k)
        check_neighbors(found, None, k, self.n, self.backend)
        return found

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        """``index.search_filtered``, checked."""
        result = self.index.search_filtered(xq, k, allowed)
        check_neighbors(result, len(xq), k, self.n, self.backend, "search_filtered")
        return result

    def search_where(self, xq: np.ndarray, k: int, condition: Condition) -> Neighbors:
        """``index.search_where``, checked."""
        result = self.index.search_where(xq, k, condition)
        check_neighbors(result, len(xq), k, self.n, self.backend, "search_where")
        return result


def build_param_names(cls: type[Index]) -> list[str]:
    """Names of the build parameters ``cls`` takes."""
    return _keyword_only(cls.__init__)


def search_param_names(cls: type[Index]) -> list[str]:
    """Names of the search parameters ``cls`` takes."""
    return _keyword_only(cls.set_search_params)


def _keyword_only(func: Any) -> list[str]:
    params = inspect.signature(func).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def check_neighbors(
    result: Neighbors | np.ndarray | Sequence[int],
    nq: int | None,
    k: int,
    n: int,
    backend: str,
    call: str = "search",
) -> np.ndarray:
    """The ids of a search ``result`` as int64: ``(nq, k)``, or with ``nq`` None one query's up
    to ``k`` ids (``search_one``); integers in ``[-1, n)``, else an AnnbenchError naming
    ``backend``. Cheap (one pass for the range): call it after timing, not inside."""
    ids = result.ids if isinstance(result, Neighbors) else result
    call = "search_one" if nq is None else call
    kind = "integer" if nq is None else "int64"
    if ids is None:
        raise AnnbenchError(f"{backend} returned no ids; {call} must return {kind} ids")
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" and ids.size:  # an empty list is a float array
        raise AnnbenchError(
            f"{backend} returned ids of dtype {ids.dtype}; {call} must return {kind} ids in "
            f"[-1, {n})"
        )
    if (ids.ndim != 1 or len(ids) > k) if nq is None else ids.shape != (nq, k):
        shape = f"up to {k}" if nq is None else f"({nq}, {k})"
        raise AnnbenchError(
            f"{backend} returned ids of shape {ids.shape}; {call} must return {shape} {kind} "
            "ids, -1 where missing"
        )
    if ids.size:
        low, high = ids.min(), ids.max()
        if low < -1 or high >= n:
            raise AnnbenchError(
                f"{backend} returned ids from {low} to {high}; {call} must return {kind} ids in "
                f"[-1, {n})"
            )
    return ids.astype(np.int64, copy=False)


def as_float32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 view or copy, as the libraries want."""
    return np.ascontiguousarray(x, dtype=np.float32)


def cosine_ready(metric: Metric, x: np.ndarray) -> np.ndarray:
    """``as_float32`` rows, unit-normalised under the angular metric: for libraries that
    compute cosine as the inner product of unit vectors."""
    x = as_float32(x)
    return normalize_rows(x) if metric is Metric.ANGULAR else x


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else an AnnbenchError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise AnnbenchError(f"Parameter {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
