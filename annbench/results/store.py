"""Durable results store in SQLite: every attempt appended as each run finishes, never replaced.

Each measurement (or failure) of a key is one row of ``attempts``; the current view shows per
key the latest successful full measurement, with the latest failure since then beside it (or
the latest failure when the key never succeeded). Probes, the short one-repeat measurements a
search for a recall target takes, are kept as attempts but never surface as results.

WAL journaling with full sync means a killed process loses nothing already stored, and
several sweeps can write to the same store at once (writers wait on a busy timeout). A write
that fails (disk full, read-only) is rolled back: nothing stored before is touched.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from annbench.errors import AnnbenchError
from annbench.paths import check_path_name, kind_of, protected
from annbench.record import JSON_FIELDS, PLAIN, SCALAR_FIELDS, RunRecord

STORE_FILE = "annbench.sqlite"
#: 1: one row per key in ``results`` (a re-run replaced it); 2: append-only ``attempts``.
SCHEMA_VERSION = 2
#: Columns of the current view beside the record's fields.
FAILURE_COLUMNS = ("last_failure", "last_failure_at")
#: Tables and views annbench creates; a database holding anything else is another program's.
_OWN = {
    "attempts",
    "attempt_raw",
    "results",
    "raw",
    "predictions",
    "sqlite_sequence",
    "sqlite_stat1",
}

#: Predictions (annbench.scaling.curves): a kind of row of their own, never an attempt; each
#: carries its extrapolation factor and the held-out check of the model that made it.
PREDICTION_COLUMNS = {
    "created_at": "TEXT",
    "dataset": "TEXT",
    "dataset_hash": "TEXT",
    "backend": "TEXT",
    "build_params": "TEXT",
    "library_version": "TEXT",
    "k": "INTEGER",
    "mode": "TEXT",
    "quantity": "TEXT",
    "model": "TEXT",
    "formula": "TEXT",
    "fitted_sizes": "TEXT",
    "at_size": "INTEGER",
    "predicted": "REAL",
    "low": "REAL",
    "high": "REAL",
    "confidence": "REAL",
    "extrapolation": "REAL",
    "held_out_size": "INTEGER",
    "held_out_predicted": "REAL",
    "held_out_measured": "REAL",
    "held_out_error": "REAL",
    "held_out_passed": "INTEGER",
    "annbench_version": "TEXT",
}

_COLUMN_TYPES = {
    "k": "INTEGER",
    "clients": "INTEGER",
    "cores": "INTEGER",
    "unfinished": "INTEGER",
    "threads": "INTEGER",
    "duplicates": "INTEGER",
    "missing": "INTEGER",
    "runs": "INTEGER",
    "index_bytes": "INTEGER",
    "memory_bytes": "INTEGER",
    "peak_rss_bytes": "INTEGER",
    "serving_memory_bytes": "INTEGER",
    "serving_rss_bytes": "INTEGER",
    "n_queries": "INTEGER",
    "step": "INTEGER",
    "probe": "INTEGER",
    "live_size": "INTEGER",
    "rebuilt": "INTEGER",
    "not_live": "INTEGER",
    "base_size": "INTEGER",
}

# Per key: the attempt shown (latest ok non-probe, else latest ok probe when probes are asked
# for, else latest failure), the latest failure, and the first attempt (the row's position).
_CHOICE = (
    "SELECT key, COALESCE(MAX(CASE WHEN status = 'ok' AND NOT COALESCE(probe, 0) THEN id END), "
    "MAX(CASE WHEN status = 'ok' THEN id END), MAX(id)) AS shown, "
    "MAX(CASE WHEN status != 'ok' THEN id END) AS failed, MIN(id) AS first FROM attempts"
)
_NOT_PROBE = "NOT COALESCE(probe, 0)"


def store_file(path: Path) -> Path:
    """The store file a ``--results`` value names: a folder (or a name without suffix) holds
    ``annbench.sqlite``; anything else is the file itself."""
    path = Path(path).expanduser()
    return path / STORE_FILE if path.is_dir() or not path.suffix else path


def check_store_location(path: Path) -> Path:
    """``path`` if a results store can live there (an existing store, or a new path), else one
    line saying why not: a dataset, another file in the data folder, a device, something that
    is not a store."""
    given = kind_of(check_path_name(path, "--results"))
    if given not in ("missing", "a file", "a directory"):
        raise AnnbenchError(f"--results {path} is {given}; give a folder or a .sqlite file")
    target = store_file(path)
    reason = protected(target)
    if reason is not None and not reason.startswith("an SQLite database"):
        raise AnnbenchError(
            f"--results {target} is {reason}, not a results store; give a folder or a .sqlite "
            "file (nothing was written)"
        )
    kind = kind_of(target)
    if kind not in ("missing", "a file"):
        raise AnnbenchError(f"--results {target} is {kind}; give a folder or a .sqlite file")
    return Path(path).expanduser()


class ResultStore:
    """Every attempt of every run, keyed so that a re-run resumes instead of repeating.

    ``create=False``: the store must exist already (read-only commands never create one at a
    mistyped path). ``read_only=True``: nothing is written, old stores are read as they are.
    """

    def __init__(self, path: Path, *, create: bool = True, read_only: bool = False) -> None:
        if not read_only:
            check_store_location(path)
        check_path_name(path, "Results store (--results or $ANNBENCH_RESULTS)")
        self.path = path = store_file(path)
        self.read_only = read_only
        if not create and not path.is_file():
            raise AnnbenchError(
                f"No results store at {path}; run 'annbench run' first or pass --results"
            )
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(path, read_only)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise AnnbenchError(f"Cannot use results store {path}: {exc}") from exc
        try:
            self._check_ours()
            if not read_only:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise AnnbenchError(f"Cannot use results store {path}: {exc}") from exc
        except AnnbenchError:
            self._db.close()
            raise

    @classmethod
    def open_existing(cls, path: Path) -> ResultStore:
        """The store at ``path`` for reading; an error (nothing created) when there is none."""
        return cls(path, create=False, read_only=True)

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, record: RunRecord) -> None:
        """Append ``record`` as a new attempt of its key, atomically; nothing is replaced."""
        if self.read_only:
            raise AnnbenchError(f"Results store {self.path} was opened read-only")
        try:
            self._put(record)
        except sqlite3.DatabaseError as exc:
            raise AnnbenchError(
                f"Cannot write to results store {self.path}: {exc} (disk full or read-only?); "
                "results stored before are kept"
            ) from exc

    def _put(self, record: RunRecord) -> None:
        row = _row(record)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._transaction():
            cursor = self._db.execute(
                f"INSERT INTO attempts ({columns}) VALUES ({marks})", list(row.values())
            )
            self._db.execute(
                "INSERT INTO attempt_raw (attempt_id, ids, latencies_ns, cpu_ns, "
                "latency_histogram) VALUES (?, ?, ?, ?, ?)",
                (
                    cursor.lastrowid,
                    _pack(record.ids),
                    _pack(record.latencies_ns),
                    _pack(record.cpu_ns),
                    record.latency_histogram,
                ),
            )

    def put_predictions(self, rows: list[dict[str, Any]]) -> None:
        """Append predictions (``PREDICTION_COLUMNS``; ``build_params`` and ``fitted_sizes``
        as JSON text) in one transaction, apart from the measurements."""
        if self.read_only:
            raise AnnbenchError(f"Results store {self.path} was opened read-only")
        columns = list(PREDICTION_COLUMNS)
        marks = ", ".join("?" for _ in columns)
        try:
            with self._transaction():
                self._db.executemany(
                    f"INSERT INTO predictions ({', '.join(columns)}) VALUES ({marks})",
                    [[row.get(name) for name in columns] for row in rows],
                )
        except sqlite3.DatabaseError as exc:
            raise AnnbenchError(
                f"Cannot write predictions to results store {self.path}: {exc}; "
                "the measurements stored are kept"
            ) from exc

    def predictions(self, dataset: str | None = None) -> pd.DataFrame:
        """Stored predictions, oldest first (an empty frame when there are none)."""
        import pandas as pd

        if "predictions" not in self._tables():
            return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
        query, args = "SELECT * FROM predictions", []
        if dataset is not None:
            query, args = query + " WHERE dataset = ?", [dataset]
        frame = pd.read_sql_query(query + " ORDER BY id", self._db, params=args)
        return frame.drop(columns="id")

    def completed_keys(self) -> set[str]:
        """Keys with a successful full measurement (failed keys and probes are retried)."""
        query = f"SELECT DISTINCT key FROM attempts WHERE status = 'ok' AND {_NOT_PROBE}"
        return {key for (key,) in self._db.execute(query)}

    def records(
        self,
        dataset: str | None = None,
        with_raw: bool = False,
        *,
        history: bool = False,
        probes: bool = False,
        content_hash: str | None = None,
    ) -> list[RunRecord]:
        """The current view, optionally for one dataset, in the order keys were first stored:
        per key the latest successful full measurement, else the latest failure.

        ``probes=True`` also shows keys measured only by probes (their latest successful
        probe), never in place of a full measurement. ``history=True``: every attempt, probes
        included, oldest first. ``content_hash``: the dataset's content, so that what was
        measured on the same content under another name is found too (results are keyed by
        content); those records are named ``dataset`` here.
        """
        return [
            _with_raw(self._db, row) if with_raw else _record(row)
            for row in self._rows(dataset, history, probes, content_hash)
        ]

    def dataframe(
        self,
        dataset: str | None = None,
        *,
        history: bool = False,
        probes: bool = False,
        content_hash: str | None = None,
    ) -> pd.DataFrame:
        """``records`` as a DataFrame, one column per field; the current view adds
        ``last_failure`` and ``last_failure_at``: the latest failed attempt after the result
        shown (a re-measure that failed), None when there is none."""
        columns = [*SCALAR_FIELDS, *JSON_FIELDS, "qps_spread"]
        extra = [] if history else list(FAILURE_COLUMNS)
        rows = []
        for row in self._rows(dataset, history, probes, content_hash):
            record = _record(row)
            values = record.summary_dict() | {"qps_spread": record.qps_spread}
            rows.append(values | {name: row[name] for name in extra})
        import pandas as pd  # not at import time: a worker process never needs it

        return pd.DataFrame(rows, columns=columns + extra)

    def count(self, *, history: bool = False) -> int:
        """Number of results in the current view (``history=True``: of attempts)."""
        if history:
            return self._db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        query = f"SELECT COUNT(DISTINCT key) FROM attempts WHERE {_NOT_PROBE}"
        return self._db.execute(query).fetchone()[0]

    def _rows(
        self, dataset: str | None, history: bool, probes: bool, content_hash: str | None = None
    ) -> Iterator[dict[str, Any]]:
        where, args = [], []
        if dataset is not None and content_hash is not None:
            # the name, or another name whose plain records have this content: its plain
            # records of this content and its filter and runbook records (keyed on hashes
            # derived from the content)
            where.append(
                "(dataset = ? OR (dataset IN (SELECT dataset FROM attempts WHERE "
                "dataset_hash = ?) AND (dataset_hash = ? OR COALESCE(workload, 'plain') "
                "!= 'plain')))"
            )
            args += [dataset, content_hash, content_hash]
        elif dataset is not None:
            where.append("dataset = ?")
            args.append(dataset)
        if history:
            query = "SELECT * FROM attempts"
            if where:
                query += " WHERE " + " AND ".join(where)
            query += " ORDER BY id"
        else:
            if not probes:
                where.append(_NOT_PROBE)
            choice = _CHOICE + (" WHERE " + " AND ".join(where) if where else "") + " GROUP BY key"
            query = (
                "SELECT a.*, f.error AS last_failure, f.created_at AS last_failure_at "
                f"FROM ({choice}) c JOIN attempts a ON a.id = c.shown "
                "LEFT JOIN attempts f ON f.id = c.failed AND f.id > a.id ORDER BY c.first"
            )
        cursor = self._db.execute(query, args)
        names = [d[0] for d in cursor.description]
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            if dataset is not None:
                row["dataset"] = dataset  # the same content under another name
            yield row

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _tables(self) -> dict[str, str]:
        query = "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
        return dict(self._db.execute(query).fetchall())

    def _check_ours(self) -> None:
        """Refuse, before writing anything, a database that some other program made."""
        tables = self._tables()
        foreign = sorted(set(tables) - _OWN)
        if "results" in tables and tables["results"] == "table":
            if "key" not in self._columns("results"):
                foreign.append("results")
        if foreign:
            raise AnnbenchError(
                f"{self.path} is another program's SQLite database (tables: "
                f"{', '.join(foreign)}), not an annbench results store; pass --results a folder "
                "or an annbench .sqlite file"
            )

    def _columns(self, table: str) -> list[str]:
        return [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]

    def _open_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise AnnbenchError(
                f"{self.path} was written by a newer annbench (schema {version}); upgrade annbench"
            )
        tables = self._tables()
        if self.read_only:
            if tables.get("results") == "table":  # schema 1, read where it lies
                self._view_v1()
            elif "attempts" not in tables:
                raise AnnbenchError(
                    f"No results store at {self.path} (an empty database); run 'annbench run' "
                    "first or pass --results"
                )
            else:
                self._temp_missing_columns()
            return
        with self._transaction():
            if tables.get("results") == "table":
                self._migrate_v1()
            else:
                self._create_schema()

    def _create_schema(self) -> None:
        types = _types()
        columns = ", ".join(f"{name} {kind}" for name, kind in types.items())
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS attempts (id INTEGER PRIMARY KEY, key TEXT NOT NULL, "
            f"{columns})"
        )
        # stores written before a field was added gain its column
        present = set(self._columns("attempts"))
        for name, kind in types.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE attempts ADD COLUMN {name} {kind}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS attempt_raw (attempt_id INTEGER PRIMARY KEY "
            "REFERENCES attempts(id) ON DELETE CASCADE, ids BLOB, latencies_ns BLOB, "
            "cpu_ns BLOB, latency_histogram TEXT)"
        )
        raw = self._columns("attempt_raw")
        for name, kind in _RAW_ADDED.items():  # stores from before these arrays
            if name not in raw:
                self._db.execute(f"ALTER TABLE attempt_raw ADD COLUMN {name} {kind}")
        predictions = ", ".join(f"{name} {kind}" for name, kind in PREDICTION_COLUMNS.items())
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY, {predictions})"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS attempts_key ON attempts(key)")
        self._db.execute("CREATE INDEX IF NOT EXISTS attempts_dataset ON attempts(dataset)")
        # for other tools (sqlite3 shell, older scripts): the current view under the old name
        self._db.execute(
            "CREATE VIEW IF NOT EXISTS results AS SELECT a.* FROM attempts a JOIN "
            f"({_CHOICE} WHERE {_NOT_PROBE} GROUP BY key) c ON a.id = c.shown"
        )
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate_v1(self) -> None:
        """Schema 1 (one row per key in ``results``, arrays in ``raw``) to attempts, in place
        and in one transaction: each stored row becomes one attempt with the same id."""
        old = self._columns("results")
        self._db.execute("ALTER TABLE results RENAME TO results_v1")
        self._create_schema()
        present = set(self._columns("attempts"))
        shared = ", ".join(name for name in old if name in present)
        self._db.execute(f"INSERT INTO attempts ({shared}) SELECT {shared} FROM results_v1")
        if "raw" in self._tables():
            self._db.execute(
                "INSERT INTO attempt_raw (attempt_id, ids, latencies_ns) "
                "SELECT result_id, ids, latencies_ns FROM raw "
                "WHERE result_id IN (SELECT id FROM results_v1)"
            )
            self._db.execute("DROP TABLE raw")
        self._db.execute("DROP TABLE results_v1")

    def _view_v1(self) -> None:
        """Read a schema-1 store without changing it: temporary views in its new shape."""
        present = set(self._columns("results"))
        columns = ", ".join(
            name if name in present else f"NULL AS {name}" for name in ("id", "key", *_types())
        )
        self._db.execute(f"CREATE TEMP VIEW attempts AS SELECT {columns} FROM main.results")
        raw = (
            "SELECT result_id AS attempt_id, ids, latencies_ns, NULL AS cpu_ns, "
            "NULL AS latency_histogram FROM main.raw"
            if "raw" in self._tables()
            else "SELECT NULL AS attempt_id, NULL AS ids, NULL AS latencies_ns, NULL AS cpu_ns, "
            "NULL AS latency_histogram WHERE 0"
        )
        self._db.execute(f"CREATE TEMP VIEW attempt_raw AS {raw}")

    def _temp_missing_columns(self) -> None:
        """A store written before a field existed, read without adding its column."""
        present = set(self._columns("attempts"))
        missing = [name for name in _types() if name not in present]
        if missing:
            columns = ", ".join(["*", *(f"NULL AS {name}" for name in missing)])
            self._db.execute(f"CREATE TEMP VIEW attempts AS SELECT {columns} FROM main.attempts")
        raw = self._columns("attempt_raw")
        if any(name not in raw for name in _RAW_ADDED):
            columns = ", ".join(["*", *(f"NULL AS {n}" for n in _RAW_ADDED if n not in raw)])
            view = f"CREATE TEMP VIEW attempt_raw AS SELECT {columns} FROM main.attempt_raw"
            self._db.execute(view)


#: raw columns added after the first stores were written, and their types
_RAW_ADDED = {"cpu_ns": "BLOB", "latency_histogram": "TEXT"}


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if read_only and not os.access(path, os.W_OK):
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    else:
        db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.isolation_level = None
    db.execute("PRAGMA busy_timeout = 60000")
    return db


_TEXT = {
    "dataset",
    "dataset_hash",
    "backend",
    "mode",
    "status",
    "error",
    "created_at",
    "workload",
    "library_version",
    "step_kind",
}


def _types() -> dict[str, str]:
    types = {name: _column_type(name) for name in SCALAR_FIELDS}
    types.update({name: "TEXT" for name in JSON_FIELDS})
    return types


def _column_type(name: str) -> str:
    return _COLUMN_TYPES.get(name, "TEXT" if name in _TEXT else "REAL")


def _row(record: RunRecord) -> dict[str, Any]:
    row: dict[str, Any] = {"key": record.key}
    for name in SCALAR_FIELDS:
        value = getattr(record, name)
        row[name] = value.item() if isinstance(value, np.generic) else value
    for name in JSON_FIELDS:
        row[name] = json.dumps(getattr(record, name), sort_keys=True, default=str)
    return row


def _record(row: dict[str, Any]) -> RunRecord:
    values = {name: row.get(name) for name in SCALAR_FIELDS}
    values["probe"] = bool(values["probe"])
    values["rebuilt"] = None if values["rebuilt"] is None else bool(values["rebuilt"])
    values["workload"] = values["workload"] or PLAIN
    values["status"] = values["status"] or "ok"
    values.update({name: json.loads(row[name]) if row.get(name) else {} for name in JSON_FIELDS})
    return RunRecord(**values)


def _with_raw(db: sqlite3.Connection, row: dict[str, Any]) -> RunRecord:
    record = _record(row)
    raw = db.execute(
        "SELECT ids, latencies_ns, cpu_ns, latency_histogram FROM attempt_raw WHERE attempt_id = ?",
        (row["id"],),
    ).fetchone()
    if raw is not None:
        record.ids, record.latencies_ns, record.cpu_ns = (_unpack(blob) for blob in raw[:3])
        record.latency_histogram = raw[3]
    return record


def _pack(array: np.ndarray | None) -> bytes | None:
    if array is None:
        return None
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _unpack(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.load(io.BytesIO(blob), allow_pickle=False)
