"""DataFrames of records as people read them: every build and search parameter a column of
its own (``build.M``, ``search.ef``), the dict fields whole as JSON text; and back."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

#: Dict-valued record fields, kept whole as JSON text in DataFrames and exports.
JSON_COLUMNS = ("build_params", "search_params", "provenance")


def flatten(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every build and search parameter as a column of its own (``build.M``,
    ``search.ef``) after ``search_params``, and the dict fields as JSON text."""
    stale = [c for c in frame.columns if str(c).startswith(("build.", "search."))]
    frame = frame.drop(columns=stale)  # flattening twice gives the same frame
    flat: dict[str, pd.Series] = {}
    for field, prefix in (("build_params", "build."), ("search_params", "search.")):
        dicts = [as_dict(value) for value in frame[field]]
        names = list(dict.fromkeys(name for params in dicts for name in params))
        for name in names:
            flat[prefix + name] = _column([p.get(name) for p in dicts], frame.index)
    for field in JSON_COLUMNS:
        if field in frame:
            frame[field] = [_as_json(value) for value in frame[field]]
    if not flat:
        return frame
    at = list(frame.columns).index("search_params") + 1
    left, right = frame.iloc[:, :at], frame.iloc[:, at:]
    return pd.concat([left, pd.DataFrame(flat, index=frame.index), right], axis=1)


def with_dicts(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its JSON text fields as dicts again, as the analyses take them."""
    if not any(field in frame for field in JSON_COLUMNS):
        return frame
    frame = frame.copy()
    for field in JSON_COLUMNS:
        if field in frame:
            frame[field] = [as_dict(value) for value in frame[field]]
    return frame


def as_dict(value: Any) -> dict[str, Any]:
    """A parameter dict from a dict or its JSON text (anything else: empty)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return json.loads(value)
    return {}


def _as_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _column(values: list[Any], index: pd.Index) -> pd.Series:
    """A parameter column: whole numbers as a nullable integer column, lists as JSON."""
    values = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(values, index=index, dtype="Int64")
    return pd.Series(values, index=index, dtype=object).infer_objects()


def numbers(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]`` as floats; NaN where not a number, or where the column is absent
    (stores older than the field)."""
    if name not in frame:
        return pd.Series(float("nan"), index=frame.index)
    return pd.to_numeric(frame[name], errors="coerce").astype(float)
