"""Where datasets and results live: environment variables first, then sensible defaults.

Inside a source checkout the defaults are its ``datasets/`` and ``results/`` folders; an
installed wheel uses the user's cache and data folders (XDG), never the working directory.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
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


#: First bytes of the files annbench keeps: a results store, a dataset.
SQLITE_MAGIC = b"SQLite format 3\x00"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: SQLite's journal files beside a database.
JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")


def protected(path: Path | str) -> str | None:
    """What ``path`` holds that writing it would destroy (a results store or one of its
    journal files, a dataset, a file in the data folder), or None when it holds none of them.

    Judged by content, after following links, so a store at any ``--results`` location and a
    dataset under any name are recognised."""
    try:
        real = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):  # a path the system cannot look up holds nothing of ours
        return None
    if kind_of(real) == "a file":
        head = _head(real)
        if head.startswith(SQLITE_MAGIC):
            return "an SQLite database (a results store)"
        if head.startswith(HDF5_MAGIC) and _holds_dataset(real):
            return "a dataset (an HDF5 file with train vectors)"
        if _inside(real, data_dir()):
            return "a file in the data folder (datasets and their ground truth live there)"
    for suffix in JOURNAL_SUFFIXES:
        if real.name.endswith(suffix) and len(real.name) > len(suffix):
            database = real.with_name(real.name[: -len(suffix)])
            if _head(database).startswith(SQLITE_MAGIC):
                return f"a journal file of the results store {database}"
    if real.suffix.lower() in (".hdf5", ".h5") and _inside(real, data_dir()):
        return "a dataset's place in the data folder"
    return None


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file (by its signature)."""
    return _head(Path(path)).startswith(HDF5_MAGIC)


def _holds_dataset(path: Path) -> bool:
    """Whether the HDF5 file ``path`` holds a dataset (``train`` vectors, ann-benchmarks'
    layout); one that cannot be read is taken to hold one."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            return "train" in file
    except (OSError, ValueError):
        return True


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(16)
    except OSError:
        return b""


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.is_relative_to(folder.expanduser().resolve())
    except (OSError, RuntimeError):
        return False


def check_not_protected(path: Path | str, what: str) -> None:
    """Raise a one-line AnnbenchError when writing ``path`` would destroy a results store or a
    dataset: the one guard every option that writes a file goes through (check_output_file,
    check_output_dir and output_file call it; devices are refused there)."""
    reason = protected(path)
    if reason is not None:
        raise AnnbenchError(
            f"{what} {path} is {reason}; writing there would destroy it, so choose another path "
            "(nothing was written)"
        )


def check_output_file(path: Path | str, what: str) -> Path:
    """``path`` if a file can be written there, else one line saying why not: empty, too long,
    a results store or dataset, a directory or device, under a file, in a folder that cannot
    be written."""
    path = check_path_name(path, what)
    check_not_protected(path, what)
    return check_writable_file(path, what)


def check_writable_file(path: Path, what: str) -> Path:
    """``path`` if a regular file can be written there (the guard against destroying stores
    and datasets aside: only the dataset commands' ``--force`` replaces a dataset)."""
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
    check_not_protected(path, what)
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


@contextmanager
def output_file(
    path: Path | str, what: str, verify: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """Write ``path`` safely: yields a temporary path beside it to write; when the block ends,
    the file is flushed to disk (a full device fails here, not after "Saved"), checked by
    ``verify`` if given, and renamed over ``path`` in one step. On any failure ``path`` is left
    as it was, the temporary file is removed and the error is one line."""
    path = check_output_file(path, what)
    with writing(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            prefix=f".{path.name[:200]}.", suffix=".part", dir=path.parent
        )
        os.close(handle)
    temp = Path(name)
    try:
        with writing(path, what):
            yield temp
            if kind_of(temp) != "a file" or temp.stat().st_size == 0:
                raise AnnbenchError(f"Cannot write {what} {path}: nothing was written")
            _flush_to_disk(temp)
            if verify is not None:
                verify(temp)
            check_output_file(path, what)  # again: the target may have changed meanwhile
            os.chmod(temp, _new_file_mode(path))
            os.replace(temp, path)
            _flush_to_disk(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def write_text_file(path: Path | str, text: str, what: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through ``output_file``; returns the path."""
    with output_file(path, what) as temp:
        temp.write_text(text, encoding="utf-8")
    return Path(path)


def _flush_to_disk(path: Path) -> None:
    """fsync ``path`` (a file or a folder): delayed write errors such as a full disk surface."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    except OSError as exc:
        if path.is_dir():  # some file systems cannot sync a folder; the file itself was synced
            return
        raise exc
    finally:
        os.close(handle)


def _new_file_mode(path: Path) -> int:
    """The mode ``path`` has, or a new file's mode under the process umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


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
