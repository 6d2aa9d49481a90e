"""Resident-memory readings of the current process."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import psutil


def rss_bytes() -> int:
    """Current resident set size."""
    return psutil.Process().memory_info().rss


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
