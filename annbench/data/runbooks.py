"""Runbooks: insert / delete / search steps over a dataset's base rows, and the exact ground
truth of every search step over the rows live at that step.

A runbook is a small YAML file::

    description: insert half, then slide a window of 10% along the base
    steps:
      - insert: [0, 50%]        # rows [start, end) of train; ids are row numbers
      - search                  # all queries against the live rows
      - delete: [0, 10%]
      - replace: {delete: [10%, 20%], insert: [60%, 70%]}   # one step doing both

Bounds are row numbers or percentages of the base (rounded to the nearest row), so a runbook
fits any dataset. A runbook file holds at most ``MAX_BYTES`` bytes, ``MAX_STEPS`` steps and
``MAX_VALUES`` YAML values with every alias expanded, checked before any of it is built.

The ground truth of a search step (top-100 over the live rows, computed at BLAS speed) is
cached in the dataset file as the group ``runbook@<name>``, or in a sidecar file in the data
folder when the dataset file is read-only or ships inside annbench.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from annbench.data.format import Dataset
from annbench.data.groundtruth import GT_K, exact_knn
from annbench.errors import AnnbenchError
from annbench.paths import check_input_file, check_path_name, data_dir

log = logging.getLogger(__name__)

STEP_KINDS = ("insert", "delete", "search", "replace")
UPDATE_KINDS = ("insert", "delete", "replace")
WORKLOAD_PREFIX = "runbook:"
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_SHIPPED = "runbook_files"
#: Largest runbook file read: 10,000 steps written out take about 300 kB.
MAX_BYTES = 1 << 20
#: Most steps in a runbook: every search step's ground truth (nq x 100) is computed and stored.
MAX_STEPS = 10_000
#: Most YAML values (scalars, lists, mappings) in a runbook with every alias (``*name``)
#: expanded: a replace step is 11, so 10,000 steps fit, and a "billion laughs" file does not.
MAX_VALUES = 200_000

Rows = tuple[int, int]


@dataclass(frozen=True)
class Step:
    """One runbook step: ``kind`` and the row ranges ``[start, end)`` it inserts / deletes."""

    kind: str  # insert | delete | search | replace
    insert: Rows | None = None
    delete: Rows | None = None

    def describe(self) -> str:
        """``insert [0, 100)``, ``search``, ``replace delete [0, 10) insert [50, 60)``."""
        parts = [self.kind]
        if self.kind == "replace":
            parts += [f"delete [{self.delete[0]}, {self.delete[1]})"]  # type: ignore[index]
            parts += [f"insert [{self.insert[0]}, {self.insert[1]})"]  # type: ignore[index]
        elif self.kind != "search":
            rows = self.insert or self.delete
            parts.append(f"[{rows[0]}, {rows[1]})")  # type: ignore[index]
        return " ".join(parts)

    @property
    def changed(self) -> int:
        """Rows this step inserts plus rows it deletes."""
        return sum(end - start for start, end in (self.insert or (0, 0), self.delete or (0, 0)))


@dataclass(frozen=True)
class Runbook:
    """A validated runbook resolved against a base of ``n`` rows."""

    name: str
    n: int
    steps: tuple[Step, ...]
    description: str = ""

    @property
    def workload(self) -> str:
        """The record workload: ``runbook:<name>``."""
        return WORKLOAD_PREFIX + self.name

    def search_steps(self) -> list[int]:
        """Indexes of the search steps."""
        return [i for i, step in enumerate(self.steps) if step.kind == "search"]

    def update_steps(self) -> list[int]:
        """Indexes of the insert / delete / replace steps."""
        return [i for i, step in enumerate(self.steps) if step.kind != "search"]

    def live_masks(self) -> list[np.ndarray]:
        """``(n,)`` bool mask of the live rows after each step (steps x n bytes in all)."""
        return [live.copy() for _, live in self._live()]

    def search_masks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(step, (n,) bool mask of the live rows)`` of each search step, one at a time; the
        mask is reused, so copy it to keep it."""
        return ((i, live) for i, live in self._live() if self.steps[i].kind == "search")

    def live_sizes(self) -> list[int]:
        """Rows live after each step (a validated runbook inserts only new rows and deletes only
        live ones, so these are running sums)."""
        sizes, live = [], 0
        for step in self.steps:
            live += (step.insert or (0, 0))[1] - (step.insert or (0, 0))[0]
            live -= (step.delete or (0, 0))[1] - (step.delete or (0, 0))[0]
            sizes.append(live)
        return sizes

    def min_live(self) -> int:
        """Fewest rows live at any search step: the largest k that makes sense."""
        sizes = self.live_sizes()
        return min(sizes[i] for i in self.search_steps())

    def _live(self) -> Iterator[tuple[int, np.ndarray]]:
        live = np.zeros(self.n, dtype=bool)
        for i, step in enumerate(self.steps):
            if step.delete is not None:
                live[step.delete[0] : step.delete[1]] = False
            if step.insert is not None:
                live[step.insert[0] : step.insert[1]] = True
            yield i, live

    def canonical(self) -> str:
        """The resolved steps as canonical JSON: what the ground truth depends on."""
        steps = [
            {"kind": s.kind, "insert": list(s.insert or ()), "delete": list(s.delete or ())}
            for s in self.steps
        ]
        return json.dumps({"n": self.n, "steps": steps}, sort_keys=True)

    def workload_hash(self, content_hash: str) -> str:
        """Hash of the dataset content and the resolved steps: records of this runbook on
        this dataset are keyed on it, so editing a runbook never mixes old and new results."""
        text = f"{content_hash}:{self.workload}:{self.canonical()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def shipped_runbooks() -> list[str]:
    """Names of the runbooks that ship with annbench."""
    folder = resources.files("annbench") / _SHIPPED
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_runbook(spec: str, n: int) -> Runbook:
    """The runbook ``spec`` (a shipped name or a path to a YAML file) resolved for ``n`` rows."""
    candidate = check_path_name(spec, "Runbook")  # a name too long to look up is refused
    if candidate.suffix in (".yaml", ".yml") or os.sep in spec:
        source, name = check_input_file(candidate, "Runbook file"), candidate.stem
    else:
        shipped = resources.files("annbench") / _SHIPPED / f"{spec}.yaml"
        if not shipped.is_file():
            raise AnnbenchError(
                f"Unknown runbook '{spec}'. Shipped runbooks: {', '.join(shipped_runbooks())} "
                "(or give a path to a runbook YAML file)"
            )
        source, name = shipped, spec
    with source.open("rb") as f:
        raw = f.read(MAX_BYTES + 1)  # never more, whatever the file claims its size is
    if len(raw) > MAX_BYTES:
        raise AnnbenchError(
            f"Runbook {name} is larger than {MAX_BYTES:,} bytes; a runbook is a list of at "
            f"most {MAX_STEPS:,} steps: merge consecutive steps or split it into several"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnnbenchError(f"Runbook {name} is not UTF-8 text: {exc}; save it as UTF-8") from None
    return parse_runbook(read_yaml(text, name), name, n)


def read_yaml(text: str, name: str) -> Any:
    """The YAML document ``text`` of runbook ``name`` as Python data; refused (one
    AnnbenchError line) when it holds more than ``MAX_VALUES`` values with its aliases expanded,
    found from its parse events before anything is built."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML has it
    try:
        _check_values(yaml.parse(text, Loader=loader), name)
        return yaml.load(text, Loader=loader)  # a safe loader: plain data only
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise AnnbenchError(f"Runbook {name} is not valid YAML: {text}") from exc


def _check_values(events: Iterator[Any], name: str) -> None:
    """Count the values (scalars, lists, mappings) of YAML ``events``, an alias counting as
    every value under the node it names; refuse past ``MAX_VALUES``."""
    total = 0
    sizes: dict[str, int] = {}  # anchor -> values under its node, once that node is complete
    started: set[str] = set()
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, total before) of open collections
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            # an alias to a node still open (itself) never ends; an unknown one is the loader's
            # error to report
            total += sizes.get(event.anchor, MAX_VALUES + 1) if event.anchor in started else 0
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                started.add(event.anchor)
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if event.anchor is not None:
                started.add(event.anchor)
            open_nodes.append((event.anchor, total))
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = total - before
        if total > MAX_VALUES:
            raise AnnbenchError(
                f"Runbook {name} holds more than {MAX_VALUES:,} YAML values with its aliases "
                f"(*name) expanded; write its steps out (at most {MAX_STEPS:,}) instead of "
                "repeating them through aliases"
            )


def parse_runbook(data: Any, name: str, n: int) -> Runbook:
    """Validate runbook ``data`` (parsed YAML) against a base of ``n`` rows; any problem is
    one AnnbenchError line naming the step."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise AnnbenchError(
            f"Runbook name '{name}' must be letters, digits, '.', '_' or '-' (it names an HDF5 "
            "group); rename the file"
        )
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise AnnbenchError(
            f"Runbook {name} must be a mapping with a non-empty 'steps' list "
            "(e.g. steps: [{insert: [0, 50%]}, search])"
        )
    if len(data["steps"]) > MAX_STEPS:
        raise AnnbenchError(
            f"Runbook {name} has {len(data['steps']):,} steps, more than {MAX_STEPS:,}; merge "
            "consecutive inserts or deletes (one step can take a row range) or split it"
        )
    unknown = sorted(set(data) - {"steps", "description"})
    if unknown:
        raise AnnbenchError(
            f"Runbook {name} has unknown keys {', '.join(unknown)}; use 'steps' and 'description'"
        )
    steps = tuple(
        _parse_step(raw, f"Runbook {name}, step {i}", n) for i, raw in enumerate(data["steps"])
    )
    runbook = Runbook(name, n, steps, str(data.get("description") or ""))
    _check_live(runbook)
    return runbook


def _parse_step(raw: Any, where: str, n: int) -> Step:
    if raw == "search" or raw == {"search": None}:
        return Step("search")
    if isinstance(raw, str):
        raw = {raw: None}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise AnnbenchError(
            f"{where}: {raw!r} is not a step; write 'search', 'insert: [start, end]', "
            "'delete: [start, end]' or 'replace: {delete: [..], insert: [..]}'"
        )
    ((kind, value),) = raw.items()
    if kind not in STEP_KINDS:
        raise AnnbenchError(
            f"{where}: unknown step kind '{kind}'; use one of {', '.join(STEP_KINDS)}"
        )
    if kind == "search":
        raise AnnbenchError(f"{where}: 'search' takes no value; write it alone as '- search'")
    if kind == "replace":
        if not isinstance(value, dict) or set(value) != {"delete", "insert"}:
            raise AnnbenchError(
                f"{where}: replace needs both ranges: replace: {{delete: [start, end], "
                "insert: [start, end]}"
            )
        return Step(
            "replace",
            insert=_rows(value["insert"], f"{where} (replace insert)", n),
            delete=_rows(value["delete"], f"{where} (replace delete)", n),
        )
    rows = _rows(value, f"{where} ({kind})", n)
    return Step(kind, **{kind: rows})


def _rows(value: Any, where: str, n: int) -> Rows:
    if not isinstance(value, list) or len(value) != 2:
        raise AnnbenchError(f"{where}: rows must be [start, end), got {value!r}")
    start, end = (_bound(v, where, n) for v in value)
    if not 0 <= start < end:
        raise AnnbenchError(f"{where}: rows [{start}, {end}) are empty or negative")
    if end > n:
        raise AnnbenchError(
            f"{where}: rows [{start}, {end}) are outside the dataset's {n} base rows; "
            f"use bounds up to {n} (or percentages such as 100%)"
        )
    return start, end


def _bound(value: Any, where: str, n: int) -> int:
    if isinstance(value, bool):
        raise AnnbenchError(f"{where}: bound {value!r} is not a row number or a percentage")
    if isinstance(value, int):
        return value
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None:
        raise AnnbenchError(
            f"{where}: bound {value!r} is not a row number or a percentage such as '10%'"
        )
    return int(round(float(match.group(1)) * n / 100))


def _check_live(runbook: Runbook) -> None:
    """Every insert adds rows never inserted before; every delete removes live rows; every
    search has something to search."""
    inserted_at = np.full(runbook.n, -1, dtype=np.int64)
    deleted_at = np.full(runbook.n, -1, dtype=np.int64)
    live = 0
    for i, step in enumerate(runbook.steps):
        where = f"Runbook {runbook.name}, step {i} ({step.describe()})"
        if step.delete is not None:
            rows = slice(*step.delete)
            never = np.flatnonzero(inserted_at[rows] < 0)
            if len(never):
                raise AnnbenchError(
                    f"{where}: deletes row {step.delete[0] + never[0]}, which was never "
                    "inserted; delete only live rows"
                )
            gone = np.flatnonzero(deleted_at[rows] >= 0)
            if len(gone):
                row = step.delete[0] + gone[0]
                raise AnnbenchError(
                    f"{where}: deletes row {row}, already deleted at step {deleted_at[row]}"
                )
            deleted_at[rows] = i
            live -= step.delete[1] - step.delete[0]
        if step.insert is not None:
            rows = slice(*step.insert)
            again = np.flatnonzero(inserted_at[rows] >= 0)
            if len(again):
                row = step.insert[0] + again[0]
                raise AnnbenchError(
                    f"{where}: inserts row {row}, already inserted at step {inserted_at[row]}; "
                    "inserts must not overlap (ids are row numbers)"
                )
            inserted_at[rows] = i
            live += step.insert[1] - step.insert[0]
        if step.kind == "search" and live == 0:
            raise AnnbenchError(f"{where}: searches an empty index; insert rows first")
    if not runbook.search_steps():
        raise AnnbenchError(f"Runbook {runbook.name} has no search step; add '- search'")


# ---- ground truth per search step ------------------------------------------------------------


@dataclass
class RunbookTruth:
    """Exact ground truth of each search step: ``step -> (neighbors, distances)``, each
    ``(nq, min(k, live))``, ids are base row numbers."""

    steps: dict[int, tuple[np.ndarray, np.ndarray]]


def compute_truth(
    dataset: Dataset,
    runbook: Runbook,
    k: int = GT_K,
    progress: Callable[[int, int], None] | None = None,
) -> RunbookTruth:
    """Exact top-``k`` over the live rows at every search step (BLAS, via ``exact_knn``);
    ``progress(done, total)`` after each step."""
    _check_size(dataset, runbook)
    total = len(runbook.search_steps())
    if progress is not None:
        progress(0, total)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for done, (i, live) in enumerate(runbook.search_masks(), 1):
        rows = np.flatnonzero(live)
        distances, positions = exact_knn(
            dataset.train[rows], dataset.test, min(k, len(rows)), dataset.metric
        )
        # rows ascend, so exact_knn's "ids ascending among ties" order survives the mapping
        out[i] = (rows[positions].astype(np.int64), distances.astype(np.float64))
        if progress is not None:
            progress(done, total)
    return RunbookTruth(out)


def truth_path(dataset: Dataset) -> Path:
    """Where the ground truth of ``dataset``'s runbooks is cached: the dataset file itself
    when annbench may change it, else the side file ``<name>-<content hash>.workloads.h5`` in
    the data folder that filter workloads share (always for the datasets bundled inside
    annbench, so their files never change)."""
    path = Path(dataset.path)
    bundled = Path(str(resources.files("annbench.bundled"))).resolve()
    inside_package = path.resolve().parent == bundled
    if not inside_package and os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        return path
    return data_dir() / f"{path.stem}-{dataset.content_hash}.workloads.h5"


def read_truth(path: Path, runbook: Runbook, k: int = GT_K) -> RunbookTruth | None:
    """The cached ground truth of ``runbook`` in ``path``; None when absent, stale (another
    runbook of the same name, fewer than ``k`` neighbours) or unfinished."""
    if not Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            group = f.get(_group_name(runbook))
            if not _fresh(group, runbook, k):
                return None
            steps = {
                i: (group[f"neighbors_{i}"][()], group[f"distances_{i}"][()])
                for i in runbook.search_steps()
            }
    except (OSError, KeyError) as exc:
        raise AnnbenchError(f"Cannot read runbook ground truth from {path}: {exc}") from exc
    return RunbookTruth(
        {i: (ids.astype(np.int64), d.astype(np.float64)) for i, (ids, d) in steps.items()}
    )


def write_truth(path: Path, runbook: Runbook, truth: RunbookTruth, content_hash: str) -> None:
    """Store ``truth`` as group ``runbook@<name>`` in ``path`` (created if missing): an updated
    copy is renamed over the file, so a killed process leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    name = _group_name(runbook)
    try:
        if path.is_file():
            shutil.copyfile(path, partial)
        with h5py.File(partial, "a") as f:
            if "distance" not in f.attrs:  # a side file: say whose it is
                f.attrs["annbench_content_hash"] = content_hash
            if name in f:
                del f[name]
            group = f.create_group(name)
            for i, (ids, distances) in truth.steps.items():
                group.create_dataset(f"neighbors_{i}", data=ids.astype(np.int32))
                group.create_dataset(f"distances_{i}", data=distances.astype(np.float32))
            group.attrs["runbook"] = runbook.canonical()
            group.attrs["content_hash"] = content_hash
            group.attrs["k"] = min(len(ids[0]) for ids, _ in truth.steps.values())
            group.attrs["complete"] = True
        os.replace(partial, path)
    except OSError as exc:
        raise AnnbenchError(f"Cannot write runbook ground truth to {path}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def runbook_truth(
    dataset: Dataset,
    runbook: Runbook,
    recompute: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[RunbookTruth, Path, bool]:
    """Cached ground truth of ``runbook`` on ``dataset``, computed and cached when missing:
    ``(truth, file it is cached in, whether it was computed now)``."""
    path = truth_path(dataset)
    cached = None if recompute else read_truth(path, runbook)
    if cached is not None:
        return cached, path, False
    truth = compute_truth(dataset, runbook, progress=progress)
    write_truth(path, runbook, truth, dataset.content_hash)
    log.info(
        "runbook %s: ground truth of %d search steps cached in %s",
        runbook.name,
        len(truth.steps),
        path,
    )
    return truth, path, True


def _group_name(runbook: Runbook) -> str:
    return f"runbook@{runbook.name}"


def _fresh(group: Any, runbook: Runbook, k: int) -> bool:
    if group is None or not group.attrs.get("complete"):
        return False
    stored = group.attrs.get("runbook")
    stored = stored.decode() if isinstance(stored, bytes) else stored
    wanted = min(k, runbook.min_live())
    return stored == runbook.canonical() and int(group.attrs.get("k", 0)) >= wanted


def _check_size(dataset: Dataset, runbook: Runbook) -> None:
    if len(dataset.train) != runbook.n:
        raise AnnbenchError(
            f"Runbook {runbook.name} was resolved for {runbook.n} rows but {dataset.name} has "
            f"{len(dataset.train)}; load it for this dataset"
        )


# ---- what a sweep needs to replay a runbook --------------------------------------------------


@dataclass(frozen=True)
class RunbookPlan:
    """A runbook ready to replay on a dataset: its ground truth is cached at ``truth_path``."""

    runbook: Runbook
    truth_path: str
    workload_hash: str
    min_live: int  # fewest live rows at any search step: the largest k that makes sense


def prepare_runbook(
    dataset: Dataset,
    spec: str,
    recompute: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[RunbookPlan, bool]:
    """Load runbook ``spec`` for ``dataset`` and make sure its ground truth is cached:
    ``(plan, whether the ground truth was computed now)``."""
    runbook = load_runbook(spec, len(dataset.train))
    _, path, computed = runbook_truth(dataset, runbook, recompute, progress)
    plan = RunbookPlan(
        runbook=runbook,
        truth_path=str(path),
        workload_hash=runbook.workload_hash(dataset.content_hash),
        min_live=runbook.min_live(),
    )
    return plan, computed


def is_runbook_workload(workload: Any) -> bool:
    """Whether a record's workload is a runbook's."""
    return isinstance(workload, str) and workload.startswith(WORKLOAD_PREFIX)
