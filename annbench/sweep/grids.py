"""Parameter grids: a scalar is fixed, a list is swept; ``build`` and ``search`` are separate.

A grid may be a list of blocks, each swept on its own: so a search range can follow the build
(``nprobe`` up to each block's ``nlist``), and a block with ``metrics:`` applies only to
datasets of those metrics (``i8`` storage where only angular data fits it).

A backend's default grid travels with it (see ``default_grid``); the built-in ones are the
editable YAML files in the top-level ``backends/`` folder, installed as the
``annbench.default_grids`` package so a wheel finds them from any directory.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from annbench.errors import AnnbenchError, BackendUnavailable
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


def default_grid(backend: str, cls: type[Index] | None = None) -> Grid:
    """The default grid of ``backend`` (class ``cls`` when already loaded): the class's
    ``default_grid``, else a ``<backend>.yaml`` beside the module its entry point names, else
    the packaged ``backends/<backend>.yaml``; empty when there is none."""
    from annbench.registry import load_backend

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
    from annbench.registry import backend_package

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
    from annbench.registry import backend_target

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


def with_overrides(grid: Grid, cls: type[Index], overrides: dict[str, list[Any]]) -> Grid:
    """``grid`` with the overridden parameters replaced; keys ``cls`` does not take are ignored.

    In a grid of several blocks, a search override goes to the blocks that sweep that key (all
    when none does); a build override makes one block of the first with the overrides, sweeping
    only the search keys given (else the first block's keys, each with the values of every
    block that sweeps the same keys: ``-g nlist=2048`` on per-nlist blocks sweeps every nprobe).
    """
    build_names, search_names = build_param_names(cls), search_param_names(cls)
    build_over = {k: v for k, v in overrides.items() if k in build_names}
    search_over = {k: v for k, v in overrides.items() if k in search_names}
    blocks = grid.blocks()
    if len(blocks) > 1 and build_over:
        first = blocks[0]
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


def grid_for_class(name: str, cls: type[Index]) -> Grid:
    """Default grid of ``cls``, registered as ``name`` or not (then only its attribute)."""
    from annbench.registry import name_of

    if cls.default_grid is not None or name_of(cls) != name:
        return parse_grid(cls.default_grid or {}, name)
    return default_grid(name, cls)
