"""Vector databases beside the libraries they are built on, on the bundled dataset.

For each database backend installed (or those named) and its engine (``Index.engine``), both
measured through the one pipeline into one fresh results store:

1. single mode over the default grid of each (the database's grid is matched to its
   engine's parameters), which gives recall, single-query latency, load duration (for a
   database split into insert, index build and the wait until it says it is ready), serving
   memory (a server's process tree, or what an embedded database's process gained) and size
   on disk;
2. at recall 0.9 and 0.95, the fastest single-mode setting of each side reaching it, measured
   again with 1 and 4 closed-loop clients (concurrent mode).

It prints one markdown table (for docs/results.md) with QPS and p99 at 1 and 4 clients, the
database-to-engine QPS ratio at the same recall, load duration, serving memory and disk size.

    python benchmarks/databases.py [--backends chroma redis ...] [--load-seconds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

LEVELS = (0.9, 0.95)
CLIENTS = (1, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="*", default=None, help="database backends")
    parser.add_argument("--load-seconds", type=float, default=3.0)
    parser.add_argument("--keep", type=Path, default=None, help="results store folder to keep")
    args = parser.parse_args()

    import annbench
    from annbench.registry import backend_names, load_backend, runnable_backends

    runnable = set(runnable_backends()[0])
    names = args.backends or [
        n for n in backend_names() if n in runnable and load_backend(n).kind != "library"
    ]
    store = args.keep or Path(tempfile.mkdtemp(prefix="annbench-databases-"))
    print(f"results in {store}; {os.cpu_count()} CPUs, load {_load()}")
    rows = []
    for name in names:
        engine = load_backend(name).engine
        sides = [name] + ([engine] if engine else [])
        start = time.perf_counter()
        single = annbench.run(sides, mode="single", runs=3, results=store, progress=False)
        picks = {side: _picks(single, side) for side in sides}
        for side in sides:
            for level, row in picks[side].items():
                loaded = annbench.run(
                    side,
                    mode="concurrent",
                    clients=list(CLIENTS),
                    grid=_exact_grid(row),
                    runs=1,
                    load=annbench.LoadOptions(seconds=args.load_seconds),
                    results=store,
                    progress=False,
                )
                rows.append(_row(name, side, level, row, loaded))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    print()
    print(_table(rows))


def _picks(frame, backend: str) -> dict[float, dict]:
    """At each recall level, the fastest single-mode run of ``backend`` reaching it."""
    ok = frame[(frame["backend"] == backend) & (frame["status"] == "ok")]
    picks = {}
    for level in LEVELS:
        meeting = ok[ok["recall"] >= level]
        if len(meeting):
            picks[level] = meeting.loc[meeting["qps"].idxmax()].to_dict()
    return picks


def _exact_grid(row: dict) -> dict:
    """The grid overrides that select exactly the run ``row`` (flat parameter columns)."""
    import json

    params = {**json.loads(row["build_params"]), **json.loads(row["search_params"])}
    return {key: [value] for key, value in params.items()}


def _row(database: str, side: str, level: float, single: dict, loaded) -> dict:
    by_clients = {int(r["clients"]): r for _, r in loaded.iterrows() if r["status"] == "ok"}
    out = {
        "database": database,
        "side": side,
        "level": level,
        "recall": single["recall"],
        "build_s": single["build_s"],
        "insert_s": single.get("insert_s"),
        "index_build_s": single.get("index_build_s"),
        "ready_s": single.get("ready_s"),
        "serving_MB": (single.get("serving_memory_bytes") or 0) / 1e6,
        "disk_MB": (single.get("index_bytes") or 0) / 1e6,
    }
    for clients in CLIENTS:
        run = by_clients.get(clients)
        out[f"qps_{clients}"] = run["qps"] if run is not None else None
        out[f"p99_{clients}"] = run["latency_p99_ms"] if run is not None else None
    return out


def _table(rows: list[dict]) -> str:
    head = (
        "| database / engine | recall >= | recall | QPS 1 / 4 clients | p99 ms 1 / 4 clients "
        "| QPS ratio 1 / 4 | load s (insert + index + ready) | serving MB | disk MB |"
    )
    lines = [head, "|" + "---|" * 9]
    engines = {(r["database"], r["level"]): r for r in rows if r["side"] != r["database"]}
    for r in rows:
        engine = engines.get((r["database"], r["level"])) if r["side"] == r["database"] else None
        ratio = "-"
        if engine is not None:
            ratio = " / ".join(
                f"{r[f'qps_{c}'] / engine[f'qps_{c}']:.2f}"
                if r[f"qps_{c}"] and engine[f"qps_{c}"]
                else "-"
                for c in CLIENTS
            )
        phases = (
            f"{r['build_s']:.1f} ({r['insert_s']:.1f} + {r['index_build_s']:.1f} + "
            f"{r['ready_s']:.2f})"
            if r.get("insert_s") is not None and r["insert_s"] == r["insert_s"]
            else f"{r['build_s']:.1f}"
        )
        lines.append(
            f"| {r['side']} | {r['level']:g} | {r['recall']:.3f} | "
            + " / ".join(_num(r[f"qps_{c}"], ",.0f") for c in CLIENTS)
            + " | "
            + " / ".join(_num(r[f"p99_{c}"], ".2f") for c in CLIENTS)
            + f" | {ratio} | {phases} | {r['serving_MB']:.0f} | {r['disk_MB']:.0f} |"
        )
    return "\n".join(lines)


def _num(value, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
