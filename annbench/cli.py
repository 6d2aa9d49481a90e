"""The ``annbench`` command line."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from annbench import __version__
from annbench.analysis import NOISY_SPREAD
from annbench.cli_base import AnnbenchGroup, grid_option, int_list, results_option
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
from annbench.paths import results_dir
from annbench.record import MODES, RunRecord, params_label
from annbench.registry import backend_names, load_backend
from annbench.store import ResultStore, check_not_store


@click.group(cls=AnnbenchGroup)
@click.version_option(__version__, prog_name="annbench")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(debug: bool) -> None:
    """Benchmark approximate-nearest-neighbour indexes and pick one for deployment."""


@main.command()
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
@click.option("--k", default=10, show_default=True, type=int, help="Neighbours per query.")
@grid_option("Override a grid parameter for every backend that takes it, e.g. efSearch=16,64.")
@click.option("--runs", default=3, show_default=True, type=int, help="Timed repeats per setting.")
@click.option(
    "--min-time",
    "min_seconds",
    default=1.0,
    show_default=True,
    type=float,
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
    metavar="N[,N...]",
    help="Search threads; batch mode takes several (1,2,4) to measure scaling "
    "[default: 1 single, all cores batch].",
)
@click.option("--timeout", type=float, default=None, help="Seconds a build configuration may take.")
@click.option("--memory-limit", default=None, help="Resident memory a worker may use, e.g. 8GB.")
@click.option(
    "--build-threads",
    type=int,
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
    type=int,
    help="Workers of the LocalCluster that --scheduler local starts.",
)
@click.option("--force", is_flag=True, help="Re-measure runs already in the store.")
@results_option
def run(
    backends: tuple[str, ...],
    dataset: str,
    k: int,
    grid_overrides: tuple[str, ...],
    runs: int,
    min_seconds: float,
    mode: str,
    threads: str | None,
    timeout: float | None,
    memory_limit: str | None,
    build_threads: int | None,
    scheduler: str | None,
    workers: int,
    force: bool,
    results_path: Path | None,
) -> None:
    """Build each index configuration once, sweep its search parameters, store the results."""
    from annbench.analysis import parse_bytes
    from annbench.runner import pending_runs, plan_sweep, run_sweep

    limit = parse_bytes(memory_limit) if memory_limit else None
    if timeout is not None and timeout <= 0:
        raise AnnbenchError(f"--timeout must be positive, got {timeout:g}")
    if scheduler is not None and scheduler != "local" and not scheduler.startswith("tcp://"):
        raise AnnbenchError(f"--scheduler must be 'local' or tcp://HOST:PORT, got '{scheduler}'")
    if workers < 1:
        raise AnnbenchError(f"--workers must be at least 1, got {workers}")
    names = _installed_backends() if "all" in backends else list(dict.fromkeys(backends))
    overrides = dict(parse_override(text) for text in grid_overrides)
    data = read_dataset(resolve_dataset(dataset, progress=click.echo))
    if build_threads is None and scheduler is not None:
        build_threads = 1  # one core per worker slot
    jobs = plan_sweep(
        data,
        names,
        k=k,
        mode=mode,
        runs=runs,
        threads=int_list("--threads", threads) if threads else None,
        overrides=overrides,
        build_threads=build_threads,
        min_seconds=min_seconds,
    )
    with ResultStore(results_path or results_dir()) as store:
        total = pending_runs(jobs, store, force)
        click.echo(
            f"{data.name}: {len(data.train)} x {data.train.shape[1]} {data.metric.value}, "
            f"{len(data.test)} queries; {len(jobs)} build configurations, {total} runs to measure"
        )
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            with click.progressbar(length=total, label="Measuring", file=sys.stderr) as bar:
                if scheduler is None:
                    summary = run_sweep(
                        jobs, store, force, timeout, lambda _: bar.update(1), memory_limit=limit
                    )
                else:
                    from annbench.distributed import dask_client, run_sweep_dask

                    with dask_client(scheduler, workers) as client:
                        summary = run_sweep_dask(
                            jobs, store, client, force, timeout, lambda _: bar.update(1), limit
                        )
        except KeyboardInterrupt:
            click.echo(
                f"\nInterrupted: {store.count()} results are stored in {store.path}; "
                "run the same command again to resume",
                err=True,
            )
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)
        click.echo(
            f"Stored {summary.stored} results ({summary.skipped} already stored, "
            f"{len(summary.failed)} failed) in {store.path}"
        )
        for record in summary.failed:
            click.echo(f"  failed: {_describe(record)}: {record.error}", err=True)
        frame = store.dataframe(data.name)
    shown = frame[frame["backend"].isin(names) & (frame["k"] == k) & (frame["mode"] == mode)]
    if len(shown):
        click.echo(_table(shown))


@main.command()
@click.option("--dataset", "-d", default=None, help="Only this dataset.")
@click.option("--failed", is_flag=True, help="Only failed runs.")
@click.option(
    "--history",
    is_flag=True,
    help="Every attempt, oldest first (failures, re-measures and probes included).",
)
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path), help="Write every field to CSV."
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
    export_format: str | None,
    out: Path | None,
    results_path: Path | None,
) -> None:
    """List stored results, or export them to CSV or ann-benchmarks' result files."""
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
    if csv_path is not None:
        check_not_store(csv_path, results_path or results_dir())
    with ResultStore.open_existing(results_path or results_dir()) as store:
        frame = store.dataframe(dataset, history=history)
    if failed:
        frame = frame[frame["status"] != "ok"]
        if frame.empty:
            click.echo("No failed runs stored.")
            return
    if csv_path is not None:
        frame.to_csv(csv_path, index=False)
        click.echo(f"Wrote {len(frame)} results to {csv_path}")
        return
    if frame.empty:
        click.echo("No results stored" + (f" for dataset {dataset}" if dataset else "") + ".")
        return
    click.echo(_table(frame))


@main.command()
@click.option(
    "--dataset", "-d", default=DEFAULT_DATASET, show_default=True, help="Dataset to plot."
)
@click.option("--mode", type=click.Choice(MODES), default="single", show_default=True)
@click.option(
    "--k", type=int, default=None, help="Only runs with this k [default: the most common]."
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
    """Plot recall vs queries per second, one pareto frontier per backend (or thread scaling)."""
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


@main.command("report")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder to write index.html into [default: report/ beside the store].",
)
@click.option("--dataset", "-d", default=None, help="Only this dataset.")
@click.option(
    "--latency-budget-ms",
    type=float,
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


@main.command("summary")
@click.option("--dataset", "-d", default=None, help="Only this dataset.")
@click.option(
    "--latency-budget-ms",
    type=float,
    default=None,
    help="Also report the best recall whose p99 latency fits this budget.",
)
@results_option
def summary_command(
    dataset: str | None, latency_budget_ms: float | None, results_path: Path | None
) -> None:
    """Per backend: best QPS at recall >= 0.8/0.9/0.95/0.99, with build time and memory."""
    from annbench.analysis import summary

    with ResultStore.open_existing(results_path or results_dir()) as store:
        frame = store.dataframe(dataset)
    table = summary(frame, latency_budget_ms=latency_budget_ms)
    if table.empty:
        raise AnnbenchError("No successful results stored" + (f" for {dataset}" if dataset else ""))
    for (name, mode, k), rows in table.groupby(["dataset", "mode", "k"]):
        click.echo(f"\n{name} ({mode} mode, k={k})")
        click.echo(_summary_table(rows, latency_budget_ms))


@main.command("recommend")
@click.option("--dataset", "-d", default=DEFAULT_DATASET, show_default=True)
@click.option("--min-recall", type=float, required=True, help="Recall@k the choice must reach.")
@click.option("--max-p99-ms", type=float, default=None, help="Largest p99 latency allowed (ms).")
@click.option("--max-memory", default=None, help="Largest index memory, e.g. 500MB or 2GB.")
@click.option("--max-build-s", type=float, default=None, help="Longest build time allowed (s).")
@click.option(
    "--optimize",
    type=click.Choice(["qps", "memory", "build", "latency"]),
    default="qps",
    show_default=True,
    help="What to make best among what fits.",
)
@click.option("--k", type=int, default=10, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="single", show_default=True)
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
    type=int,
    help="With --measure: repeats when re-measuring the chosen point.",
)
@results_option
def recommend_command(
    dataset: str,
    min_recall: float,
    max_p99_ms: float | None,
    max_memory: str | None,
    max_build_s: float | None,
    optimize: str,
    k: int,
    mode: str,
    measure: bool,
    backends: tuple[str, ...],
    grid_overrides: tuple[str, ...],
    runs: int,
    results_path: Path | None,
) -> None:
    """Pick the configuration that meets every constraint with the best objective."""
    from annbench.analysis import Constraints, parse_bytes, recommend

    if not 0 < min_recall <= 1:
        raise AnnbenchError(f"--min-recall must be in (0, 1], got {min_recall}")
    constraints = Constraints(
        min_recall, max_p99_ms, parse_bytes(max_memory) if max_memory else None, max_build_s
    )
    data = read_dataset(resolve_dataset(dataset, progress=click.echo))
    location = results_path or results_dir()
    with ResultStore(location) if measure else ResultStore.open_existing(location) as store:
        if measure:
            _measure_adaptively(store, data, backends, grid_overrides, k, mode, runs, min_recall)
        frame = store.dataframe(data.name)
    # only runs on exactly this content: a regenerated dataset of the same name does not count
    frame = frame[(frame["k"] == k) & (frame["mode"] == mode)]
    frame = frame[frame["dataset_hash"] == data.content_hash]
    result = recommend(frame, constraints, optimize)
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
) -> None:
    from annbench.runner import adaptive_jobs, pending_runs, plan_sweep, run_sweep

    names = list(dict.fromkeys(backends)) if backends else _installed_backends()
    overrides = dict(parse_override(text) for text in grid_overrides)
    jobs = plan_sweep(data, names, k=k, mode=mode, runs=runs, overrides=overrides)
    jobs = adaptive_jobs(jobs, target)
    total = pending_runs(jobs, store)
    click.echo(f"Measuring: {len(jobs)} build configurations, at most {total} runs")
    with click.progressbar(length=total, label="Searching", file=sys.stderr) as bar:
        summary = run_sweep(jobs, store, progress=lambda _: bar.update(1))
    click.echo(f"Measured {summary.stored} runs ({len(summary.failed)} failed)")


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


@main.command()
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


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops a sweep as Ctrl-C does: workers killed, stored results kept."""
    raise KeyboardInterrupt


def _describe(record: RunRecord) -> str:
    return (
        f"{record.backend} [{params_label(record.build_params)}] "
        f"[{params_label(record.search_params)}]"
    )


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
            "build": frame["build_params"].map(params_label),
            "search": frame["search_params"].map(params_label),
            "k": frame["k"],
            "mode": frame["mode"],
            "status": frame["status"],
            "recall": frame["recall"].map(lambda v: _num(v, ".4f")),
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
    if len(frame) and (frame["status"] != "ok").any():
        view["error"] = frame["error"].fillna("")
    if "last_failure" not in frame:  # history: when each attempt was made
        view.insert(0, "at", frame["created_at"].str.slice(0, 19))
    return view.to_string(index=False)


main.add_command(datasets)

if __name__ == "__main__":
    main()
