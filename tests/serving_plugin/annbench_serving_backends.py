"""Backends for the serving-memory tests: faiss with and without a working ``load``."""

from __future__ import annotations

from pathlib import Path

import faiss

from annbench.backends.faiss_backend import FaissFlat, FaissIVFPQ


class IVFPQQuickBuild(FaissIVFPQ):
    """faiss IVF-PQ without polysemous training, which takes half a minute on a small base
    and plays no part in the search (faiss' index_factory does it unless the PQ ends in np)."""

    def _make(self, d: int) -> faiss.Index:
        spec = f"IVF{self.nlist},PQ{self.m}x{self.nbits}np"
        return faiss.index_factory(d, spec, self._faiss_metric())


class SaveOnly(FaissFlat):
    """Writes its file but cannot read it back."""

    def load(self, path: Path) -> None:
        raise NotImplementedError


class LoadBreaks(FaissFlat):
    """Its load fails like a library bug would."""

    def load(self, path: Path) -> None:
        raise RuntimeError("corrupt header")
