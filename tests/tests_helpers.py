"""Helpers shared by tests."""

import numpy as np

from annbench.record import RunRecord


def a_record(ef: int = 16, **fields) -> RunRecord:
    """A plausible stored record."""
    values = dict(
        dataset="d",
        dataset_hash="abc",
        backend="hnswlib",
        build_params={"M": 16},
        search_params={"ef": ef},
        k=10,
        mode="single",
        threads=1,
        recall=0.9,
        qps=1000.0,
        qps_min=900.0,
        qps_max=1100.0,
        runs=3,
        latency_p50_ms=0.5,
        ids=np.arange(20).reshape(2, 10),
        latencies_ns=np.array([5, 7]),
        provenance={"cpu": "x"},
    )
    values.update(fields)
    return RunRecord(**values)
