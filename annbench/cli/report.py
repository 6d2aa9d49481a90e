"""``annbench report``: the self-contained HTML report, with neighbours pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from annbench.cli import types
from annbench.cli.base import results_option
from annbench.cli.types import quiet_option
from annbench.data.datasets import read_dataset, resolve_dataset
from annbench.errors import AnnbenchError
from annbench.paths import check_output_dir, results_dir, write_text_file
from annbench.results.store import ResultStore, store_file


@click.command(
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
