"""Backends by name, found through the ``annbench.backends`` entry-point group, loaded lazily."""

from __future__ import annotations

from importlib import import_module, metadata

from annbench.errors import AnnbenchError, BackendUnavailable, MissingDependency
from annbench.index import Index

GROUP = "annbench.backends"


def backend_names() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(_entry_points())


def backend_target(name: str) -> str:
    """The ``module:Class`` a backend name points to (what worker processes import)."""
    points = _entry_points()
    if name not in points:
        valid = ", ".join(sorted(points)) or "(none registered: is annbench installed?)"
        raise AnnbenchError(f"Unknown backend '{name}'. Valid backends: {valid}")
    return points[name]


def load_backend(name: str) -> type[Index]:
    """The Index class registered as ``name``; says what to install when its library is missing."""
    target = backend_target(name)
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(import_module(module_name), attr)
    except MissingDependency as exc:
        raise BackendUnavailable(
            f"Install {exc.package} to use the {name} backend (pip install {exc.package})"
        ) from exc
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(
            f"Backend '{name}' could not be loaded from {target}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Index)):
        raise BackendUnavailable(f"Backend '{name}' ({target}) is not an annbench Index class")
    return cls


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}
