"""Backends by name, found through the ``annbench.backends`` entry-point group, loaded lazily."""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

from annbench.errors import AnnbenchError, BackendUnavailable, MissingDependency
from annbench.index import Index, build_param_names, search_param_names

if TYPE_CHECKING:
    import pandas as pd

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
        error = BackendUnavailable(
            f"Install {exc.package} to use the {name} backend ({exc.install_command})"
        )
        error.package = exc.package  # type: ignore[attr-defined]
        error.install_command = exc.install_command  # type: ignore[attr-defined]
        raise error from exc
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(
            f"Backend '{name}' could not be loaded from {target}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Index)):
        raise BackendUnavailable(f"Backend '{name}' ({target}) is not an annbench Index class")
    return cls


def name_of(cls: type[Index]) -> str | None:
    """The name ``cls`` is registered under, if it is."""
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, value in _entry_points().items():
        if value.replace(" ", "") == target:
            return name
    return None


def runnable_backends() -> tuple[list[str], dict[str, str]]:
    """What ``-b all`` runs: installed backends whose default grid gives every parameter they
    need; and the others with the reason each is skipped."""
    from annbench.sweep.grids import check_grid, default_grid, missing_params

    names, skipped = [], {}
    for name in backend_names():
        try:
            cls = load_backend(name)
            grid = default_grid(name, cls)
            missing = missing_params(cls, grid)
            if missing:
                skipped[name] = f"its default grid lacks {', '.join(missing)}"
                continue
            check_grid(name, cls, grid)
        except BackendUnavailable as exc:
            command = getattr(exc, "install_command", None)
            skipped[name] = command or str(exc)
            continue
        except AnnbenchError as exc:
            skipped[name] = f"bad default grid: {exc}"
            continue
        names.append(name)
    return names, skipped


def capability_table() -> pd.DataFrame:
    """One row per registered backend: installed, library version, metrics, filtered search,
    add/remove, save/load and default grid size (build x search configurations)."""
    import pandas as pd

    from annbench.sweep.grids import default_grid

    rows = []
    for name in backend_names():
        row: dict[str, Any] = {"backend": name}
        try:
            cls = load_backend(name)
        except BackendUnavailable as exc:
            command = getattr(exc, "install_command", None)
            row["installed"] = f"no: {command}" if command else f"no: {exc}"
            cls = None
        else:
            row["installed"] = "yes"
        try:
            row["grid"] = default_grid(name, cls).size()
        except AnnbenchError:
            row["grid"] = None
        if cls is not None:
            row.update(
                library=cls.library or "-",
                version=cls.library_version(),
                metrics=",".join(sorted(m.value for m in cls.metrics)),
                filter="native" if cls.native_filter else "post only",
                add="yes" if cls.supports_add else "no",
                remove="yes" if cls.supports_remove else "no",
                save_load="yes" if _overrides(cls, "save") and _overrides(cls, "load") else "no",
                parameters="; ".join(
                    f"{kind}: {','.join(names)}"
                    for kind, names in (
                        ("build", build_param_names(cls)),
                        ("search", search_param_names(cls)),
                    )
                    if names
                ),
            )
        rows.append(row)
    columns = ["backend", "installed", "library", "version", "metrics", "filter", "add"]
    columns += ["remove", "save_load", "grid", "parameters"]
    return pd.DataFrame(rows, columns=columns)


def _overrides(cls: type[Index], method: str) -> bool:
    return getattr(cls, method) is not getattr(Index, method)


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}
