"""Errors that reach the user as one line, each saying how to fix the problem."""


class AnnbenchError(Exception):
    """A problem with the user's input or environment; the message says how to fix it."""


class BackendUnavailable(AnnbenchError):
    """A backend's library is not installed."""


class MissingDependency(ImportError):
    """Raised by a backend module at import time when its library is missing."""

    def __init__(self, package: str) -> None:
        super().__init__(f"install {package}")
        self.package = package
