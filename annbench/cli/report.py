"""``annbench report``: the self-contained HTML report, with neighbours pages."""

from __future__ import annotations

from pathlib import Path

import click

from annbench.cli import types
from annbench.cli.base import results_option
from annbench.cli.types import quiet_option


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
    from annbench import api

    if queries is not None and not neighbours:
        raise click.UsageError("--queries goes with --neighbours")
    if corpus is not None and not neighbours:
        raise click.UsageError("--corpus goes with --neighbours")
    written = api.write_report(
        results_path,
        dataset,
        out=out,
        latency_budget_ms=latency_budget_ms,
        neighbours=neighbours,
        queries=queries,
        seed=seed,
        corpus=corpus,
        progress=not quiet,
    )
    for path in written:
        click.echo(f"Wrote {path}")
