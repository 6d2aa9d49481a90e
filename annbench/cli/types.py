"""Click parameter types for annbench's numeric options: bad values (NaN, inf, zero,
negative, absurd) fail in the parser with click's usage message and exit code 2."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from annbench.errors import AnnbenchError


class FiniteFloat(click.ParamType):
    """A finite float within bounds (click's FLOAT and FloatRange accept 'nan' and 'inf')."""

    name = "float"

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        min_open: bool = False,
        max_open: bool = False,
    ) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """``value`` as a float, or a usage error saying which values are allowed."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self._inside(number):
            self.fail(f"{value} is not {self.describe()}", param, ctx)
        return number

    def _inside(self, number: float) -> bool:
        if self.min is not None and (number <= self.min if self.min_open else number < self.min):
            return False
        return self.max is None or (number < self.max if self.max_open else number <= self.max)

    def describe(self) -> str:
        """The allowed range in words."""
        low = "" if self.min is None else f"{'>' if self.min_open else '>='} {self.min:g}"
        high = "" if self.max is None else f"{'<' if self.max_open else '<='} {self.max:g}"
        return (
            "a finite number " + " and ".join(p for p in (low, high) if p)
            if low or high
            else ("a finite number")
        )

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """Shown in --help."""
        low = "" if self.min is None else f"{self.min:g}{'<' if self.min_open else '<='}"
        high = "" if self.max is None else f"{'<' if self.max_open else '<='}{self.max:g}"
        return f"FLOAT {low}x{high}" if low or high else "FLOAT"


class ByteSize(click.ParamType):
    """A memory size such as ``500MB``, ``2GB`` or ``1.5GiB``, as a positive number of bytes."""

    name = "size"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """``value`` in bytes, or a usage error."""
        if isinstance(value, (int, float)):
            amount = float(value)
        else:
            from annbench.results.analysis import parse_bytes

            try:
                amount = parse_bytes(str(value))
            except AnnbenchError as exc:
                self.fail(str(exc), param, ctx)
        if not math.isfinite(amount) or amount < 1 or amount > 2**60:
            self.fail(f"{value} is not a memory size between 1 byte and 1 EiB", param, ctx)
        return amount

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """Shown in --help."""
        return "SIZE"


class IntList(click.ParamType):
    """Whole numbers separated by commas (``1,2,4``), each within ``[min, max]``."""

    name = "list"

    def __init__(self, min: int = 0, max: int | None = None, metavar: str = "N[,N...]") -> None:
        self.min, self.max, self.metavar = min, max, metavar

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, ...]:
        """``'1,2,4'`` -> ``(1, 2, 4)``, or a usage error."""
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not whole numbers separated by commas", param, ctx)
        for number in numbers:
            if number < self.min or (self.max is not None and number > self.max):
                allowed = (
                    f"between {self.min} and {self.max}"
                    if self.max is not None
                    else f"{self.min} or more"
                )
                self.fail(f"{number} is not {allowed}", param, ctx)
        return numbers

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """Shown in --help."""
        return self.metavar


class RateList(click.ParamType):
    """Offered rates separated by commas: queries per second (``500,1000``) or shares of the
    saturation throughput (``25%,50%``), checked by ``annbench.sweep.load.parse_rates``."""

    name = "rates"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        """``'500,25%'`` -> ``('500', '25%')``, or a usage error."""
        if isinstance(value, tuple):
            return value
        from annbench.sweep.load import parse_rates

        parts = tuple(part.strip() for part in str(value).split(","))
        try:
            parse_rates(parts)
        except AnnbenchError as exc:
            self.fail(str(exc), param, ctx)
        return parts

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """Shown in --help."""
        return "QPS|SHARE%[,...]"


quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress display (errors and results still shown)."
)

#: Common bounds: absurd values fail early instead of half an hour into a sweep.
RUNS = click.IntRange(1, 1000)
K = click.IntRange(1, 10_000)
THREADS = click.IntRange(1, 4096)
WORKERS = click.IntRange(1, 1024)
CLIENTS = IntList(1, 1024)
RATES = RateList()
SEED = click.IntRange(0, 2**32 - 1)
SECONDS = FiniteFloat(0, 7 * 24 * 3600, min_open=True)
LOAD_SECONDS = FiniteFloat(0, 86_400, min_open=True)
MIN_TIME = FiniteFloat(0, 3600)
MILLISECONDS = FiniteFloat(0, 3_600_000, min_open=True)
RECALL = FiniteFloat(0, 1, min_open=True)
SIZE = ByteSize()


class OutputPath(click.ParamType):
    """A file or folder annbench writes. Every writing option has this type, so each goes
    through the one guard (``paths.check_output_file`` / ``check_output_dir``): never a results
    store or its journal files, never a dataset, never a device; refused while parsing, before
    any work, with exit status 2."""

    name = "path"

    def __init__(self, folder: bool = False) -> None:
        self.folder = folder

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        """``value`` as a Path that may be written, or a usage error saying why not."""
        from annbench.paths import check_output_dir, check_output_file

        what = max(param.opts, key=len) if param is not None and param.opts else "Path"
        check = check_output_dir if self.folder else check_output_file
        try:
            return check(str(value), what)
        except AnnbenchError as exc:  # click names the option already
            self.fail(str(exc).removeprefix(f"{what} "), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """Shown in --help."""
        return "DIR" if self.folder else "FILE"


class StoreLocation(click.ParamType):
    """A results store (a folder holding ``annbench.sqlite``, or the file itself): it may be an
    existing store or a new path, never a dataset, another file in the data folder or a
    device."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        """``value`` as a Path, or a usage error saying why it cannot hold a store."""
        from annbench.results.store import check_store_location

        try:
            return check_store_location(Path(value))
        except AnnbenchError as exc:  # click names the option already
            self.fail(str(exc).removeprefix("--results "), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """Shown in --help."""
        return "PATH"


class InputPath(click.Path):
    """A file annbench only reads (the command checks it and says what is wrong): declared as
    such so that every path option is either read (this) or written (OutputPath)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)
