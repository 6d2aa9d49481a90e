"""Parameter grids: a scalar is fixed, a list is swept; ``build`` and ``search`` are separate.

Default grids are the YAML files in the top-level ``backends/`` folder, installed as the
``annbench.default_grids`` package so a wheel finds them from any directory.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from annbench.errors import AnnbenchError
from annbench.index import Index, build_param_names, search_param_names

Params = dict[str, Any]


@dataclass(frozen=True)
class Grid:
    """Swept values per parameter name, for building and for searching.

    ``more`` holds further blocks, each a Grid swept on its own: a YAML list of
    ``{build:, search:}`` maps, so that (say) IVF factory strings sweep nprobe while HNSW ones
    sweep efSearch.
    """

    build: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, list[Any]] = field(default_factory=dict)
    more: tuple[Grid, ...] = ()

    def blocks(self) -> list[Grid]:
        """Every block, this one first, each without further blocks."""
        return [Grid(self.build, self.search), *self.more]

    def build_configs(self) -> list[Params]:
        """Every build parameter combination, over all blocks."""
        configs: list[Params] = []
        for block in self.blocks():
            configs += [c for c in _product(block.build) if c not in configs]
        return configs

    def search_configs(self, build_params: Params | None = None) -> list[Params]:
        """Every search parameter combination swept on ``build_params`` (its block's; the
        first block's when None)."""
        for block in self.blocks():
            if build_params is None or build_params in _product(block.build):
                return _product(block.search)
        return []

    def size(self) -> int:
        """Number of (build, search) configurations the grid runs."""
        return sum(
            len(_product(block.build)) * len(_product(block.search)) for block in self.blocks()
        )


def default_grid(backend: str) -> Grid:
    """The packaged grid of ``backend`` (empty when it ships none)."""
    path = resources.files("annbench.default_grids") / f"{backend}.yaml"
    if not path.is_file():  # a plugin without a packaged grid: every value comes from --grid
        return Grid()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AnnbenchError(f"Grid file for '{backend}' is not valid YAML: {exc}") from exc
    return parse_grid(raw, backend)


def parse_grid(raw: Any, backend: str) -> Grid:
    """A Grid from a ``{build:, search:}`` map, or a list of them (blocks swept separately)."""
    blocks = raw if isinstance(raw, list) and raw else [raw]
    grids = []
    for block in blocks:
        if not isinstance(block, dict) or set(block) - {"build", "search"}:
            raise AnnbenchError(
                f"Grid for '{backend}' must hold only 'build:' and 'search:' maps "
                "(or a list of such maps)"
            )
        grids.append(
            Grid(_as_lists(block.get("build"), backend), _as_lists(block.get("search"), backend))
        )
    return Grid(grids[0].build, grids[0].search, tuple(grids[1:]))


def with_overrides(grid: Grid, cls: type[Index], overrides: dict[str, list[Any]]) -> Grid:
    """``grid`` with the overridden parameters replaced in every block; keys ``cls`` does not
    take are ignored."""
    build_names, search_names = build_param_names(cls), search_param_names(cls)
    blocks = []
    for block in grid.blocks():
        build, search = dict(block.build), dict(block.search)
        for key, values in overrides.items():
            if key in build_names:
                build[key] = values
            elif key in search_names:
                search[key] = values
        blocks.append(Grid(build, search))
    return Grid(blocks[0].build, blocks[0].search, tuple(blocks[1:]))


def check_grid(backend: str, cls: type[Index], grid: Grid) -> None:
    """Raise AnnbenchError naming every parameter ``cls`` does not take or needs and lacks."""
    build_names, search_names = build_param_names(cls), search_param_names(cls)
    required = _required_params(cls.__init__) | _required_params(cls.set_search_params)
    for block in grid.blocks():
        for kind, given, known in (
            ("build", block.build, build_names),
            ("search", block.search, search_names),
        ):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise AnnbenchError(
                    f"Backend '{backend}' has no {kind} parameter {', '.join(unknown)}; "
                    f"its {kind} parameters are: {', '.join(known) or '(none)'}"
                )
        missing = [n for n in build_names + search_names if n in required]
        missing = [n for n in missing if n not in block.build and n not in block.search]
        if missing:
            passes = " ".join(f"--grid {name}=VALUE" for name in missing)
            raise AnnbenchError(
                f"Backend '{backend}' needs parameter{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} that its grid does not give; pass {passes}"
            )


def check_overrides(classes: dict[str, type[Index]], overrides: dict[str, list[Any]]) -> None:
    """Raise AnnbenchError for a ``--grid`` key no selected backend takes, or one a selected
    backend spells differently (``efConstruction`` / ``ef_construction``) and is not given."""
    takes = {
        name: build_param_names(cls) + search_param_names(cls) for name, cls in classes.items()
    }
    for key in overrides:
        takers = [name for name, params in takes.items() if key in params]
        others = {
            name: spelled
            for name, params in takes.items()
            if name not in takers
            for spelled in params
            if _spelling(spelled) == _spelling(key) and spelled not in overrides
        }
        hint = "; ".join(f"{name} spells it '{spelled}'" for name, spelled in others.items())
        if not takers:
            known = sorted({p for params in takes.values() for p in params})
            raise AnnbenchError(
                f"Grid key '{key}' is not a parameter of {', '.join(classes)}; "
                + (f"{hint}" if hint else f"valid keys: {', '.join(known) or '(none)'}")
            )
        if others:
            fixes = " ".join(f"--grid {s}=..." for s in others.values())
            raise AnnbenchError(
                f"Grid key '{key}' applies to {', '.join(takers)} only: {hint}; "
                f"add {fixes} to set it there too"
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


def _required_params(func: Any) -> set[str]:
    params = inspect.signature(func).parameters.values()
    return {
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    }


def _spelling(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


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
