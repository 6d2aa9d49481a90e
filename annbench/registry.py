"""Backends by name, found through the ``annbench.backends`` entry-point group, loaded lazily,
and the default grid each ships.

A backend's default grid travels with it (see ``default_grid``); the built-in ones are the
editable YAML files in the top-level ``backends/`` folder, installed as the
``annbench.default_grids`` package so a wheel finds them from any directory.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module, metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from annbench.errors import AnnbenchError, BackendUnavailable, MissingDependency, one_line_error
from annbench.index import Index, build_param_names, search_param_names
from annbench.metrics import Metric
from annbench.param_grid import Grid, check_grid, missing_params, parse_grid

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

GROUP = "annbench.backends"
#: The distribution whose entry points are the built-in backends.
BUILTIN_PACKAGE = "annbench"


def backend_names() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(_entries())


def backend_target(name: str) -> str:
    """The ``module:Class`` a backend name points to (what worker processes import)."""
    return _entry(name).target


def backend_package(name: str) -> str:
    """The distribution that registers backend ``name`` (``annbench`` for the built-ins)."""
    return _entry(name).package


def load_backend(name: str) -> type[Index]:
    """The Index class registered as ``name``; says what to install when its library is missing,
    and names the plugin package when importing it fails in any other way."""
    entry = _entry(name)
    module_name, _, attr = entry.target.partition(":")
    try:
        cls = getattr(import_module(module_name), attr)
    except MissingDependency as exc:
        error = BackendUnavailable(
            f"Install {exc.package} to use the {name} backend ({exc.install_command})"
        )
        error.package = exc.package  # type: ignore[attr-defined]
        error.install_command = exc.install_command  # type: ignore[attr-defined]
        raise error from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a plugin may raise anything at import, SystemExit included
        raise BackendUnavailable(
            f"Backend '{name}' of package '{entry.package}' could not be loaded from "
            f"{entry.target}: {one_line_error(exc)}; fix or uninstall '{entry.package}'"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Index)):
        raise BackendUnavailable(
            f"Backend '{name}' of package '{entry.package}' ({entry.target}) is not an annbench "
            "Index class"
        )
    return cls


def name_of(cls: type[Index]) -> str | None:
    """The name ``cls`` is registered under, if it is."""
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, entry in _entries().items():
        if entry.target.replace(" ", "") == target:
            return name
    return None


def default_grid(backend: str, cls: type[Index] | None = None) -> Grid:
    """The default grid of ``backend`` (class ``cls`` when already loaded): the class's
    ``default_grid``, else a ``<backend>.yaml`` beside the module its entry point names, else
    the packaged ``backends/<backend>.yaml``; empty when there is none."""
    if cls is None:
        try:
            cls = load_backend(backend)
        except BackendUnavailable:  # library missing: a YAML file can still tell its grid
            cls = None
    if cls is not None and cls.default_grid is not None:
        return parse_grid(cls.default_grid, backend)
    for path in (_beside_module(backend), _packaged(backend)):
        if path is not None and path.is_file():
            return parse_grid(_read_grid_file(backend, path), backend)
    return Grid()  # every value comes from --grid


def _read_grid_file(backend: str, path: Any) -> Any:
    """The YAML in ``path``, or an AnnbenchError naming the backend and its package."""
    grid = f"Grid file {path} of backend '{backend}' (package '{backend_package(backend)}')"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AnnbenchError(f"{grid} is not UTF-8 text; fix or remove it") from None
    except OSError as exc:
        raise AnnbenchError(f"{grid} cannot be read ({exc.strerror}); fix or remove it") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        raise AnnbenchError(f"{grid} is not valid YAML: {message}") from exc


def _beside_module(backend: str) -> Any:
    """``<backend>.yaml`` in the folder of the module the backend's entry point names."""
    module = backend_target(backend).partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)  # imports the parent package of a dotted name
    except KeyboardInterrupt:
        raise
    except BaseException:  # a plugin package may raise anything at import, SystemExit too
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    return Path(spec.origin).parent / f"{backend}.yaml"


def _packaged(backend: str) -> Any:
    return resources.files("annbench.default_grids") / f"{backend}.yaml"


def grid_for_class(name: str, cls: type[Index]) -> Grid:
    """Default grid of ``cls``, registered as ``name`` or not (then only its attribute)."""
    if cls.default_grid is not None or name_of(cls) != name:
        return parse_grid(cls.default_grid or {}, name)
    return default_grid(name, cls)


def runnable_backends() -> tuple[list[str], dict[str, str]]:
    """What ``-b all`` runs: installed backends whose default grid gives every parameter they
    need; and the others with the reason each is skipped."""
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
        except Exception as exc:  # a malformed plugin class must not stop the others
            skipped[name] = _malformed(name, exc)
            continue
        names.append(name)
    return names, skipped


#: Capabilities an index declares, by the attribute it declares each with (yes / no words).
CAPABILITIES = {
    "filter": ("native_filter", "native", "post only"),
    "where": ("native_where", "yes", "no"),
    "add": ("supports_add", "yes", "no"),
    "remove": ("supports_remove", "yes", "no"),
}


def database_engines(names: Iterable[str]) -> dict[str, str]:
    """``{database backend: the backend of the library it is built on}`` for those of
    ``names`` that declare an ``engine`` (backends not installed here are left out)."""
    engines = {}
    for name in sorted(set(names)):
        try:
            engine = load_backend(name).engine
        except AnnbenchError:  # not installed here
            continue
        if engine is not None:
            engines[name] = engine
    return engines


def capability_table() -> pd.DataFrame:
    """One row per registered backend: installed, library version, metrics, filtered search,
    add/remove, save/load and default grid size (build x search configurations).

    A capability that differs between the default grid's build configurations reads
    ``depends: no for <params>``; a grid size that differs by metric reads ``28; angular 42``.
    """
    import pandas as pd

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
        grid = None
        try:
            grid = default_grid(name, cls)
            row["grid"] = _grid_size(grid, cls)
        except AnnbenchError as exc:
            row["grid"] = None
            if cls is not None:
                row["installed"] = f"yes, but its default grid is unusable: {exc}"
        if cls is not None:
            try:
                row.update(_describe(cls, grid))
            except Exception as exc:  # a malformed plugin class must not stop the others
                row["installed"] = f"no: {_malformed(name, exc)}"
        rows.append(row)
    columns = ["backend", "installed", "kind", "library", "version", "metrics", "filter"]
    columns += ["where", "add"]
    columns += ["remove", "save_load", "clients", "grid", "parameters"]
    table = pd.DataFrame(rows, columns=columns)
    # whole numbers, and None where a grid is unusable (not NaN in a float column)
    table["grid"] = pd.Series([row.get("grid") for row in rows], dtype=object)
    return table


def _grid_size(grid: Grid, cls: type[Index] | None) -> int | str:
    """The grid's number of configurations; per metric (``28; angular 42``) when it differs."""
    metrics = sorted(cls.metrics if cls is not None else Metric, key=lambda m: m.value)
    sizes = {metric.value: grid.size(metric) for metric in metrics}
    common = max(set(sizes.values()), key=list(sizes.values()).count)
    if len(set(sizes.values())) == 1:
        return common
    return "; ".join([str(common)] + [f"{m} {n}" for m, n in sizes.items() if n != common])


def _describe(cls: type[Index], grid: Grid | None = None) -> dict[str, Any]:
    """The capability columns of a loaded backend class (asked of its default grid's
    instances, when it has a usable grid)."""
    return dict(
        kind=cls.kind if cls.engine is None else f"{cls.kind} (on {cls.engine})",
        library=cls.library or "-",
        version=cls.library_version(),
        metrics=",".join(sorted(m.value for m in cls.metrics)),
        **{name: _capability(cls, grid, name) for name in CAPABILITIES},
        save_load="yes" if _overrides(cls, "save") and _overrides(cls, "load") else "no",
        clients="threads" if cls.releases_gil else "processes",
        parameters="; ".join(
            f"{kind}: {','.join(names)}"
            for kind, names in (
                ("build", build_param_names(cls)),
                ("search", search_param_names(cls)),
            )
            if names
        ),
    )


def _capability(cls: type[Index], grid: Grid | None, capability: str) -> str:
    """``capability`` of ``cls`` as the table shows it: the class's declaration, or ``depends:
    no for ...`` naming the build values of the default grid whose instances lack it."""
    attribute, yes, no = CAPABILITIES[capability]
    answers: list[tuple[dict[str, Any], bool]] = []
    for metric in sorted(cls.metrics, key=lambda m: m.value) if grid is not None else ():
        for build_params in grid.for_metric(metric).build_configs():
            try:
                index = cls(metric, **build_params)
            except Exception:  # noqa: S112 - a constructor that raises tells nothing here
                continue
            answers.append((build_params, bool(getattr(index, attribute))))
    if len({has for _, has in answers}) < 2:
        return yes if getattr(cls, attribute) else no
    having = {(k, repr(v)) for params, has in answers if has for k, v in params.items()}
    lacking = {
        f"{k}={v}": None  # the values only configurations without the capability have
        for params, has in answers
        if not has
        for k, v in params.items()
        if (k, repr(v)) not in having
    }
    if not lacking:  # only combinations lack it: name them whole
        lacking = {_label(p): None for p, has in answers if not has}
    return f"depends: {no} for {', '.join(lacking)}"


def _label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _overrides(cls: type[Index], method: str) -> bool:
    return getattr(cls, method) is not getattr(Index, method)


def _malformed(name: str, exc: Exception) -> str:
    package = backend_package(name)
    return (
        f"backend '{name}' of package '{package}' is malformed: {one_line_error(exc)}; "
        f"fix or uninstall '{package}'"
    )


def plugin_problems() -> list[str]:
    """One line per registration annbench sets aside: a plugin registering a built-in backend's
    name, or two plugins one name. The caller shows them, so they are not logged again."""
    problems = _scan()[1]
    _told.update(problems)
    return problems


@dataclass(frozen=True)
class _Entry:
    target: str  # module:Class
    package: str  # the distribution that registers it


#: Plugin problems already logged or handed to a caller, so each is told once per process.
_told: set[str] = set()


def _entry(name: str) -> _Entry:
    entries = _entries()
    if name not in entries:
        valid = ", ".join(sorted(entries)) or "(none registered: is annbench installed?)"
        raise AnnbenchError(f"Unknown backend '{name}'. Valid backends: {valid}")
    return entries[name]


def _entries() -> dict[str, _Entry]:
    """Registered backends by name; each plugin problem is logged once per process."""
    entries, problems = _scan()
    for problem in problems:
        if problem not in _told:
            _told.add(problem)
            log.warning(problem)
    return entries


def _scan() -> tuple[dict[str, _Entry], list[str]]:
    """Registered backends by name, and the plugin problems: a built-in name always keeps
    annbench's backend; between plugins the one found first on the path is kept."""
    chosen: dict[str, _Entry] = {}
    problems = []
    for ep in metadata.entry_points(group=GROUP):
        entry = _Entry(ep.value, _package(ep))
        held = chosen.get(ep.name)
        if held is None or held.package == entry.package:  # a distribution seen twice
            chosen.setdefault(ep.name, entry)
            continue
        if _is_builtin(entry.package) or _is_builtin(held.package):
            kept, other = (entry, held) if _is_builtin(entry.package) else (held, entry)
            chosen[ep.name] = kept
            problems.append(
                f"Plugin package '{other.package}' registers backend '{ep.name}', which annbench "
                "itself provides; annbench's is used (rename the plugin's entry point)"
            )
        else:
            problems.append(
                f"Plugin packages '{held.package}' and '{entry.package}' both register backend "
                f"'{ep.name}'; the one of '{held.package}' is used (rename one entry point)"
            )
    return chosen, problems


def _package(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = getattr(dist, "_path", None)  # a .dist-info folder names one package for good
    if where is None:
        return getattr(dist, "name", None) or "(unknown)"
    key = str(where)
    if key not in _PACKAGE_NAMES:  # reading the metadata file is what costs, on every scan
        _PACKAGE_NAMES[key] = getattr(dist, "name", None) or "(unknown)"
    return _PACKAGE_NAMES[key]


#: Package name by metadata folder, filled as entry points are scanned.
_PACKAGE_NAMES: dict[str, str] = {}


def _is_builtin(package: str) -> bool:
    return re.sub(r"[-_.]+", "-", package).lower() == BUILTIN_PACKAGE
