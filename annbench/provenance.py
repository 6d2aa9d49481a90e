"""Where and with what a result was measured: machine, libraries, threads."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from annbench import __version__

_LIBRARIES = ("numpy", "faiss-cpu", "hnswlib", "annoy", "h5py")


def provenance(build_threads: int) -> dict[str, Any]:
    """Versions, CPU and thread settings to store with every result."""
    return {
        "annbench": __version__,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "build_threads": build_threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def library_versions(names: tuple[str, ...] = _LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (default: the benchmarked and numeric libraries)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what platform reports)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
