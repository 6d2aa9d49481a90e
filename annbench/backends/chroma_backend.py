"""Chroma, the embedded vector database, on its local persistent client.

One collection in a ``chromadb.PersistentClient`` folder, created with ``embedding_function=None``
(vectors always come with the call: Chroma never loads or downloads an embedding model) and
``anonymized_telemetry=False``. The collection's HNSW index is hnswlib (Chroma's own fork,
driven from its Rust core); its ``configuration["hnsw"]`` carries annbench's hnswlib
parameters: ``M`` -> ``max_neighbors``, ``ef_construction`` -> ``ef_construction``, search
``ef`` -> ``ef_search``. Metrics: euclidean -> ``l2`` (squared L2, as Chroma reports it),
angular -> ``cosine`` (Chroma normalizes vectors and queries), dot -> ``ip`` (``1 - ip``).

How the local client behaves, read from Chroma 1.5.9's Rust source and checked by the tests:

* ``collection.add`` writes the records to the write-ahead log in SQLite and, before it
  returns, applies them to the metadata segment and to the HNSW graph (``push_logs`` sends a
  ``BackfillMessage`` to the local compactor and waits). So the graph is built during
  ``insert``, ``create_index`` has nothing left to do, and ``wait_until_ready`` asks
  ``collection.count()``, which first applies whatever the log still holds to both segments
  (``LocalExecutor.try_backfill_collection``), and returns once it counts every row. The local
  client has no asynchronous indexing (``get_indexing_status`` raises NotImplementedError).
* The graph is written to disk every ``sync_threshold`` (Chroma's default, 1000) applied
  records; the rest stays in the log and is applied again when the folder is next opened.
* ``ef_search`` is read when the graph is loaded: ``collection.modify(configuration=...)``
  stores a new value, but the graph already in memory keeps the old one. ``set_search_params``
  therefore modifies the collection and reopens the client, which loads the graph afresh.
* Filters: ``search_filtered`` passes the allowed rows as the ids the query may return
  (``collection.query(ids=...)``), ``search_where`` states the condition as a ``where`` on
  metadata stored with the vectors (``set_fields``). Both are pre-filters done by Chroma: it
  resolves the allowed records to graph labels and hnswlib searches among them only.

``save`` writes the persistent folder into one uncompressed tar file; ``load`` unpacks it into
a private temporary folder, so any number of processes load the same saved file at once.
Threads: Chroma adds records to the graph on its own thread pool (all cores) and answers
each query on one thread, so ``set_num_threads`` changes nothing.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tarfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annbench.backends.server import owned_folder, wait_until
from annbench.errors import AnnbenchError, MissingDependency
from annbench.index import Index, Neighbors, positive_int
from annbench.metrics import Metric

try:
    import chromadb
    from chromadb.config import Settings
except ImportError as exc:
    raise MissingDependency("chromadb", "chroma") from exc

if TYPE_CHECKING:
    from annbench.index import Condition

log = logging.getLogger(__name__)

_SPACES = {Metric.EUCLIDEAN: "l2", Metric.ANGULAR: "cosine", Metric.DOT: "ip"}
_COLLECTION = "annbench"
#: Chroma's default sync_threshold: the graph is written to disk after this many records
SYNC_THRESHOLD = 1000
#: seconds ``wait_until_ready`` waits for Chroma to count every row
READY_TIMEOUT_S = 600.0
#: filters whose allowed-id lists ``search_filtered`` keeps (one per filter group)
_FILTER_CACHE = 256
#: the private temporary folders (annbench.backends.server.owned_folder): annbench-NAME-*
_PREFIX = "chroma"


class Chroma(Index):
    """Chroma's embedded persistent client: a collection with an HNSW index (hnswlib, built
    as records are added), ``M`` -> ``max_neighbors``, ``ef_construction``; search ``ef`` ->
    ``ef_search`` (set by modifying the collection and reopening it). Inserts and deletes
    with ``collection.add``/``delete``. Filters natively: ``search_filtered`` with the query's
    own ``ids=`` list (allowed rows, pre-filtered by Chroma), ``search_where`` with a
    ``where`` on metadata fields. Saved as a tar of the persistent folder, loaded into a
    private copy."""

    library = "chromadb"
    kind = "embedded"
    engine = "hnswlib"
    load_phases = True
    releases_gil = True  # the Rust query runs with the GIL released (checked by the tests)
    supports_add = True
    supports_remove = True
    native_filter = True
    native_where = True

    def __init__(self, metric: Metric, *, M: int, ef_construction: int) -> None:
        super().__init__(
            metric,
            M=positive_int("M", M, 2),
            ef_construction=positive_int("ef_construction", ef_construction),
        )
        self._ef = 100  # Chroma's default ef_search until set_search_params
        self._ef_given = False  # set_search_params was called: load keeps its ef
        self._folder: Path | None = None  # temporary folder: owner file and db/
        self._client: Any = None
        self._collection: Any = None
        self._count = 0  # rows Chroma must count to be ready
        self._live: np.ndarray | None = None  # (max id + 1,) bool: ids stored
        self._names: np.ndarray | None = None  # (n,) object: "0", "1", ... for id filters
        self._allowed: dict[int, tuple[np.ndarray, list[str]]] = {}
        self._fields: dict[str, np.ndarray] = {}
        self._held: dict[str, Any] = {}  # the open client, for the finalizer to close
        self._finalizer: weakref.finalize | None = None

    # -- the three build phases ---------------------------------------------------------

    def build(self, xb: np.ndarray) -> None:
        self.build_in_phases(xb)

    def insert(self, xb: np.ndarray) -> None:
        """Create the collection (HNSW configuration, no embedding function) and add ``xb``
        in even batches no larger than the client's largest, ids "0", "1", ...: Chroma builds
        the graph as it adds."""
        self._open(self._new_folder(), create_for=len(xb))
        self._add(xb, np.arange(len(xb)), self._fields)
        self._live = np.ones(len(xb), dtype=bool)

    def create_index(self) -> None:
        """Nothing: Chroma's local client adds each record to the HNSW graph before
        ``collection.add`` returns (see the module documentation)."""

    def wait_until_ready(self) -> None:
        """Return once ``collection.count()``, which first applies any logged record to the
        metadata and HNSW segments, counts every row; AnnbenchError after READY_TIMEOUT_S."""
        counted = None

        def all_counted() -> bool:
            nonlocal counted
            counted = self._collection.count()
            return counted >= self._count

        wait_until(
            all_counted,
            READY_TIMEOUT_S,
            lambda: (
                f"Chroma counts {counted} of {self._count} rows after {READY_TIMEOUT_S:g} s; "
                "its folder may be damaged: rebuild the index"
            ),
        )

    # -- search -------------------------------------------------------------------------

    def set_search_params(self, *, ef: int) -> None:
        ef = positive_int("ef", ef)
        self._ef_given = True
        if ef == self._ef:
            return
        self._ef = ef
        if self._collection is not None:  # the graph in memory keeps its ef: reopen it
            self._collection.modify(configuration={"hnsw": {"ef_search": ef}})
            self._reopen()

    def search(self, xq: np.ndarray, k: int) -> Neighbors:
        found = self._collection.query(query_embeddings=xq, n_results=k, include=["distances"])
        return _padded(found, len(xq), k)

    def search_one(self, q: np.ndarray, k: int) -> list[int]:
        found = self._collection.query(query_embeddings=q[None], n_results=k, include=[])
        return list(map(int, found["ids"][0]))

    def search_filtered(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> Neighbors:
        names = self._allowed_names(allowed)
        if not names:
            return _padded({"ids": [[]] * len(xq), "distances": None}, len(xq), k)
        found = self._collection.query(
            query_embeddings=xq, n_results=k, ids=names, include=["distances"]
        )
        return _padded(found, len(xq), k)

    def set_fields(self, labels: np.ndarray | None, values: np.ndarray | None) -> None:
        """Store ``labels`` as the int metadata field "label" and ``values`` as the float
        field "value" of each row when it is inserted."""
        self._fields = {}
        if labels is not None:
            self._fields["label"] = np.asarray(labels, dtype=np.int64)
        if values is not None:
            self._fields["value"] = np.asarray(values, dtype=np.float64)

    def search_where(self, xq: np.ndarray, k: int, condition: Condition) -> Neighbors:
        found = self._collection.query(
            query_embeddings=xq, n_results=k, where=_where(condition), include=["distances"]
        )
        return _padded(found, len(xq), k)

    # -- changes ------------------------------------------------------------------------

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self._add(xb, ids, {})
        live = self._live_rows()
        if len(ids) and ids.max() >= len(live):
            live = np.concatenate([live, np.zeros(ids.max() + 1 - len(live), dtype=bool)])
        live[ids] = True
        self._live, self._allowed = live, {}

    def remove(self, ids: np.ndarray) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64))  # Chroma refuses repeated ids
        batch = self._client.get_max_batch_size()
        for start in range(0, len(ids), batch):
            self._collection.delete(ids=[str(i) for i in ids[start : start + batch].tolist()])
        self._count = self._collection.count()
        live = self._live_rows()
        live[ids[ids < len(live)]] = False
        self._allowed = {}

    # -- files --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """The persistent folder as one uncompressed tar file at ``path`` (Chroma is idle
        between calls: every add has committed to SQLite and the graph files)."""
        assert self._folder is not None
        with tarfile.open(path, "w") as tar:
            tar.add(self._folder / "db", arcname="db")

    def load(self, path: Path) -> None:
        """Unpack the saved folder into a private temporary folder and open it there (at
        the saved ef_search, or the ef set before)."""
        wanted = self._ef if self._ef_given else None
        folder = self._new_folder()
        try:
            with tarfile.open(path, "r") as tar:
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(folder, **safe)
        except (OSError, tarfile.TarError) as exc:
            raise AnnbenchError(f"Cannot read the saved Chroma folder {path}: {exc}") from exc
        self._open(folder)
        self._count = self._collection.count()
        self.wait_until_ready()
        if wanted is not None:
            self.set_search_params(ef=wanted)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._client = self._collection = None

    # -- internals ----------------------------------------------------------------------

    def _new_folder(self) -> Path:
        """A temporary folder this object owns, removed by ``close``, garbage collection,
        interpreter exit, or (after a kill) the next run's ``remove_stale_folders``."""
        self.close()
        folder = owned_folder(_PREFIX)
        self._folder = folder
        self._held = {}
        self._finalizer = weakref.finalize(self, _release, self._held, folder)
        return folder

    def _open(self, folder: Path, create_for: int | None = None) -> None:
        """Open the client on ``folder``/db and the collection (created for ``create_for``
        rows when given: Chroma's configuration, sync_threshold lowered to the row count
        below its default, so the graph is on disk once they are added rather than only in
        the log, from which every open would rebuild it)."""
        client = chromadb.PersistentClient(
            path=str(folder / "db"),
            settings=Settings(anonymized_telemetry=False, allow_reset=False),
        )
        self._held["client"] = client  # closed by _release
        if create_for is not None:
            hnsw = {
                "space": _SPACES[self.metric],
                "max_neighbors": self.build_params["M"],
                "ef_construction": self.build_params["ef_construction"],
                "ef_search": self._ef,
            }
            if create_for < SYNC_THRESHOLD:
                hnsw["sync_threshold"] = max(create_for, 2)
            collection = client.create_collection(
                _COLLECTION, configuration={"hnsw": hnsw}, embedding_function=None
            )
        else:
            collection = client.get_collection(_COLLECTION, embedding_function=None)
            saved = (collection.configuration or {}).get("hnsw") or {}
            if saved.get("space") != _SPACES[self.metric]:
                raise AnnbenchError(
                    f"The saved Chroma collection uses the {saved.get('space')} space, not "
                    f"{_SPACES[self.metric]} ({self.metric.value}); load it with its own metric"
                )
            self._ef = int(saved.get("ef_search", self._ef))  # what the graph loads with
        self._client, self._collection = client, collection

    def _reopen(self) -> None:
        """Close the client and open the folder again: the graph loads with the stored
        configuration (ef_search); ready once Chroma counts every row."""
        assert self._folder is not None
        self._held.pop("client", None)
        self._client.close()
        self._open(self._folder)
        self.wait_until_ready()

    def _add(self, xb: np.ndarray, ids: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        """``collection.add`` in even batches no larger than the client's largest, with
        ``fields`` as metadata; then the count Chroma must reach to be ready."""
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        largest = self._client.get_max_batch_size()
        batch = max(-(-len(xb) // -(-len(xb) // largest)), 1)  # no small last batch
        for start in range(0, len(xb), batch):
            rows = ids[start : start + batch].tolist()
            metadatas = None
            if fields:
                names = list(fields)
                columns = [fields[name][start : start + batch].tolist() for name in names]
                metadatas = [
                    dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)
                ]
            self._collection.add(
                ids=[str(i) for i in rows],
                embeddings=xb[start : start + batch],
                metadatas=metadatas,
            )
        self._count = self._collection.count()

    def _live_rows(self) -> np.ndarray:
        """The bool mask of ids Chroma holds (read from the collection once after a load)."""
        if self._live is None:
            stored = np.array(self._collection.get(include=[])["ids"], dtype=np.int64)
            live = np.zeros(int(stored.max()) + 1 if len(stored) else 0, dtype=bool)
            live[stored] = True
            self._live = live
        return self._live

    def _allowed_names(self, allowed: np.ndarray) -> list[str]:
        """The ids (strings) of the stored rows ``allowed`` allows, kept per mask: an
        application holds its filter's id list, it does not rebuild it for every query."""
        cached = self._allowed.get(id(allowed))
        if cached is not None and cached[0] is allowed:
            return cached[1]
        live = self._live_rows()
        n = min(len(allowed), len(live))
        rows = np.flatnonzero(np.asarray(allowed[:n], dtype=bool) & live[:n])
        if self._names is None or len(self._names) < n:
            self._names = np.array([str(i) for i in range(n)], dtype=object)
        names = self._names[rows].tolist()
        if len(self._allowed) >= _FILTER_CACHE:
            self._allowed.clear()
        self._allowed[id(allowed)] = (allowed, names)
        return names


@functools.lru_cache(maxsize=_FILTER_CACHE)
def _where(condition: Condition) -> dict[str, Any]:
    """``condition`` as a Chroma ``where`` on the metadata ``set_fields`` stored."""
    if condition.field == "label":
        return {"label": int(condition.equals)}
    return {
        "$and": [
            {"value": {"$gte": float(condition.low)}},
            {"value": {"$lte": float(condition.high)}},
        ]
    }


def _padded(found: Any, nq: int, k: int) -> Neighbors:
    """Chroma's lists of string ids (and distances) as (nq, k) arrays, -1 and inf past the
    ids found."""
    ids = np.full((nq, k), -1, dtype=np.int64)
    distances = np.full((nq, k), np.inf, dtype=np.float32)
    found_distances = found.get("distances")
    for i, row in enumerate(found["ids"]):
        if row:
            ids[i, : len(row)] = list(map(int, row))
            if found_distances is not None:
                distances[i, : len(row)] = found_distances[i]
    return Neighbors(distances, ids)


def _release(held: dict[str, Any], folder: Path) -> None:
    """Close the client in ``held`` and remove ``folder`` (the finalizer of a Chroma index)."""
    client = held.pop("client", None)
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # a client half torn down at exit: the folder goes anyway
            log.debug("closing the Chroma client: %s", exc)
    shutil.rmtree(folder, ignore_errors=True)
