"""``annbench backends``: the registered backends and what each can do."""

from __future__ import annotations

import click

from annbench.registry import capability_table, plugin_problems


@click.command(
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
