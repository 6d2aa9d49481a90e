"""sqlite-vec: exact k-NN search inside SQLite, in a ``vec0`` virtual table, measured as
deployed: a database file on disk opened by Python's own ``sqlite3``.

One table ``items`` (``rowid`` = row number, ``embedding float[d]`` with vec0's
``distance_metric``: euclidean -> ``l2``, angular -> ``cosine``; vec0 has no inner product,
so dot is not offered), plus the metadata columns ``label integer`` / ``value float`` when
``set_fields`` gives them. A query is vec0's KNN form
``WHERE embedding MATCH ? AND k = ?``: a scan of every stored vector, so the search is exact
and there are no index or search parameters.

The extension is loaded with ``sqlite_vec.load(conn)`` where this Python's ``sqlite3`` can load
extensions (``Connection.enable_load_extension``). Pythons built without
``--enable-loadable-sqlite-extensions`` (pyenv's default) lack that method although their
SQLite library loads extensions: there the extension's entry point ``sqlite3_vec_init`` is
registered with SQLite's ``sqlite3_auto_extension`` just while the connection opens, and
cancelled after, the way SQLite documents for statically linked extensions.

Phases: ``insert`` writes the rows in batches of ``INSERT_BATCH`` inside one transaction;
``create_index`` has nothing to build (vec0 lays the vectors out in chunks as they are
inserted; the search is a scan); ``wait_until_ready`` asks SQLite for the table's row count.
Every thread searches on its own read-only connection (Python's ``sqlite3`` releases the GIL
while SQLite runs a statement, and one connection serializes its statements), so load
clients are threads. ``add``/``remove`` are ``INSERT``/``DELETE`` on the table.

Filters, both pre-filters done by vec0 inside its scan: ``search_filtered`` adds
``rowid IN (SELECT value FROM json_each(?))`` with the allowed row numbers (vec0 reads the IN
list and skips every other row); ``search_where`` adds ``label = ?`` or
``value >= ? AND value <= ?`` on the metadata columns.

``save`` writes the database with ``VACUUM INTO`` (one compact file); ``load`` opens that file
read-only (any number of processes at once) and copies it to a private temporary folder only
when ``add``/``remove`` write to it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
import sqlite3
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annbench.backends.server import owned_folder, wait_until
from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, as_float32
from annbench.metrics import Metric

try:
    import sqlite_vec
except ImportError as exc:
    raise MissingDependency("sqlite-vec", "sqlite-vec") from exc

if TYPE_CHECKING:
    from annbench.index import Condition

log = logging.getLogger(__name__)

_DISTANCES = {Metric.EUCLIDEAN: "l2", Metric.ANGULAR: "cosine"}
_TABLE = "items"
_FILE = "index.sqlite"
#: rows per ``executemany`` while inserting (all in one transaction)
INSERT_BATCH = 10_000
#: vec0's largest k (SQLITE_VEC_VEC0_K_MAX in sqlite-vec 0.1.x)
K_MAX = 4096
#: seconds ``wait_until_ready`` waits for SQLite to count every row
READY_TIMEOUT_S = 60.0
#: allowed-id lists ``search_filtered`` keeps (one per filter group)
_FILTER_CACHE = 256
#: the private temporary folders (annbench.backends.server.owned_folder): annbench-NAME-*
_PREFIX = "sqlite-vec"
_FIELDS = {"label": "integer", "value": "float"}

_auto_extension_lock = threading.Lock()


class SqliteVec(Index):
    """sqlite-vec's ``vec0`` virtual table in a SQLite database file: exact search (a scan of
    every vector, no parameters), cosine or L2.

    Filters natively, pre-filtered by vec0 itself: ``search_filtered`` as
    ``rowid IN (...)``, ``search_where`` on the ``label`` / ``value`` metadata columns.
    ``add``/``remove`` are SQL ``INSERT`` / ``DELETE``.
    """

    library = "sqlite-vec"
    kind = "embedded"
    #: sqlite-vec scans with its own C kernels, built on no library annbench measures
    #: (faiss-flat is the exact reference beside it, but not its engine)
    engine = None
    metrics = frozenset(_DISTANCES)
    load_phases = True
    releases_gil = True  # sqlite3 releases the GIL in sqlite3_step: load clients are threads
    supports_add = True
    supports_remove = True
    native_filter = True
    native_where = True

    def __init__(self, metric: Metric) -> None:
        super().__init__(metric)
        self._path: Path | None = None  # the database file searches read
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._generation = 0  # bumped when the database file changes: readers reopen
        self._held: dict[str, Any] = {"connections": [], "readers": {}, "folder": None}
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()
        self._fields: dict[str, np.ndarray] = {}
        self._columns: tuple[str, ...] = ()  # metadata columns of the table
        self._count: int | None = None  # rows wait_until_ready expects
        self._allowed: dict[int, tuple[np.ndarray, str]] = {}
        self._knn = f"SELECT rowid, distance FROM {_TABLE} WHERE embedding MATCH ? AND k = ?"

    # -- the three build phases ------------------------------------------------------------

    def set_fields(self, labels: np.ndarray | None, values: np.ndarray | None) -> None:
        fields = {"label": labels, "value": values}
        self._fields = {name: np.asarray(v) for name, v in fields.items() if v is not None}

    def insert(self, xb: np.ndarray) -> None:
        xb = as_float32(xb)
        n, d = xb.shape
        for name, column in self._fields.items():
            if len(column) != n:
                raise AnnbenchError(
                    f"set_fields gave {len(column)} {name}s for {n} base vectors; give one each"
                )
        folder = self._new_folder()
        self._path = folder / _FILE
        writer = self._connect(self._path, read_only=False)
        self._writer = writer
        self._columns = tuple(self._fields)
        columns = "".join(f", {name} {_FIELDS[name]}" for name in self._columns)
        writer.execute(
            f"CREATE VIRTUAL TABLE {_TABLE} USING vec0("
            f"embedding float[{d}] distance_metric={_DISTANCES[self.metric]}{columns})"
        )
        self._write(xb, np.arange(n), self._fields)
        self._count = n

    def create_index(self) -> None:
        """Nothing to build: vec0 stores the vectors in chunks as they are inserted and
        searches by scanning them."""

    def wait_until_ready(self) -> None:
        """Return once SQLite counts every inserted row (a committed insert is at once)."""
        count = None

        def counted() -> bool:
            nonlocal count
            count = self._reader().execute(f"SELECT count(*) FROM {_TABLE}").fetchone()[0]
            return self._count is None or count == self._count

        wait_until(
            counted,
            READY_TIMEOUT_S,
            lambda: (
                f"sqlite-vec counts {count} of {self._count} rows after "
                f"{READY_TIMEOUT_S:g} s; the database file was not fully written"
            ),
        )
        self._count = count

    def build(self, xb: np.ndarray) -> None:
        self.build_in_phases(xb)

    # -- searching -------------------------------------------------------------------------

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        return self._run(xq, k, "", ())

    def search_one(self, q: np.ndarray, k: int) -> list[int]:
        if k > K_MAX:
            raise _too_many(k)
        return [row[0] for row in self._reader().execute(self._knn, (q, k)).fetchall()]

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        clause = " AND rowid IN (SELECT value FROM json_each(?))"
        return self._run(xq, k, clause, (self._allowed_json(allowed),))

    def search_where(self, xq: np.ndarray, k: int, condition: Condition) -> Neighbors:
        if condition.field not in self._columns:
            raise AnnbenchError(
                f"The sqlite-vec table has no {condition.field} column; set_fields gives it "
                "before the build"
            )
        if condition.field == "label":
            return self._run(xq, k, " AND label = ?", (int(condition.equals),))
        bounds = (float(condition.low), float(condition.high))
        return self._run(xq, k, " AND value >= ? AND value <= ?", bounds)

    def _run(self, xq: np.ndarray, k: int, clause: str, args: tuple[Any, ...]) -> Neighbors:
        """Each query of ``xq`` through vec0's KNN query with ``clause`` added, padded to
        ``(nq, k)`` with -1 and inf."""
        if k > K_MAX:
            raise _too_many(k)
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        distances = np.full((len(xq), k), np.inf, dtype=np.float32)
        reader, sql = self._reader(), self._knn + clause
        for i, q in enumerate(xq):
            rows = reader.execute(sql, (q, k, *args)).fetchall()
            if rows:
                found = np.array(rows, dtype=np.float64)
                ids[i, : len(rows)] = found[:, 0]
                distances[i, : len(rows)] = found[:, 1]
        return Neighbors(distances, ids)

    def _allowed_json(self, allowed: np.ndarray) -> str:
        """The allowed row numbers as the JSON array the query binds, kept per mask: an
        application holds its filter's id list, it does not rebuild it for every query."""
        cached = self._allowed.get(id(allowed))
        if cached is not None and cached[0] is allowed:
            return cached[1]
        text = json.dumps(np.flatnonzero(allowed).tolist())
        if len(self._allowed) >= _FILTER_CACHE:
            self._allowed.clear()
        self._allowed[id(allowed)] = (allowed, text)
        return text

    # -- inserts and deletes ---------------------------------------------------------------

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        if self._columns:  # vec0 0.1.9: "Expected integer for INTEGER metadata column"
            raise AnnbenchError(
                "sqlite-vec metadata columns take no NULL, and added rows have no fields: add "
                "to a table built without set_fields"
            )
        self._writable()
        self._write(as_float32(xb), np.asarray(ids, dtype=np.int64), {})

    def remove(self, ids: np.ndarray) -> None:
        writer = self._writable()
        rows = [(int(i),) for i in np.asarray(ids).ravel()]
        with _transaction(writer):
            writer.executemany(f"DELETE FROM {_TABLE} WHERE rowid = ?", rows)

    def _write(self, xb: np.ndarray, ids: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        """``INSERT`` the rows ``ids`` in batches of INSERT_BATCH, in one transaction."""
        writer = self._writer
        assert writer is not None
        names = ["rowid", "embedding", *fields]
        sql = f"INSERT INTO {_TABLE}({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        columns = [ids.tolist(), xb, *(fields[name].tolist() for name in fields)]
        with _transaction(writer):
            for start in range(0, len(xb), INSERT_BATCH):
                stop = start + INSERT_BATCH
                writer.executemany(sql, zip(*(c[start:stop] for c in columns), strict=True))

    def _writable(self) -> sqlite3.Connection:
        """The writing connection; after ``load``, on a private copy of the saved database
        (the saved file stays as ``save`` wrote it for other processes loading it)."""
        if self._writer is None:
            if self._path is None:
                raise AnnbenchError("sqlite-vec index not built or loaded; build or load first")
            copy = self._new_folder(keep_connections=True) / _FILE
            # copied through the open connection: the saved file may be gone by now
            self._reader().execute("VACUUM INTO ?", (str(copy),))
            self._path = copy
            self._writer = self._connect(copy, read_only=False)
            self._generation += 1  # every thread's reader reopens on the copy
        return self._writer

    # -- saving and loading ----------------------------------------------------------------

    def save(self, path: Path) -> None:
        path = Path(path)
        path.unlink(missing_ok=True)  # VACUUM INTO writes only a new file
        self._reader().execute("VACUUM INTO ?", (str(path),))

    def load(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise AnnbenchError(f"{path} is not a file; load what SqliteVec.save wrote")
        self.close()
        self._path = path
        self._generation += 1
        try:
            found = self._reader().execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", (_TABLE,)
            )
            schema = (found.fetchone() or [""])[0]
        except sqlite3.DatabaseError as exc:
            raise AnnbenchError(f"{path} is not a SQLite database: {exc}") from exc
        if "USING vec0(" not in schema.replace("using", "USING"):
            raise AnnbenchError(f"{path} holds no sqlite-vec table; save it with SqliteVec.save")
        metric = _DISTANCES[self.metric]
        if f"distance_metric={metric}" not in schema:
            raise AnnbenchError(
                f"The saved sqlite-vec table is not {metric} ({self.metric.value}): {schema}; "
                "load it with its own metric"
            )
        self._columns = tuple(
            name for name, kind in _FIELDS.items() if f", {name} {kind}" in schema
        )
        self._count = None
        self.wait_until_ready()

    # -- resources -------------------------------------------------------------------------

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        else:
            _release(self._held)
        self._writer = None
        self._path = None
        self._generation += 1
        self._allowed.clear()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection to the database file."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            if self._path is None:
                raise AnnbenchError("sqlite-vec index not built or loaded; build or load first")
            local.connection = self._connect(self._path, read_only=True, reader=True)
            local.generation = self._generation
        return local.connection

    def _connect(self, path: Path, read_only: bool, reader: bool = False) -> sqlite3.Connection:
        """A connection with sqlite-vec loaded (this thread's reader when ``reader``), closed
        by ``close``."""
        uri = path.resolve().as_uri() + ("?mode=ro" if read_only else "")
        connection = _connect_with_vec(uri)
        with self._lock:
            if reader:
                _keep_reader(self._held["readers"], connection)
            else:
                self._held["connections"].append(connection)
        return connection

    def _new_folder(self, keep_connections: bool = False) -> Path:
        """A temporary folder this object owns, removed by ``close``, garbage collection,
        interpreter exit, or (after a kill) the next run's ``remove_stale_folders``."""
        if not keep_connections:
            self.close()
        folder = owned_folder(_PREFIX)
        assert self._held["folder"] is None  # one private folder at a time
        self._held["folder"] = folder
        if self._finalizer is None:
            self._finalizer = weakref.finalize(self, _release, self._held)
        return folder


def _connect_with_vec(uri: str) -> sqlite3.Connection:
    """``sqlite3.connect(uri)`` in autocommit mode, usable from any thread, with sqlite-vec
    loaded (see the module docstring for Pythons that cannot load extensions)."""
    options: dict[str, Any] = {"uri": True, "check_same_thread": False, "isolation_level": None}
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        connection = sqlite3.connect(uri, **options)
        connection.enable_load_extension(True)
        try:
            sqlite_vec.load(connection)
        finally:
            connection.enable_load_extension(False)
        return connection
    library, entry = _auto_extension()
    with _auto_extension_lock:
        if library.sqlite3_auto_extension(entry) != 0:
            raise AnnbenchError("SQLite refused to register the sqlite-vec extension")
        try:
            return sqlite3.connect(uri, **options)
        finally:
            library.sqlite3_cancel_auto_extension(entry)


_handles: list[Any] = []


def _auto_extension() -> tuple[Any, Any]:
    """(the SQLite library Python's ``sqlite3`` uses, sqlite-vec's entry point)."""
    if not _handles:
        import _sqlite3

        try:
            library = ctypes.CDLL(_sqlite3.__file__)
            library.sqlite3_auto_extension.argtypes = [ctypes.c_void_p]
            library.sqlite3_cancel_auto_extension.argtypes = [ctypes.c_void_p]
            extension = ctypes.CDLL(sqlite_vec.loadable_path() + _suffix())
            entry = ctypes.cast(extension.sqlite3_vec_init, ctypes.c_void_p)
        except (OSError, AttributeError) as exc:
            raise AnnbenchError(
                "This Python's sqlite3 cannot load extensions and its SQLite library cannot "
                f"be reached ({exc}); use a Python built with --enable-loadable-sqlite-"
                "extensions"
            ) from exc
        _handles[:] = [library, extension, entry]
    return _handles[0], _handles[2]


def _suffix() -> str:
    return {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""
    connection.execute("BEGIN")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _too_many(k: int) -> AnnbenchError:
    return AnnbenchError(f"sqlite-vec returns at most {K_MAX} neighbours per query; got k={k}")


def _keep_reader(readers: dict[int, Any], connection: Any) -> None:
    """Hold ``connection`` as this thread's reader in ``readers`` (by thread id), closing this
    thread's previous one and those of threads that have ended (load clients come and go)."""
    alive = {thread.ident for thread in threading.enumerate()}
    this = threading.get_ident()
    for ident in [i for i in readers if i == this or i not in alive]:
        readers.pop(ident).close()
    readers[this] = connection


def _release(held: dict[str, Any]) -> None:
    """Close the connections in ``held`` and remove its folder (the finalizer of an index)."""
    readers, held["readers"] = held["readers"], {}
    connections, held["connections"] = held["connections"], []
    for connection in [*readers.values(), *connections]:
        try:
            connection.close()
        except sqlite3.Error as exc:  # a connection half torn down at exit: the folder goes
            log.debug("closing a sqlite-vec connection: %s", exc)
    folder, held["folder"] = held["folder"], None
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
