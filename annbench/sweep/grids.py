"""Grids in a sweep: ``--grid KEY=V1,V2`` overrides parsed, checked against the selected
backends and applied to their default grids.

A grid itself (``Grid``, parsing, checks) is ``annbench.param_grid``'s and a backend's default
grid the registry's (``annbench.registry.default_grid``); both are re-exported here for older
imports.
"""

from __future__ import annotations

import csv
from typing import Any

import yaml

from annbench.errors import AnnbenchError
from annbench.index import Index, build_param_names, search_param_names
from annbench.param_grid import (
    INT_RANGE,
    Grid,
    Params,
    check_grid,
    check_values,
    join_blocks,
    missing_params,
    parse_grid,
)
from annbench.registry import default_grid, grid_for_class

__all__ = [
    "INT_RANGE",
    "Grid",
    "Params",
    "check_grid",
    "check_overrides",
    "check_values",
    "default_grid",
    "grid_for_class",
    "join_blocks",
    "missing_params",
    "parse_grid",
    "parse_override",
    "parse_overrides",
    "with_overrides",
]


def with_overrides(grid: Grid, cls: type[Index], overrides: dict[str, list[Any]]) -> Grid:
    """``grid`` with the overridden parameters replaced; keys ``cls`` does not take are ignored.

    In a grid of several blocks, a search override goes to the blocks that sweep that key (all
    when none does); a build override makes one block of the first block that sets the most of
    the overridden keys (``-g M=32`` takes Redis' HNSW block, not its FLAT one), sweeping only
    the search keys given (else that block's keys, each with the values of every block that
    sweeps the same keys: ``-g nlist=2048`` on per-nlist blocks sweeps every nprobe).
    """
    build_names, search_names = build_param_names(cls), search_param_names(cls)
    build_over = {k: v for k, v in overrides.items() if k in build_names}
    search_over = {k: v for k, v in overrides.items() if k in search_names}
    blocks = grid.blocks()
    if len(blocks) > 1 and build_over:
        first = max(blocks, key=lambda block: len(build_over.keys() & block.build.keys()))
        alike = [b.search for b in blocks if set(b.search) == set(first.search)]
        merged = {key: _union(s[key] for s in alike) for key in first.search}
        return Grid({**first.build, **build_over}, search_over or merged, metrics=first.metrics)
    out = []
    for block in blocks:
        search = dict(block.search)
        for key, values in search_over.items():
            if len(blocks) == 1 or key in block.search or not any(key in b.search for b in blocks):
                search[key] = values
        out.append(Grid({**block.build, **build_over}, search, metrics=block.metrics))
    return join_blocks(out)


def _union(lists: Any) -> list[Any]:
    """The values of ``lists`` once each, numbers in increasing order."""
    values = list(dict.fromkeys(v for values in lists for v in values))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return sorted(values) if numeric else values


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
    """``'key=v1,v2'`` -> ``('key', [v1, v2])`` with YAML scalars (ints, floats, strings); a
    value holding commas goes in double quotes: ``factory="IVF256,SQ8","HNSW32"``."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise AnnbenchError(f"Grid override '{text}' must look like key=value or key=v1,v2,v3")
    try:
        fields = next(csv.reader([values], skipinitialspace=True, strict=True))
        parsed = [yaml.safe_load(v) if v.strip() else None for v in fields]
    except (csv.Error, yaml.YAMLError) as exc:
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


def _spelling(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()
