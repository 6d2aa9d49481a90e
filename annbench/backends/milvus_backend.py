"""Milvus through milvus-lite: ``pymilvus.MilvusClient("<folder>/milvus.db")``.

milvus-lite 3.x is in-process: opening a ``.db`` path starts the Milvus gRPC service in
threads of this process (pure Python over pyarrow, faiss per segment), so the backend is an
``embedded`` database; no other process serves it, and a killed worker leaves none behind,
only its temporary folder, which the next instance removes.
"""

from __future__ import annotations

import logging
import math
import shutil
import tarfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annbench.backends.faiss_factory import POINTS_PER_CENTROID
from annbench.backends.server import owned_folder, wait_until
from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

if TYPE_CHECKING:
    from annbench.index import Condition

try:
    from pymilvus import DataType, MilvusClient, MilvusException
    from pymilvus.client.types import LoadState
except ImportError as exc:
    raise MissingDependency("pymilvus", "milvus") from exc
try:
    from milvus_lite.server_manager import server_manager_instance
except ImportError as exc:
    raise MissingDependency("milvus-lite", "milvus") from exc

log = logging.getLogger(__name__)

#: Index types milvus-lite builds, with the build parameters each takes (annbench's names,
#: those of its faiss backends) and its search parameter. AUTOINDEX is HNSW (M=16,
#: efConstruction=200) when faiss is installed, which milvus-lite requires; BRUTE_FORCE is
#: FLAT; IVF_PQ, DISKANN, SCANN and the GPU types are refused by milvus-lite 3.2.
INDEX_TYPES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "FLAT": ((), None),
    "AUTOINDEX": ((), "efSearch"),
    "HNSW": (("M", "efConstruction"), "efSearch"),
    "HNSW_SQ": (("M", "efConstruction"), "efSearch"),
    "IVF_FLAT": (("nlist",), "nprobe"),
    "IVF_SQ8": (("nlist",), "nprobe"),
}
#: annbench's parameter names -> Milvus's
_MILVUS_NAMES = {"efSearch": "ef"}
_METRICS = {Metric.EUCLIDEAN: "L2", Metric.DOT: "IP", Metric.ANGULAR: "COSINE"}
COLLECTION = "annbench"
#: rows per insert call, and at most this many bytes of vectors per call
INSERT_ROWS, INSERT_BYTES = 5000, 64 * 2**20
#: queries per search call of a batch search
SEARCH_ROWS = 1000
#: seconds ``wait_until_ready`` waits for the load state, polled every POLL_S
READY_TIMEOUT_S, POLL_S = 600.0, 0.05
_DB = "milvus.db"
_FILTERS_KEPT = 64


class Milvus(Index):
    """Milvus (milvus-lite, in this process) with a FLAT, HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8 or
    AUTOINDEX index over an int64 primary key ``id`` (the row number) and a float vector.

    The three load phases are Milvus's own calls: ``insert`` in batches and ``flush``;
    ``create_index`` (milvus-lite builds it at once, since a collection without an index is
    loaded); ``load_collection``, then ``get_load_state`` and ``describe_index`` polled until
    loaded with every row indexed. milvus-lite keeps one faiss index per segment (a flush of
    up to 128 MB of rows; more data makes several, searched one after the other and merged),
    so on one segment HNSW is faiss-hnsw's IndexHNSWFlat and IVF_FLAT faiss-ivf's
    IVF<nlist>,Flat at the same parameters. Each search call also runs Python over every row
    (duplicate and delete masks) before faiss: tens of milliseconds at 21,000 rows, whatever
    the index.

    Filters are Milvus boolean expressions that milvus-lite evaluates before the vector search
    and hands to faiss as an ID selector, so both are pre-filters by the database itself:
    ``search_filtered`` sends ``id in [...]`` (native_filter), ``search_where`` a condition on
    the ``label`` / ``value`` fields ``set_fields`` stored (native_where). ``add`` inserts
    (an existing id is replaced), ``remove`` deletes by primary key.

    ``save`` writes the database folder as one uncompressed tar file; ``load`` unpacks it into
    a private temporary folder (milvus-lite locks its folder, and load clients are several
    processes), removed by ``close``. Search is Python in milvus-lite's server threads, which
    hold the GIL about half the time (``check_releases_gil``: a probe waits 2.6 to 4.9 ms,
    the 5 ms bound, 2 threads x1.0 to x1.5): load clients are processes. ``set_num_threads``
    cannot reach those threads (OpenMP's count is per thread): faiss there uses its default,
    all cores, for a batch.
    """

    library = "milvus-lite"
    kind = "embedded"
    engine = "faiss-hnsw"  # HNSW; IVF_FLAT is faiss-ivf's IVF<nlist>,Flat (see the grid)
    load_phases = True
    metrics = frozenset(_METRICS)
    releases_gil = False  # search is Python in milvus-lite's server threads
    supports_add = True
    supports_remove = True
    native_filter = True
    native_where = True

    def __init__(
        self,
        metric: Metric,
        *,
        index_type: str,
        M: int | None = None,
        efConstruction: int | None = None,
        nlist: int | None = None,
    ) -> None:
        kind = index_type.upper() if isinstance(index_type, str) else None
        if kind not in INDEX_TYPES:
            raise AnnbenchError(
                f"index_type {index_type!r} is not one milvus-lite builds; use one of: "
                f"{', '.join(INDEX_TYPES)}"
            )
        takes, _ = INDEX_TYPES[kind]
        given = {"M": M, "efConstruction": efConstruction, "nlist": nlist}
        extra = [name for name, value in given.items() if value is not None and name not in takes]
        if extra:
            raise AnnbenchError(
                f"index_type {kind} takes {', '.join(takes) or 'no build parameters'}, "
                f"not {', '.join(extra)}; to sweep {kind}, give it a block of its own in the "
                "grid file backends/milvus.yaml"
            )
        missing = [name for name in takes if given[name] is None]
        if missing:
            passes = " ".join(f"--grid {name}=VALUE" for name in missing)
            raise AnnbenchError(f"index_type {kind} needs {', '.join(missing)}; pass {passes}")
        params = {name: positive_int(name, given[name], 2 if name == "M" else 1) for name in takes}
        super().__init__(metric, index_type=kind, **params)
        self.index_type = kind
        self._search_name = INDEX_TYPES[kind][1]
        self._search: dict[str, Any] = {"params": {}}
        self._client: MilvusClient | None = None
        self._folder: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._labels: np.ndarray | None = None
        self._values: np.ndarray | None = None
        self._fields: set[str] = set()
        self._filters: dict[bytes, str] = {}

    def check(self, n: int, d: int) -> None:
        nlist = self.build_params.get("nlist")
        if nlist is not None and nlist > n:
            raise AnnbenchError(
                f"nlist={nlist} exceeds the {n} base vectors; use nlist <= {n} "
                "(about sqrt(n) to 16*sqrt(n) is usual)"
            )

    def build_warnings(self, n: int, d: int) -> list[str]:
        nlist = self.build_params.get("nlist")
        if not nlist or n >= POINTS_PER_CENTROID * nlist:
            return []
        return [
            f"{self.index_type} nlist={nlist}: {n} base vectors give {n / nlist:.1f} per list, "
            f"faiss wants {POINTS_PER_CENTROID} for k-means; nlist <= {n // POINTS_PER_CENTROID} "
            "trains better"
        ]

    # -- the three load phases -------------------------------------------------------------

    def set_fields(self, labels: np.ndarray | None, values: np.ndarray | None) -> None:
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self._values = None if values is None else np.asarray(values, dtype=np.float64)

    def build(self, xb: np.ndarray) -> None:
        self.build_in_phases(xb)

    def insert(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        n, d = xb.shape
        for name, column in (("label", self._labels), ("value", self._values)):
            if column is not None and len(column) != n:
                raise AnnbenchError(f"{len(column)} {name}s given for {n} base vectors")
        client = self._open(self._new_folder())
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=d)
        self._fields = set()
        if self._labels is not None:
            schema.add_field("label", DataType.INT64)
            self._fields.add("label")
        if self._values is not None:
            schema.add_field("value", DataType.DOUBLE)
            self._fields.add("value")
        with _milvus_errors("create the collection"):
            client.create_collection(COLLECTION, schema=schema)
            step = max(1, min(INSERT_ROWS, INSERT_BYTES // (4 * max(d, 1))))
            for start in range(0, n, step):
                client.insert(COLLECTION, self._rows(xb[start : start + step], start))
            client.flush(COLLECTION)

    def create_index(self) -> None:
        params = self._client.prepare_index_params()
        build = {
            _MILVUS_NAMES.get(name, name): value
            for name, value in self.build_params.items()
            if name != "index_type"
        }
        # pymilvus 3 flattens add_index(params=...) into top-level keys, which milvus-lite 3.2
        # ignores (it reads one JSON "params" key): nested, they arrive
        params.add_index(
            field_name="vector",
            index_type=self.index_type,
            metric_type=_METRICS[self.metric],
            params={"params": build} if build else {},
        )
        with _milvus_errors(f"build a {self.index_type} index"):
            # sync=False: wait_until_ready polls (pymilvus' own wait asks for AllocTimestamp,
            # which milvus-lite does not implement)
            self._client.create_index(COLLECTION, params, sync=False)

    def wait_until_ready(self) -> None:
        client = self._client
        state, index = None, {}

        def loaded() -> bool:
            nonlocal state, index
            state = client.get_load_state(COLLECTION)["state"]
            index = client.describe_index(COLLECTION, "vector") or {}
            done = index.get("indexed_rows", 0) >= index.get("total_rows", 0)
            return (
                state == LoadState.Loaded
                and index.get("state") == "Finished"
                and done
                and not index.get("pending_index_rows")
            )

        with _milvus_errors("load the collection"):
            client.load_collection(COLLECTION)
            wait_until(
                loaded,
                READY_TIMEOUT_S,
                lambda: (
                    f"Milvus did not load its {self.index_type} index within "
                    f"{READY_TIMEOUT_S:g} s (load state {state}, {index.get('indexed_rows')} "
                    f"of {index.get('total_rows')} rows indexed)"
                ),
                poll_s=POLL_S,
            )
        self._check_index(index)

    def _check_index(self, index: dict[str, Any]) -> None:
        """The index Milvus describes is the one asked for (pymilvus and milvus-lite disagree
        on how build parameters travel: a dropped one would build the defaults)."""
        wanted = {
            _MILVUS_NAMES.get(name, name): value
            for name, value in self.build_params.items()
            if name != "index_type"
        }
        described = (index.get("index_type"), index.get("metric_type"), index.get("params") or {})
        if described != (self.index_type, _METRICS[self.metric], wanted):
            raise AnnbenchError(
                f"Milvus describes its index as {described}, not the "
                f"{(self.index_type, _METRICS[self.metric], wanted)} asked for"
            )

    # -- searching -------------------------------------------------------------------------

    def set_search_params(self, *, efSearch: int | None = None, nprobe: int | None = None) -> None:
        given = {name: value for name, value in (("efSearch", efSearch), ("nprobe", nprobe))}
        given = {name: value for name, value in given.items() if value is not None}
        wrong = [name for name in given if name != self._search_name]
        if wrong:
            takes = self._search_name or "no search parameters"
            raise AnnbenchError(
                f"index_type {self.index_type} takes {takes}, not {', '.join(wrong)}"
            )
        self._search = {
            "params": {
                _MILVUS_NAMES.get(name, name): positive_int(name, value)
                for name, value in given.items()
            }
        }

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        return self._search_rows(xq, k, "")

    def search_one(self, q: np.ndarray, k: int) -> list[int]:
        return self._client.search(COLLECTION, [q], limit=k, search_params=self._search)[0].ids

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        return self._search_rows(xq, k, self._id_filter(np.asarray(allowed, dtype=bool)))

    def search_where(self, xq: np.ndarray, k: int, condition: Condition) -> Neighbors:
        if condition.field not in self._fields:
            raise AnnbenchError(
                f"Milvus holds no {condition.field} field to filter on; set_fields gives it "
                "before the build"
            )
        if condition.field == "label":
            return self._search_rows(xq, k, f"label == {int(condition.equals)}")
        bounds = [
            f"value {op} {float(limit)!r}"
            for op, limit in ((">=", condition.low), ("<=", condition.high))
            if limit is not None and math.isfinite(limit)
        ]
        return self._search_rows(xq, k, " and ".join(bounds))

    def _search_rows(self, xq: np.ndarray, k: int, expr: str) -> Neighbors:
        """Searches of ``SEARCH_ROWS`` queries a call under the filter expression ``expr``,
        padded with -1."""
        nq = len(xq)
        ids = np.full((nq, k), -1, dtype=np.int64)
        distances = np.full((nq, k), np.inf, dtype=np.float32)
        for start in range(0, nq, SEARCH_ROWS):
            found = self._client.search(
                COLLECTION,
                list(xq[start : start + SEARCH_ROWS]),
                filter=expr,
                limit=k,
                search_params=self._search,
            )
            for i, hits in enumerate(found, start):
                ids[i, : len(hits.ids)] = hits.ids
                distances[i, : len(hits.distances)] = hits.distances
        return Neighbors(distances, ids)

    def _id_filter(self, allowed: np.ndarray) -> str:
        """``id in [...]`` for the rows ``allowed``, made once per mask (the database parses
        and caches it by its text as well)."""
        key = np.packbits(allowed).tobytes() + len(allowed).to_bytes(8, "little")
        expr = self._filters.get(key)
        if expr is None:
            if len(self._filters) >= _FILTERS_KEPT:
                self._filters.pop(next(iter(self._filters)))
            expr = f"id in [{','.join(map(str, np.flatnonzero(allowed).tolist()))}]"
            self._filters[key] = expr
        return expr

    # -- changes ---------------------------------------------------------------------------

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        xb, ids = as_float32(xb), np.asarray(ids, dtype=np.int64)
        with _milvus_errors("insert"):
            for start in range(0, len(ids), INSERT_ROWS):
                chunk = slice(start, start + INSERT_ROWS)
                self._client.insert(COLLECTION, self._rows(xb[chunk], ids[chunk]))

    def remove(self, ids: np.ndarray) -> None:
        with _milvus_errors("delete"):
            self._client.delete(COLLECTION, ids=np.asarray(ids, dtype=np.int64).tolist())

    def _rows(self, xb: np.ndarray, ids: int | np.ndarray) -> list[dict[str, Any]]:
        """Insert rows of ``xb`` under ``ids`` (a first row number, or the ids); rows past the
        stored fields (added later) get label -1 and value NaN, which no condition allows."""
        keys = np.arange(ids, ids + len(xb)) if isinstance(ids, int) else ids
        rows = [{"id": key, "vector": v} for key, v in zip(keys.tolist(), xb, strict=True)]
        for name, column, missing in (
            ("label", self._labels, -1),
            ("value", self._values, math.nan),
        ):
            if name in self._fields:
                for key, row in zip(keys.tolist(), rows, strict=True):
                    row[name] = column[key].item() if 0 <= key < len(column) else missing
        return rows

    # -- files and lifetime ----------------------------------------------------------------

    def save(self, path: Path) -> None:
        """The database folder, closed (flushed, background work drained) so it is whole,
        as one uncompressed tar at ``path``; then reopened."""
        folder = self._folder
        self._stop()
        try:
            with tarfile.open(path, "w") as tar:
                tar.add(folder / _DB, arcname=_DB, filter=_without_lock)
        finally:
            self._open(folder)
            self.wait_until_ready()

    def load(self, path: Path) -> None:
        folder = self._new_folder()
        try:
            with tarfile.open(path) as tar:
                tar.extractall(folder, filter="data")
        except (OSError, tarfile.TarError) as exc:
            self.close()
            raise AnnbenchError(f"Cannot read the Milvus database saved at {path}: {exc}") from exc
        client = self._open(folder)
        with _milvus_errors("open the saved collection"):
            fields = client.describe_collection(COLLECTION)["fields"]
        self._fields = {f["name"] for f in fields} & {"label", "value"}
        self.wait_until_ready()

    def _new_folder(self) -> Path:
        """A private temporary folder (the one of a previous build closed first); folders of
        killed processes are removed."""
        self.close()
        folder = owned_folder("milvus")
        self._folder = folder
        self._finalizer = weakref.finalize(self, _release, None, None, folder)
        return folder

    def _open(self, folder: Path) -> MilvusClient:
        """A client of the database in ``folder`` (milvus-lite starts its service)."""
        db = str(folder / _DB)
        with _milvus_errors("open milvus-lite"):
            self._client = MilvusClient(db)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _release, self._client, db, folder)
        return self._client

    def _stop(self) -> None:
        """Close the client and stop milvus-lite's service, which releases its folder (the
        folder stays, still removed by ``close``)."""
        self._finalizer.detach()
        _release(self._client, str(self._folder / _DB), None)
        self._client = None
        self._finalizer = weakref.finalize(self, _release, None, None, self._folder)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._client, self._folder, self._finalizer = None, None, None


def _release(client: MilvusClient | None, db: str | None, folder: Path | None) -> None:
    """Close ``client``, stop the service of ``db``, remove ``folder``."""
    if client is not None:
        try:
            client.close()
        except MilvusException as exc:  # a service already gone
            log.debug("closing the Milvus client: %s", exc)
    if db is not None:
        server_manager_instance.release_server(db)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _without_lock(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """The saved files without milvus-lite's lock file."""
    return None if Path(info.name).name == "LOCK" else info


@contextmanager
def _milvus_errors(doing: str) -> Iterator[None]:
    """A MilvusException inside as a one-line AnnbenchError saying what was being done."""
    try:
        yield
    except MilvusException as exc:
        message = " ".join(str(getattr(exc, "message", exc)).split())
        raise AnnbenchError(f"Milvus could not {doing}: {message}") from exc
