"""Durable results store in SQLite: one row per measurement, written as each run finishes.

WAL journaling with full sync means a killed process loses nothing already stored, and
several sweeps can write to the same store at once (writers wait on a busy timeout).
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annbench.errors import AnnbenchError
from annbench.record import JSON_FIELDS, PLAIN, SCALAR_FIELDS, RunRecord

STORE_FILE = "annbench.sqlite"
SCHEMA_VERSION = 1

_COLUMN_TYPES = {
    "k": "INTEGER",
    "threads": "INTEGER",
    "duplicates": "INTEGER",
    "missing": "INTEGER",
    "runs": "INTEGER",
    "index_bytes": "INTEGER",
    "memory_bytes": "INTEGER",
    "peak_rss_bytes": "INTEGER",
    "serving_memory_bytes": "INTEGER",
    "n_queries": "INTEGER",
    "step": "INTEGER",
    "probe": "INTEGER",
    "live_size": "INTEGER",
    "rebuilt": "INTEGER",
    "not_live": "INTEGER",
}


class ResultStore:
    """Results of every run, keyed so that a re-run resumes instead of repeating."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / STORE_FILE
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._create_schema()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise AnnbenchError(f"Cannot use results store {path}: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, record: RunRecord) -> None:
        """Store ``record``, replacing any earlier one with the same key, atomically."""
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
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c != "key")
        with self._transaction():
            cursor = self._db.execute(
                f"INSERT INTO results ({columns}) VALUES ({marks}) "
                f"ON CONFLICT(key) DO UPDATE SET {updates} RETURNING id",
                list(row.values()),
            )
            result_id = cursor.fetchone()[0]
            self._db.execute(
                "INSERT OR REPLACE INTO raw (result_id, ids, latencies_ns) VALUES (?, ?, ?)",
                (result_id, _pack(record.ids), _pack(record.latencies_ns)),
            )

    def completed_keys(self) -> set[str]:
        """Keys of successful runs (failed ones are retried on the next sweep)."""
        return {key for (key,) in self._db.execute("SELECT key FROM results WHERE status = 'ok'")}

    def records(self, dataset: str | None = None, with_raw: bool = False) -> list[RunRecord]:
        """Stored records, optionally for one dataset, oldest first."""
        query = "SELECT * FROM results"
        args: list[Any] = []
        if dataset is not None:
            query += " WHERE dataset = ?"
            args.append(dataset)
        cursor = self._db.execute(query + " ORDER BY id", args)
        names = [d[0] for d in cursor.description]
        out = []
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            record = _record(row)
            if with_raw:
                raw = self._db.execute(
                    "SELECT ids, latencies_ns FROM raw WHERE result_id = ?", (row["id"],)
                ).fetchone()
                if raw is not None:
                    record.ids, record.latencies_ns = _unpack(raw[0]), _unpack(raw[1])
            out.append(record)
        return out

    def dataframe(self, dataset: str | None = None) -> pd.DataFrame:
        """Stored records as a DataFrame, one column per field."""
        rows = [r.summary_dict() | {"qps_spread": r.qps_spread} for r in self.records(dataset)]
        columns = [*SCALAR_FIELDS, *JSON_FIELDS, "qps_spread"]
        return pd.DataFrame(rows, columns=columns)

    def count(self) -> int:
        """Number of stored records."""
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

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

    def _create_schema(self) -> None:
        types = {name: _column_type(name) for name in SCALAR_FIELDS}
        types.update({name: "TEXT" for name in JSON_FIELDS})
        columns = ", ".join(f"{name} {kind}" for name, kind in types.items())
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise AnnbenchError(
                    f"{self.path} was written by a newer annbench (schema {version}); "
                    "upgrade annbench"
                )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY, "
                f"key TEXT UNIQUE NOT NULL, {columns})"
            )
            # stores written before a field was added gain its column
            present = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            for name, kind in types.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS raw (result_id INTEGER PRIMARY KEY "
                "REFERENCES results(id) ON DELETE CASCADE, ids BLOB, latencies_ns BLOB)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS results_dataset ON results(dataset)")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


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
    values = {name: row[name] for name in SCALAR_FIELDS}
    values["probe"] = bool(values["probe"])
    values["rebuilt"] = None if values["rebuilt"] is None else bool(values["rebuilt"])
    values["workload"] = values["workload"] or PLAIN
    values.update({name: json.loads(row[name]) for name in JSON_FIELDS})
    return RunRecord(**values)


def _pack(array: np.ndarray | None) -> bytes | None:
    if array is None:
        return None
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _unpack(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.load(io.BytesIO(blob), allow_pickle=False)
