"""The ``annbench`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from annbench import __version__
from annbench import cli_types as types
from annbench.analysis import NOISY_SPREAD
from annbench.cli_base import AnnbenchGroup, grid_option, results_option
from annbench.cli_datasets import datasets
from annbench.datasets import (
    DEFAULT_DATASET,
    Dataset,
    read_dataset,
    resolve_dataset,
)
from annbench.errors import AnnbenchError
from annbench.grids import default_grid, parse_override
from annbench.index import build_param_names, search_param_names
from annbench.measure import MIN_SECONDS
from annbench.paths import results_dir
from annbench.record import MODES, PLAIN, params_label
from annbench.registry import backend_names, load_backend
from annbench.store import ResultStore, check_not_store
from annbench.workloads import BadFilter, check_filter, parse_filters, workload_hash

quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress display (errors and results still shown)."
)


@click.group(
    cls=AnnbenchGroup,
    epilog="""\b
Examples:
  annbench run -b hnswlib -b faiss-ivf -d tiny
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
  annbench run -b hnswlib -d tiny -g M=16 -g ef=16,64,256 --runs 5
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
    help="single: one query per call on one thread (latency); batch: all queries per call.",
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
    "range:ATTRIBUTE:0.1 or none (unfiltered); repeat for several [default: none].",
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
    threads: tuple[int, ...] | None,
    timeout: float | None,
    memory_limit: float | None,
    build_threads: int | None,
    scheduler: str | None,
    workers: int,
    filters: tuple[str, ...],
    force: bool,
    quiet: bool,
    results_path: Path | None,
) -> None:
    """Build each index configuration once, sweep its search parameters, store the results."""
    from annbench import api

    if scheduler is not None and scheduler != "local" and not scheduler.startswith("tcp://"):
        raise AnnbenchError(f"--scheduler must be 'local' or tcp://HOST:PORT, got '{scheduler}'")
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
    for row in frame[frame["status"] != "ok"].itertuples():
        click.echo(
            f"  failed: {row.backend} [{params_label(_params(row.build_params))}] "
            f"[{params_label(_params(row.search_params))}]: {row.error}",
            err=True,
        )
    if len(frame):
        click.echo(_table(frame))


@main.command(
    epilog="""\b
Examples:
  annbench results -d tiny
  annbench results --failed
  annbench results --csv runs.csv --parquet runs.parquet
  annbench results --export ann-benchmarks -d tiny --out ab-results
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
    type=click.Path(path_type=Path),
    help="Write every field to CSV (a column per parameter, dicts as JSON).",
)
@click.option(
    "--parquet",
    "parquet_path",
    type=click.Path(path_type=Path),
    help="Write the same columns to a parquet file (needs pyarrow).",
)
@click.option(
    "--export",
    "export_format",
    type=click.Choice(["ann-benchmarks"]),
    default=None,
    help="Write per-run files in another tool's layout (needs --dataset and --out).",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder for --export.")
@results_option
def results(
    dataset: str | None,
    failed: bool,
    history: bool,
    csv_path: Path | None,
    parquet_path: Path | None,
    export_format: str | None,
    out: Path | None,
    results_path: Path | None,
) -> None:
    """List stored results, or export them to CSV, parquet or ann-benchmarks' result files.

    Where they differ, both recalls are listed: annbench's (ids, ties counted) and
    ann-benchmarks' (distance threshold)."""
    from annbench import api

    if export_format is not None:
        from annbench.export import export_ann_benchmarks

        if dataset is None or out is None:
            raise AnnbenchError("--export ann-benchmarks needs --dataset NAME and --out DIR")
        check_not_store(out, results_path or results_dir())
        data = read_dataset(resolve_dataset(dataset))
        with ResultStore.open_existing(results_path or results_dir()) as store:
            records = store.records(data.name, with_raw=True)
        written = export_ann_benchmarks(records, data, out)
        if not written:
            raise AnnbenchError(f"No successful runs of {data.name} (this content) to export")
        click.echo(f"Wrote {len(written)} ann-benchmarks result files under {out / data.name}")
        return
    for output in (csv_path, parquet_path):
        if output is not None:
            check_not_store(output, results_path or results_dir())
    frame = api.load_results(results_path, dataset, history=history)
    if failed:
        frame = frame[frame["status"] != "ok"]
        if frame.empty:
            click.echo("No failed runs stored.")
            return
    if csv_path is not None or parquet_path is not None:
        if csv_path is not None:
            frame.to_csv(csv_path, index=False)
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
  annbench plot -d tiny --out tiny.png
  annbench plot -d tiny --mode batch --k 10
  annbench plot -d tiny --threads
"""
)
@click.option(
    "--dataset", "-d", default=DEFAULT_DATASET, show_default=True, help="Dataset to plot."
)
@click.option("--mode", type=click.Choice(MODES), default="single", show_default=True)
@click.option(
    "--k", type=types.K, default=None, help="Only runs with this k [default: the most common]."
)
@click.option(
    "--threads",
    "scaling",
    is_flag=True,
    help="Plot QPS vs search threads (batch runs measured with --threads 1,2,...).",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="PNG file to write.")
@results_option
def plot(
    dataset: str,
    mode: str,
    k: int | None,
    scaling: bool,
    out: Path | None,
    results_path: Path | None,
) -> None:
    """Plot recall vs queries per second as a PNG for papers, one pareto frontier per backend
    (or thread scaling); the interactive plots are in 'annbench report'."""
    from annbench.plot import recall_qps_figure, save_png, threads_figure

    mode = "batch" if scaling else mode
    if out is not None:
        check_not_store(out, results_path or results_dir())
    with ResultStore.open_existing(results_path or results_dir()) as store:
        frame = store.dataframe(dataset)
        store_path = store.path
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


@main.command(
    "report",
    epilog="""\b
Examples:
  annbench report
  annbench report -d tiny --out site --latency-budget-ms 0.5
  annbench report --neighbours --queries 3,17,42
""",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
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
@results_option
def report_command(
    out: Path | None, dataset: str | None, latency_budget_ms: float, results_path: Path | None
) -> None:
    """Write a self-contained HTML report (plots, summaries, every run); works from file://."""
    from annbench.report import write_report

    if out is not None:
        check_not_store(out, results_path or results_dir())
    with ResultStore.open_existing(results_path or results_dir()) as store:
        frame = store.dataframe(dataset)
        store_path = store.path
    if frame.empty:
        raise AnnbenchError("No results stored" + (f" for dataset {dataset}" if dataset else ""))
    path = write_report(frame, out or store_path.parent / "report", latency_budget_ms)
    click.echo(f"Wrote {path}")


@main.command(
    "summary",
    epilog="""\b
Examples:
  annbench summary
  annbench summary -d tiny --latency-budget-ms 0.5
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
    memory (filtered workloads show their selectivity)."""
    from annbench import api

    frame = api.load_results(results_path, dataset)
    if filters:
        frame = frame[frame["workload"].isin(_workloads(filters))]
    table = api.summary(frame, latency_budget_ms)
    if table.empty:
        raise AnnbenchError("No successful results stored" + (f" for {dataset}" if dataset else ""))
    for (name, workload, mode, k), rows in table.groupby(["dataset", "workload", "mode", "k"]):
        selectivity = rows["selectivity"].iloc[0]
        shown = "" if workload == PLAIN else f", filter {workload}, selectivity {selectivity:.3g}"
        click.echo(f"\n{name} ({mode} mode, k={k}{shown})")
        click.echo(_summary_table(rows, latency_budget_ms))


@main.command(
    "recommend",
    epilog="""\b
Examples:
  annbench recommend --min-recall 0.95
  annbench recommend -d tiny --min-recall 0.9 --max-p99-ms 1 --max-memory 500MB
  annbench recommend --min-recall 0.99 --optimize memory --measure -b hnswlib
""",
)
@click.option("--dataset", "-d", default=DEFAULT_DATASET, show_default=True)
@click.option(
    "--min-recall", type=types.RECALL, required=True, help="Recall@k the choice must reach."
)
@click.option(
    "--max-p99-ms", type=types.MILLISECONDS, default=None, help="Largest p99 latency allowed (ms)."
)
@click.option(
    "--max-memory", type=types.SIZE, default=None, help="Largest index memory, e.g. 500MB or 2GB."
)
@click.option(
    "--max-build-s", type=types.SECONDS, default=None, help="Longest build time allowed (s)."
)
@click.option(
    "--optimize",
    type=click.Choice(["qps", "memory", "build", "latency"]),
    default="qps",
    show_default=True,
    help="What to make best among what fits.",
)
@click.option("--k", type=types.K, default=10, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="single", show_default=True)
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
    help="First measure what is missing: bisect each build configuration's search "
    "parameter for the recall target, then re-measure the chosen point.",
)
@click.option(
    "--backend",
    "-b",
    "backends",
    multiple=True,
    help="With --measure: backends to search [default: all].",
)
@grid_option("With --measure: grid overrides, as for run.")
@click.option(
    "--runs",
    default=3,
    show_default=True,
    type=types.RUNS,
    help="With --measure: repeats when re-measuring the chosen point.",
)
@results_option
def recommend_command(
    dataset: str,
    min_recall: float,
    max_p99_ms: float | None,
    max_memory: float | None,
    max_build_s: float | None,
    optimize: str,
    k: int,
    mode: str,
    filter_spec: str,
    measure: bool,
    backends: tuple[str, ...],
    grid_overrides: tuple[str, ...],
    runs: int,
    results_path: Path | None,
) -> None:
    """Pick the configuration that meets every constraint with the best objective."""
    from annbench import api

    data = read_dataset(resolve_dataset(dataset, progress=click.echo))
    workloads = _workloads((filter_spec,), data)
    if len(workloads) != 1:
        raise click.BadParameter("give one workload, e.g. range:0.01", param_hint="--filter")
    location = results_path or results_dir()
    with ResultStore(location) if measure else ResultStore.open_existing(location) as store:
        if measure:
            _measure_adaptively(
                store, data, backends, grid_overrides, k, mode, runs, min_recall, workloads
            )
        frame = store.dataframe(data.name)
    # only runs on exactly this content: a regenerated dataset of the same name does not count
    frame = frame[(frame["k"] == k) & (frame["mode"] == mode)]
    frame = frame[frame["workload"] == workloads[0]]
    wanted = data.content_hash if workloads[0] == PLAIN else workload_hash(data, workloads[0])
    frame = frame[frame["dataset_hash"] == wanted]
    result = api.recommend(
        frame,
        min_recall,
        max_p99_ms=max_p99_ms,
        max_memory=max_memory,
        max_build_s=max_build_s,
        optimize=optimize,
    )
    if result.choice is None:
        click.echo(f"Nothing stored for {data.name} (k={k}, {mode} mode) meets the constraints.")
        if result.closest is not None and len(result.closest):
            click.echo("Closest points:")
            for _, row in result.closest.iterrows():
                click.echo(
                    f"  {row['config']}: recall {row['recall']:.4f}, "
                    f"{row['qps']:,.0f} QPS - breaks {row['violations']}"
                )
        click.echo("Measure more with --measure, or relax a constraint.")
        sys.exit(2)
    choice = result.choice
    noisy = "  [noisy: wide spread across repeats]" if choice["noisy"] else ""
    click.echo(f"Recommended: {choice['config']}")
    click.echo(
        f"  recall {choice['recall']:.4f}, {choice['qps']:,.0f} QPS, "
        f"p99 {_num(choice['latency_p99_ms'], '.3f')} ms, "
        f"memory {choice['memory_footprint'] / 1e6:.1f} MB, build {choice['build_s']:.2f} s{noisy}"
    )
    click.echo(
        f"  best {optimize} of {result.candidates} stored configurations meeting every constraint"
    )
    for reason in result.binding:
        click.echo(f"  bound by {reason}")
    if len(result.runners_up):
        click.echo("Runners-up:")
        for _, row in result.runners_up.iterrows():
            click.echo(
                f"  {row['config']}: recall {row['recall']:.4f}, {row['qps']:,.0f} QPS, "
                f"memory {row['memory_footprint'] / 1e6:.1f} MB"
            )


def _measure_adaptively(
    store: ResultStore,
    data: Dataset,
    backends: tuple[str, ...],
    grid_overrides: tuple[str, ...],
    k: int,
    mode: str,
    runs: int,
    target: float,
    workloads: list[str],
) -> None:
    from annbench.runner import adaptive_jobs, pending_runs, plan_sweep, run_sweep

    names = list(dict.fromkeys(backends)) if backends else _installed_backends()
    overrides = dict(parse_override(text) for text in grid_overrides)
    jobs = plan_sweep(
        data, names, k=k, mode=mode, runs=runs, overrides=overrides, workloads=workloads
    )
    jobs = adaptive_jobs(jobs, target)
    total = pending_runs(jobs, store)
    click.echo(f"Measuring: {len(jobs)} build configurations, at most {total} runs")
    with click.progressbar(length=total, label="Searching", file=sys.stderr) as bar:
        summary = run_sweep(jobs, store, progress=lambda _: bar.update(1))
    click.echo(f"Measured {summary.stored} runs ({len(summary.failed)} failed)")


def _workloads(specs: tuple[str, ...], data: Dataset | None = None) -> list[str]:
    """Workload names of ``--filter`` values, checked against ``data``: a bad spec is a usage
    error (exit code 2)."""
    try:
        workloads = parse_filters(specs)
        for workload in workloads if data is not None else ():
            check_filter(data, workload)
    except BadFilter as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    return workloads


def _installed_backends() -> list[str]:
    """Registered backends whose library is installed."""
    names = []
    for name in backend_names():
        try:
            load_backend(name)
        except AnnbenchError:
            continue
        names.append(name)
    return names


@main.command(
    epilog="""\b
Examples:
  annbench backends
  annbench run -b all -d tiny
"""
)
def backends() -> None:
    """List registered backends with their metrics and parameters."""
    for name in backend_names():
        try:
            cls = load_backend(name)
        except AnnbenchError as exc:
            click.echo(f"{name:12s} unavailable: {exc}")
            continue
        metrics = ",".join(sorted(m.value for m in cls.metrics))
        build = ",".join(build_param_names(cls)) or "-"
        search = ",".join(search_param_names(cls)) or "-"
        click.echo(f"{name:12s} metrics={metrics}  build: {build}  search: {search}")
        try:
            grid = default_grid(name)
            click.echo(f"{'':12s} default grid: build {grid.build} search {grid.search}")
        except AnnbenchError as exc:
            click.echo(f"{'':12s} {exc}")


def _params(value: Any) -> dict[str, Any]:
    """A parameter dict, whether the frame holds dicts or their JSON text."""
    from annbench.columns import as_dict

    return as_dict(value)


def _num(value: Any, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def _spread(value: Any) -> str:
    """QPS spread as a percentage, with ``!`` when the run is noisy."""
    text = _num(value, ".0%")
    return text + "!" if text and value > NOISY_SPREAD else text


def _summary_table(rows: pd.DataFrame, latency_budget_ms: float | None) -> str:
    from annbench.analysis import RECALL_LEVELS

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


def _table(frame: pd.DataFrame) -> str:
    view = pd.DataFrame(
        {
            "dataset": frame["dataset"],
            "backend": frame["backend"],
            "build": frame["build_params"].map(lambda p: params_label(_params(p))),
            "search": frame["search_params"].map(lambda p: params_label(_params(p))),
            "k": frame["k"],
            "mode": frame["mode"],
            "status": frame["status"],
            "recall": frame["recall"].map(lambda v: _num(v, ".4f")),
            "ab_recall": frame["ann_benchmarks_recall"].map(lambda v: _num(v, ".4f")),
            "qps": frame["qps"].map(lambda v: _num(v, ",.0f")),
            "spread": frame["qps_spread"].map(_spread),
            "p50_ms": frame["latency_p50_ms"].map(lambda v: _num(v, ".3f")),
            "p99_ms": frame["latency_p99_ms"].map(lambda v: _num(v, ".3f")),
            "build_s": frame["build_s"].map(lambda v: _num(v, ".2f")),
            "index_MB": (frame["index_bytes"] / 1e6).map(lambda v: _num(v, ".1f")),
        }
    )
    if "last_failure" in frame and frame["last_failure"].notna().any():
        view["last_failure"] = frame["last_failure"].fillna("")
    if "probe" in frame and frame["probe"].any():
        view["probe"] = frame["probe"].map(lambda v: "probe" if v else "")
    if len(frame) and (frame["workload"] != PLAIN).any():
        view.insert(2, "workload", frame["workload"])
        view.insert(3, "selectivity", frame["selectivity"].map(lambda v: _num(v, ".3g")))
    if (view["recall"] == view["ab_recall"]).all():
        view = view.drop(columns="ab_recall")  # shown only where the two definitions differ
    if len(frame) and (frame["status"] != "ok").any():
        view["error"] = frame["error"].fillna("")
    if "last_failure" not in frame:  # history: when each attempt was made
        view.insert(0, "at", frame["created_at"].str.slice(0, 19))
    return view.to_string(index=False)


main.add_command(datasets)

if __name__ == "__main__":
    main()
