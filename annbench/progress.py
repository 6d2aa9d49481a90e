"""Progress of long steps (sweep, ground truth, embedding, download, report).

On a terminal or in Jupyter: a tqdm bar with counts, rate and time left, and the step being
worked on beside it (tqdm draws the same bar in a terminal and, with ipywidgets, as a notebook
widget, where ``annbench.run`` is called from). When output goes to a file or a pipe: one plain
line per change of step, one at least every ``LINE_EVERY_S`` seconds while units get done (with
the rate and time left), and one at the end, never carriage-return noise in a log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from annbench.errors import AnnbenchError


class Progress:
    """A sink for progress that shows nothing (``quiet``); the base of the visible kinds."""

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""

    def status(self, text: str) -> None:
        """What is being worked on now, e.g. ``hnswlib [M=16]: building``."""

    def message(self, text: str) -> None:
        """A line of its own above the bar."""

    def close(self) -> None:
        """The step is over."""


class _Bar(Progress):
    def __init__(self, total: int | None, label: str, unit: str, file: TextIO) -> None:
        from tqdm.auto import tqdm

        scale = unit == "B"
        self._bar = tqdm(
            total=total or None,
            desc=label,
            unit=unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
            file=file,
            dynamic_ncols=True,
            leave=True,
        )

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def status(self, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=True)

    def message(self, text: str) -> None:
        self._bar.write(text, file=self._bar.fp)

    def close(self) -> None:
        self._bar.set_postfix_str("", refresh=False)
        self._bar.close()


#: In a log, a line at least this often while a long step makes progress.
LINE_EVERY_S = 30.0


class _Lines(Progress):
    """Single lines for logs: a line when the status changes, one every ``LINE_EVERY_S``
    seconds while units get done (rate and time left), and one when the step ends."""

    def __init__(self, total: int | None, label: str, unit: str, file: TextIO) -> None:
        self.total, self.label, self.unit, self.file = total or None, label, unit, file
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.last_status: str | None = None

    def _count(self) -> str:
        if self.unit == "B":
            done = f"{self.done / 1e6:,.1f} MB"
            return f"{done} of {self.total / 1e6:,.1f} MB" if self.total else done
        return f"{self.done}/{self.total}" if self.total else str(self.done)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_line >= LINE_EVERY_S:
            self.last_line = now
            rate = self.done / max(now - self.started, 1e-9)
            left = (
                f", about {_duration((self.total - self.done) / rate)} left"
                if self.total and rate > 0
                else ""
            )
            shown = f"{rate / 1e6:,.1f} MB/s" if self.unit == "B" else f"{rate:,.1f}/s"
            print(f"{self.label} [{self._count()}] {shown}{left}", file=self.file, flush=True)

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self.last_line = time.monotonic()
            print(f"{self.label} [{self._count()}] {text}", file=self.file, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def close(self) -> None:
        elapsed = time.monotonic() - self.started
        print(f"{self.label}: {self._count()} in {elapsed:.1f} s", file=self.file, flush=True)


def _duration(seconds: float) -> str:
    """``seconds`` as '45 s', '12 min' or '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def interactive(file: TextIO) -> bool:
    """Whether ``file`` is a terminal or a Jupyter kernel's output, where a live bar helps."""
    return bool(getattr(file, "isatty", lambda: False)()) or "ipykernel" in sys.modules


@contextmanager
def progress_bar(
    total: int | None,
    label: str,
    *,
    quiet: bool = False,
    unit: str = "it",
    file: TextIO | None = None,
) -> Iterator[Progress]:
    """A progress display for one long step of ``total`` units (None or 0: unknown);
    ``unit="B"`` counts bytes. Closed (with a final line) when the block ends."""
    progress = open_progress(total, label, quiet=quiet, unit=unit, file=file)
    try:
        yield progress
    finally:
        progress.close()


def open_progress(
    total: int | None,
    label: str,
    *,
    quiet: bool = False,
    unit: str = "it",
    file: TextIO | None = None,
) -> Progress:
    """The display ``progress_bar`` uses; the caller closes it."""
    out = file if file is not None else sys.stderr
    if quiet:
        return Progress()
    if interactive(out):
        return _Bar(total, label, unit, out)
    return _Lines(total, label, unit, out)


class Stages:
    """A display per stage for callbacks of the form ``(stage, done, total)`` (dataset
    writing, ground truth ...): a stage's display closes when the next one starts."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.stage: str | None = None
        self.progress: Progress | None = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of ``stage`` are finished."""
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.progress = open_progress(total, stage.capitalize(), quiet=self.quiet)
        assert self.progress is not None
        self.progress.update(done - self.done)
        self.done = done

    def close(self) -> None:
        """Close the current stage's display."""
        if self.progress is not None:
            self.progress.close()
        self.progress, self.stage = None, None

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def counting(
    given: Progress | None, label: str, unit: str = "it"
) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback for one long step (``label``): a display of its own when
    ``given`` is None (the default display), else the status line of the Progress given."""
    if given is not None:
        yield lambda done, total: given.status(f"{label}: {done}/{total} {unit}s")
        return
    shown: Progress | None = None
    counted = 0

    def tick(done: int, total: int) -> None:
        nonlocal shown, counted
        if shown is None:
            shown = open_progress(total, label.capitalize(), unit=unit)
            shown.status(f"{total} {unit}s")  # a first line in a log, not only the last
        shown.update(done - counted)
        counted = done

    try:
        yield tick
    finally:
        if shown is not None:
            shown.close()


def notice(text: str, file: TextIO | None = None) -> None:
    """A one-off line of progress (``Generating built-in dataset ...``) where displays go."""
    print(text, file=file if file is not None else sys.stderr, flush=True)


def as_progress(value: Any) -> Progress | None:
    """``True`` -> None (make the default display), ``False``/``None`` -> quiet, or the
    Progress given."""
    if value is True:
        return None
    if value is False or value is None:
        return Progress()
    if isinstance(value, Progress):
        return value
    raise AnnbenchError(
        f"progress must be True, False or an annbench.progress.Progress, got {value!r}"
    )
