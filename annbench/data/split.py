"""Queries held out of the base set, drawn with a seed: no query finds itself, and the same
seed holds out the same rows again."""

from __future__ import annotations

import numpy as np

from annbench.errors import AnnbenchError


def held_out_rows(n: int, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(base rows, query rows)``, both ascending: ``nq`` of ``n`` rows drawn with ``seed``."""
    if not 1 <= nq < n:
        raise AnnbenchError(f"--queries must be between 1 and {n - 1} for {n} vectors, got {nq}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[nq:]), np.sort(order[:nq])


def split_queries(
    vectors: np.ndarray, labels: np.ndarray | None, nq: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Hold out ``nq`` random rows (seeded) as queries: ``(train, test, train_labels,
    test_labels)``; queries are removed from the base so none finds itself."""
    train_rows, test_rows = held_out_rows(len(vectors), nq, seed)
    if labels is None:
        return vectors[train_rows], vectors[test_rows], None, None
    labels = np.asarray(labels)
    return vectors[train_rows], vectors[test_rows], labels[train_rows], labels[test_rows]
