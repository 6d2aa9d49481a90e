"""The ``annbench`` command line: the ``main`` group and its command groups, one module each
(run, results/plot/summary, report, recommend, scale, datasets, backends), each a thin layer
over the public API."""

from __future__ import annotations

import click

from annbench import __version__
from annbench.cli import backends, datasets, recommend, report, results, run, scale
from annbench.cli.base import AnnbenchGroup


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


main.add_command(run.run)
main.add_command(results.results)
main.add_command(results.plot)
main.add_command(results.summary_command)
main.add_command(report.report_command)
main.add_command(recommend.recommend_command)
main.add_command(scale.scale_command)
main.add_command(datasets.datasets)
main.add_command(backends.backends)
