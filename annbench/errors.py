"""Errors that reach the user as one line, each saying how to fix the problem."""


class AnnbenchError(Exception):
    """A problem with the user's input or environment; the message says how to fix it."""

    #: The command line's exit status for this error.
    exit_code = 1


class BadUsage(AnnbenchError):
    """Options that cannot go together, or an option without the one it needs: exit status 2,
    as for click's own usage errors."""

    exit_code = 2


class NothingFits(AnnbenchError):
    """No configuration can meet the targets: exit status 3, as when none measured does."""

    exit_code = 3


class BackendUnavailable(AnnbenchError):
    """A backend's library is not installed."""


class MissingDependency(ImportError):
    """Raised by a backend module at import time when its library is missing.

    ``package`` is the pip name of the library; ``extra`` the annbench extra that installs it
    (``pip install "annbench[extra]"``), when there is one.
    """

    def __init__(self, package: str, extra: str | None = None) -> None:
        super().__init__(f"install {package}")
        self.package = package
        self.extra = extra

    @property
    def install_command(self) -> str:
        """The pip command that installs the missing library."""
        if self.extra:
            return f'pip install "annbench[{self.extra}]"'
        return f"pip install {self.package}"


def one_line_error(exc: BaseException) -> str:
    """``exc`` as one line for a record or a report: an AnnbenchError's message (written for
    the user), any other error's type and message, whitespace runs made single spaces."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, AnnbenchError) else f"{type(exc).__name__}: {text}"
