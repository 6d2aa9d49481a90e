"""Parameter grids: a scalar is fixed, a list is swept; ``build`` and ``search`` are separate.

A grid may be a list of blocks, each swept on its own: so a search range can follow the build
(``nprobe`` up to each block's ``nlist``), and a block with ``metrics:`` applies only to
datasets of those metrics (``i8`` storage where only angular data fits it).

A backend's default grid is found through the registry (``annbench.registry.default_grid``);
``--grid`` overrides are the sweep's (``annbench.sweep.grids``).
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from annbench.errors import AnnbenchError
from annbench.index import Index, build_param_names, search_param_names
from annbench.metrics import Metric

Params = dict[str, Any]


@dataclass(frozen=True)
class Grid:
    """Swept values per parameter name, for building and for searching.

    ``more`` holds further blocks, each a Grid swept on its own: a YAML list of
    ``{build:, search:}`` maps, so that (say) IVF factory strings sweep nprobe while HNSW ones
    sweep efSearch. ``metrics`` names the dataset metrics a block applies to (None: all).
    """

    build: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, list[Any]] = field(default_factory=dict)
    more: tuple[Grid, ...] = ()
    metrics: frozenset[Metric] | None = None

    def blocks(self) -> list[Grid]:
        """Every block, this one first, each without further blocks (none that applies to no
        metric: the empty grid ``for_metric`` leaves)."""
        blocks = [Grid(self.build, self.search, metrics=self.metrics), *self.more]
        return [block for block in blocks if block.metrics != frozenset()]

    def for_metric(self, metric: Metric) -> Grid:
        """The blocks that apply to datasets of ``metric`` (an empty grid when none does)."""
        return join_blocks([b for b in self.blocks() if b.metrics is None or metric in b.metrics])

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

    def size(self, metric: Metric | None = None) -> int:
        """Number of (build, search) configurations the grid runs (on ``metric``'s data)."""
        grid = self if metric is None else self.for_metric(metric)
        return sum(
            len(_product(block.build)) * len(_product(block.search)) for block in grid.blocks()
        )


def join_blocks(blocks: list[Grid]) -> Grid:
    """One Grid of ``blocks`` (each without further blocks), the first one leading; the empty
    grid (no configuration at all) when there are none."""
    if not blocks:
        return Grid(metrics=frozenset())
    first = blocks[0]
    return Grid(first.build, first.search, tuple(blocks[1:]), first.metrics)


def parse_grid(raw: Any, backend: str) -> Grid:
    """A Grid from a ``{build:, search:}`` map, or a list of them (blocks swept separately),
    each optionally with ``metrics:`` (the dataset metrics it applies to)."""
    blocks = raw if isinstance(raw, list) and raw else [raw]
    grids = []
    for block in blocks:
        if not isinstance(block, dict) or set(block) - {"build", "search", "metrics"}:
            raise AnnbenchError(
                f"Grid for '{backend}' must hold only 'build:' and 'search:' maps and an "
                "optional 'metrics:' list (or a list of such blocks)"
            )
        grids.append(
            Grid(
                _as_lists(block.get("build"), backend),
                _as_lists(block.get("search"), backend),
                metrics=_metrics(block, backend),
            )
        )
    return join_blocks(grids)


def _metrics(block: dict[str, Any], backend: str) -> frozenset[Metric] | None:
    """The ``metrics:`` of a grid block, parsed (None when it has none)."""
    if "metrics" not in block:
        return None
    raw = block["metrics"]
    names = raw if isinstance(raw, list) else [raw]
    try:
        return frozenset(Metric.parse(str(name)) for name in names)
    except AnnbenchError as exc:
        raise AnnbenchError(f"Grid for '{backend}': {exc}") from None


def check_grid(backend: str, cls: type[Index], grid: Grid) -> None:
    """Raise AnnbenchError naming every parameter ``cls`` does not take or needs and lacks."""
    build_names, search_names = build_param_names(cls), search_param_names(cls)
    check_values(backend, grid)
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
        missing = _missing(cls, block)
        if missing:
            passes = " ".join(f"--grid {name}=VALUE" for name in missing)
            raise AnnbenchError(
                f"Backend '{backend}' needs parameter{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} that its grid does not give; pass {passes}"
            )


def missing_params(cls: type[Index], grid: Grid) -> list[str]:
    """Parameters without a default that some block of ``grid`` does not give."""
    missing = [name for block in grid.blocks() for name in _missing(cls, block)]
    return list(dict.fromkeys(missing))


def _missing(cls: type[Index], block: Grid) -> list[str]:
    required = _required_params(cls.__init__) | _required_params(cls.set_search_params)
    names = build_param_names(cls) + search_param_names(cls)
    return [n for n in names if n in required and n not in block.build and n not in block.search]


#: The integer range every backend's C/C++ parameters can hold (int32).
INT_RANGE = (-(2**31), 2**31 - 1)


def check_values(backend: str, grid: Grid) -> None:
    """Raise AnnbenchError for a grid value no backend library can represent."""
    low, high = INT_RANGE
    for params in (section for block in grid.blocks() for section in (block.build, block.search)):
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


def _required_params(func: Any) -> set[str]:
    params = inspect.signature(func).parameters.values()
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
