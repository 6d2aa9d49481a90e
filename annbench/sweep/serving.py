"""Serving memory and load time: the saved index loaded cold in a fresh process.

Build-time resident memory mostly measures what the build allocated and freed; what a
deployment pays is the memory the index takes once loaded from its file. A fresh interpreter
(``python -m annbench.sweep.serving``) imports the backend, drops the file from the page cache,
times ``load(path)`` and reads its resident memory before the load and after a short warm-up
search, so pages a library maps lazily count too. Two figures: serving memory, the process's
own resident memory (anonymous pages plus pages mapped from the index file, without the shared
library code the first load and search page in), and the whole resident set's gain, which
counts those code pages too: what ``ps`` shows the process growing by.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annbench.sweep.memory import (
    drop_from_page_cache,
    owned_rss_bytes,
    process_tree_rss_bytes,
    rss_bytes,
)

log = logging.getLogger(__name__)

WARMUP_QUERIES = 32
_MARK = "annbench-serving:"
#: one thread for every library in the fresh process: thread stacks are not index memory
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass(frozen=True)
class Serving:
    """What loading a saved index in a fresh process cost; None where it was not measured."""

    memory_bytes: int | None  # resident memory the loaded (and warmed-up) index added
    load_s: float | None  # cold load time
    note: str | None = None  # why it was not measured
    rss_bytes: int | None = None  # the process's whole resident set gain, library code too


def measure_serving(
    backend: str,
    metric: str,
    build_params: dict[str, Any],
    path: Path,
    xq: np.ndarray,
    search_params: dict[str, Any],
    k: int,
    timeout: float | None = 3600,
) -> Serving:
    """Load the index saved at ``path`` in a fresh process and measure it (see module doc);
    ``xq (nq, d)`` queries warm it up under ``search_params``."""
    queries = path.with_name(path.name + ".warmup.npy")
    np.save(queries, np.ascontiguousarray(xq[:WARMUP_QUERIES]))
    spec = {
        "backend": backend,
        "metric": metric,
        "build_params": build_params,
        "search_params": search_params,
        "path": str(path),
        "queries": str(queries),
        "k": k,
        "parent": os.getpid(),
    }
    env = {**os.environ, **_ONE_THREAD}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # as the worker sees it
    try:
        done = subprocess.run(
            [sys.executable, "-m", "annbench.sweep.serving", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Serving(None, None, f"not measured: loading took over {timeout:g} s")
    finally:
        queries.unlink(missing_ok=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARK):
            result = json.loads(line[len(_MARK) :])
            return Serving(
                result.get("memory_bytes"),
                result.get("load_s"),
                result.get("note"),
                result.get("rss_bytes"),
            )
    lines = (done.stderr.strip() or f"exit code {done.returncode}").splitlines()
    note = f"not measured: the loading process failed: {lines[-1]}"
    log.warning("%s serving memory %s", backend, note)
    return Serving(None, None, note)


def _serve(spec: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: load, warm up, and report memory and time."""
    from annbench.metrics import Metric
    from annbench.registry import load_backend

    index = load_backend(spec["backend"])(Metric(spec["metric"]), **spec["build_params"])
    xq = index.prepare_queries(np.load(spec["queries"]))
    index.set_num_threads(1)
    path = Path(spec["path"])
    drop_from_page_cache(path)
    gc.collect()
    before, rss_before = owned_rss_bytes(path.parent), rss_bytes()
    start = time.perf_counter()
    try:
        index.load(path)
    except NotImplementedError:
        return {"note": f"not measured: {spec['backend']} cannot load a saved index"}
    try:
        load_s = time.perf_counter() - start
        index.set_search_params(**spec["search_params"])
        for q in xq:
            index.search_one(q, spec["k"])
        gc.collect()
        after, rss_after = owned_rss_bytes(path.parent), rss_bytes()
        served = process_tree_rss_bytes(index.process_ids())  # a database server's processes
        return {
            "memory_bytes": max(after - before, 0) + served,
            "rss_bytes": max(rss_after - rss_before, 0) + served,
            "load_s": load_s,
        }
    finally:
        index.close()


def _exit_with_parent(parent: int) -> None:
    """Die with the worker that started us (Linux), so a killed sweep leaves nothing behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(1)


def main(argv: list[str]) -> None:
    """``python -m annbench.sweep.serving SPEC_JSON``: print the measurement after a marker."""
    spec = json.loads(argv[1])
    _exit_with_parent(spec["parent"])
    print(_MARK + json.dumps(_serve(spec)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
