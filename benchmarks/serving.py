"""Serving under load. This part: the load generator's own ceiling, against a search that does
nothing. A closed-loop client back to back gives the most one client can send and the cost
of a round trip; open-loop runs on an evenly spaced schedule at increasing rates give the
highest rate the generator keeps up with and the latency it adds there (p50, p99, generator
lag). Any latency measured for an index below these figures is the generator's, not the
index's. (Real backends under load come later.)

    python benchmarks/serving.py [--seconds 2] [--rates 1000 10000 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os

from annbench.sweep.load import generator_ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[1_000, 10_000, 50_000, 100_000, 200_000, 500_000]
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    ceiling = generator_ceiling(args.seconds, args.rates, args.workers)
    closed = ceiling.closed
    print(f"load generator against a no-op search ({os.cpu_count()} CPUs, load {_load()})")
    print(
        f"closed loop, 1 client: {closed.qps:,.0f} queries/s, round trip p50 "
        f"{closed.p50_ms * 1e3:.1f} us, p99 {closed.p99_ms * 1e3:.1f} us"
    )
    print(f"open loop, {args.workers} worker threads, evenly spaced arrivals:")
    header = ("offered/s", "achieved/s", "p50 us", "p99 us", "lag p50 us", "lag p99 us", "late")
    print("  ".join(f"{h:>11}" for h in header))
    for run in ceiling.open:
        cells = (
            f"{run.rate:,.0f}",
            f"{run.qps:,.0f}",
            f"{run.p50_ms * 1e3:.1f}",
            f"{run.p99_ms * 1e3:.1f}",
            f"{run.lag_p50_ms * 1e3:.1f}",
            f"{run.lag_p99_ms * 1e3:.1f}",
            f"{run.late_share:.1%}",
        )
        print("  ".join(f"{c:>11}" for c in cells))
    print(
        f"ceiling: {ceiling.max_rate:,.0f} queries/s (achieved within 5 % of offered, median "
        "lag under 1 ms); 'late' = dispatched over 1 ms after the intended time"
    )


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
