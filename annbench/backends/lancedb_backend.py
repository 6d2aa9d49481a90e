"""LanceDB, the embedded vector database on the Lance columnar format, measured as deployed: a
local database folder (``lancedb.connect(folder)``), no cloud, no server."""

from __future__ import annotations

import asyncio
import os
import shutil
import tarfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annbench.backends.server import owned_folder, wait_until
from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

try:
    import lancedb
    import pyarrow as pa
    from lancedb.index import BTree, HnswFlat, HnswPq, HnswSq, IvfFlat, IvfPq, IvfRq, IvfSq
except ImportError as exc:
    raise MissingDependency("lancedb", "lancedb") from exc

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from annbench.index import Condition

_DISTANCES = {Metric.EUCLIDEAN: "l2", Metric.ANGULAR: "cosine", Metric.DOT: "dot"}
#: index type -> (LanceDB index config, build parameters it takes besides num_partitions)
INDEX_TYPES: dict[str, tuple[type, tuple[str, ...]]] = {
    "IVF_FLAT": (IvfFlat, ()),
    "IVF_SQ": (IvfSq, ()),
    "IVF_PQ": (IvfPq, ("num_sub_vectors", "num_bits")),
    "IVF_RQ": (IvfRq, ("num_bits",)),
    "IVF_HNSW_FLAT": (HnswFlat, ("m", "ef_construction")),
    "IVF_HNSW_SQ": (HnswSq, ("m", "ef_construction")),
    "IVF_HNSW_PQ": (HnswPq, ("num_sub_vectors", "num_bits", "m", "ef_construction")),
}
#: build parameters an index type cannot do without (the others have LanceDB's defaults)
_REQUIRED = ("num_sub_vectors", "m", "ef_construction")
#: bits per PQ code LanceDB takes (codebooks of 16 or 256 centroids); RaBitQ takes any
_BITS = {"IVF_PQ": (4, 8), "IVF_HNSW_PQ": (4, 8)}
#: LanceDB wants this many training vectors per IVF partition (as faiss' k-means does)
POINTS_PER_PARTITION = 39
#: PQ index types: LanceDB trains at most one IVF partition per this many vectors (and logs
#: a warning, not an error, when asked for more)
PQ_ROWS_PER_PARTITION = 256
_TABLE, _VECTOR_INDEX = "vectors", "vector_idx"
#: rows per Arrow record batch written by ``insert``
INSERT_BATCH = 10_000
#: seconds ``wait_until_ready`` waits for the index to cover every row
READY_TIMEOUT_S = 600.0


#: the database folder inside the private temporary folder (which also holds its owner file)
_DB = "db"


class LanceDB(Index):
    """LanceDB's own vector indexes in an embedded local database, one table ``vectors``
    (``id`` int64 = row number, ``vector`` float32). Index types: IVF partitions
    (``num_partitions``) holding flat vectors, SQ or PQ codes (``num_sub_vectors``,
    ``num_bits``) or RaBitQ codes (``num_bits``), or an HNSW graph per partition
    (``IVF_HNSW_*``, ``m`` links, ``ef_construction``); searched with ``nprobes`` partitions,
    ``ef`` (HNSW) and an optional ``refine_factor`` (re-rank ``refine_factor * k`` candidates
    by their stored vectors).

    Filters natively: ``search_filtered`` sends the allowed rows as the database's own
    prefilter ``id IN (...)`` (``id NOT IN (...)`` when fewer rows are excluded), served by a
    BTree index on ``id``; the clause grows with the allowed set and so does its cost.
    ``search_where`` filters on the stored ``label`` / ``value`` columns.
    ``add``/``remove`` are ``table.add`` / ``table.delete`` followed by ``table.optimize()``,
    which indexes the new rows; rows not yet indexed are searched exhaustively by LanceDB and
    deleted rows are masked, so recall never counts a stale index.
    """

    library = "lancedb"
    kind = "embedded"
    engine = None  # LanceDB's own IVF/HNSW code (Rust), no annbench backend to pair with
    metrics = frozenset(_DISTANCES)
    load_phases = True
    #: queries wait on LanceDB's Rust pool in the calling thread's own event loop, GIL free
    releases_gil = True
    supports_add = True
    supports_remove = True
    native_filter = True
    native_where = True

    def __init__(
        self,
        metric: Metric,
        *,
        index_type: str,
        num_partitions: int,
        num_sub_vectors: int | None = None,
        num_bits: int | None = None,
        m: int | None = None,
        ef_construction: int | None = None,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise AnnbenchError(
                f"Parameter index_type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}"
            )
        params: dict[str, Any] = {
            "index_type": index_type,
            "num_partitions": positive_int("num_partitions", num_partitions),
        }
        given = {"num_sub_vectors": num_sub_vectors, "num_bits": num_bits, "m": m}
        given["ef_construction"] = ef_construction
        takes = INDEX_TYPES[index_type][1]
        for name, value in given.items():
            if value is None:
                if name in takes and name in _REQUIRED:
                    raise AnnbenchError(f"index_type {index_type} needs the parameter {name}")
                continue
            if name not in takes:
                raise AnnbenchError(
                    f"index_type {index_type} takes no {name}; it takes num_partitions"
                    + "".join(f", {p}" for p in takes)
                )
            params[name] = positive_int(name, value, 2 if name == "m" else 1)
        if num_bits is not None and num_bits not in _BITS.get(index_type, (num_bits,)):
            raise AnnbenchError(
                f"Parameter num_bits of {index_type} must be one of "
                f"{', '.join(map(str, _BITS[index_type]))}, got {num_bits!r}"
            )
        super().__init__(metric, **params)
        self.index_type = index_type
        self.hnsw = index_type.startswith("IVF_HNSW")
        self._search: dict[str, int] = {}
        self._threads = os.cpu_count() or 1
        self._folder: Path | None = None
        self._db: Any = None
        self._table: Any = None
        self._fields: dict[str, np.ndarray] = {}
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clauses: dict[int, tuple[np.ndarray, str | None]] = {}

    # -- parameters ------------------------------------------------------------------------

    def check(self, n: int, d: int) -> None:
        partitions = self.build_params["num_partitions"]
        if partitions > n:
            raise AnnbenchError(
                f"num_partitions={partitions} exceeds the {n} base vectors; use "
                f"num_partitions <= {n} (about sqrt(n) to 4*sqrt(n) is usual)"
            )
        if "PQ" in self.index_type and partitions > max(1, n // PQ_ROWS_PER_PARTITION):
            most = max(1, n // PQ_ROWS_PER_PARTITION)
            raise AnnbenchError(
                f"LanceDB trains at most {most} IVF partitions for PQ on {n} vectors (one per "
                f"{PQ_ROWS_PER_PARTITION}); use num_partitions <= {most}"
            )
        sub = self.build_params.get("num_sub_vectors")
        if sub is not None and d % sub:
            near = sorted((abs(c - sub), c) for c in range(1, d + 1) if d % c == 0)[:3]
            raise AnnbenchError(
                f"num_sub_vectors={sub} does not divide the dimension d={d}; use a divisor of "
                f"{d} such as {', '.join(str(c) for _, c in sorted(near, key=lambda x: x[1]))}"
            )
        if "PQ" in self.index_type and n < 2 ** self.build_params.get("num_bits", 8):
            bits = self.build_params.get("num_bits", 8)
            raise AnnbenchError(
                f"PQ with num_bits={bits} needs at least {2**bits} training vectors, the base "
                f"has {n}; lower num_bits"
            )

    def build_warnings(self, n: int, d: int) -> list[str]:
        partitions = self.build_params["num_partitions"]
        if partitions < 2 or n >= POINTS_PER_PARTITION * partitions:
            return []
        return [
            f"{self.index_type} num_partitions={partitions}: {n} base vectors give "
            f"{n / partitions:.1f} per partition, k-means wants {POINTS_PER_PARTITION}; "
            f"num_partitions <= {n // POINTS_PER_PARTITION} trains better"
        ]

    def set_search_params(
        self,
        *,
        nprobes: int | None = None,
        ef: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        search: dict[str, int] = {}
        if nprobes is not None:
            search["nprobes"] = positive_int("nprobes", nprobes)
        if ef is not None:
            if not self.hnsw:
                raise AnnbenchError(
                    f"Parameter ef is for the IVF_HNSW_* index types, not {self.index_type}"
                )
            search["ef"] = positive_int("ef", ef)
        if refine_factor is not None:
            search["refine_factor"] = positive_int("refine_factor", refine_factor)
        self._search = search

    def set_num_threads(self, n: int) -> None:
        """Queries ``search`` keeps in flight at once (LanceDB runs each on its own pool)."""
        self._threads = positive_int("threads", n)

    # -- the three build phases ------------------------------------------------------------

    def set_fields(self, labels: np.ndarray | None, values: np.ndarray | None) -> None:
        fields = {"label": labels, "value": values}
        self._fields = {name: np.asarray(v) for name, v in fields.items() if v is not None}

    def build(self, xb: np.ndarray) -> None:
        self.build_in_phases(xb)

    def insert(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        self.close()
        self._folder = owned_folder("lancedb")
        self._db = self._run(lancedb.connect_async(self._folder / _DB))
        schema = _schema(xb.shape[1], self._fields)
        batches = (
            _batch(schema, xb[s : s + INSERT_BATCH], s, self._fields)
            for s in range(0, len(xb), INSERT_BATCH)
        )
        data = pa.RecordBatchReader.from_batches(schema, batches)
        self._table = self._run(self._db.create_table(_TABLE, data=data, schema=schema))

    def create_index(self) -> None:
        params = {k: v for k, v in self.build_params.items() if k != "index_type"}
        config_cls = INDEX_TYPES[self.index_type][0]
        config = config_cls(distance_type=_DISTANCES[self.metric], **params)
        try:
            self._run(self._table.create_index("vector", config=config, name=_VECTOR_INDEX))
        except (RuntimeError, ValueError) as exc:  # LanceDB's own errors
            raise AnnbenchError(
                f"LanceDB could not build {self.index_type} {params}: {_first_line(exc)}"
            ) from exc
        # filters are where-clauses on these columns; scalar indexes serve them
        for column in ("id", *self._fields):
            self._run(self._table.create_index(column, config=BTree()))

    def wait_until_ready(self) -> None:
        names = [_VECTOR_INDEX, *(f"{c}_idx" for c in ("id", *self._fields))]
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            self._run(self._table.wait_for_index(names, timeout=timedelta(seconds=READY_TIMEOUT_S)))
        except (RuntimeError, ValueError) as exc:
            raise AnnbenchError(f"LanceDB index not ready: {_first_line(exc)}") from exc
        # statistics without the IVF centroids (LanceDB's coming default; else it warns)
        os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")
        stats = None

        def all_indexed() -> bool:  # the database's own count of rows its index lacks
            nonlocal stats
            stats = self._run(self._table.index_stats(_VECTOR_INDEX))
            return stats is not None and stats.num_unindexed_rows == 0

        def describe() -> str:
            left = "no index" if stats is None else f"{stats.num_unindexed_rows} rows"
            return (
                f"LanceDB index {_VECTOR_INDEX} not ready after {READY_TIMEOUT_S:g} s "
                f"({left} unindexed)"
            )

        wait_until(all_indexed, deadline - time.monotonic(), describe)

    # -- searching -------------------------------------------------------------------------

    def _query(self, q: np.ndarray, k: int, where: str | None = None) -> Any:
        query = self._table.vector_search(q).limit(k).select(["id", "_distance"])
        search = self._search
        if "nprobes" in search:
            query = query.nprobes(search["nprobes"])
        if "ef" in search:  # LanceDB refuses ef < k; hnswlib and faiss search max(ef, k)
            query = query.ef(max(search["ef"], k))
        if "refine_factor" in search:
            query = query.refine_factor(search["refine_factor"])
        if where is not None:
            query = query.where(where)
        return query

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._run(self._query(q, k).to_arrow()).column(0).to_numpy()

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        return self._search_all(xq, k, None)

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        clause = self._allowed_clause(np.asarray(allowed, dtype=bool))
        if clause is None:
            return _empty(len(xq), k)
        return self._search_all(xq, k, clause)

    def search_where(self, xq: np.ndarray, k: int, condition: Condition) -> Neighbors:
        if condition.field not in self._fields:
            raise AnnbenchError(f"LanceDB table has no field {condition.field}; set_fields first")
        field = condition.field
        if condition.equals is not None:
            clause = f"{field} = {int(condition.equals)}"
        else:
            bounds = [(">=", condition.low), ("<=", condition.high)]
            parts = [f"{field} {op} {float(v)!r}" for op, v in bounds if np.isfinite(v)]
            clause = " AND ".join(parts) or f"{field} IS NOT NULL"
        return self._search_all(xq, k, clause)

    def _search_all(self, xq: np.ndarray, k: int, where: str | None) -> Neighbors:
        """All queries, ``set_num_threads`` of them in flight at once."""

        async def gather() -> list[Any]:
            slots = asyncio.Semaphore(self._threads)

            async def one(q: np.ndarray) -> Any:
                async with slots:
                    return await self._query(q, k, where).to_arrow()

            return await asyncio.gather(*(one(q) for q in xq))

        ids = np.full((len(xq), k), -1, dtype=np.int64)
        distances = np.full((len(xq), k), np.inf, dtype=np.float32)
        if len(xq) and k:
            for i, found in enumerate(self._run(gather())):
                ids[i, : found.num_rows] = found.column(0).to_numpy()
                distances[i, : found.num_rows] = found.column(1).to_numpy()
        return Neighbors(distances, ids)

    def _allowed_clause(self, allowed: np.ndarray) -> str | None:
        """``id IN (...)`` of the allowed rows, or ``id NOT IN (...)`` of the others when they
        are fewer; None when no row is allowed. Kept for the last masks seen (a filter
        workload asks with the same mask again and again)."""
        cached = self._clauses.get(id(allowed))
        if cached is not None and cached[0] is allowed:
            return cached[1]
        n = len(allowed)
        count = int(allowed.sum())
        if count == 0:
            clause: str | None = None
        elif count <= n - count:
            clause = f"id IN ({','.join(map(str, np.flatnonzero(allowed).tolist()))})"
        else:  # rows added past the mask are not allowed either
            excluded = ",".join(map(str, np.flatnonzero(~allowed).tolist()))
            clause = f"id < {n} AND id NOT IN ({excluded})" if excluded else f"id < {n}"
        if len(self._clauses) > 64:
            self._clauses.clear()
        self._clauses[id(allowed)] = (allowed, clause)
        return clause

    # -- updates ---------------------------------------------------------------------------

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        xb = as_float32(xb)
        schema = self._run(self._table.schema())
        columns = [pa.array(np.asarray(ids, dtype=np.int64)), _vectors(xb)]
        for name in schema.names[2:]:  # stored filter fields: unknown for new rows
            columns.append(pa.nulls(len(xb), schema.field(name).type))
        self._run(self._table.add(pa.Table.from_arrays(columns, schema=schema)))
        self._run(self._table.optimize())

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids):
            self._run(self._table.delete(f"id IN ({','.join(map(str, ids.tolist()))})"))
            self._run(self._table.optimize())

    # -- saving ----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """The database folder as one uncompressed tar file (its size is the folder's)."""
        with tarfile.open(path, "w") as archive:
            archive.add(self._folder / _DB, arcname=_DB)

    def load(self, path: Path) -> None:
        """Unpack the saved folder into a private temporary folder (each loading process its
        own) and open the table there."""
        self.close()
        folder = owned_folder("lancedb")
        self._folder = folder
        try:
            with tarfile.open(path, "r") as archive:
                archive.extractall(folder, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise AnnbenchError(f"Cannot read the LanceDB database saved at {path}: {exc}") from exc
        self._db = self._run(lancedb.connect_async(folder / _DB))
        self._table = self._run(self._db.open_table(_TABLE))
        schema = self._run(self._table.schema())
        self._fields = {name: np.empty(0) for name in schema.names[2:]}
        self.wait_until_ready()

    def close(self) -> None:
        table, self._table, self._db = self._table, None, None
        if table is not None:
            table.close()
        with self._lock:
            loops, self._loops = self._loops, []
        for loop in loops:
            if not loop.is_running():
                loop.close()
        self._local = threading.local()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __del__(self) -> None:
        if getattr(self, "_loops", None) is not None:
            self.close()

    # -- the event loop of each calling thread ---------------------------------------------

    def _run(self, work: Coroutine[Any, Any, Any]) -> Any:
        """Run ``work`` on the calling thread's own event loop: LanceDB's Python API is
        asynchronous over its Rust core, and a loop per thread avoids the hop to a shared
        background loop that its synchronous API makes on every call."""
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._loops.append(loop)
        return loop.run_until_complete(work)


def _schema(d: int, fields: dict[str, np.ndarray]) -> pa.Schema:
    columns = [pa.field("id", pa.int64()), pa.field("vector", pa.list_(pa.float32(), d))]
    types = {"label": pa.int64(), "value": pa.float64()}
    return pa.schema(columns + [pa.field(name, types[name]) for name in fields])


def _vectors(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _batch(
    schema: pa.Schema, x: np.ndarray, start: int, fields: dict[str, np.ndarray]
) -> pa.RecordBatch:
    rows = slice(start, start + len(x))
    columns = [pa.array(np.arange(rows.start, rows.stop, dtype=np.int64)), _vectors(x)]
    columns += [pa.array(values[rows]) for values in fields.values()]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _empty(nq: int, k: int) -> Neighbors:
    return Neighbors(np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
