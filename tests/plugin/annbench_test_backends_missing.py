"""A plugin whose library is not installed."""

from annbench.errors import MissingDependency

try:
    import a_library_that_is_not_installed  # noqa: F401
except ImportError as exc:
    raise MissingDependency("a-library-that-is-not-installed") from exc
