"""Shared fixtures: isolated data/results folders and tiny datasets with exact ground truth."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from annbench.data.format import read_dataset
from annbench.data.synthetic import create_synthetic
from annbench.metrics import Metric

PLUGIN_DIR = Path(__file__).parent / "plugin"


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own data and results folders."""
    root = tmp_path_factory.mktemp("annbench")
    monkeypatch.setenv("ANNBENCH_DATA", str(root / "data"))
    monkeypatch.setenv("ANNBENCH_RESULTS", str(root / "results"))
    return root


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 x 32 clustered euclidean vectors, 100 held-out queries."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.hdf5"
    return create_synthetic(
        path, n=2000, nq=100, d=32, metric=Metric.EUCLIDEAN, n_clusters=16, seed=3
    )


@pytest.fixture(scope="session")
def tiny(tiny_path: Path):
    return read_dataset(tiny_path)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def test_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the misbehaving plugin backends in tests/plugin, for this process and workers."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setenv("PYTHONPATH", str(PLUGIN_DIR))
    yield
    for name in ("annbench_test_backends", "annbench_test_backends_missing"):
        sys.modules.pop(name, None)
