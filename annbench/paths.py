"""Where datasets and results live: environment variables first, then sensible defaults.

Inside a source checkout the defaults are its ``datasets/`` and ``results/`` folders; an
installed wheel uses the user's cache and data folders (XDG), never the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Folder of dataset HDF5 files (``ANNBENCH_DATA`` overrides)."""
    return _choose("ANNBENCH_DATA", "datasets", _xdg("XDG_CACHE_HOME", ".cache") / "annbench")


def results_dir() -> Path:
    """Folder of the results store (``ANNBENCH_RESULTS`` overrides)."""
    return _choose(
        "ANNBENCH_RESULTS", "results", _xdg("XDG_DATA_HOME", ".local/share") / "annbench"
    )


def _choose(env: str, folder: str, fallback_root: Path) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "setup.cfg").is_file() and (checkout / folder).is_dir():
        return checkout / folder
    return fallback_root / folder


def _xdg(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or Path.home() / default)
