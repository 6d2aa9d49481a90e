"""``annbench results``, ``plot`` and ``summary``: stored results listed, exported, plotted
and summarised."""

from __future__ import annotations

from pathlib import Path

import click

from annbench.cli import types
from annbench.cli.base import filter_workloads, results_option
from annbench.cli.tables import engine_table, num, results_table, runbook_table, summary_table
from annbench.data.datasets import DEFAULT_DATASET
from annbench.errors import AnnbenchError, BadUsage
from annbench.paths import output_file
from annbench.record import PLAIN


@click.command(
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
        if dataset is None or out is None:
            raise BadUsage("--export ann-benchmarks needs --dataset NAME and --out DIR")
        exported = api.export_results(dataset, out, results_path)
        click.echo(
            f"Wrote {len(exported.files)} ann-benchmarks result files under {exported.folder}"
        )
        note = exported.left_out_note()
        if note:
            click.echo(note[0].upper() + note[1:])
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
    click.echo(results_table(frame))


@click.command(
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

    path = api.plot_results(
        dataset, results_path, mode=mode, k=k, threads=scaling, runbook=runbook, out=out
    )
    click.echo(f"Wrote {path}")


def _png(path: Path | None) -> Path | None:
    """``--out`` of plot: a .png file (the only format it writes), or a usage error."""
    if path is not None and path.suffix.lower() != ".png":
        raise click.BadParameter(
            f"{path} does not end in .png; plot writes PNG files (give e.g. {path.stem}.png)",
            param_hint="--out",
        )
    return path


@click.command(
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
        frame = frame[frame["workload"].isin(filter_workloads(filters))]
    table = api.summary(frame, latency_budget_ms)
    runbooks = api.runbook_summary(frame)
    serving = api.serving_summary(frame)
    engines = api.engine_comparison(frame)
    if table.empty and runbooks.empty and serving.empty:
        where = f" for {dataset}" if dataset else ""
        if filters:
            where += f" under {', '.join(filter_workloads(filters))}"
        raise AnnbenchError(f"No successful results stored{where}")
    groups = table.groupby(["dataset", "workload", "mode", "k"]) if len(table) else ()
    for (name, workload, mode, k), rows in groups:
        selectivity = rows["selectivity"].iloc[0]
        shown = "" if workload == PLAIN else f", filter {workload}, selectivity {selectivity:.3g}"
        click.echo(f"\n{name} ({mode} mode, k={k}{shown})")
        click.echo(summary_table(rows, latency_budget_ms))
    for (name, runbook, mode, k), rows in (
        runbooks.groupby(["dataset", "runbook", "mode", "k"]) if len(runbooks) else ()
    ):
        click.echo(f"\n{name}, runbook {runbook} ({mode} mode, k={k})")
        click.echo(runbook_table(rows))
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
        view["recall"] = view["recall"].map(lambda v: num(v, ".4f"))
        view["saturation_qps"] = view["saturation_qps"].map(lambda v: num(v, ",.0f"))
        view = view.dropna(axis=1, how="all").fillna("")  # points other rows were measured at
        click.echo(view.to_string(index=False))
    if len(engines):
        click.echo("\nEach database beside the library it is built on (best QPS at each recall):")
        click.echo(engine_table(engines))
