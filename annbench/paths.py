"""Where datasets and results live: environment variables first, then sensible defaults.

Inside a source checkout the defaults are its ``datasets/`` and ``results/`` folders; an
installed wheel uses the user's cache and data folders (XDG), never the working directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from annbench.errors import AnnbenchError

#: Usual Linux limits on a file name and a whole path, in bytes.
NAME_MAX = 255
PATH_MAX = 4096


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


def kind_of(path: Path) -> str:
    """What ``path`` is: 'a file', 'a directory', 'a FIFO', 'a character device', ...,
    or 'missing'."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (or a file on the way)
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    for test, name in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_input_file(path: Path, what: str) -> Path:
    """``path`` if it is an existing regular file, else one line saying what it is instead."""
    path = Path(path).expanduser()
    kind = kind_of(path)
    if kind == "missing":
        raise AnnbenchError(f"{what} {path} not found")
    if kind != "a file":
        raise AnnbenchError(f"{what} {path} is {kind}, not a regular file")
    return path


def check_output_file(path: Path | str, what: str) -> Path:
    """``path`` if a file can be written there, else one line saying why not: empty, too long,
    a directory or device, under a file, in a folder that cannot be written."""
    path = check_path_name(path, what)
    kind = kind_of(path)
    if kind == "a directory":
        raise AnnbenchError(f"{what} {path} is a directory; give a file name")
    if kind not in ("missing", "a file"):
        raise AnnbenchError(f"{what} {path} is {kind}, not a regular file")
    if kind == "a file" and not os.access(path, os.W_OK):
        raise AnnbenchError(f"{what} {path} is read-only")
    _check_parent(path.parent, path, what)
    return path


def check_output_dir(path: Path | str, what: str) -> Path:
    """``path`` if it is a folder, or one can be created there, else one line saying why not."""
    path = check_path_name(path, what)
    kind = kind_of(path)
    if kind == "a directory":
        if not os.access(path, os.W_OK | os.X_OK):
            raise AnnbenchError(f"{what} {path} is a folder that cannot be written")
        return path
    if kind != "missing":
        raise AnnbenchError(f"{what} {path} is {kind}; give a folder")
    _check_parent(path.parent, path, what)
    return path


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Turn an OSError while writing ``path`` (disk full, permissions) into one line."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise AnnbenchError(f"Cannot write {what} {path}: {reason}") from exc


def check_path_name(path: Path | str, what: str) -> Path:
    """``path`` as a Path if it is not empty and not too long for the file system."""
    text = str(path)
    if not text.strip():
        raise AnnbenchError(f"{what} path is empty; give a file or folder name")
    path = Path(text).expanduser()
    if len(os.fsencode(str(path.absolute()))) >= PATH_MAX or any(
        len(os.fsencode(part)) > NAME_MAX for part in path.parts
    ):
        raise AnnbenchError(
            f"{what} path is too long for the file system (names up to {NAME_MAX} bytes, "
            f"paths up to {PATH_MAX})"
        )
    return path


def _check_parent(parent: Path, path: Path, what: str) -> None:
    ancestor = parent if str(parent) else Path(".")
    while kind_of(ancestor) == "missing" and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    kind = kind_of(ancestor)
    if kind != "a directory":
        raise AnnbenchError(f"{what} {path} cannot be written: {ancestor} is {kind}, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise AnnbenchError(f"{what} {path} cannot be written: {ancestor} is not writable")
