"""``annbench run``: sweep backends' grids on a dataset and store the results."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from annbench.cli import types
from annbench.cli.base import grid_option, results_option, workers_option
from annbench.cli.tables import params_of, results_table, runbook_table
from annbench.cli.types import quiet_option
from annbench.data.datasets import DEFAULT_DATASET
from annbench.data.workloads import BadFilter
from annbench.record import MODES, params_label
from annbench.registry import plugin_problems, runnable_backends
from annbench.sweep.load import SCHEDULES
from annbench.sweep.measure import MIN_SECONDS


@click.command(
    epilog="""\b
Examples:
  annbench run -b hnswlib -b faiss-ivf
  annbench run -b hnswlib -d clustered-10k-64-angular -g M=16 -g ef=16,64,256 --runs 5
  annbench run -b all --mode batch --threads 1,2,4 --scheduler local --workers 2
"""
)
@click.option(
    "--backend",
    "-b",
    "backends",
    multiple=True,
    required=True,
    help="Backend to benchmark; repeat for several, or 'all'. See 'annbench backends'.",
)
@click.option(
    "--dataset",
    "-d",
    default=DEFAULT_DATASET,
    show_default=True,
    help="Dataset name (see 'annbench datasets list') or path to an HDF5 file.",
)
@click.option("--k", default=10, show_default=True, type=types.K, help="Neighbours per query.")
@grid_option("Override a grid parameter for every backend that takes it, e.g. efSearch=16,64.")
@click.option(
    "--runs", default=3, show_default=True, type=types.RUNS, help="Timed repeats per setting."
)
@click.option(
    "--min-time",
    "min_seconds",
    default=MIN_SECONDS,
    show_default=True,
    type=types.MIN_TIME,
    help="Keep repeating a setting past --runs until its timed repeats add up to this many "
    "seconds (up to 100 repeats), so a short burst of host noise cannot move the median.",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="single",
    show_default=True,
    help="single: one query per call on one thread (latency); batch: all queries per call; "
    "concurrent: --clients closed-loop clients at once; rate: queries arriving at --rate.",
)
@click.option(
    "--clients",
    default=None,
    type=types.CLIENTS,
    help="Concurrent mode: client counts, each sending queries back to back (1,2,4) "
    "[default: 1,2,4]; rate mode: the clients that pace the arrivals [default: the cores].",
)
@click.option(
    "--rate",
    "rates",
    default=None,
    type=types.RATES,
    help="Rate mode: offered queries per second (500,1000,2000) or shares of the measured "
    "saturation throughput (25%,50%,90%).",
)
@click.option(
    "--load-seconds",
    default=3.0,
    show_default=True,
    type=types.LOAD_SECONDS,
    help="Concurrent and rate modes: seconds each load run is measured (after 0.5 s warm-up).",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="poisson",
    show_default=True,
    help="Rate mode: arrival times, Poisson (seeded) or evenly spaced.",
)
@click.option(
    "--deadline-ms",
    type=types.MILLISECONDS,
    default=None,
    help="Concurrent and rate modes: count the share of queries answered later than this.",
)
@click.option(
    "--threads",
    default=None,
    type=types.IntList(1, 4096),
    help="Search threads; batch mode takes several (1,2,4) to measure scaling "
    "[default: 1 single, all cores batch].",
)
@click.option(
    "--timeout", type=types.SECONDS, default=None, help="Seconds a build configuration may take."
)
@click.option(
    "--memory-limit",
    type=types.SIZE,
    default=None,
    help="Resident memory a worker may use, e.g. 8GB.",
)
@click.option(
    "--build-threads",
    type=types.THREADS,
    default=None,
    help="Threads for building [default: all cores; 1 with --scheduler].",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="local|tcp://HOST:PORT",
    help="Dispatch build configurations to a Dask cluster ('local' starts one).",
)
@workers_option
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="SPEC",
    help="Filter workload to sweep: label, range:0.01,0.1,0.5 (one per selectivity), "
    "range:ATTRIBUTE:0.1 or none (unfiltered); repeat for several, at most 64 filter "
    "workloads per run [default: none].",
)
@click.option(
    "--runbook",
    default=None,
    metavar="NAME|FILE",
    help="Replay a runbook of inserts, deletes and searches (shipped: grow, sliding-window; "
    "or a YAML file of at most 1 MB and 10,000 steps) instead of one static build.",
)
@click.option(
    "--sizes",
    default=None,
    metavar="LIST",
    help="A size ladder: build and sweep every configuration on nested subsets of the base, "
    "fractions or counts, increasing (1/16,1/8,1/4,1/2,1 or 50k,100k,200k); "
    "'annbench scale' fits and checks how each figure grows.",
)
@click.option("--force", is_flag=True, help="Re-measure runs already in the store.")
@quiet_option
@results_option
def run(
    backends: tuple[str, ...],
    dataset: str,
    k: int,
    grid_overrides: tuple[str, ...],
    runs: int,
    min_seconds: float,
    mode: str,
    clients: tuple[int, ...] | None,
    rates: tuple[str, ...] | None,
    load_seconds: float,
    schedule: str,
    deadline_ms: float | None,
    threads: tuple[int, ...] | None,
    timeout: float | None,
    memory_limit: float | None,
    build_threads: int | None,
    scheduler: str | None,
    workers: int,
    filters: tuple[str, ...],
    runbook: str | None,
    sizes: str | None,
    force: bool,
    quiet: bool,
    results_path: Path | None,
) -> None:
    """Build each index configuration once, sweep its search parameters, store the results."""
    from annbench import api

    for problem in plugin_problems():
        click.echo(problem, err=True)
    if scheduler is not None:
        from annbench.sweep.distributed import check_scheduler_address

        check_scheduler_address(scheduler)
    try:
        frame = api.run(
            backends,
            dataset=dataset,
            k=k,
            grid=grid_overrides,
            runs=runs,
            min_time=min_seconds,
            mode=mode,
            threads=threads,
            timeout=timeout,
            memory_limit=memory_limit,
            build_threads=build_threads,
            scheduler=scheduler,
            workers=workers,
            force=force,
            results=results_path,
            progress=not quiet,
            filters=filters,
            runbook=runbook,
            clients=clients,
            rates=rates,
            load=api.LoadOptions(seconds=load_seconds, schedule=schedule, deadline_ms=deadline_ms),
            sizes=sizes,
        )
    except BadFilter as exc:  # a usage error: exit code 2
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    except api.Interrupted as exc:
        click.echo(f"\n{exc}", err=True)
        sys.exit(130)
    sweep = frame.attrs["sweep"]
    click.echo(
        f"Stored {sweep['stored']} results ({sweep['skipped']} already stored, "
        f"{sweep['failed']} failed) in {sweep['store']}"
    )
    skipped = runnable_backends()[1] if "all" in backends else {}
    if skipped:  # after the sweep, so that an error stays the only line
        reasons = "; ".join(f"{name} ({why})" for name, why in skipped.items())
        click.echo(f"'all' skipped {len(skipped)} backends: {reasons}", err=True)
    for row in frame[frame["status"] != "ok"].itertuples():
        click.echo(
            f"  failed: {row.backend} [{params_label(params_of(row.build_params))}] "
            f"[{params_label(params_of(row.search_params))}]: {row.error}",
            err=True,
        )
    if runbook is not None:
        table = api.runbook_summary(frame)
        if len(table):
            click.echo(runbook_table(table))
    elif len(frame):
        click.echo(results_table(frame))
