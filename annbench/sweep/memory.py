"""Resident-memory readings of the current process."""

from __future__ import annotations

import glob
import os
import resource
import sys
from pathlib import Path

import psutil


def rss_bytes() -> int:
    """Current resident set size."""
    return psutil.Process().memory_info().rss


def process_tree_rss_bytes(pids: list[int]) -> int:
    """Resident memory of the processes ``pids`` and all their descendants, each counted once
    (those already gone count nothing)."""
    seen: dict[int, int] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                if process.pid not in seen:
                    seen[process.pid] = process.memory_info().rss
        except psutil.Error:
            continue
    return sum(seen.values())


def reset_peak_rss() -> bool:
    """Restart the peak-RSS high-water mark (Linux only); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the process started or since ``reset_peak_rss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def drop_from_page_cache(path: Path) -> bool:
    """Flush ``path`` (and files named ``path.*`` beside it) to disk and ask the OS to drop
    them from the page cache, so the next read is cold; False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    path = Path(path)
    files = [path, *path.parent.glob(glob.escape(path.name) + ".*")]
    for file in files:
        if not file.is_file():
            continue
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def owned_rss_bytes(folder: Path) -> int:
    """Resident memory that belongs to what this process loaded: its anonymous pages plus the
    resident pages of files it mapped from ``folder`` (an index read with mmap). Shared
    library code paged in on first use is left out. Linux; elsewhere the resident set size."""
    smaps = Path("/proc/self/smaps")
    if not smaps.is_file():
        return rss_bytes()
    prefix = str(Path(folder).resolve())
    total, mapped_from_folder = 0, False
    for line in smaps.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: address perms offset dev inode path
            mapped_from_folder = len(fields) >= 6 and fields[5].startswith(prefix)
        elif fields[0] == "Anonymous:" or (fields[0] == "Rss:" and mapped_from_folder):
            total += int(fields[1]) * 1024
    return total
