"""The public Python API: what a notebook needs, and what the command line calls.

>>> import annbench
>>> frame = annbench.run(["hnswlib", "faiss-ivf"], dataset="tiny", runs=1)  # doctest: +SKIP
>>> annbench.summary(frame)  # doctest: +SKIP

Results come back as pandas DataFrames with one row per run, one column per field, and the
build and search parameters flattened into columns of their own (``build.M``,
``search.ef``); the whole parameter dicts are kept as JSON text (``build_params``,
``search_params``, ``provenance``), so CSV and parquet exports carry the same columns.
"""

from __future__ import annotations

import ast
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annbench.errors import AnnbenchError, BadUsage
from annbench.results.columns import JSON_COLUMNS, as_dict, flatten, with_dicts
from annbench.sweep.load import LoadOptions
from annbench.sweep.measure import MIN_SECONDS

if TYPE_CHECKING:
    import pandas as pd

    from annbench.data.format import Dataset
    from annbench.progress import Progress
    from annbench.report.export import Exported
    from annbench.results.analysis import Recommendation
    from annbench.scaling.curves import SizedPick

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C or SIGTERM; what was measured before is stored."""

    def __init__(self, stored: int, path: Path, total: int | None = None) -> None:
        in_all = "" if total is None else f" ({total} in all)"
        super().__init__(
            f"Interrupted: {stored} new results stored in {path}{in_all}; run the same sweep "
            "again to resume"
        )
        self.stored, self.path = stored, path


def load_results(
    path: str | Path | None = None,
    dataset: str | None = None,
    history: bool = False,
    *,
    raw: bool = False,
) -> pd.DataFrame:
    """Stored results as a DataFrame (parameters as ``build.*``/``search.*`` columns) from the
    store at ``path`` (folder or .sqlite file; default ``$ANNBENCH_RESULTS`` or results/),
    optionally of one dataset (by name or path; results of the same content stored under
    another name are included, named ``dataset``); ``history=True`` gives every attempt, not
    only the latest. ``raw=True``: the store's own columns (parameters as dicts)."""
    from annbench.results.store import ResultStore

    content = dataset_content_hash(dataset) if dataset is not None else None
    name = Path(dataset).stem if dataset is not None and _is_path(dataset) else dataset
    with ResultStore.open_existing(_store_path(path)) as store:
        frame = store.dataframe(name, history=history, content_hash=content)
    return frame if raw else flatten(frame)


def _is_path(spec: str) -> bool:
    """Whether a dataset ``spec`` is a file path rather than a name (as resolve_dataset reads
    it); results store such a dataset under its file's stem."""
    return Path(spec).suffix in (".hdf5", ".h5") or os.sep in spec


def dataset_content_hash(name_or_path: str | Path) -> str | None:
    """The content hash of the dataset ``name_or_path`` names when its file is here already
    (nothing is generated or downloaded): what results are keyed on, so results measured on
    the same content under another name are found too. None when there is no such file."""
    from annbench.data.catalog import BUNDLED, resolve_dataset
    from annbench.data.fingerprint import fingerprint
    from annbench.paths import data_dir

    spec = str(name_or_path)
    if not (_is_path(spec) or spec in BUNDLED or (data_dir() / f"{spec}.hdf5").is_file()):
        return None
    try:
        return fingerprint(resolve_dataset(spec)).content
    except AnnbenchError:
        return None


def load_dataset(name_or_path: str | Path) -> Dataset:
    """A dataset by name (``annbench datasets list``) or HDF5 path, with its vectors
    (``train`` (n, d), ``test`` (nq, d)), exact ground truth, labels and attributes."""
    from annbench.data.catalog import resolve_dataset
    from annbench.data.format import read_dataset

    return read_dataset(resolve_dataset(str(name_or_path), progress=log.info))


def run(
    backends: str | Sequence[str],
    dataset: str | Path | None = None,
    k: int = 10,
    grid: Mapping[str, Any] | Iterable[str] | None = None,
    runs: int = 3,
    min_time: float = MIN_SECONDS,
    mode: str = "single",
    threads: int | Sequence[int] | None = None,
    timeout: float | None = None,
    memory_limit: str | float | None = None,
    build_threads: int | None = None,
    scheduler: str | None = None,
    workers: int = 2,
    force: bool = False,
    results: str | Path | None = None,
    progress: bool | Progress = True,
    filters: str | Sequence[str] | None = None,
    runbook: str | Path | None = None,
    clients: int | Sequence[int] | None = None,
    rates: float | str | Sequence[float | str] | None = None,
    load: LoadOptions | None = None,
    sizes: str | Sequence[int | str] | None = None,
) -> pd.DataFrame:
    """Build each index configuration once in its own worker process, sweep its search
    parameters, store every record; returns the records of this sweep (already stored ones
    included unless ``force``) as a DataFrame.

    ``backends``: names or ``"all"``; ``grid``: overrides for every backend that takes the key,
    ``{"ef": [16, 64], "M": 16}`` or ``["ef=16,64"]``; ``min_time``: seconds a setting's timed
    repeats must add up to; ``threads``: search threads (several in batch mode);
    ``memory_limit``: bytes or ``"8GB"``; ``scheduler``: ``"local"`` or ``tcp://HOST:PORT``
    for Dask; ``progress``: a bar (True), nothing (False) or an ``annbench.progress.Progress``;
    ``filters``: filter workloads to sweep (``"label"``, ``"range:0.01,0.1"``, ``"none"`` for
    the unfiltered sweep; see ``annbench.data.workloads``), each swept separately.
    ``runbook``: replay this runbook (a shipped name or a YAML file) of inserts, deletes and
    searches per build configuration instead of one static build (one record per step).
    ``mode="concurrent"``: each setting under each of ``clients`` closed-loop clients (default
    1, 2, 4); ``mode="rate"``: at each of ``rates``, queries per second or shares of the
    measured saturation (``"50%"``), paced by ``clients`` clients; ``load``
    (``LoadOptions``): how long each load run lasts, the arrival schedule, a deadline.
    ``sizes``: a size ladder, each configuration built and swept on nested subsets of the
    base, ``"1/16,1/8,1/4,1/2,1"`` or counts (``[62500, "250k"]``); see ``annbench.scale``.

    Scripts must call it under ``if __name__ == "__main__":`` (workers are spawned and import
    the script again); notebooks need nothing.
    """
    from annbench.data.catalog import DEFAULT_DATASET, resolve_dataset
    from annbench.data.format import read_dataset
    from annbench.data.workloads import canonical_workloads, parse_filters, prepare_workloads
    from annbench.progress import as_progress, counting, notice
    from annbench.record import params_label
    from annbench.results.store import ResultStore
    from annbench.sweep.runner import job_records, pending_runs, plan_sweep

    check_spawn_safe()
    workloads = parse_filters([filters] if isinstance(filters, str) else filters or [])
    names = _backend_names(backends)
    limit = _memory_limit(memory_limit)
    _check_positive("timeout", timeout)
    if scheduler is not None:
        from annbench.sweep.distributed import check_scheduler_address

        check_scheduler_address(scheduler)
    if not isinstance(workers, int) or workers < 1:
        raise AnnbenchError(f"workers must be a whole number of at least 1, got {workers}")
    given = as_progress(progress)
    tell = given.message if given is not None else notice
    data = read_dataset(
        resolve_dataset(str(DEFAULT_DATASET if dataset is None else dataset), progress=tell)
    )
    workloads = canonical_workloads(data, workloads)  # range:ATTR:0.1 is range:0.1 on ATTR
    if build_threads is None and scheduler is not None:
        build_threads = 1  # one core per worker slot
    plan = None
    if runbook is not None and any(w != "plain" for w in workloads):
        raise BadUsage(
            "--runbook and --filter measure different workloads; run them as separate sweeps"
        )
    if runbook is not None:
        from annbench.data.runbooks import prepare_runbook

        with counting(given, "runbook ground truth", "search step") as step:
            plan, computed = prepare_runbook(data, str(runbook), progress=step)
        if computed:
            log.info("computed the ground truth of runbook %s", plan.runbook.name)
    else:  # every missing filter ground truth computed, then written in one pass
        prepare_workloads(data, workloads, progress=tell)
    ladder = None
    if sizes is not None:
        from annbench.data.subsets import check_ladder_workload, parse_sizes, prepare_sizes

        check_ladder_workload(workloads, runbook)
        ladder = parse_sizes(sizes, len(data.train), k)
        prepare_sizes(data, ladder, progress=tell)
    jobs = plan_sweep(
        data,
        names,
        k=k,
        mode=mode,
        runs=runs,
        threads=threads if threads is None or isinstance(threads, int) else tuple(threads),
        overrides=_grid_overrides(grid),
        build_threads=build_threads,
        min_seconds=min_time,
        workloads=workloads,
        runbook=plan,
        memory_limit=limit,
        clients=(clients,) if isinstance(clients, int) else clients,
        rates=(rates,) if isinstance(rates, (int, float, str)) else rates,
        load=load,
        sizes=ladder,
    )
    keys = {r.key for job in jobs for r in job_records(job)}
    with ResultStore(_store_path(results)) as store:
        total = pending_runs(jobs, store, force)
        before = store.count()
        header = (
            f"{data.name}: {len(data.train)} x {data.train.shape[1]} {data.metric.value}, "
            f"{len(data.test)} queries; {len(jobs)} build configurations, "
            f"{total} runs to measure"
        )
        if ladder is not None:
            header += f"; base sizes {', '.join(f'{m:,}' for m in ladder)}"
        log.info(header)
        with _stop_on_sigterm(), _display(given, total) as shown:
            shown.message(header)
            try:
                if scheduler is None:
                    from annbench.sweep.runner import run_sweep

                    summary = run_sweep(
                        jobs,
                        store,
                        force,
                        timeout,
                        lambda _: shown.update(1),
                        memory_limit=limit,
                        status=shown.status,
                    )
                else:
                    from annbench.sweep.distributed import dask_client, run_sweep_dask

                    shown.status(f"{len(jobs)} build configurations dispatched to Dask")
                    with dask_client(scheduler, workers) as client:
                        summary = run_sweep_dask(
                            jobs, store, client, force, timeout, lambda _: shown.update(1), limit
                        )
            except KeyboardInterrupt:
                now = store.count()
                raise Interrupted(now - before, store.path, now) from None
        for record in summary.failed:
            log.info(
                "failed: %s [%s] [%s]: %s",
                record.backend,
                params_label(record.build_params),
                params_label(record.search_params),
                record.error,
            )
        if summary.failed:
            log.warning(
                "%d runs failed; their reasons are in the status and error columns",
                len(summary.failed),
            )
        frame = store.dataframe(data.name, content_hash=data.content_hash)
        store_path = store.path
    frame = flatten(_by_key(frame, keys))
    frame.attrs["sweep"] = {
        "stored": summary.stored,
        "skipped": summary.skipped,
        "failed": len(summary.failed),
        "store": str(store_path),
    }
    return frame


def pareto_frontier(frame: pd.DataFrame, x: str = "recall", y: str = "qps") -> pd.DataFrame:
    """Successful runs not beaten on both ``x`` and ``y`` (higher is better for both), by
    ascending ``x``; one frontier over every row given (group by backend for one each)."""
    from annbench.results.analysis import pareto_frontier as frontier
    from annbench.results.analysis import successful

    ok = successful(with_dicts(frame))
    return flatten(frontier(ok, x, y)) if len(ok) else flatten(ok)


def summary(frame: pd.DataFrame, latency_budget_ms: float | None = None) -> pd.DataFrame:
    """Per dataset, backend, mode and k: best QPS at recall 0.8/0.9/0.95/0.99 with that
    point's build time, memory and configuration; with a budget, the best recall whose p99
    latency fits it."""
    from annbench.results.analysis import summary as summarize
    from annbench.results.runbook_analysis import without_runbooks

    return summarize(with_dicts(without_runbooks(frame)), latency_budget_ms=latency_budget_ms)


def serving_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration measured in concurrent or rate mode, and core count: recall,
    saturation throughput, and achieved QPS / p99 ms at each client count or offered rate."""
    from annbench.results.analysis import serving_summary as summarize

    return summarize(with_dicts(frame))


def engine_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Each database backend beside the library it is built on (its ``engine``), wherever
    both were measured alike: at recall 0.9 and 0.95, the best QPS of each, their ratio,
    recall, p99, memory and build time (see ``annbench.results.analysis.engine_comparison``)."""
    from annbench.registry import database_engines
    from annbench.results.analysis import engine_comparison as compare

    engines = database_engines(frame["backend"]) if len(frame) else {}
    return compare(with_dicts(frame), engines)


def runbook_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per runbook, configuration and search setting: the worst recall over the runbook's
    search steps (and its step), recall and QPS at the last step, median QPS, inserts and
    deletes per second after the initial build, rebuilds and the initial build time."""
    from annbench.results.runbook_analysis import runbook_summary as summarize

    return summarize(with_dicts(frame))


def recommend(
    frame: pd.DataFrame,
    min_recall: float | None = None,
    max_p99_ms: float | None = None,
    max_memory: str | float | None = None,
    max_build_s: float | None = None,
    optimize: str | None = None,
    max_latency_ms: float | None = None,
    at_qps: float | None = None,
) -> Recommendation:
    """The configuration meeting every constraint with the best ``optimize`` objective
    (``recall``, ``qps``, ``memory``, ``build`` or ``latency``; default ``qps`` given
    ``min_recall``, else ``recall``), its runners-up and what bound the choice; ``choice`` is
    None (and ``closest`` lists the misses nearest the budget) when nothing fits. The same
    choice as ``annbench recommend`` (``annbench.recommender.recommend_index`` also
    measures).

    With ``at_qps`` (queries per second, with ``max_p99_ms``): the choice among the frame's
    rate-mode rows, each configuration judged at the lowest offered rate measured at or
    above ``at_qps`` and only if it kept up (default objective: recall); its ``rate``,
    ``clients`` and ``cores`` say what its figures were measured at
    (``annbench.recommend_load``).

    Examples:
        >>> import annbench
        >>> frame = annbench.load_results(dataset="tiny")  # doctest: +SKIP
        >>> annbench.recommend(frame, max_p99_ms=1, at_qps=2000).choice  # doctest: +SKIP
    """
    from annbench.recommender import default_objective
    from annbench.results.analysis import OBJECTIVES, Constraints
    from annbench.results.analysis import recommend as choose

    if min_recall is not None and not 0 < min_recall <= 1:
        raise AnnbenchError(f"min_recall must be in (0, 1], got {min_recall}")
    if at_qps is not None and "mode" in frame:
        frame = frame[frame["mode"] == "rate"]
    _check_comparable(frame)
    constraints = Constraints(
        min_recall, max_p99_ms, _memory_limit(max_memory), max_build_s, max_latency_ms
    )
    if at_qps is not None:
        from annbench.recommend_load import check_at_rate, recommend_at
        from annbench.sweep.load import available_cores

        optimize = optimize or "recall"
        check_at_rate(constraints, optimize, at_qps)
    optimize = optimize or default_objective(constraints)
    if optimize not in OBJECTIVES:
        raise AnnbenchError(f"optimize '{optimize}' not valid. Use one of: {', '.join(OBJECTIVES)}")
    if at_qps is not None:
        return recommend_at(with_dicts(frame), constraints, optimize, at_qps, available_cores())[0]
    return choose(with_dicts(frame), constraints, optimize)


#: What ``recommend`` compares like with like on: a frame must hold one value of each.
COMPARED_ON = ("dataset", "workload", "mode", "k", "threads")


def _check_comparable(frame: pd.DataFrame) -> None:
    """Refuse a frame whose results answer different questions (two datasets, filters,
    modes, k or thread counts): a pick across them would compare unlike numbers."""
    for column in COMPARED_ON:
        if column not in frame:
            continue
        values = sorted(frame[column].dropna().unique().tolist(), key=str)
        if len(values) > 1:
            shown = ", ".join(map(str, values))
            raise AnnbenchError(
                f"recommend compares like with like, and these results hold several {column} "
                f"values ({shown}); pass one, e.g. frame[frame['{column}'] == {values[0]!r}]"
            )


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` (as ``load_results`` gives it) to a parquet file with the same columns
    as its CSV export."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise AnnbenchError("Writing parquet needs pyarrow: pip install pyarrow") from None
    from annbench.paths import output_file

    with output_file(path, "Parquet file") as temp:
        flatten(frame).to_parquet(temp, index=False)
    return Path(path)


def export_results(
    dataset: str | Path, out: str | Path, results: str | Path | None = None
) -> Exported:
    """Write every successful unfiltered run of ``dataset`` (a name or HDF5 path) stored in
    ``results`` (a store folder or .sqlite file; default ``$ANNBENCH_RESULTS``) as
    ann-benchmarks result files under ``out/<dataset>/``, one HDF5 file per run with its
    neighbours, exact distances and per-query times, which ann-benchmarks' plotting reads
    (``annbench results --export ann-benchmarks``). Returns the files written (``files``)
    and how many runs of filters and runbooks were left out (``left_out``), which that
    layout has no place for; a dataset without such runs is an error."""
    from annbench.report.export import export_results as export

    return export(dataset, out, results)


def plot_results(
    dataset: str | Path | None = None,
    results: str | Path | None = None,
    mode: str = "single",
    k: int | None = None,
    threads: bool = False,
    runbook: str | None = None,
    out: str | Path | None = None,
) -> Path:
    """Write a PNG for papers from the results of ``dataset`` (default: the bundled one)
    stored in ``results`` (``annbench plot``): recall vs queries per second in ``mode``
    (``single`` or ``batch``) with each backend's pareto frontier, QPS vs search threads
    (``threads``, batch runs), or recall and QPS at each step of ``runbook``; at ``k``
    (default: the most common). Written to ``out`` (.png) or beside the store, named after
    what it shows; returns the file."""
    from annbench.data.catalog import DEFAULT_DATASET
    from annbench.report.plot import write_plot
    from annbench.results.store import store_file

    if mode not in ("single", "batch"):
        raise BadUsage(f"mode must be 'single' or 'batch' for a plot, got {mode!r}")
    if out is not None and Path(out).suffix.lower() != ".png":
        raise BadUsage(f"{out} does not end in .png; plots are PNG files")
    name = str(DEFAULT_DATASET if dataset is None else dataset)
    frame = load_results(results, name, raw=True)
    store_path = store_file(_store_path(results))
    png = None if out is None else Path(out)
    return write_plot(frame, name, store_path, mode, k, threads, runbook, png)


def write_report(
    results: str | Path | None = None,
    dataset: str | None = None,
    out: str | Path | None = None,
    latency_budget_ms: float = 1.0,
    neighbours: bool = False,
    queries: Sequence[int] | None = None,
    seed: int = 0,
    corpus: str | Path | None = None,
    progress: bool | Progress = True,
) -> list[Path]:
    """Write the self-contained HTML report of the results stored in ``results`` (of
    ``dataset`` only, if given) into ``out`` (default: ``report/`` beside the store), as
    ``annbench report`` does: interactive plots, summaries, every run, and the best recall
    whose p99 fits ``latency_budget_ms``. With ``neighbours``, also a page per dataset of
    what each configuration returned for sample queries (``queries``, or 5 drawn with
    ``seed``; ``corpus``: the texts the dataset was embedded from, when not beside it).
    ``progress``: a display (True), nothing (False) or an ``annbench.progress.Progress``.
    Returns the files written: the neighbours pages, then ``index.html``."""
    from contextlib import nullcontext

    from annbench.paths import check_output_dir
    from annbench.progress import as_progress, progress_bar
    from annbench.report.html import write_report as write_html
    from annbench.report.neighbours import write_neighbour_pages
    from annbench.results.store import store_file

    if queries is not None and not neighbours:
        raise BadUsage("queries go with neighbours=True (--queries with --neighbours)")
    if corpus is not None and not neighbours:
        raise BadUsage("corpus goes with neighbours=True (--corpus with --neighbours)")
    frame = load_results(results, dataset, raw=True)
    store_path = store_file(_store_path(results))
    if frame.empty:
        raise AnnbenchError("No results stored" + (f" for dataset {dataset}" if dataset else ""))
    folder = check_output_dir(
        store_path.parent / "report" if out is None else Path(out), "Report folder"
    )
    targets = [dataset] if dataset else sorted(frame["dataset"].unique())
    total = frame["dataset"].nunique() + (len(targets) if neighbours else 0)
    given = as_progress(progress)
    display = nullcontext(given) if given is not None else progress_bar(total, "Report")
    with display as shown:
        links = []
        if neighbours:
            links = write_neighbour_pages(
                targets,
                folder,
                store_path,
                queries,
                seed,
                None if corpus is None else Path(corpus),
                required=bool(dataset),
                progress=shown,
            )
        index = write_html(frame, folder, latency_budget_ms, links, progress=shown)
    return [folder / page for page, _ in links] + [Path(index)]


def import_dataset(
    source: str | Path,
    name: str,
    metric: str,
    queries: int | None = None,
    queries_file: str | Path | None = None,
    labels: str | Path | None = None,
    normalize: bool = False,
    seed: int = 0,
    key: str | None = None,
    column: str | None = None,
    random_attr: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Dataset:
    """Import your own vectors (.npy, .fvecs/.ivecs/.bvecs, .parquet, .hdf5; larger than
    memory is fine) as the dataset ``name`` in the data folder with exact ground truth
    (``annbench datasets import``); returns it, ready for ``run(..., dataset=name)``.

    ``metric``: euclidean, angular (cosine) or dot. Queries are every row of
    ``queries_file``, or ``queries`` rows (default 1000) held out of the base, seeded by
    ``seed``. ``labels``: a .npy file or UTF-8 text, one class label per row of ``source``.
    ``key``/``column``: the HDF5 dataset or parquet column holding the vectors;
    ``normalize`` scales them to unit length; ``random_attr`` adds a uniform random numeric
    attribute of that name (for range filters); ``force`` overwrites a dataset of that
    name; ``progress`` shows each stage on stderr.

    Examples:
        >>> import annbench
        >>> data = annbench.import_dataset("emb.npy", "mine", "cosine")  # doctest: +SKIP
    """
    from annbench.data.importer import import_dataset as bring_in

    return bring_in(
        source,
        name,
        metric,
        queries=queries,
        queries_file=queries_file,
        labels=labels,
        normalize=normalize,
        seed=seed,
        key=key,
        column=column,
        random_attr=random_attr,
        force=force,
        progress=progress,
    )


def embed_dataset(
    source: str | Path,
    name: str,
    text_column: str = "text",
    label_column: str | None = None,
    model: str = "all-MiniLM-L6-v2",
    queries: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    float16: bool = False,
    threads: int | None = None,
    attr_columns: Sequence[str] = (),
    random_attr: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Dataset:
    """Embed texts (a .txt file, or CSV/TSV with a ``text_column`` and optionally a
    ``label_column``) or a folder of images (one sub-folder per class) into the labelled
    angular dataset ``name`` in the data folder, with ``queries`` rows held out (seeded by
    ``seed``) and exact ground truth (``annbench datasets embed``); needs the [embed] extra.
    Returns the dataset written.

    ``model``: a sentence-transformers model name or path (a CLIP model for images), run
    ``batch_size`` items at a time on ``threads`` threads; ``float16`` stores the vectors
    at half the size; ``attr_columns``: CSV/TSV columns of numbers kept as numeric
    attributes (for range filters); ``random_attr`` adds a uniform random one;
    ``force`` overwrites a dataset of that name; ``progress`` shows what is happening on
    stderr. Everything is checked before the model is loaded, and the file records the
    command that rebuilds it and the model's provenance.

    Examples:
        >>> import annbench
        >>> data = annbench.embed_dataset("notes.txt", "notes", queries=200)  # doctest: +SKIP
    """
    from annbench.data.embed import embed_dataset as embed

    return embed(
        source,
        name,
        text_column=text_column,
        label_column=label_column,
        model=model,
        queries=queries,
        seed=seed,
        batch_size=batch_size,
        float16=float16,
        threads=threads,
        attr_columns=tuple(attr_columns),
        random_attr=random_attr,
        force=force,
        progress=progress,
    )


def check_spawn_safe() -> None:
    """Refuse to start a sweep where spawned workers would start it again: in a worker
    importing the main script, or from a script's top level outside the ``__main__`` guard."""
    site = _unguarded_call_site()
    if site is None and not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    where = f" at {site}" if site else ""
    raise AnnbenchError(
        f"annbench.run() is called{where} outside an 'if __name__ == \"__main__\":' block; "
        "its worker processes are spawned and import the script again, so put the call "
        "under that guard (notebooks need none)"
    )


def _unguarded_call_site() -> str | None:
    """``file:line`` of the main script's top-level statement that led here, when that
    statement is not inside ``if __name__ == "__main__":``; None otherwise or when unknown."""
    main = sys.modules.get("__main__")
    filename = getattr(main, "__file__", None)
    if main is None or not filename:
        return None  # interactive: a notebook, the REPL, python -c
    frame = sys._getframe(1)
    while frame is not None and not (
        frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"
    ):
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(frame.f_code.co_filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_test(node.test):
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return None
    return f"{frame.f_code.co_filename}:{line}"


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    texts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(texts) == 1


def _store_path(path: str | Path | None) -> Path:
    from annbench.paths import results_dir

    return Path(path).expanduser() if path else results_dir()


def _backend_names(backends: str | Sequence[str]) -> list[str]:
    from annbench.registry import runnable_backends

    given = [backends] if isinstance(backends, str) else list(backends)
    if not given:
        raise AnnbenchError("Name at least one backend, or 'all'; see 'annbench backends'")
    if "all" not in given:
        return list(dict.fromkeys(given))
    names, skipped = runnable_backends()  # installed, with a grid that gives all they need
    for name, reason in skipped.items():
        log.info("'all' skips %s: %s", name, reason)
    # the others are still checked: '-b all -b nosuch' reports nosuch
    return list(dict.fromkeys([*(name for name in given if name != "all"), *names]))


def _grid_overrides(grid: Mapping[str, Any] | Iterable[str] | None) -> dict[str, list[Any]]:
    from annbench.sweep.grids import parse_overrides

    if grid is None:
        return {}
    if isinstance(grid, str):
        grid = [grid]
    if not isinstance(grid, Mapping):
        return parse_overrides(list(grid))
    out = {}
    for key, value in grid.items():
        values = list(value) if isinstance(value, (list, tuple, range)) else [value]
        if not values or any(v is None or isinstance(v, (dict, list)) for v in values):
            raise AnnbenchError(f"grid['{key}'] must be a scalar or a list of scalars")
        out[str(key)] = values
    return out


def _memory_limit(value: str | float | None) -> float | None:
    from annbench.results.analysis import parse_bytes

    if value is None:
        return None
    amount = parse_bytes(value) if isinstance(value, str) else float(value)
    if not math.isfinite(amount) or amount <= 0:
        raise AnnbenchError(f"memory size must be a positive number of bytes, got {value}")
    return amount


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise AnnbenchError(f"{name} must be a positive number of seconds, got {value}")


@contextmanager
def _display(given: Progress | None, total: int) -> Iterator[Progress]:
    from annbench.progress import progress_bar

    if given is not None:
        yield given
        return
    with progress_bar(total, "Measuring", unit="run") as shown:
        yield shown


def scale(
    dataset: str | Path | None = None,
    results: str | Path | None = None,
    at_size: int | str | None = None,
    targets: Sequence[float] = (0.9, 0.95, 0.99),
    backends: str | Sequence[str] | None = None,
    k: int = 10,
    confidence: float = 0.9,
    save: bool = True,
) -> pd.DataFrame:
    """How each configuration measured on a size ladder (``run(..., sizes=...)``) grows with
    the base size: per configuration and quantity (build time, file size, serving memory, and
    at each recall target the search effort and QPS), the fitted law, the held-out check (the
    largest size predicted from the smaller ones) and, with ``at_size`` (``50_000_000`` or
    ``"50M"``), the PREDICTED value there with its interval and extrapolation factor, stored
    in the store's predictions table (``save``), apart from measurements."""
    from annbench.scaling.curves import growth_table, prediction_rows

    data, points, store_path = _ladder_points(dataset, results, targets, backends, k)
    size = None
    if at_size is not None:
        from annbench.data.subsets import parse_count

        size = parse_count(str(at_size), "--at-size")
    if not 0 < confidence < 1:
        raise BadUsage(f"confidence must lie between 0 and 1, got {confidence}")
    table = growth_table(points, at_size=size, confidence=confidence)
    if size is not None and save and len(table):
        from annbench.results.store import ResultStore

        with ResultStore(store_path, create=False) as store:
            store.put_predictions(prediction_rows(table, data.name, data.content_hash))
    return table


def recommend_at_size(
    at_size: int | str,
    dataset: str | Path | None = None,
    results: str | Path | None = None,
    max_memory: str | float | None = None,
    min_recall: float | None = None,
    max_latency_ms: float | None = None,
    max_build_s: float | None = None,
    k: int = 10,
) -> SizedPick:
    """The configuration PREDICTED to serve best at ``at_size`` vectors within the limits,
    from the growth laws of size ladders (``scale``): the highest recall target reached
    (``min_recall``: that one) at the best predicted QPS, with serving memory (``"64GB"`` or
    bytes) and build time kept within their limits at the high end of their intervals."""
    from annbench.scaling.curves import TARGETS, pick_at_size

    memory = _memory_limit(max_memory)
    if min_recall is not None and not 0 < min_recall <= 1:
        raise BadUsage(f"min_recall must lie in (0, 1], got {min_recall}")
    if max_latency_ms is not None and not 0 < max_latency_ms < math.inf:
        raise BadUsage(f"max_latency_ms must be a positive number, got {max_latency_ms}")
    _check_positive("max_build_s", max_build_s)
    targets = TARGETS if min_recall is None else (min_recall,)
    table = scale(dataset, results, at_size=at_size, targets=targets, k=k)
    if not len(table):
        raise BadUsage(
            "No configuration is measured at two sizes or more; run a size ladder first, "
            "e.g. annbench run -b hnswlib --sizes 1/8,1/4,1/2,1"
        )
    return pick_at_size(table, memory, min_recall, max_latency_ms, max_build_s)


def memory_fit(
    at_size: int | str,
    budget: str | float,
    dataset: str | Path | None = None,
    results: str | Path | None = None,
    figure: str = "serving",
) -> pd.DataFrame:
    """Will it fit in ``budget`` (``"64GB"`` or bytes) at ``at_size`` vectors? For every
    index configuration stored for the dataset: its family's bytes-per-vector model
    (``annbench.scaling.memory``), validated against every stored build's file size and serving
    memory, the predicted bytes at ``at_size`` with the margin that validation earned, and
    the verdict (yes, no, too close to call). Configurations without a model say so."""
    import json

    import pandas as pd

    from annbench.data.subsets import parse_count
    from annbench.record import params_label
    from annbench.scaling.memory import (
        BaseShape,
        calibrate,
        fits_in,
        memory_model,
        validate_memory_models,
    )

    size = parse_count(str(at_size), "--at-size")
    data, frame, _ = _stored_runs(dataset, results)
    frame = frame[frame["status"] == "ok"]
    shape = BaseShape.of(data)
    validation = validate_memory_models(frame, {data.name: shape})
    calibration = calibrate(validation, figure)
    rows = []
    configs = {
        (b, json.dumps(p, sort_keys=True))
        for b, p in zip(frame["backend"], frame["build_params"], strict=True)
    }
    for backend, params in sorted(configs):
        build = json.loads(params)
        model = memory_model(backend, build, shape.d, shape.metric, figure=figure)
        row = {
            "backend": backend,
            "build_params": build,
            "config": f"{backend} [{params_label(build)}]",
        }
        if model is None:
            rows.append(row | {"verdict": None, "answer": "no memory model for this family"})
            continue
        answer = fits_in(model, size, budget, calibration=calibration)
        rows.append(
            row
            | {
                "family": model.family,
                "bytes_per_vector": model.vector_bytes,
                "fixed_bytes": model.fixed_bytes,
                "predicted_bytes": answer.predicted_bytes,
                "low_bytes": answer.low_bytes,
                "high_bytes": answer.high_bytes,
                "margin": answer.margin,
                "margin_source": answer.margin_source,
                "verdict": answer.verdict,
                "answer": answer.text(),
                "model": model.explain(),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["validation"] = validation
    return table


def scale_points(
    dataset: str | Path | None = None,
    results: str | Path | None = None,
    targets: Sequence[float] = (0.9, 0.95, 0.99),
    backends: str | Sequence[str] | None = None,
    k: int = 10,
) -> pd.DataFrame:
    """The measured points ``scale`` fits: one row per configuration, base size and
    quantity (``size``, ``quantity``, ``value``, ``setting``)."""
    return _ladder_points(dataset, results, targets, backends, k)[1]


def _ladder_points(
    dataset: str | Path | None,
    results: str | Path | None,
    targets: Sequence[float],
    backends: str | Sequence[str] | None,
    k: int,
) -> tuple[Dataset, pd.DataFrame, Path]:
    from annbench.scaling.curves import ladder_records, size_points

    targets = [float(t) for t in targets]
    if not targets or not all(0 < t <= 1 for t in targets):
        raise BadUsage(f"recall targets must lie in (0, 1], got {targets}")
    data, frame, path = _stored_runs(dataset, results)
    ok = ladder_records(frame, data)
    ok = ok[ok["k"] == k]
    if backends is not None:
        names = [backends] if isinstance(backends, str) else list(backends)
        ok = ok[ok["backend"].isin(names)]
    return data, size_points(ok, targets), path


def _stored_runs(
    dataset: str | Path | None, results: str | Path | None
) -> tuple[Dataset, pd.DataFrame, Path]:
    """The dataset (default: the bundled one), its stored runs (store columns, parameters as
    dicts) and the store's path."""
    from annbench.data.catalog import DEFAULT_DATASET, resolve_dataset
    from annbench.data.format import read_dataset
    from annbench.results.store import ResultStore

    data = read_dataset(resolve_dataset(str(DEFAULT_DATASET if dataset is None else dataset)))
    with ResultStore.open_existing(_store_path(results)) as store:
        return data, store.dataframe(data.name, content_hash=data.content_hash), store.path


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops a sweep as Ctrl-C does: workers killed, stored results kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _by_key(frame: pd.DataFrame, keys: set[str]) -> pd.DataFrame:
    import pandas as pd

    from annbench.record import load_point, record_key

    mask = [
        record_key(
            row.dataset_hash,
            row.backend,
            as_dict(row.build_params),
            as_dict(row.search_params),
            row.k,
            row.mode,
            row.threads,
            row.workload,
            row.library_version,
            None if _missing(row.step) else int(row.step),
            load_point(row.mode, row.clients, row.rate, row.rate_share, row.cores),
            None if _missing(getattr(row, "base_size", None)) else int(row.base_size),
        )
        in keys
        for row in frame.itertuples()
    ]
    return frame[pd.Series(mask, index=frame.index, dtype=bool)]  # an empty list selects columns


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


__all__ = [
    "JSON_COLUMNS",
    "MIN_SECONDS",
    "Interrupted",
    "check_spawn_safe",
    "flatten",
    "load_dataset",
    "load_results",
    "memory_fit",
    "pareto_frontier",
    "recommend",
    "run",
    "runbook_summary",
    "recommend_at_size",
    "scale",
    "scale_points",
    "summary",
    "with_dicts",
    "write_parquet",
    "export_results",
    "plot_results",
    "write_report",
    "import_dataset",
    "embed_dataset",
]
