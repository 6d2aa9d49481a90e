"""The ``annbench`` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from annbench import __version__
from annbench.cli import types
from annbench.cli.base import AnnbenchGroup, grid_option, results_option
from annbench.cli.datasets import datasets
from annbench.cli.types import quiet_option
from annbench.data.datasets import (
    DEFAULT_DATASET,
    Dataset,
    read_dataset,
    resolve_dataset,
)
from annbench.data.workloads import BadFilter, canonical_workloads, check_filter, parse_filters
from annbench.errors import AnnbenchError, BadUsage
from annbench.paths import check_output_dir, output_file, results_dir, write_text_file
from annbench.recommender import DEFAULT_TIME_BUDGET_S, EXIT_NOTHING_FITS, FULL_PROTOCOL
from annbench.record import LOAD_MODES, MODES, PLAIN, mode_label, params_label
from annbench.registry import capability_table, plugin_problems, runnable_backends
from annbench.results.analysis import NOISY_SPREAD
from annbench.results.store import ResultStore, store_file
from annbench.sweep.grids import parse_overrides
from annbench.sweep.load import SCHEDULES
from annbench.sweep.measure import MIN_SECONDS


@click.group(
    cls=AnnbenchGroup,
    epilog="""\b
Examples:
  annbench run -b hnswlib -b faiss-ivf -d clustered-10k-64-angular
  annbench report --neighbours
  annbench recommend --min-recall 0.95 --max-p99-ms 1
""",
)
@click.version_option(__version__, prog_name="annbench")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(debug: bool) -> None:
    """Benchmark approximate-nearest-neighbour indexes and pick one for deployment."""


@main.command(
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
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=types.WORKERS,
    help="Workers of the LocalCluster that --scheduler local starts.",
)
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
            f"  failed: {row.backend} [{params_label(_params(row.build_params))}] "
            f"[{params_label(_params(row.search_params))}]: {row.error}",
            err=True,
        )
    if runbook is not None:
        table = api.runbook_summary(frame)
        if len(table):
            click.echo(_runbook_table(table))
    elif len(frame):
        click.echo(_table(frame))


@main.command(
    epilog="""\b
Examples:
  annbench results -d clustered-10k-64-angular
  annbench results --failed
  annbench results --csv runs.csv --parquet runs.parquet
  annbench results --export ann-benchmarks -d clustered-10k-64-angular --out ab-results
"""
)
@click.option("--dataset", "-d", default=None, help="Only this dataset.")
@click.option("--failed", is_flag=True, help="Only failed runs.")
@click.option(
    "--history",
    is_flag=True,
    help="Every attempt, oldest first (failures, re-measures and probes included).",
)
@click.option(
    "--csv",
    "csv_path",
    type=types.OutputPath(),
    help="Write every field to CSV (a column per parameter, dicts as JSON).",
)
@click.option(
    "--parquet",
    "parquet_path",
    type=types.OutputPath(),
    help="Write the same columns to a parquet file (needs pyarrow).",
)
@click.option(
    "--export",
    "export_format",
    type=click.Choice(["ann-benchmarks"]),
    default=None,
    help="Write per-run files in another tool's layout (needs --dataset and --out).",
)
@click.option(
    "--out", type=types.OutputPath(folder=True), default=None, help="Folder for --export."
)
@click.option(
    "--library-version", default=None, help="Only runs measured with this library version."
)
@results_option
def results(
    dataset: str | None,
    failed: bool,
    history: bool,
    csv_path: Path | None,
    parquet_path: Path | None,
    export_format: str | None,
    out: Path | None,
    library_version: str | None,
    results_path: Path | None,
) -> None:
    """List stored results, or export them to CSV, parquet or ann-benchmarks' result files.

    Where they differ, both recalls are listed: annbench's (ids, ties counted) and
    ann-benchmarks' (distance threshold). A spread ending in ! is noisy across repeats;
    a wall/cpu ratio ending in ! was measured under host interference (single mode: wall
    time well above the search thread's CPU time)."""
    from annbench import api

    if export_format is not None:
        from annbench.report.export import export_ann_benchmarks

        if dataset is None or out is None:
            raise BadUsage("--export ann-benchmarks needs --dataset NAME and --out DIR")
        data = read_dataset(resolve_dataset(dataset))
        with ResultStore.open_existing(results_path or results_dir()) as store:
            records = store.records(data.name, with_raw=True, content_hash=data.content_hash)
        written = export_ann_benchmarks(records, data, out)
        others = sum(1 for r in records if r.status == "ok" and r.workload != PLAIN)
        left_out = (
            f"{others} results of filters and runbooks left out: ann-benchmarks' layout has no "
            "place for them"
            if others
            else ""
        )
        if not written:
            raise AnnbenchError(
                f"No successful runs of {data.name} (this content) to export"
                + (f"; {left_out}" if left_out else "")
            )
        click.echo(f"Wrote {len(written)} ann-benchmarks result files under {out / data.name}")
        if left_out:
            click.echo(left_out[0].upper() + left_out[1:])
        return
    frame = api.load_results(results_path, dataset, history=history)
    if library_version is not None:
        frame = frame[frame["library_version"].astype(str) == library_version]
    if failed:
        frame = frame[frame["status"] != "ok"]
        if frame.empty:
            click.echo("No failed runs stored.")
            return
    if csv_path is not None or parquet_path is not None:
        if csv_path is not None:
            with output_file(csv_path, "--csv") as temp:
                frame.to_csv(temp, index=False)
            click.echo(f"Wrote {len(frame)} results to {csv_path}")
        if parquet_path is not None:
            api.write_parquet(frame, parquet_path)
            click.echo(f"Wrote {len(frame)} results to {parquet_path}")
        return
    if frame.empty:
        click.echo("No results stored" + (f" for dataset {dataset}" if dataset else "") + ".")
        return
    click.echo(_table(frame))


@main.command(
    epilog="""\b
Examples:
  annbench plot -d clustered-10k-64-angular --out recall-qps.png
  annbench plot -d clustered-10k-64-angular --mode batch --k 10
  annbench plot -d clustered-10k-64-angular --threads
  annbench plot -d tiny --runbook sliding-window
"""
)
@click.option(
    "--dataset", "-d", default=DEFAULT_DATASET, show_default=True, help="Dataset to plot."
)
@click.option(
    "--mode",
    type=click.Choice(("single", "batch")),
    default="single",
    show_default=True,
    help="Runs of this mode ('annbench report' plots concurrent and rate runs).",
)
@click.option(
    "--k", type=types.K, default=None, help="Only runs with this k [default: the most common]."
)
@click.option(
    "--threads",
    "scaling",
    is_flag=True,
    help="Plot QPS vs search threads (batch runs measured with --threads 1,2,...).",
)
@click.option(
    "--runbook",
    default=None,
    metavar="NAME",
    help="Plot recall and QPS against step for the runs of this runbook.",
)
@click.option(
    "--out",
    type=types.OutputPath(),
    default=None,
    callback=lambda ctx, param, value: _png(value),
    help="PNG file to write (.png).",
)
@results_option
def plot(
    dataset: str,
    mode: str,
    k: int | None,
    scaling: bool,
    runbook: str | None,
    out: Path | None,
    results_path: Path | None,
) -> None:
    """Plot recall vs queries per second as a PNG for papers, one pareto frontier per backend
    (or thread scaling, or recall and QPS per runbook step); the interactive plots are in
    'annbench report'."""
    from annbench import api
    from annbench.report.plot import recall_qps_figure, save_png, threads_figure
    from annbench.results.runbook_analysis import without_runbooks

    mode = "batch" if scaling else mode
    frame = api.load_results(results_path or results_dir(), dataset, raw=True)
    store_path = store_file(results_path or results_dir())
    if runbook is not None:
        _plot_runbook(frame, dataset, runbook, mode, k, out, store_path)
        return
    frame = without_runbooks(frame)
    frame = frame[(frame["mode"] == mode) & (frame["status"] == "ok")]
    if frame.empty:
        raise AnnbenchError(
            f"No successful {mode}-mode results for dataset '{dataset}' in {store_path}; "
            f"run 'annbench run -d {dataset} -b ...' first"
        )
    k = k or int(frame["k"].mode().iloc[0])
    frame = frame[frame["k"] == k]
    if frame.empty:
        raise AnnbenchError(f"No results with k={k} for dataset '{dataset}'")
    if scaling:
        try:
            figure = threads_figure(frame, f"{dataset}: QPS vs threads (k={k})")
        except ValueError as exc:
            raise AnnbenchError(str(exc)) from exc
        out = out or store_path.parent / f"{dataset}-threads-k{k}.png"
    else:
        figure = recall_qps_figure(frame, f"{dataset}: recall@{k} vs QPS ({mode} mode)")
        out = out or store_path.parent / f"{dataset}-{mode}-k{k}.png"
    save_png(figure, out)
    click.echo(f"Wrote {out}")


def _png(path: Path | None) -> Path | None:
    """``--out`` of plot: a .png file (the only format it writes), or a usage error."""
    if path is not None and path.suffix.lower() != ".png":
        raise click.BadParameter(
            f"{path} does not end in .png; plot writes PNG files (give e.g. {path.stem}.png)",
            param_hint="--out",
        )
    return path


def _plot_runbook(
    frame: pd.DataFrame,
    dataset: str,
    runbook: str,
    mode: str,
    k: int | None,
    out: Path | None,
    store_path: Path,
) -> None:
    from annbench.report.plot import runbook_figure, save_png

    frame = frame[(frame["workload"] == f"runbook:{runbook}") & (frame["mode"] == mode)]
    k = k or (int(frame["k"].mode().iloc[0]) if len(frame) else 10)
    try:
        figure = runbook_figure(
            frame[frame["k"] == k], f"{dataset}: runbook {runbook} (k={k}, {mode} mode)"
        )
    except ValueError as exc:
        raise AnnbenchError(
            f"No successful {mode}-mode runs of runbook {runbook} on '{dataset}' in "
            f"{store_path}; run 'annbench run -d {dataset} --runbook {runbook} -b ...' first"
        ) from exc
    out = out or store_path.parent / f"{dataset}-runbook-{runbook}-k{k}.png"
    save_png(figure, out)
    click.echo(f"Wrote {out}")


@main.command(
    "report",
    epilog="""\b
Examples:
  annbench report
  annbench report -d clustered-10k-64-angular --out site --latency-budget-ms 0.5
  annbench report --neighbours --queries 3,17,42
""",
)
@click.option(
    "--out",
    type=types.OutputPath(folder=True),
    default=None,
    help="Folder to write index.html into [default: report/ beside the store].",
)
@click.option("--dataset", "-d", default=None, help="Only this dataset.")
@click.option(
    "--latency-budget-ms",
    type=types.MILLISECONDS,
    default=1.0,
    show_default=True,
    help="Report the best recall whose p99 latency fits this budget.",
)
@click.option(
    "--neighbours",
    is_flag=True,
    help="Also write a neighbours page per dataset: sample queries, their exact top-k and what "
    "each backend returned (texts or thumbnails where the dataset has them).",
)
@click.option(
    "--queries",
    type=types.IntList(0, None, "ID[,ID...]"),
    default=None,
    help="With --neighbours: these query ids [default: 5 drawn with --seed].",
)
@click.option(
    "--seed",
    type=types.SEED,
    default=0,
    show_default=True,
    help="With --neighbours: seed of the sample queries.",
)
@click.option(
    "--corpus",
    type=types.InputPath(),
    default=None,
    help="With --neighbours: the texts the dataset was embedded from, when not beside it "
    "[default: the file its embed command recorded, looked up beside the dataset].",
)
@quiet_option
@results_option
def report_command(
    out: Path | None,
    dataset: str | None,
    latency_budget_ms: float,
    neighbours: bool,
    queries: tuple[int, ...] | None,
    seed: int,
    corpus: Path | None,
    quiet: bool,
    results_path: Path | None,
) -> None:
    """Write a self-contained HTML report (interactive plots, summaries, every run, and with
    --neighbours what each backend returned for sample queries); works offline from file://."""
    from annbench.progress import progress_bar
    from annbench.report.html import write_report

    if queries is not None and not neighbours:
        raise click.UsageError("--queries goes with --neighbours")
    if corpus is not None and not neighbours:
        raise click.UsageError("--corpus goes with --neighbours")
    from annbench import api

    frame = api.load_results(results_path or results_dir(), dataset, raw=True)
    store_path = store_file(results_path or results_dir())
    if frame.empty:
        raise AnnbenchError("No results stored" + (f" for dataset {dataset}" if dataset else ""))
    folder = out or check_output_dir(store_path.parent / "report", "Report folder")
    targets = [dataset] if dataset else sorted(frame["dataset"].unique())
    with progress_bar(
        frame["dataset"].nunique() + (len(targets) if neighbours else 0), "Report", quiet=quiet
    ) as shown:
        links = []
        if neighbours:
            links = _neighbour_pages(
                targets, folder, store_path, queries, seed, shown, dataset, corpus
            )
        path = write_report(frame, folder, latency_budget_ms, links, progress=shown)
    for page, _ in links:
        click.echo(f"Wrote {folder / page}")
    click.echo(f"Wrote {path}")


def _neighbour_pages(
    targets: list[str],
    folder: Path,
    store_path: Path,
    queries: tuple[int, ...] | None,
    seed: int,
    shown: Any,
    required: str | None,
    corpus: Path | None = None,
) -> list[tuple[str, str]]:
    """Write one neighbours page per dataset; returns (file name, link text) pairs. A stored
    dataset whose file cannot be found by name is skipped with a note, unless it was asked for."""
    from annbench.report.neighbours import neighbours_page

    links = []
    for spec in targets:
        shown.status(f"neighbours of {spec}")
        try:
            data = read_dataset(resolve_dataset(spec))
        except AnnbenchError as exc:
            if required:
                raise
            shown.message(f"No neighbours page for {spec}: {exc}")
            shown.update(1)
            continue
        with ResultStore.open_existing(store_path) as store:
            records = store.records(data.name, with_raw=True, content_hash=data.content_hash)
        page = f"neighbours-{data.name}.html"
        text = neighbours_page(
            data, records, list(queries) if queries else None, seed=seed, corpus=corpus
        )
        write_text_file(folder / page, text, "Neighbours page")
        links.append((page, f"neighbours: {data.name}"))
        shown.update(1)
    return links


@main.command(
    "summary",
    epilog="""\b
Examples:
  annbench summary
  annbench summary -d clustered-10k-64-angular --latency-budget-ms 0.5
""",
)
@click.option("--dataset", "-d", default=None, help="Only this dataset.")
@click.option(
    "--latency-budget-ms",
    type=types.MILLISECONDS,
    default=None,
    help="Also report the best recall whose p99 latency fits this budget.",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="SPEC",
    help="Only these workloads (label, range:0.01, none...) [default: every workload].",
)
@results_option
def summary_command(
    dataset: str | None,
    latency_budget_ms: float | None,
    filters: tuple[str, ...],
    results_path: Path | None,
) -> None:
    """Per backend and workload: best QPS at recall >= 0.8/0.9/0.95/0.99, with build time and
    memory (filtered workloads show their selectivity); for runbooks, the worst recall over the
    runbook at each search setting."""
    from annbench import api

    frame = api.load_results(results_path, dataset)
    if filters:
        frame = frame[frame["workload"].isin(_workloads(filters))]
    table = api.summary(frame, latency_budget_ms)
    runbooks = api.runbook_summary(frame)
    serving = api.serving_summary(frame)
    engines = api.engine_comparison(frame)
    if table.empty and runbooks.empty and serving.empty:
        where = f" for {dataset}" if dataset else ""
        if filters:
            where += f" under {', '.join(_workloads(filters))}"
        raise AnnbenchError(f"No successful results stored{where}")
    groups = table.groupby(["dataset", "workload", "mode", "k"]) if len(table) else ()
    for (name, workload, mode, k), rows in groups:
        selectivity = rows["selectivity"].iloc[0]
        shown = "" if workload == PLAIN else f", filter {workload}, selectivity {selectivity:.3g}"
        click.echo(f"\n{name} ({mode} mode, k={k}{shown})")
        click.echo(_summary_table(rows, latency_budget_ms))
    for (name, runbook, mode, k), rows in (
        runbooks.groupby(["dataset", "runbook", "mode", "k"]) if len(runbooks) else ()
    ):
        click.echo(f"\n{name}, runbook {runbook} ({mode} mode, k={k})")
        click.echo(_runbook_table(rows))
    groups = serving.groupby(["dataset", "workload", "mode", "k", "cores"]) if len(serving) else ()
    for (name, workload, mode, k, cores), rows in groups:
        shown = "" if workload == PLAIN else f", filter {workload}"
        what = (
            "QPS / p99 ms per client count"
            if mode == "concurrent"
            else "QPS / p99 ms per offered rate"
        )
        click.echo(f"\n{name} ({mode} mode on {cores} cores, k={k}{shown}): {what}")
        view = rows.drop(columns=["dataset", "workload", "mode", "k", "cores", "backend"])
        view = view.dropna(axis=1, how="all").fillna("")
        view["recall"] = view["recall"].map(lambda v: _num(v, ".4f"))
        view["saturation_qps"] = view["saturation_qps"].map(lambda v: _num(v, ",.0f"))
        click.echo(view.to_string(index=False))
    if len(engines):
        click.echo("\nEach database beside the library it is built on (best QPS at each recall):")
        click.echo(_engine_table(engines))


@main.command(
    "recommend",
    epilog="""\b
Examples:
  annbench recommend --min-recall 0.95
  annbench recommend -d clustered-10k-64-angular --min-recall 0.9 --max-p99-ms 1 --max-memory 1GB
  annbench recommend --max-latency-ms 0.3 --max-memory 12MB --measure --emit python
  annbench recommend --min-recall 0.99 --optimize memory --measure -b hnswlib
  annbench recommend --at-qps 2000 --max-p99-ms 1 --min-recall 0.9
  annbench recommend --at-qps 2000 --max-p99-ms 1 --measure -b hnswlib --time-budget 120
""",
)
@click.option("--dataset", "-d", default=DEFAULT_DATASET, show_default=True)
@click.option(
    "--min-recall",
    type=types.RECALL,
    default=None,
    help="Recall@k the choice must reach (needed unless --optimize recall).",
)
@click.option(
    "--max-latency-ms",
    type=types.MILLISECONDS,
    default=None,
    help="Largest mean latency per query (ms).",
)
@click.option("--max-p99-ms", type=types.MILLISECONDS, default=None, help="Largest p99 (ms).")
@click.option(
    "--at-qps",
    type=types.FiniteFloat(0, 1_000_000, min_open=True),
    default=None,
    metavar="QPS",
    help="Answer for queries arriving at this rate (queries/s, open loop; needs --max-p99-ms): "
    "each configuration is judged by its rate-mode record at the lowest offered rate measured "
    "at or above it, and only if it kept up.",
)
@click.option(
    "--max-memory",
    default=None,
    metavar="SIZE",
    callback=lambda ctx, param, value: _size_text(ctx, param, value),
    help="Largest memory (see --memory-figure), e.g. 40MB (10^6 bytes) or 38MiB (2^20).",
)
@click.option(
    "--latency-clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="Which time --max-latency-ms and --max-p99-ms mean: wall (what a caller waits) or "
    "cpu (the search thread's CPU time, without the host's interference; single mode).",
)
@click.option(
    "--memory-figure",
    type=click.Choice(["serving", "rss"]),
    default="serving",
    show_default=True,
    help="Which memory --max-memory means: serving (the index's own resident pages in a fresh "
    "process) or rss (that process's whole resident set gain, library code too).",
)
@click.option(
    "--max-build-s", type=types.SECONDS, default=None, help="Longest build time allowed (s)."
)
@click.option(
    "--optimize",
    type=click.Choice(["recall", "qps", "memory", "build", "latency"]),
    default=None,
    help="What to make best among what fits (latency: p99) "
    "[default: qps with --min-recall, else recall].",
)
@click.option("--k", type=types.K, default=10, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="single",
    show_default=True,
    help="Query mode the limits are for: single (one query per call, one thread) or batch "
    "(--at-qps implies rate).",
)
@click.option(
    "--threads",
    type=types.THREADS,
    default=None,
    help="Batch mode: search threads [default: all cores].",
)
@click.option(
    "--filter",
    "filter_spec",
    default="none",
    show_default=True,
    metavar="SPEC",
    help="Recommend for this filter workload (label, range:0.01...).",
)
@click.option(
    "--measure",
    is_flag=True,
    help="First measure: index structures sized to --max-memory (or the grids of -b "
    "backends), bisecting each one's search parameter, within --time-budget; with --at-qps, "
    "then the settings whose single-query figures make that rate plausible, at the rate.",
)
@click.option(
    "--backend",
    "-b",
    "backends",
    multiple=True,
    help="With --measure: bisect these backends' grids instead of proposing structures.",
)
@grid_option("With --measure -b: grid overrides, as for run.")
@click.option(
    "--time-budget",
    "time_budget_s",
    type=types.SECONDS,
    default=DEFAULT_TIME_BUDGET_S,
    show_default=True,
    help="With --measure: seconds to spend building and measuring.",
)
@click.option(
    "--build-threads",
    type=types.THREADS,
    default=None,
    help="With --measure: threads for building [default: all cores].",
)
@click.option(
    "--load-seconds",
    type=types.LOAD_SECONDS,
    default=None,
    help="With --measure --at-qps: measured seconds of each load run [default: 3].",
)
@click.option(
    "--runs",
    default=FULL_PROTOCOL.runs,
    show_default=True,
    type=types.RUNS,
    help="With --measure: timed repeats of every full measurement (probes take one).",
)
@click.option(
    "--min-time",
    "min_seconds",
    default=FULL_PROTOCOL.min_seconds,
    show_default=True,
    type=types.MIN_TIME,
    help="With --measure: repeat a full measurement until its repeats add up to this (s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON on stdout.")
@click.option(
    "--emit",
    type=click.Choice(["python"]),
    default=None,
    help="Print a runnable snippet that builds and queries the pick with its library.",
)
@click.option(
    "--save-index",
    type=types.OutputPath(),
    default=None,
    help="Build the pick on the dataset and save it here, with PATH.json describing it.",
)
@results_option
def recommend_command(
    dataset: str,
    min_recall: float | None,
    max_latency_ms: float | None,
    max_p99_ms: float | None,
    at_qps: float | None,
    max_memory: float | None,
    latency_clock: str,
    memory_figure: str,
    max_build_s: float | None,
    optimize: str | None,
    k: int,
    mode: str,
    threads: int | None,
    filter_spec: str,
    measure: bool,
    backends: tuple[str, ...],
    grid_overrides: tuple[str, ...],
    time_budget_s: float,
    build_threads: int | None,
    load_seconds: float | None,
    runs: int,
    min_seconds: float,
    as_json: bool,
    emit: str | None,
    save_index: Path | None,
    results_path: Path | None,
) -> None:
    """Pick the configuration that meets every limit with the best objective.

    With --at-qps the limits hold while queries arrive at that rate, from rate-mode records
    (annbench run --mode rate); the answer states the client and core counts its figure was
    measured with.

    Exit status: 0 with a pick, 3 when nothing meets the targets (the closest misses are
    listed, nearest the budget first) or nothing was measured at the --at-qps rate, 1 on
    errors, 2 on usage errors.
    """
    import json

    from annbench.recommend_load import load_figures, load_warnings
    from annbench.recommender import MeasurementPolicy, recommend_index
    from annbench.results.analysis import Constraints, describe_bytes
    from annbench.results.deploy import emit_python
    from annbench.results.deploy import save_index as save_index_to
    from annbench.sweep.load import LoadOptions
    from annbench.time_budget import process_started

    if as_json and emit:
        raise click.UsageError("--json and --emit both print to stdout; use one of them")
    if (backends or grid_overrides) and not measure:
        option = "-b" if backends else "--grid"
        raise click.UsageError(
            f"{option} chooses what --measure measures; add --measure, or leave {option} out to "
            "pick among what is stored"
        )
    memory_bytes = types.SIZE.convert(max_memory, None, None) if max_memory else None
    constraints = Constraints(
        min_recall=min_recall,
        max_p99_ms=max_p99_ms,
        max_memory_bytes=memory_bytes,
        max_build_s=max_build_s,
        max_latency_ms=max_latency_ms,
        clock=latency_clock,
        memory_figure=memory_figure,
    )
    mode_given = click.get_current_context().get_parameter_source("mode") not in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    if at_qps is not None:
        if mode_given and mode != "rate":
            raise click.UsageError(
                f"--at-qps asks about queries arriving at a rate (open-loop rate mode); "
                f"--mode {mode} contradicts it: leave --mode out"
            )
        if max_p99_ms is None:
            raise click.UsageError(
                f"--at-qps {at_qps:g} needs --max-p99-ms: the p99 latency the configuration "
                "must keep while queries arrive at that rate"
            )
        mode = "rate"
    elif load_seconds is not None:
        raise click.UsageError("--load-seconds sets the load runs of --at-qps; add --at-qps")
    if load_seconds is not None and not measure:
        raise click.UsageError(
            "--load-seconds sets how long --measure measures each setting at the rate; "
            "add --measure"
        )
    if latency_clock == "cpu" and at_qps is not None:
        raise click.UsageError(
            "--at-qps figures are wall time from each query's intended send time; "
            "--latency-clock cpu needs single mode"
        )
    if latency_clock == "cpu" and mode != "single":
        raise click.UsageError("--latency-clock cpu needs --mode single (CPU times are per query)")
    quiet = as_json or emit is not None  # stdout carries only the JSON or the snippet

    def say(text: str) -> None:
        click.echo(text, err=quiet)

    data = read_dataset(resolve_dataset(dataset, progress=lambda t: click.echo(t, err=True)))
    workloads = _workloads((filter_spec,), data)
    if len(workloads) != 1:
        raise click.BadParameter("give one workload, e.g. range:0.01", param_hint="--filter")
    overrides = parse_overrides(grid_overrides)
    location = results_path or results_dir()
    with ResultStore(location) if measure else ResultStore.open_existing(location) as store:
        if measure:
            say(_limits_line(constraints, max_memory, mode, threads, at_qps))
        outcome = recommend_index(
            data,
            store,
            constraints,
            optimize,
            k=k,
            mode=mode if mode_given or at_qps is not None else None,
            threads=threads,
            measure=measure,
            backends=list(backends) or None,
            overrides=overrides or None,
            time_budget_s=time_budget_s,
            policy=MeasurementPolicy(runs, min_seconds),
            progress=say,
            workload=workloads[0],
            build_threads=build_threads,
            started=process_started(),
            at_qps=at_qps,
            load=None if load_seconds is None else LoadOptions(seconds=load_seconds),
        )
    result = outcome.recommendation
    for line in outcome.budget_report():  # what --measure's time budget bought
        say(line)
    if as_json:
        payload = outcome.to_dict()
        if max_memory:
            payload["constraints"]["max_memory"] = describe_bytes(max_memory)
        click.echo(json.dumps(payload, indent=2, default=str))
    if not measure:
        say(_limits_line(constraints, max_memory, mode, outcome.threads, at_qps))
    if at_qps is not None:
        cores = outcome.cores or 1

        def figures(row: pd.Series) -> str:
            return load_figures(row, at_qps, cores)

    else:
        figures = _figures
    if result.choice is None:
        under = "" if workloads[0] == PLAIN else f", filter {workloads[0]}"
        say(
            f"Nothing stored for {data.name} (k={k}, {outcome.query_mode}{under}) meets the "
            "constraints."
        )
        if result.closest is not None and len(result.closest):
            say("Closest misses, nearest the budget first:")
            for _, row in result.closest.iterrows():
                say(f"  {row['config']}: {figures(row)} - breaks {row['violations']}")
        say(outcome.hint or "Measure more with --measure, or relax a constraint.")
        sys.exit(EXIT_NOTHING_FITS)
    choice = result.choice
    say(f"Recommended: {choice['config']}")
    if at_qps is not None:
        say(f"  {figures(choice)}")
        for warning in load_warnings(choice):
            say(f"  [{warning}]")
    else:
        say(f"  {_figures(choice)}{_noisy(choice)}{_interfered(choice)}")
    say(
        f"  best {outcome.objective} of {result.candidates} stored configurations meeting "
        f"every constraint; figures for {outcome.query_mode}"
    )
    if result.indistinguishable is not None and len(result.indistinguishable):
        others = "; ".join(result.indistinguishable["config"].head(3))
        say(
            f"  indistinguishable within the measured spread from: {others} "
            "(picked the simpler, smaller index)"
        )
    for reason in result.binding:
        say(f"  bound by {reason}")
    if len(result.runners_up):
        say("Runners-up:")
        for _, row in result.runners_up.iterrows():
            say(f"  {row['config']}: {figures(row)}")
    if emit == "python":
        click.echo(emit_python(choice, data, k), nl=False)
    if save_index is not None:
        meta = save_index_to(choice, data, save_index, k, outcome.query_mode)
        say(f"Saved the index to {save_index} and its description to {meta}")


def _size_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A memory size checked as one (a usage error if not), kept as typed to echo its unit."""
    if value is not None:
        types.SIZE.convert(value, param, ctx)
    return value


def _limits_line(
    constraints: Any,
    max_memory: str | None,
    mode: str,
    threads: int | None,
    at_qps: float | None = None,
) -> str:
    """The limits as understood, memory in both MB and MiB."""
    from annbench.recommender import query_mode
    from annbench.results.analysis import describe_bytes

    parts = []
    clock = "CPU time" if constraints.clock == "cpu" else "wall time"
    if constraints.min_recall is not None:
        parts.append(f"recall >= {constraints.min_recall:g}")
    if constraints.max_latency_ms is not None:
        parts.append(f"mean latency <= {constraints.max_latency_ms:g} ms ({clock})")
    if constraints.max_p99_ms is not None:
        at = f" at {at_qps:,.0f} queries/s offered" if at_qps is not None else ""
        parts.append(f"p99 <= {constraints.max_p99_ms:g} ms ({clock}){at}")
    if max_memory:
        figure = (
            "process RSS gain (fresh process, library code included)"
            if constraints.memory_figure == "rss"
            else "serving memory (the index's own resident pages, fresh process)"
        )
        parts.append(f"{figure} <= {describe_bytes(max_memory)}")
    if constraints.max_build_s is not None:
        parts.append(f"build <= {constraints.max_build_s:g} s")
    threads = threads or (1 if mode in ("single", "rate") else os.cpu_count() or 1)
    mode_text = query_mode(mode, threads, at_qps)
    return f"Limits: {', '.join(parts) or 'none'}; query mode: {mode_text}"


def _figures(row: pd.Series) -> str:
    """A point's recall, latencies (wall, with CPU time beside where measured), QPS, memory
    (serving, with the process's whole RSS gain beside) and build time in one line."""
    memory = "serving memory" if pd.notna(row.get("serving_memory_bytes")) else "memory"
    size, rss = row.get("index_bytes"), row.get("serving_rss_bytes")
    cpu = pd.notna(row.get("cpu_p99_ms"))
    return (
        f"recall {row['recall']:.4f}, mean {_num(row.get('latency_mean_ms'), '.3f')} ms"
        + (f" (CPU {row['cpu_mean_ms']:.3f})" if cpu else "")
        + f", p99 {_num(row.get('latency_p99_ms'), '.3f')} ms"
        + (f" (CPU {row['cpu_p99_ms']:.3f})" if cpu else "")
        + f", {row['qps']:,.0f} QPS, {memory} {_num(row['memory_footprint'] / 1e6, '.1f')} MB"
        + (f" (process RSS gain {rss / 1e6:.1f} MB)" if pd.notna(rss) else "")
        + (f", file {size / 1e6:.1f} MB" if pd.notna(size) and size else "")
        + f", build {_num(row.get('build_s'), '.2f')} s"
    )


def _interfered(row: pd.Series) -> str:
    """A mark on figures measured while the host took the core away, with the ratios."""
    from annbench.results.analysis import describe_interference

    if not row.get("interference"):
        return ""
    return (
        f"  [host interference: {describe_interference(row)}; the CPU figures describe the "
        "index, the wall figures this host at that moment]"
    )


def _noisy(row: pd.Series) -> str:
    """Why a pick's figures are unstable across repeats, if they are (or cannot be told)."""
    if pd.isna(row.get("qps_spread")):
        return "  [spread unknown: one timed repeat]"
    reasons = []
    if row.get("qps_noisy"):
        reasons.append(f"QPS spread {row['qps_spread']:.0%}")
    if row.get("p99_noisy"):
        reasons.append(f"p99 spread {row['p99_spread']:.0%}")
    return f"  [noisy: {', '.join(reasons)} across repeats]" if reasons else ""


def _workloads(specs: tuple[str, ...], data: Dataset | None = None) -> list[str]:
    """Workload names of ``--filter`` values, checked against ``data``: a bad spec is a usage
    error (exit code 2)."""
    try:
        workloads = parse_filters(specs)
        for workload in workloads if data is not None else ():
            check_filter(data, workload)
    except BadFilter as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    return workloads if data is None else canonical_workloads(data, workloads)


def _installed_backends() -> list[str]:
    """Registered backends whose library is installed and that have a usable grid."""
    return runnable_backends()[0]


@main.command(
    epilog="""\b
Examples:
  annbench backends
  annbench run -b all -d clustered-10k-64-angular
"""
)
def backends() -> None:
    """Table of registered backends: installed, version, metrics, capabilities, grid size."""
    for problem in plugin_problems():
        click.echo(problem, err=True)
    table = capability_table().fillna("-")
    click.echo(table.to_string(index=False))
    click.echo(
        "filter: native = the library filters during search, post only = annbench filters a "
        "larger result; clients: load clients as threads (search releases the GIL) or as "
        "processes serving the saved index; grid: build x search configurations of the "
        "default grid"
    )


def _params(value: Any) -> dict[str, Any]:
    """A parameter dict, whether the frame holds dicts or their JSON text."""
    from annbench.results.columns import as_dict

    return as_dict(value)


def _num(value: Any, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def _spread(value: Any, status: str = "ok") -> str:
    """QPS spread as a percentage, with ``!`` when the run is noisy; 'unknown' for a run with a
    single repeat (no spread to measure: not the same as a stable 0%)."""
    text = _num(value, ".0%")
    if not text:
        return "unknown" if status == "ok" else ""
    return text + "!" if value > NOISY_SPREAD else text


def _summary_table(rows: pd.DataFrame, latency_budget_ms: float | None) -> str:
    from annbench.results.analysis import RECALL_LEVELS

    view = pd.DataFrame({"backend": rows["backend"]})
    for level in RECALL_LEVELS:
        tag = f"@{level:g}"
        view[f"QPS{tag}"] = rows[f"qps{tag}"].map(lambda v: _num(v, ",.0f") or "-")
        view[f"build_s{tag}"] = rows[f"build_s{tag}"].map(lambda v: _num(v, ".2f") or "-")
        view[f"MB{tag}"] = rows[f"memory_MB{tag}"].map(lambda v: _num(v, ".1f") or "-")
    if latency_budget_ms is not None:
        view[f"recall@p99<={latency_budget_ms:g}ms"] = rows["best_recall_within_budget"].map(
            lambda v: _num(v, ".4f") or "-"
        )
    view["noisy"] = rows["noisy_runs"]
    return view.to_string(index=False)


def _engine_table(rows: pd.DataFrame) -> str:
    view = pd.DataFrame(
        {
            "dataset": rows["dataset"],
            "mode": rows["mode"],
            "database": rows["database"],
            "engine": rows["engine"],
            "recall>=": rows["recall_level"].map(lambda v: f"{v:g}"),
            "qps_ratio": rows["qps_ratio"].map(lambda v: _num(v, ".2f")),
            "db_qps": rows["database_qps"].map(lambda v: _num(v, ",.0f")),
            "engine_qps": rows["engine_qps"].map(lambda v: _num(v, ",.0f")),
            "db_recall": rows["database_recall"].map(lambda v: _num(v, ".4f")),
            "engine_recall": rows["engine_recall"].map(lambda v: _num(v, ".4f")),
            "db_p99_ms": rows["database_p99_ms"].map(lambda v: _num(v, ".3f")),
            "engine_p99_ms": rows["engine_p99_ms"].map(lambda v: _num(v, ".3f")),
            "db_MB": rows["database_memory_MB"].map(lambda v: _num(v, ".1f")),
            "engine_MB": rows["engine_memory_MB"].map(lambda v: _num(v, ".1f")),
        }
    )
    if rows["workload"].ne(PLAIN).any():
        view.insert(1, "workload", rows["workload"])
    return view.to_string(index=False)


def _runbook_table(rows: pd.DataFrame) -> str:
    """Runbook summary rows: worst and last recall per search setting, update costs."""
    view = pd.DataFrame(
        {
            "backend": rows["backend"],
            "build": rows["build"],
            "search": rows["search"],
            "worst_recall": rows["worst_recall"].map(lambda v: _num(v, ".4f")),
            "at_step": rows["worst_step"],
            "last_recall": rows["last_recall"].map(lambda v: _num(v, ".4f")),
            "median_qps": rows["median_qps"].map(lambda v: _num(v, ",.0f")),
            "insert/s": rows["insert_per_s"].map(lambda v: _num(v, ",.0f") or "-"),
            "delete/s": rows["delete_per_s"].map(lambda v: _num(v, ",.0f") or "-"),
            "rebuilds": rows["rebuilds"],
            "build_s": rows["build_s"].map(lambda v: _num(v, ".2f")),
        }
    )
    return view.to_string(index=False)


def _megabytes(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` of byte counts in MB, blank where missing."""
    return (pd.to_numeric(frame[column], errors="coerce") / 1e6).map(lambda v: _num(v, ".1f"))


def _mode_labels(frame: pd.DataFrame) -> list[str]:
    """Each row's mode with its load point (clients, rate, cores)."""
    columns = [frame.get(c, pd.Series(None, index=frame.index)) for c in _LOAD_COLUMNS]
    return [mode_label(*values) for values in zip(frame["mode"], *columns, strict=True)]


_LOAD_COLUMNS = ("clients", "rate", "rate_share", "cores")


def _near_ceiling(frame: pd.DataFrame) -> list[bool]:
    """Whether each load row's offered rate (or throughput) is over half the generator's
    ceiling: its figure may describe the load generator as much as the index."""
    offered = frame["rate"].where(frame["mode"] == "rate", frame["qps"])
    ceiling = pd.to_numeric(frame["generator_max_qps"], errors="coerce")
    return list((offered > 0.5 * ceiling).fillna(False))


def _share(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.1%}"


def _table(frame: pd.DataFrame) -> str:
    view = pd.DataFrame(
        {
            "dataset": frame["dataset"],
            "backend": frame["backend"],
            "build": frame["build_params"].map(lambda p: params_label(_params(p))),
            "search": frame["search_params"].map(lambda p: params_label(_params(p))),
            "k": frame["k"],
            "mode": _mode_labels(frame),
            "status": frame["status"],
            "recall": frame["recall"].map(lambda v: _num(v, ".4f")),
            "ab_recall": frame["ann_benchmarks_recall"].map(lambda v: _num(v, ".4f")),
            "label_precision": frame["label_precision"].map(lambda v: _num(v, ".4f")),
            "qps": frame["qps"].map(lambda v: _num(v, ",.0f")),
            "spread": [
                "" if mode in LOAD_MODES else _spread(v, s)  # one load run: its tail shows
                for v, s, mode in zip(
                    frame["qps_spread"], frame["status"], frame["mode"], strict=True
                )
            ],
            "p50_ms": frame["latency_p50_ms"].map(lambda v: _num(v, ".3f")),
            "p99_ms": frame["latency_p99_ms"].map(lambda v: _num(v, ".3f")),
            "build_s": frame["build_s"].map(lambda v: _num(v, ".2f")),
            "index_MB": (frame["index_bytes"] / 1e6).map(lambda v: _num(v, ".1f")),
            "serving_MB": _megabytes(frame, "serving_memory_bytes"),
            "build_peak_MB": _megabytes(frame, "peak_rss_bytes"),
        }
    )
    if frame["step"].notna().any():  # runbook steps: say which
        view.insert(2, "workload", frame["workload"])
        view.insert(3, "step", frame["step"].map(lambda v: "" if pd.isna(v) else int(v)))
    if "last_failure" in frame and frame["last_failure"].notna().any():
        view["last_failure"] = frame["last_failure"].fillna("")
    if "probe" in frame and frame["probe"].any():
        view["probe"] = frame["probe"].map(lambda v: "probe" if v else "")
    if len(frame) and (frame["workload"] != PLAIN).any():
        view.insert(2, "workload", frame["workload"])
        view.insert(3, "selectivity", frame["selectivity"].map(lambda v: _num(v, ".3g")))
    if not frame["label_precision"].notna().any():
        view = view.drop(columns="label_precision")  # shown for datasets with labels
    if frame["cpu_p99_ms"].notna().any():  # single mode: CPU time beside wall time
        from annbench.results.analysis import host_interference

        at = view.columns.get_loc("p99_ms") + 1
        view.insert(at, "cpu_p99_ms", frame["cpu_p99_ms"].map(lambda v: _num(v, ".3f")))
        flagged = host_interference(frame)
        view.insert(
            at + 1,
            "wall/cpu",
            [
                _num(v, ".2f") + ("!" if bad else "")
                for v, bad in zip(frame["wall_cpu_ratio"], flagged, strict=True)
            ],
        )
    if frame["mode"].isin(LOAD_MODES).any():  # under load: the tail, deadlines, the ceiling
        at = view.columns.get_loc("p99_ms") + 1
        view.insert(at, "p999_ms", frame["latency_p999_ms"].map(lambda v: _num(v, ".3f")))
        if frame["deadline_miss"].notna().any():
            view.insert(at + 1, "past_deadline", frame["deadline_miss"].map(_share))
        view["generator_max_qps"] = [
            _num(v, ",.0f") + ("!" if near else "")
            for v, near in zip(frame["generator_max_qps"], _near_ceiling(frame), strict=True)
        ]
    if (view["recall"] == view["ab_recall"]).all():
        view = view.drop(columns="ab_recall")  # shown only where the two definitions differ
    if len(frame) and (frame["status"] != "ok").any():
        view["error"] = frame["error"].fillna("")
    if "last_failure" not in frame:  # history: when each attempt was made
        view.insert(0, "at", frame["created_at"].str.slice(0, 19))
    return view.to_string(index=False)


main.add_command(datasets)
