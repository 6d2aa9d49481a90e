"""One colour per backend, the same in every plot, the report and the neighbours page."""

from __future__ import annotations

import zlib

#: Colours in the order the built-in backends take them; other names hash into the list.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
)
_BUILT_IN = (
    "faiss-flat",
    "faiss-ivf",
    "faiss-ivfpq",
    "faiss-hnsw",
    "faiss-factory",
    "hnswlib",
    "annoy",
    "usearch",
    "scann",
    "voyager",
    "pynndescent",
)


def backend_color(backend: str) -> str:
    """The colour of ``backend`` wherever it is drawn, whichever other backends are beside it
    (a built-in keeps its own; any other name hashes to one, the same on every run)."""
    if backend in _BUILT_IN:
        return PALETTE[_BUILT_IN.index(backend)]
    return PALETTE[zlib.crc32(backend.encode()) % len(PALETTE)]
