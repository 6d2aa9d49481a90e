"""The ``annbench`` command line."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from annbench import __version__
from annbench.analysis import NOISY_SPREAD
from annbench.datasets import (
    BUILTIN,
    BUNDLED,
    DEFAULT_DATASET,
    available_datasets,
    create_synthetic,
    read_dataset,
    resolve_dataset,
    split_queries,
    write_dataset,
)
from annbench.errors import AnnbenchError
from annbench.grids import default_grid, parse_override
from annbench.index import build_param_names, search_param_names
from annbench.metrics import Metric
from annbench.paths import data_dir, results_dir
from annbench.record import MODES, RunRecord, params_label
from annbench.registry import backend_names, load_backend
from annbench.store import ResultStore


class _Group(click.Group):
    """Turns every error into one line and a non-zero exit (a traceback with --debug)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _usage_error(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _usage_error(exc) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except AnnbenchError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # a bug or an unforeseen failure: still one line
            if ctx.find_root().params.get("debug"):
                raise
            text = " ".join(str(exc).split())
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {text} (rerun with --debug for the traceback)"
            ) from None


def _usage_error(exc: click.UsageError) -> click.ClickException:
    """A usage error as one line (exit code 2), pointing at --help."""
    command = exc.ctx.command_path if exc.ctx else "annbench"
    error = click.ClickException(f"{exc.format_message()} (see '{command} --help')")
    error.exit_code = 2
    return error


def grid_option(help_text: str) -> Any:
    """The repeatable ``--grid KEY=V1,V2`` option."""
    return click.option(
        "--grid", "-g", "grid_overrides", multiple=True, metavar="KEY=V1,V2", help=help_text
    )


results_option = click.option(
    "--results",
    "results_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Results folder or .sqlite file [default: $ANNBENCH_RESULTS or results/].",
)


@click.group(cls=_Group)
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
        threads=_int_list("--threads", threads) if threads else None,
        overrides=overrides,
        build_threads=build_threads,
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
        data = read_dataset(resolve_dataset(dataset))
        with ResultStore(results_path or results_dir()) as store:
            records = store.records(data.name, with_raw=True)
        written = export_ann_benchmarks(records, data, out)
        if not written:
            raise AnnbenchError(f"No successful runs of {data.name} (this content) to export")
        click.echo(f"Wrote {len(written)} ann-benchmarks result files under {out / data.name}")
        return
    with ResultStore(results_path or results_dir()) as store:
        frame = store.dataframe(dataset)
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
    with ResultStore(results_path or results_dir()) as store:
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

    with ResultStore(results_path or results_dir()) as store:
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

    with ResultStore(results_path or results_dir()) as store:
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
    with ResultStore(results_path or results_dir()) as store:
        if measure:
            _measure_adaptively(store, data, backends, grid_overrides, k, mode, runs, min_recall)
        frame = store.dataframe(data.name)
    frame = frame[(frame["k"] == k) & (frame["mode"] == mode)]
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
    data: Any,
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


@main.group(cls=_Group)
def datasets() -> None:
    """List, inspect and create datasets (ann-benchmarks HDF5 layout)."""


@datasets.command("list")
def datasets_list() -> None:
    """Datasets in the data folder and the built-in ones."""
    folder = data_dir()
    click.echo(f"Data folder: {folder}")
    for name in available_datasets():
        stored = (folder / f"{name}.hdf5").is_file()
        note = BUILTIN[name].description if name in BUILTIN else BUNDLED.get(name, "")
        state = (
            "stored"
            if stored
            else "bundled"
            if name in BUNDLED
            else "built-in, generated on first use"
        )
        default = " (default)" if name == DEFAULT_DATASET else ""
        click.echo(f"  {name}{default}: {state}{'; ' + note if note else ''}")
    from annbench.download import STANDARD

    click.echo("Standard ann-benchmarks datasets (annbench datasets fetch NAME):")
    for name, spec in sorted(STANDARD.items()):
        state = "stored" if (folder / f"{name}.hdf5").is_file() else f"~{spec.size_mb} MB"
        click.echo(
            f"  {name}: {spec.n:,} x {spec.d}, {spec.nq:,} queries, {spec.metric.value}; {state}"
        )


@datasets.command("fetch")
@click.argument("name")
@click.option(
    "--url",
    default=None,
    help="Mirror base URL [default: $ANNBENCH_DATASET_URL or ann-benchmarks.com].",
)
def datasets_fetch(name: str, url: str | None) -> None:
    """Download a standard ann-benchmarks dataset (resumable, verified) into the data folder."""
    from annbench.download import STANDARD, fetch_standard

    spec = STANDARD.get(name)
    if spec is not None:
        click.echo(f"{name}: {spec.description}, about {spec.size_mb} MB")
    with click.progressbar(length=0, label="Downloading", file=sys.stderr) as bar:

        def progress(received: int, total: int | None) -> None:
            if total and bar.length != total:
                bar.length = total
            bar.update(received - bar.pos)

        path = fetch_standard(name, data_dir(), base_url=url, progress=progress)
    click.echo(f"Ready: {path}")


@datasets.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Name of the dataset to write in the data folder.")
@click.option("--metric", required=True, help="euclidean, angular (cosine) or dot.")
@click.option(
    "--queries",
    default=1000,
    show_default=True,
    type=int,
    help="Rows held out of the base as queries (seeded).",
)
@click.option(
    "--queries-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Take queries from this file instead of holding rows out.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Class labels of the base rows: .npy or one label per line.",
)
@click.option("--normalize", is_flag=True, help="Scale vectors to unit length.")
@click.option("--seed", default=0, show_default=True, type=int, help="Query split seed.")
@click.option("--key", default=None, help="HDF5 dataset holding the vectors.")
@click.option("--column", default=None, help="Parquet column holding the vectors.")
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
def datasets_import(
    source: Path,
    name: str,
    metric: str,
    queries: int,
    queries_file: Path | None,
    labels_path: Path | None,
    normalize: bool,
    seed: int,
    key: str | None,
    column: str | None,
    force: bool,
) -> None:
    """Import your own embeddings (.npy, .fvecs/.ivecs/.bvecs, .parquet, .hdf5) with exact
    ground truth; files larger than memory are processed in chunks."""
    from annbench.importer import import_vectors, open_vectors, read_labels

    path = _new_dataset_path(name, force)
    parsed = Metric.parse(metric)
    labels = None
    if labels_path is not None:
        labels = read_labels(labels_path, open_vectors(source, key, column).shape[0])
    stages: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in stages:
            for bar in stages.values():
                bar.render_finish()
            stages[stage] = click.progressbar(
                length=total, label=stage.capitalize(), file=sys.stderr
            )
        bar = stages[stage]
        bar.update(done - bar.pos)

    import_vectors(
        source, path, parsed, queries, queries_file, labels, normalize, seed, key, column, progress
    )
    for bar in stages.values():
        bar.render_finish()
    data = read_dataset(path)
    click.echo(
        f"Wrote {path}: {len(data.train)} base vectors, {len(data.test)} queries, "
        f"d={data.train.shape[1]}, {data.metric.value}"
    )


@datasets.command("info")
@click.argument("name")
def datasets_info(name: str) -> None:
    """Shapes, metric, hash and attributes of a dataset."""
    data = read_dataset(resolve_dataset(name, progress=click.echo))
    click.echo(f"name:       {data.name}")
    click.echo(f"file:       {data.path}")
    click.echo(f"metric:     {data.metric.value}")
    click.echo(f"base:       {len(data.train)} x {data.train.shape[1]}")
    click.echo(f"queries:    {len(data.test)}")
    click.echo(f"truth k:    {data.neighbors.shape[1]}")
    click.echo(f"labels:     {'yes' if data.train_labels is not None else 'no'}")
    click.echo(f"hash:       {data.content_hash}")
    for key, value in sorted(data.attrs.items()):
        click.echo(f"attr {key}: {value}")


@datasets.command("create")
@click.argument("name")
@click.option("--n", default=20_000, show_default=True, type=int, help="Base vectors.")
@click.option("--nq", default=1_000, show_default=True, type=int, help="Held-out queries.")
@click.option("--d", "dim", default=128, show_default=True, type=int, help="Dimension.")
@click.option("--metric", default="euclidean", show_default=True, help="euclidean, angular or dot.")
@click.option("--clusters", default=64, show_default=True, type=int, help="Gaussian clusters.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
def datasets_create(
    name: str, n: int, nq: int, dim: int, metric: str, clusters: int, seed: int, force: bool
) -> None:
    """Generate a clustered-Gaussian dataset with exact ground truth into the data folder."""
    path = _new_dataset_path(name, force)
    if clusters < 1:
        raise AnnbenchError(f"--clusters must be at least 1, got {clusters}")
    create_synthetic(path, n, nq, dim, Metric.parse(metric), clusters, seed)
    click.echo(f"Wrote {path}")


@datasets.command("embed")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Name of the dataset to write in the data folder.")
@click.option("--text-column", default="text", show_default=True, help="CSV/TSV text column.")
@click.option("--label-column", default=None, help="CSV/TSV column holding class labels.")
@click.option(
    "--model",
    default="all-MiniLM-L6-v2",
    show_default=True,
    help="sentence-transformers model name or path (a CLIP model for images).",
)
@click.option("--queries", default=1000, show_default=True, type=int, help="Held-out queries.")
@click.option("--seed", default=0, show_default=True, type=int, help="Query split seed.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--float16", is_flag=True, help="Store vectors as float16 (half the size).")
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
def datasets_embed(
    source: Path,
    name: str,
    text_column: str,
    label_column: str | None,
    model: str,
    queries: int,
    seed: int,
    batch_size: int,
    float16: bool,
    force: bool,
) -> None:
    """Embed texts (a .txt file, or CSV/TSV with a text column) or a folder of images (one
    sub-folder per class) into a labelled angular dataset. Needs the [embed] extra."""
    from annbench.embed import embed, load_corpus, model_provenance

    path = _new_dataset_path(name, force)
    corpus = load_corpus(source, text_column, label_column)
    with click.progressbar(length=len(corpus.items), label="Embedding", file=sys.stderr) as bar:
        vectors = embed(corpus, model, batch_size, progress=bar.update)
    train, test, train_labels, test_labels = split_queries(vectors, corpus.labels, queries, seed)
    attrs = {
        "source": f"{source.name}: {len(corpus.items)} {corpus.kind}s embedded by {model}",
        "command": f"annbench datasets embed {source.name} --name {name}"
        + (f" --label-column {label_column}" if label_column else "")
        + f" --queries {queries} --seed {seed}"
        + (" --float16" if float16 else ""),
        "embedding": json.dumps(model_provenance(model)),
        "label_names": json.dumps(corpus.label_names),
    }
    write_dataset(
        path, train, test, Metric.ANGULAR, train_labels, test_labels, attrs, float16=float16
    )
    click.echo(f"Wrote {path}: {len(train)} base vectors, {len(test)} queries, d={train.shape[1]}")


def _new_dataset_path(name: str, force: bool) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise AnnbenchError(f"Dataset name '{name}' must be a plain file name")
    path = data_dir() / f"{name}.hdf5"
    if path.exists() and not force:
        raise AnnbenchError(f"Dataset {path} exists; pass --force to overwrite it")
    return path


def _int_list(option: str, text: str) -> tuple[int, ...]:
    """``'1,2,4'`` -> ``(1, 2, 4)``, or a one-line error naming the option."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise AnnbenchError(
            f"{option} takes whole numbers separated by commas, got '{text}'"
        ) from None


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
            "recall": frame["recall"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}"),
            "qps": frame["qps"].map(lambda v: "" if pd.isna(v) else f"{v:,.0f}"),
            "spread": frame["qps_spread"].map(
                lambda v: "" if pd.isna(v) else f"{v:.0%}" + ("!" if v > NOISY_SPREAD else "")
            ),
            "p50_ms": frame["latency_p50_ms"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
            "p99_ms": frame["latency_p99_ms"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
            "build_s": frame["build_s"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}"),
            "index_MB": frame["index_bytes"].map(lambda v: "" if pd.isna(v) else f"{v / 1e6:.1f}"),
        }
    )
    if (frame["status"] != "ok").any():
        view["error"] = frame["error"].fillna("")
    return view.to_string(index=False)


if __name__ == "__main__":
    main()
