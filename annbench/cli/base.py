"""Command-line plumbing shared by the annbench commands: errors as one line, common options,
--filter values as workload names."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from annbench.cli.types import WORKERS, StoreLocation
from annbench.data.datasets import Dataset
from annbench.data.workloads import BadFilter, canonical_workloads, check_filter, parse_filters
from annbench.errors import AnnbenchError


class AnnbenchGroup(click.Group):
    """Turns every error into one line and a non-zero exit (a traceback with --debug)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise usage_error(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise usage_error(exc) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except AnnbenchError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            error = click.ClickException(one_line(str(exc)))
            error.exit_code = exc.exit_code
            raise error from None
        except BrokenPipeError:  # the reader went away (``annbench results | head``): say nothing
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except KeyboardInterrupt:  # Ctrl-C before a command's own handler: exit 130 too
            error = click.ClickException("Interrupted")
            error.exit_code = 130
            raise error from None
        except Exception as exc:  # a bug or an unforeseen failure: still one line
            if ctx.find_root().params.get("debug"):
                raise
            text = one_line(str(exc))
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {text} (rerun with --debug for the traceback)"
            ) from None


#: Exit status when the reader of our output closed it early, as a shell reports SIGPIPE.
EXIT_BROKEN_PIPE = 141


def _silence_stdout() -> None:
    """Point stdout at /dev/null so flushing it at exit cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind stdout (tests, notebooks)
        pass


def one_line(text: str) -> str:
    """A message folded onto one line (library errors such as pyarrow schemas or Hugging Face
    hub messages span several), with runs of whitespace made single spaces."""
    return " ".join(text.split())


def usage_error(exc: click.UsageError) -> click.ClickException:
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


#: ``--workers`` of the commands that can start a Dask LocalCluster (``--scheduler local``).
workers_option = click.option(
    "--workers",
    default=2,
    show_default=True,
    type=WORKERS,
    help="Workers of the LocalCluster that --scheduler local starts.",
)

results_option = click.option(
    "--results",
    "results_path",
    type=StoreLocation(),
    default=None,
    help="Results folder or .sqlite file [default: $ANNBENCH_RESULTS or results/].",
)


def int_list(option: str, text: str) -> tuple[int, ...]:
    """``'1,2,4'`` -> ``(1, 2, 4)``, or a one-line error naming the option."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise AnnbenchError(
            f"{option} takes whole numbers separated by commas, got '{text}'"
        ) from None


def filter_workloads(specs: tuple[str, ...], data: Dataset | None = None) -> list[str]:
    """Workload names of ``--filter`` values, checked against ``data``: a bad spec is a usage
    error (exit code 2)."""
    try:
        workloads = parse_filters(specs)
        for workload in workloads if data is not None else ():
            check_filter(data, workload)
    except BadFilter as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    return workloads if data is None else canonical_workloads(data, workloads)
