"""Parameter grids: a scalar is fixed, a list is swept; ``build`` and ``search`` are separate.

Default grids are the YAML files in the top-level ``backends/`` folder, installed as the
``annbench.default_grids`` package so a wheel finds them from any directory.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from annbench.errors import AnnbenchError
from annbench.index import Index, build_param_names, search_param_names

Params = dict[str, Any]


@dataclass(frozen=True)
class Grid:
    """Swept values per parameter name, for building and for searching."""

    build: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, list[Any]] = field(default_factory=dict)

    def build_configs(self) -> list[Params]:
        """Every build parameter combination."""
        return _product(self.build)

    def search_configs(self) -> list[Params]:
        """Every search parameter combination."""
        return _product(self.search)


def default_grid(backend: str) -> Grid:
    """The packaged grid of ``backend`` (empty when it ships none)."""
    path = resources.files("annbench.default_grids") / f"{backend}.yaml"
    if not path.is_file():  # a plugin without a packaged grid: every value comes from --grid
        return Grid()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AnnbenchError(f"Grid file for '{backend}' is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) - {"build", "search"}:
        raise AnnbenchError(f"Grid file for '{backend}' must hold only 'build:' and 'search:' maps")
    return Grid(_as_lists(raw.get("build"), backend), _as_lists(raw.get("search"), backend))


def with_overrides(grid: Grid, cls: type[Index], overrides: dict[str, list[Any]]) -> Grid:
    """``grid`` with the overridden parameters replaced; keys ``cls`` does not take are ignored."""
    build_names, search_names = build_param_names(cls), search_param_names(cls)
    build = dict(grid.build)
    search = dict(grid.search)
    for key, values in overrides.items():
        if key in build_names:
            build[key] = values
        elif key in search_names:
            search[key] = values
    return Grid(build, search)


def check_grid(backend: str, cls: type[Index], grid: Grid) -> None:
    """Raise AnnbenchError naming any parameter ``cls`` does not take or is missing."""
    build_names, search_names = build_param_names(cls), search_param_names(cls)
    for kind, given, known in (
        ("build", grid.build, build_names),
        ("search", grid.search, search_names),
    ):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise AnnbenchError(
                f"Backend '{backend}' has no {kind} parameter {', '.join(unknown)}; "
                f"its {kind} parameters are: {', '.join(known) or '(none)'}"
            )
    check_values(backend, grid)
    required = _required_build_params(cls)
    missing = sorted(required - set(grid.build))
    if missing:
        raise AnnbenchError(
            f"Backend '{backend}' needs build parameter {', '.join(missing)}; "
            f"pass it with --grid {missing[0]}=VALUE"
        )
    missing_search = sorted(set(search_names) - set(grid.search))
    if missing_search:
        raise AnnbenchError(
            f"Backend '{backend}' needs search parameter {', '.join(missing_search)}; "
            f"pass it with --grid {missing_search[0]}=VALUE"
        )


def parse_override(text: str) -> tuple[str, list[Any]]:
    """``'key=v1,v2'`` -> ``('key', [v1, v2])`` with YAML scalars (ints, floats, strings)."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise AnnbenchError(f"Grid override '{text}' must look like key=value or key=v1,v2,v3")
    try:
        parsed = [yaml.safe_load(v) for v in values.split(",")]
    except yaml.YAMLError as exc:
        raise AnnbenchError(f"Grid override '{text}' has a value that is not a scalar") from exc
    if any(v is None or isinstance(v, (list, dict)) for v in parsed):
        raise AnnbenchError(f"Grid override '{text}' has an empty or non-scalar value")
    return key, parsed


def parse_overrides(texts: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """Every ``--grid KEY=V1,V2`` parsed; a key given twice is an error, not dropped."""
    overrides: dict[str, list[Any]] = {}
    for text in texts:
        key, values = parse_override(text)
        if key in overrides:
            joined = ",".join(str(v) for v in overrides[key] + values)
            raise AnnbenchError(
                f"Grid key '{key}' is given twice; give all its values once: --grid {key}={joined}"
            )
        overrides[key] = values
    return overrides


#: The integer range every backend's C/C++ parameters can hold (int32).
INT_RANGE = (-(2**31), 2**31 - 1)


def check_values(backend: str, grid: Grid) -> None:
    """Raise AnnbenchError for a grid value no backend library can represent."""
    low, high = INT_RANGE
    for params in (grid.build, grid.search):
        for key, values in params.items():
            for value in values:
                if isinstance(value, bool):
                    continue
                if isinstance(value, int) and not low <= value <= high:
                    raise AnnbenchError(
                        f"Grid value {key}={value} for '{backend}' is beyond the integer range "
                        f"libraries accept ({low}..{high})"
                    )
                if isinstance(value, float) and not math.isfinite(value):
                    raise AnnbenchError(
                        f"Grid value {key}={value} for '{backend}' is not a finite number"
                    )


def _required_build_params(cls: type[Index]) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    }


def _as_lists(section: Any, backend: str) -> dict[str, list[Any]]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise AnnbenchError(f"Grid for '{backend}': 'build'/'search' must map names to values")
    return {str(k): list(v) if isinstance(v, list) else [v] for k, v in section.items()}


def _product(values: dict[str, list[Any]]) -> list[Params]:
    names = sorted(values)
    combos = itertools.product(*(values[n] for n in names))
    return [dict(zip(names, combo, strict=True)) for combo in combos]
