"""What checking a dataset on read costs: hashing every array and verifying ground truth.

Prints, for the bundled dataset and a 1M x 128 synthetic one imported from a memmap, the time
of a plain HDF5 read of its arrays, of ``read_dataset`` on first use (hash + ground-truth
check) and on later use (both cached), and their ratios to the plain read, measured side by
side. Usage: python benchmarks/dataset_check.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def plain_read(path: Path) -> None:
    with h5py.File(path, "r") as f:
        for key in ("train", "test", "neighbors", "distances", "train_labels", "test_labels"):
            if key in f:
                f[key][()]


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(name: str, path: Path) -> None:
    import faiss  # noqa: F401 - imported once, outside the timings

    from annbench.data import fingerprint
    from annbench.data.datasets import read_dataset

    fingerprint.RACY_NS = 0  # a file written just now is cached too (measuring, not racing)
    cache = fingerprint._cache_path()
    cache.unlink(missing_ok=True)
    plain = timed(plain_read, path)
    first = timed(read_dataset, path, False)
    later = timed(read_dataset, path, False)
    plain_again = timed(plain_read, path)
    base = min(plain, plain_again)
    print(
        f"{name}: plain read {base:.2f} s; read_dataset first use {first:.2f} s "
        f"({first / base:.2f}x), cached {later:.2f} s ({later / base:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--nq", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ANNBENCH_DATA"] = tmp
        from annbench.data.datasets import resolve_dataset
        from annbench.data.importer import import_vectors
        from annbench.metrics import Metric

        bundled = "debian-packages-384-angular"
        measure(f"bundled {bundled}", resolve_dataset(bundled))
        rng = np.random.default_rng(0)
        source = Path(tmp) / "big.npy"
        vectors = np.lib.format.open_memmap(source, "w+", np.float32, (args.n + args.nq, 128))
        for start in range(0, len(vectors), 100_000):
            stop = min(start + 100_000, len(vectors))
            vectors[start:stop] = rng.standard_normal((stop - start, 128), dtype=np.float32)
        vectors.flush()
        del vectors
        start = time.perf_counter()
        path = import_vectors(source, Path(tmp) / "big.hdf5", Metric.EUCLIDEAN, queries=args.nq)
        print(f"import of {args.n:,} x 128 (memmap): {time.perf_counter() - start:.1f} s")
        measure(f"synthetic {args.n:,} x 128", path)


if __name__ == "__main__":
    main()
