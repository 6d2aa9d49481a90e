"""Content hashes of a dataset file: every array and the attributes that change a number.

``content`` covers every HDF5 dataset (recursively through groups) whose top-level name has
no ``@`` -- vectors, ground truth, labels, attributes such as ``train_attrs`` -- with its
path, shape and dtype, plus the ``distance``, ``label_names`` and ``attr_names`` attributes.
Provenance attributes (source, versions, the hash written at creation) are left out. Arrays named
``<name>@<workload>`` (a filter's or a runbook's ground truth) get a digest per workload, so
adding one workload's ground truth to a file changes that workload's hash only.

Hashing reads the whole file, so the result is cached in a small JSON file in the data folder
keyed on the file's path, size, inode, mtime and ctime (any change to the file changes one of
them); ``remember`` stores further verdicts (the ground-truth check) beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from annbench.errors import AnnbenchError
from annbench.paths import data_dir

log = logging.getLogger(__name__)

#: File attributes that change a record's numbers; every other attribute is provenance.
HASHED_ATTRS = ("distance", "label_names", "attr_names")
CACHE_FILE = ".annbench-fingerprints.json"
CACHE_ENTRIES = 256
HASH_BLOCK_BYTES = 64 << 20
RACY_NS = 2_000_000_000
SCHEME = 2  # bump when the hashing changes, so cached values are not reused


@dataclass(frozen=True)
class Fingerprint:
    """The content hash of a dataset file and the digest of each workload's arrays."""

    content: str
    workloads: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, Any] = field(default_factory=dict)

    def workload_hash(self, workload: str) -> str:
        """Hash results of ``workload`` are keyed on: the content plus that workload's arrays."""
        if workload == "plain":
            return self.content
        digests = sorted(
            digest for name, digest in self.workloads.items() if _matches(name, workload)
        )
        return combine_workload(self.content, workload, digests)


def combine_workload(content: str, workload: str, digests: list[str]) -> str:
    """Workload hash from the content hash and the digests of the workload's arrays."""
    # the workload's name is in the record key already; its arrays are what this adds
    sha = hashlib.sha256(f"{content}\nworkload\n".encode())
    for digest in digests:
        sha.update(f"{digest}\n".encode())
    return sha.hexdigest()[:16]


def workload_of(name: str) -> str | None:
    """The workload an HDF5 top-level name belongs to (``neighbors@label`` -> ``label``)."""
    head, sep, tail = name.partition("@")
    return tail if sep else None


def _matches(workload_key: str, workload: str) -> bool:
    # workload_key is "head@tail" kept whole, so a group "runbook@x" answers "x" and "runbook:x"
    head, _, tail = workload_key.partition("@")
    return workload in (tail, f"{head}:{tail}")


def file_signature(path: Path) -> list[Any]:
    """What changes whenever the file's bytes change: path, size, inode, mtime and ctime."""
    return stat_signature(path, os.stat(path))


def stat_signature(path: Path, st: os.stat_result) -> list[Any]:
    """``file_signature`` from a stat already taken (e.g. ``os.fstat`` of an open file)."""
    return [str(Path(path).resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def fingerprint(path: Path) -> Fingerprint:
    """Fingerprint of the HDF5 file ``path``, from the cache when the file is unchanged."""
    path = Path(path)
    signature = file_signature(path)
    found = cached(signature)
    if found is None:
        try:
            with h5py.File(path, "r") as f:
                found = hash_hdf5(f, {})
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise AnnbenchError(
                f"{path} could not be hashed (truncated or corrupt?): {exc}"
            ) from exc
        keep(path, signature, found)
    return found


def cached(signature: list[Any]) -> Fingerprint | None:
    """The cached fingerprint of a file with this signature, if any."""
    entry = _load_cache().get(_key(signature))
    if entry is None:
        return None
    return Fingerprint(entry["content"], entry["workloads"], entry.get("verdicts", {}))


def keep(path: Path, signature: list[Any], found: Fingerprint) -> None:
    """Cache ``found`` for the file ``path`` read with ``signature``, if it is settled."""
    # a file changed within the last seconds may change again within the timestamps'
    # granularity without a new signature ("racy" as git calls it): cache only settled files
    settled = time.time_ns() - signature[3] > RACY_NS
    if settled and file_signature(path) == signature:  # and unchanged while it was read
        _store(signature, found)


def remember(path: Path, verdict: str, value: Any) -> None:
    """Cache ``verdict`` (e.g. that the ground truth was checked) with the file's fingerprint."""
    signature = file_signature(path)
    cache = _load_cache()
    entry = cache.get(_key(signature))
    if entry is None:
        return
    entry.setdefault("verdicts", {})[verdict] = value
    _save_cache(cache)


def hash_hdf5(f: h5py.File, loaded: Mapping[str, np.ndarray]) -> Fingerprint:
    """Fingerprint of an open file, hashing every dataset found in it (sorted by path)."""
    content = hashlib.sha256(f"annbench-content-{SCHEME}\n".encode())
    for key in HASHED_ATTRS:
        if key in f.attrs:
            content.update(f"attr {key}={_attr_text(f.attrs[key])}\n".encode())
    per_workload: dict[str, hashlib._Hash] = {}
    for name in sorted(f.keys()):
        workload = workload_of(name)
        sha = content if workload is None else per_workload.setdefault(name, hashlib.sha256())
        _update(sha, f, name, loaded)
    return Fingerprint(
        content.hexdigest()[:16], {name: sha.hexdigest() for name, sha in per_workload.items()}
    )


def workload_digests(f: h5py.File, workload: str) -> dict[str, str]:
    """The digests ``hash_hdf5`` gives the arrays of ``workload`` in an open file, reading only
    those arrays (``{"neighbors@label": digest, ...}``)."""
    digests = {}
    for name in sorted(f.keys()):
        if workload_of(name) is not None and _matches(name, workload):
            sha = hashlib.sha256()
            _update(sha, f, name, {})
            digests[name] = sha.hexdigest()
    return digests


def _update(sha: Any, f: h5py.File, name: str, loaded: Mapping[str, np.ndarray]) -> None:
    """Add the digest line of every array under top-level ``name`` to ``sha``."""
    for item_path, item in _walk(f, name):
        line = array_digest(item_path, loaded.get(item_path, item))
        sha.update(f"{line}\n".encode())


def _walk(f: h5py.File, name: str) -> list[tuple[str, Any]]:
    """(path, dataset) for ``name`` and, if a group, every dataset under it, sorted by path."""
    item = f[name]
    if isinstance(item, h5py.Dataset):
        return [(name, item)]
    found: list[tuple[str, Any]] = []
    item.visititems(
        lambda sub, obj: (
            found.append((f"{name}/{sub}", obj)) if isinstance(obj, h5py.Dataset) else None
        )
    )
    return sorted(found, key=lambda pair: pair[0])


def array_digest(name: str, array: Any) -> str:
    """``name shape dtype sha256`` of one array (numpy or HDF5 dataset, read in row blocks)."""
    shape = tuple(int(x) for x in array.shape)
    dtype = np.dtype(array.dtype)
    sha = hashlib.sha256()
    if len(shape) == 0:
        sha.update(_bytes(np.asarray(array[()])))
    else:
        row_bytes = max(1, dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)))
        step = max(1, HASH_BLOCK_BYTES // row_bytes)
        for start in range(0, shape[0], step):
            sha.update(_bytes(np.asarray(array[start : start + step])))
    return f"{name} {shape} {dtype.str} {sha.hexdigest()}"


def _bytes(block: np.ndarray) -> bytes:
    if block.dtype.kind == "O":  # variable-length strings or bytes: hash the values
        return b"\0".join(
            v if isinstance(v, bytes) else str(v).encode() for v in block.ravel().tolist()
        )
    return np.ascontiguousarray(block).tobytes()


def _attr_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _key(signature: list[Any]) -> str:
    return json.dumps([SCHEME, *signature])


def _cache_path() -> Path:
    return data_dir() / CACHE_FILE


def _load_cache() -> dict[str, Any]:
    try:
        cache = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _store(signature: list[Any], found: Fingerprint) -> None:
    cache = _load_cache()
    key = _key(signature)
    # entries of the same path under an older signature are stale: drop them
    stale = [k for k in cache if k != key and json.loads(k)[1:2] == signature[:1]]
    for k in stale:
        del cache[k]
    cache[key] = {"content": found.content, "workloads": found.workloads, "verdicts": {}}
    _save_cache(cache)


def _save_cache(cache: dict[str, Any]) -> None:
    while len(cache) > CACHE_ENTRIES:
        del cache[next(iter(cache))]
    path = _cache_path()
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(cache))
        os.replace(partial, path)
    except OSError as exc:  # a read-only data folder: hash again next time
        log.debug("could not cache dataset fingerprints in %s: %s", path, exc)
        partial.unlink(missing_ok=True)
