"""DuckDB with its ``vss`` extension: an HNSW index (usearch inside DuckDB) over a
``FLOAT[d]`` column, measured as deployed: an embedded database file, queried in SQL.

The extension comes from the ``duckdb-extension-vss`` package, never from the network: its
file (``duckdb_extension_vss/extensions/v<duckdb version>/vss.duckdb_extension``) is loaded
with ``LOAD '<path>'`` on connections opened with ``autoinstall_known_extensions`` and
``autoload_known_extensions`` off, so DuckDB neither downloads nor looks for extensions.

One table ``items (id BIGINT, vec FLOAT[d])``, ``id`` the row number. ``create_index`` runs
``CREATE INDEX ... USING HNSW (vec) WITH (metric, M, ef_construction)``; a query is
``ORDER BY <distance>(vec, ?::FLOAT[d]) LIMIT k``, which DuckDB plans as an
``HNSW_INDEX_SCAN`` (``plan`` shows the plan). Metrics: euclidean -> ``l2sq`` with
``array_distance``, angular -> ``cosine`` with ``array_cosine_distance``, dot -> ``ip`` with
``array_negative_inner_product``. The search parameter ``ef_search`` is the setting
``hnsw_ef_search``. DuckDB 1.5 joins the rows of a ``LIMIT`` of at most 50 back to a scan of
the table (late materialization), which costs more than the index scan itself and grows with
the table; ``late_materialization_max_rows = 0`` keeps the plan the index scan alone, as a
user reading ``EXPLAIN`` would.

Matched with usearch, the library VSS is built on: ``M`` -> ``connectivity``,
``ef_construction`` -> ``expansion_add``, ``ef_search`` -> ``expansion_search``.

Persistence: an HNSW index in a database file needs ``SET hnsw_enable_experimental_persistence
= true``, experimental in DuckDB: the graph is written whole at each checkpoint, and the WAL is
not replayed into it, so a crash before a checkpoint can lose or corrupt the index (DuckDB's
documentation says so). The database is a file in a temporary folder from ``insert`` on;
``save`` checkpoints it and copies the file; ``load`` opens the saved file read-only (any number
of processes at once). ``add``/``remove`` are SQL ``INSERT``/``DELETE``, which update the
graph (a delete marks its node); on a loaded index they first rebuild the table and its index
in a private writable database.

Filters are not native: VSS applies a ``WHERE`` after the HNSW scan has taken its k rows (a
post-filter that returns fewer than k), and a filter the index scan cannot take makes DuckDB
drop the index for a full scan; the pipeline post-filters instead.

Load clients are processes (``releases_gil = False``), each loading the saved file: DuckDB's
client releases the GIL while a query runs, but VSS gives its usearch index one search context
per DuckDB worker thread when it builds the index (``index.reserve({rows,
NumberOfThreads()})``; after a load, one per hardware thread), and a query finding none free
pops from an empty list: more concurrent queries than that crash the process (SIGSEGV,
reproduced with two client threads under ``SET threads = 1``). One client per process stays
within any count. Each thread still gets a cursor of its own (a DuckDB connection to the same
database), since a connection takes one statement at a time.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from annbench.backends.server import owned_folder, wait_until
from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32, positive_int
from annbench.metrics import Metric

try:
    import duckdb
    import duckdb_extension_vss
except ImportError as exc:
    package = "duckdb-extension-vss" if "vss" in str(exc.name) else "duckdb"
    raise MissingDependency(package, "duckdb") from exc

log = logging.getLogger(__name__)

#: metric -> (HNSW index metric, the distance function the index accelerates)
_METRICS = {
    Metric.EUCLIDEAN: ("l2sq", "array_distance"),
    Metric.ANGULAR: ("cosine", "array_cosine_distance"),
    Metric.DOT: ("ip", "array_negative_inner_product"),
}
_TABLE, _INDEX, _FILE = "items", "items_hnsw", "index.duckdb"
#: DuckDB never installs or loads an extension by itself: vss comes from its PyPI package
_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
#: rows per INSERT while inserting (all in one transaction)
INSERT_BATCH = 10_000
#: seconds ``wait_until_ready`` waits for the index to hold every row
READY_TIMEOUT_S = 600.0
_PREFIX = "duckdb"


def extension_path() -> Path:
    """The vss extension file the duckdb-extension-vss package ships for this DuckDB."""
    folder = Path(duckdb_extension_vss.__file__).parent / "extensions"
    path = folder / f"v{duckdb.__version__}" / "vss.duckdb_extension"
    if not path.is_file():
        shipped = sorted(p.parent.name for p in folder.glob("v*/vss.duckdb_extension"))
        raise AnnbenchError(
            f"duckdb-extension-vss has no vss extension for DuckDB {duckdb.__version__} "
            f"(it has {', '.join(shipped) or 'none'}); pip install "
            f'"duckdb-extension-vss=={duckdb.__version__}"'
        )
    return path


class DuckDBVSS(Index):
    """DuckDB's vss extension: an HNSW index (usearch) in an embedded DuckDB database, ``M``
    links per node, ``ef_construction`` build beam; ``ef_search`` beam per query
    (``hnsw_ef_search``). Inserts and deletes are SQL; filters are post-filtered by the
    pipeline (VSS filters after its index scan)."""

    library = "duckdb"
    kind = "embedded"
    engine = "usearch"
    metrics = frozenset(_METRICS)
    load_phases = True
    #: DuckDB runs queries without the GIL, but concurrent HNSW scans beyond VSS's search
    #: contexts crash (module docstring): load clients are processes
    releases_gil = False
    supports_add = True
    supports_remove = True

    def __init__(self, metric: Metric, *, M: int, ef_construction: int) -> None:
        super().__init__(
            metric,
            M=positive_int("M", M, 2),
            ef_construction=positive_int("ef_construction", ef_construction),
        )
        self._index_metric, distance = _METRICS[metric]
        self._distance = distance
        self._ef_search = 64  # VSS's default
        self._threads = os.cpu_count() or 1
        self._d: int | None = None
        self._path: Path | None = None
        self._read_only = False
        self._con: Any = None
        self._local = threading.local()
        self._generation = 0  # bumped when the connection changes: cursors reopen
        self._held: dict[str, Any] = {"connections": [], "readers": {}, "folder": None}
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()
        self._count: int | None = None
        self._sql_ids = self._sql_rows = ""

    # -- parameters ------------------------------------------------------------------------

    def set_search_params(self, *, ef_search: int) -> None:
        ef_search = positive_int("ef_search", ef_search)
        if ef_search != self._ef_search:
            self._ef_search = ef_search
            self._set_global("hnsw_ef_search", ef_search)

    def set_num_threads(self, n: int) -> None:
        """DuckDB's worker threads (``SET threads``): building the index uses them."""
        n = positive_int("threads", n)
        if n != self._threads:
            self._threads = n
            self._set_global("threads", n)

    def _set_global(self, name: str, value: int) -> None:
        """``SET GLOBAL``: every cursor sees it. Any thread may call this (a load client
        sets its threads), and a DuckDB connection takes one statement at a time."""
        with self._lock:
            if self._con is not None:
                self._con.execute(f"SET GLOBAL {name} = {value}")

    # -- the three build phases ------------------------------------------------------------

    def insert(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        folder = self._new_folder()
        self._open(folder / _FILE, read_only=False, d=xb.shape[1])
        self._con.execute(f"CREATE TABLE {_TABLE} (id BIGINT, vec FLOAT[{self._d}])")
        self._append(xb, np.arange(len(xb), dtype=np.int64))
        self._count = len(xb)

    def create_index(self) -> None:
        self._con.execute(
            f"CREATE INDEX {_INDEX} ON {_TABLE} USING HNSW (vec) WITH ("
            f"metric = '{self._index_metric}', M = {self.build_params['M']}, "
            f"ef_construction = {self.build_params['ef_construction']})"
        )

    def wait_until_ready(self) -> None:
        """Return once VSS's ``pragma_hnsw_index_info`` counts every row of the table in the
        index (``CREATE INDEX`` builds it before it returns: at once)."""
        rows = self._con.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()[0]
        indexed = None

        def all_indexed() -> bool:
            nonlocal indexed
            indexed = self._indexed()
            return indexed == rows

        wait_until(
            all_indexed,
            READY_TIMEOUT_S,
            lambda: (
                f"DuckDB's HNSW index holds {indexed} of {rows} rows after {READY_TIMEOUT_S:g} s"
            ),
        )
        self._count = rows

    def build(self, xb: np.ndarray) -> None:
        self.build_in_phases(xb)

    # -- searching -------------------------------------------------------------------------

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        distances = np.full((len(xq), k), np.inf, dtype=np.float32)
        cursor, sql = self._cursor(), self._sql_rows
        for i, q in enumerate(xq):
            rows = cursor.execute(sql, (q, k)).fetchall()
            if rows:
                found = np.array(rows, dtype=np.float64)
                ids[i, : len(rows)] = found[:, 0]
                distances[i, : len(rows)] = found[:, 1]
        return Neighbors(distances, ids)

    def search_one(self, q: np.ndarray, k: int) -> list[int]:
        return [row[0] for row in self._cursor().execute(self._sql_ids, (q, k)).fetchall()]

    def plan(self, k: int = 10) -> str:
        """DuckDB's ``EXPLAIN`` of the search query (an ``HNSW_INDEX_SCAN`` when the index
        serves it)."""
        q = np.zeros(self._d or 0, dtype=np.float32)
        return self._cursor().execute("EXPLAIN " + self._sql_rows, (q, k)).fetchall()[0][1]

    # -- inserts and deletes ---------------------------------------------------------------

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        self._writable()
        self._append(as_float32(xb), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        self._writable()
        gone = np.asarray(ids, dtype=np.int64).ravel().tolist()
        self._con.execute(f"DELETE FROM {_TABLE} WHERE id IN (SELECT unnest(?::BIGINT[]))", (gone,))

    def _append(self, xb: np.ndarray, ids: np.ndarray) -> None:
        """``INSERT`` the rows in batches of INSERT_BATCH (a DataFrame each), in one
        transaction."""
        import pandas as pd

        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            for start in range(0, len(xb), INSERT_BATCH):
                stop = start + INSERT_BATCH
                batch = pd.DataFrame({"id": ids[start:stop], "vec": list(xb[start:stop])})
                con.register("annbench_batch", batch)
                con.execute(
                    f"INSERT INTO {_TABLE} SELECT id, vec::FLOAT[{self._d}] FROM annbench_batch"
                )
                con.unregister("annbench_batch")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _writable(self) -> None:
        """After ``load`` (read-only, the saved file maybe gone): the table and its index
        rebuilt in a private writable database, from the rows the loaded one holds."""
        if not self._read_only:
            return
        ids, xb = self._rows()
        self.close()
        self._open(self._new_folder() / _FILE, read_only=False, d=xb.shape[1])
        self._con.execute(f"CREATE TABLE {_TABLE} (id BIGINT, vec FLOAT[{self._d}])")
        self._append(xb, ids)
        self.create_index()
        self.wait_until_ready()

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every row of the table."""
        found = self._con.execute(f"SELECT id, vec FROM {_TABLE} ORDER BY id").fetchnumpy()
        ids = np.asarray(found["id"], dtype=np.int64)
        xb = np.array(list(found["vec"]), dtype=np.float32).reshape(len(ids), -1)
        return ids, xb

    # -- saving and loading ----------------------------------------------------------------

    def save(self, path: Path) -> None:
        if not self._read_only:
            self._con.execute("CHECKPOINT")  # the WAL into the file, the graph with it
        shutil.copyfile(self._path, path)

    def load(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise AnnbenchError(f"{path} is not a file; load what DuckDBVSS.save wrote")
        self.close()
        try:
            self._open(path, read_only=True)
            info = self._con.execute(
                "SELECT metric, dimensions FROM pragma_hnsw_index_info() WHERE index_name = ?",
                (_INDEX,),
            ).fetchone()
        except duckdb.Error as exc:
            self.close()
            raise AnnbenchError(f"{path} is not a DuckDB VSS database: {exc}") from exc
        if info is None:
            self.close()
            raise AnnbenchError(f"{path} holds no HNSW index; save it with DuckDBVSS.save")
        if info[0] != self._index_metric:
            self.close()
            raise AnnbenchError(
                f"The saved HNSW index uses the {info[0]} metric, not {self._index_metric} "
                f"({self.metric.value}); load it with its own metric"
            )
        self._set_dimension(int(info[1]))
        self.wait_until_ready()

    # -- resources -------------------------------------------------------------------------

    def memory_bytes(self) -> int | None:
        """The HNSW index's memory as VSS estimates it (``approx_memory_usage``)."""
        if self._con is None:
            return None
        found = self._con.execute(
            "SELECT approx_memory_usage FROM pragma_hnsw_index_info() WHERE index_name = ?",
            (_INDEX,),
        ).fetchone()
        return int(found[0]) if found else None

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        else:
            _release(self._held)
        self._con = None
        self._path = None
        self._read_only = False
        self._generation += 1

    def _open(self, path: Path, read_only: bool, d: int | None = None) -> None:
        """Connect to the database file at ``path`` with vss loaded from its package."""
        con = duckdb.connect(str(path), read_only=read_only, config=dict(_CONFIG))
        with self._lock:
            self._held["connections"].append(con)
        con.execute(f"LOAD '{extension_path()}'")
        if not read_only:
            con.execute("SET hnsw_enable_experimental_persistence = true")
        con.execute("SET enable_progress_bar = false")  # library code prints nothing
        con.execute("SET GLOBAL late_materialization_max_rows = 0")
        con.execute(f"SET GLOBAL hnsw_ef_search = {self._ef_search}")
        con.execute(f"SET GLOBAL threads = {self._threads}")
        self._con, self._path, self._read_only = con, path, read_only
        self._generation += 1
        if d is not None:
            self._set_dimension(d)

    def _set_dimension(self, d: int) -> None:
        self._d = d
        distance = f"{self._distance}(vec, ?::FLOAT[{d}])"
        self._sql_rows = (
            f"SELECT id, {distance} AS distance FROM {_TABLE} ORDER BY distance LIMIT ?"
        )
        self._sql_ids = f"SELECT id FROM {_TABLE} ORDER BY {distance} LIMIT ?"

    def _indexed(self) -> int:
        found = self._con.execute(
            "SELECT count FROM pragma_hnsw_index_info() WHERE index_name = ?", (_INDEX,)
        ).fetchone()
        return int(found[0]) if found else -1

    def _cursor(self) -> Any:
        """This thread's cursor on the database (a connection of its own)."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            if self._con is None:
                raise AnnbenchError("DuckDB index not built or loaded; build or load first")
            with self._lock:
                cursor = self._con.cursor()
                _keep_reader(self._held["readers"], cursor)
            local.cursor, local.generation = cursor, self._generation
        return local.cursor

    def _new_folder(self) -> Path:
        """A temporary folder this object owns, removed by ``close``, garbage collection,
        interpreter exit, or (after a kill) the next run's ``remove_stale_folders``."""
        self.close()
        folder = owned_folder(_PREFIX)
        self._held["folder"] = folder
        self._finalizer = weakref.finalize(self, _release, self._held)
        return folder


def _keep_reader(readers: dict[int, Any], cursor: Any) -> None:
    """Hold ``cursor`` as this thread's in ``readers`` (by thread id), closing this thread's
    previous one and those of threads that have ended."""
    alive = {thread.ident for thread in threading.enumerate()}
    this = threading.get_ident()
    for ident in [i for i in readers if i == this or i not in alive]:
        readers.pop(ident).close()
    readers[this] = cursor


def _release(held: dict[str, Any]) -> None:
    """Close the connections in ``held`` (cursors first) and remove its folder."""
    readers, held["readers"] = held["readers"], {}
    connections, held["connections"] = held["connections"], []
    for con in [*readers.values(), *reversed(connections)]:
        try:
            con.close()
        except duckdb.Error as exc:  # a connection half torn down at exit: the folder goes
            log.debug("closing a DuckDB connection: %s", exc)
    folder, held["folder"] = held["folder"], None
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
