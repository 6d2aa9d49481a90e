"""Synthetic data at scale: fit the embedding-like model to the bundled dataset, then draw
1M x 384 SYNTHETIC vectors (in memory only, then to an HDF5 file without ground truth, then
with exact ground truth for 1,000 queries). Each step runs in a fresh process and prints its
wall time, peak resident memory and file size, with the load average beside them (the
target: a few minutes on 2 cores).

    python benchmarks/synthetic_scale.py [--n 1000000] [--nq 1000] [--folder /tmp/annbench-synth]
        [--steps fit,draw,file,truth]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def step(name: str, args: argparse.Namespace) -> dict:
    """Run one step in this process and return its figures."""
    import numpy as np

    from annbench.api import load_dataset
    from annbench.data.catalog import DEFAULT_DATASET
    from annbench.data.embedding_like import EmbeddingModel, create_like, fit_embedding_model
    from annbench.data.embedding_like import sample as draw

    model_path = args.folder / "model.npz"
    start = time.perf_counter()
    out: dict = {}
    if name == "fit":
        model = fit_embedding_model(load_dataset(DEFAULT_DATASET), seed=0)
        model.save(model_path)
        out["model"] = model.summary()
        out["bytes"] = model_path.stat().st_size
    elif name == "draw":
        rows, checksum = draw(EmbeddingModel.load(model_path), args.n, seed=1), 0.0
        for chunk in rows:
            checksum += float(np.float64(chunk[:, 0].sum()))
        out["rows"] = args.n
    else:
        path = args.folder / f"like-{args.n}-{name}.hdf5"
        create_like(path, model_path, args.n, args.nq, seed=1, truth=name == "truth")
        out["bytes"] = path.stat().st_size
    out["seconds"] = time.perf_counter() - start
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--nq", type=int, default=1_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/annbench-synth"))
    parser.add_argument("--steps", default="fit,draw,file,truth")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # one step, in a child process
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.step:
        print(json.dumps(step(args.step, args)))
        return
    labels = {
        "fit": "fit to the bundled dataset",
        "draw": f"draw {args.n:,} rows (no file)",
        "file": f"write {args.n:,} + {args.nq:,} queries, no ground truth",
        "truth": f"write {args.n:,} + {args.nq:,} queries with exact ground truth",
    }
    print(f"CPUs: {len(os.sched_getaffinity(0))}, load average before: {_load()}")
    for name in args.steps.split(","):
        command = [sys.executable, __file__, "--step", name, "--n", str(args.n)]
        command += ["--nq", str(args.nq), "--folder", str(args.folder)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            return
        found = json.loads(done.stdout.strip().splitlines()[-1])
        size = f", file {found['bytes'] / 1e6:,.0f} MB" if "bytes" in found else ""
        print(
            f"{labels[name]}: {found['seconds']:.1f} s, peak RSS {found['peak_rss'] / 1e6:,.0f} "
            f"MB{size}; load average after: {_load()}"
        )
        if name == "fit":
            print(f"  model: {json.dumps(found['model'])}")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
