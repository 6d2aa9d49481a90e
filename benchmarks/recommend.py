"""What `annbench recommend --measure` picks for three deployment budgets on the bundled dataset.

For each (mean latency per query, serving memory) budget, single-query one thread, it runs the
real CLI on a fresh results store (so everything is measured, nothing reused) and prints the
pick with its measured recall@10, mean and p99 latency, serving memory, file size, and the wall
time recommend took, as a markdown table for the README.

    python benchmarks/recommend.py [--time-budget 300] [--build-threads 1] [--dataset NAME]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGETS = [(0.15, "40MB"), (0.3, "12MB"), (2.0, "6MB")]


def run_budget(
    dataset: str,
    latency_ms: float,
    memory: str,
    time_budget: float,
    store: Path,
    build_threads: int | None,
) -> tuple[dict, float]:
    """The CLI's JSON answer for one budget and the wall time it took."""
    command = [
        sys.executable,
        "-m",
        "annbench.cli",
        "recommend",
        "-d",
        dataset,
        "--optimize",
        "recall",
        "--max-latency-ms",
        str(latency_ms),
        "--max-memory",
        memory,
        "--measure",
        "--time-budget",
        str(time_budget),
        "--results",
        str(store),
        "--json",
    ]
    if build_threads:
        command += ["--build-threads", str(build_threads)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    sys.stderr.write(done.stderr)
    if done.returncode not in (0, 3):
        raise SystemExit(f"recommend failed with exit {done.returncode}")
    return json.loads(done.stdout), wall


def row(latency_ms: float, memory: str, answer: dict, wall: float) -> str:
    """One markdown table row."""
    budget = f"{latency_ms:g} ms, {memory}"
    pick = answer["choice"]
    if pick is None:
        closest = answer["closest"][0]["config"] if answer["closest"] else "-"
        return f"| {budget} | nothing fits (closest: {closest}) | | | | | | {wall:.0f} s |"
    serving = pick["serving_memory_bytes"]
    size = pick["index_bytes"]
    return (
        f"| {budget} | {pick['config']} | {pick['recall']:.4f} | "
        f"{pick['latency_mean_ms']:.3f} | {pick['latency_p99_ms']:.3f} | "
        f"{serving / 1e6 if serving else float('nan'):.1f} | "
        f"{size / 1e6 if size else float('nan'):.1f} | {wall:.0f} s |"
    )


def main() -> None:
    """Run every budget and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="debian-packages-384-angular")
    parser.add_argument("--time-budget", type=float, default=300.0)
    parser.add_argument(
        "--build-threads",
        type=int,
        default=None,
        help="passed to recommend (1 on an oversubscribed host, where OpenMP teams spin)",
    )
    args = parser.parse_args()
    lines = [
        "| budget (mean latency, serving memory) | pick | recall@10 | mean ms | p99 ms "
        "| serving MB | file MB | recommend took |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="annbench-recommend-") as folder:
        for number, (latency_ms, memory) in enumerate(BUDGETS):
            store = Path(folder) / f"store{number}"
            answer, wall = run_budget(
                args.dataset, latency_ms, memory, args.time_budget, store, args.build_threads
            )
            lines.append(row(latency_ms, memory, answer, wall))
            print(lines[-1], flush=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
