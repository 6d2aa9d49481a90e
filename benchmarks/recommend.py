"""What `annbench recommend --measure` buys with its time budget on the bundled dataset.

For each budget (single-query, one thread) it runs the real CLI on a fresh results store (so
everything is measured, nothing reused) and prints, as a markdown table for docs/results.md: the
wall time recommend took against its --time-budget, how many candidates were measured, killed
by the time budget and skipped (with the reasons), and the pick with its recall@10.

    python benchmarks/recommend.py [--time-budget 300] [--build-threads 1] [--keep DIR] [--again]

``--again`` asks each budget a second time on the same store: what the store's memory of the
first call (stored answers, timeouts) saves.

To compare with older code, run this script with PYTHONPATH pointing at a worktree of it:
``git worktree add --detach /tmp/old COMMIT; PYTHONPATH=/tmp/old python benchmarks/recommend.py``
(the script prints which annbench it ran).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

#: (label, CLI limits): a tight latency and memory budget, a recall target with a p99 limit,
#: a recall target with a memory limit.
BUDGETS = [
    ("mean <= 0.3 ms, 12MB", ["--max-latency-ms", "0.3", "--max-memory", "12MB"]),
    ("recall >= 0.95, p99 <= 2 ms", ["--min-recall", "0.95", "--max-p99-ms", "2"]),
    ("recall >= 0.9, 40MB", ["--min-recall", "0.9", "--max-memory", "40MB"]),
]


def run_budget(
    dataset: str, limits: list[str], time_budget: float, store: Path, build_threads: int | None
) -> tuple[dict, float]:
    """The CLI's JSON answer for one budget and the wall time it took."""
    command = [sys.executable, "-m", "annbench.cli", "recommend", "-d", dataset, *limits]
    command += ["--measure", "--time-budget", str(time_budget), "--results", str(store)]
    command += ["--json"]
    if build_threads:
        command += ["--build-threads", str(build_threads)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    sys.stderr.write(done.stderr)
    if done.returncode not in (0, 3):
        raise SystemExit(f"recommend failed with exit {done.returncode}")
    return json.loads(done.stdout), wall


def tally(answer: dict) -> tuple[int, int, list[str]]:
    """Candidates measured (finished), killed by the time budget, and the skip reasons; reads
    the answers of this version (``budget``) and older ones (``skipped_for_time``)."""
    killed = sum("time budget" in step["outcome"] for step in answer["measured"])
    if "budget" in answer:
        reasons = [skip["reason"] for skip in answer["budget"]["skipped"]]
    else:
        reasons = ["time budget spent" for _ in answer.get("skipped_for_time", [])]
    return len(answer["measured"]) - killed, killed, reasons


def row(label: str, answer: dict, wall: float, time_budget: float) -> str:
    """One markdown table row."""
    measured, killed, reasons = tally(answer)
    counts = Counter(_short(reason) for reason in reasons)
    why = "; ".join(f"{count} {reason}" for reason, count in counts.most_common()) or "-"
    pick = answer["choice"]
    picked = (
        "nothing fits"
        if pick is None
        else f"{pick['config']} {_search(pick)}, recall {pick['recall']:.4f}"
    )
    return (
        f"| {label} | {wall:.0f} s / {time_budget:g} s | {measured} | {killed} | "
        f"{len(reasons)} ({why}) | {picked} |"
    )


def _search(pick: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in pick["search_params"].items())


def _short(reason: str) -> str:
    """A skip reason without its figures, to count alike reasons together."""
    return reason.split(":")[0].split(" (")[0]


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
    parser.add_argument("--keep", type=Path, help="keep the results stores in this folder")
    parser.add_argument("--only", type=int, nargs="*", help="run only these budgets (0, 1, 2)")
    parser.add_argument("--again", action="store_true", help="ask each budget twice")
    args = parser.parse_args()
    import annbench

    where = Path(annbench.__file__).parent
    print(f"annbench from {where}, PYTHONPATH={os.environ.get('PYTHONPATH')}")
    lines = [
        "| budget | took / --time-budget | measured | killed by the budget | skipped (why) "
        "| pick |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="annbench-recommend-") as folder:
        root = args.keep or Path(folder)
        for number, (label, limits) in enumerate(BUDGETS):
            if args.only is not None and number not in args.only:
                continue
            store = root / f"store{number}"
            for call in range(2 if args.again else 1):
                answer, wall = run_budget(
                    args.dataset, limits, args.time_budget, store, args.build_threads
                )
                name = f"{label}, asked again" if call else label
                lines.append(row(name, answer, wall, args.time_budget))
                print(lines[-1], flush=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
