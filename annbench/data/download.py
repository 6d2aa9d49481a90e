"""The standard ann-benchmarks datasets: a registry, and a download that resumes and verifies."""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py

from annbench.errors import AnnbenchError
from annbench.metrics import Metric

ANN_BENCHMARKS_URL = "http://ann-benchmarks.com"
CHUNK = 1 << 20


@dataclass(frozen=True)
class StandardDataset:
    """A published ann-benchmarks dataset and the shapes its file must have."""

    name: str
    n: int
    nq: int
    d: int
    metric: Metric
    size_mb: int  # approximate download size
    description: str


STANDARD: dict[str, StandardDataset] = {
    ds.name: ds
    for ds in (
        StandardDataset(
            "sift-128-euclidean",
            1_000_000,
            10_000,
            128,
            Metric.EUCLIDEAN,
            501,
            "SIFT image descriptors (TEXMEX)",
        ),
        StandardDataset(
            "gist-960-euclidean",
            1_000_000,
            1_000,
            960,
            Metric.EUCLIDEAN,
            3_600,
            "GIST image descriptors (TEXMEX)",
        ),
        StandardDataset(
            "glove-25-angular",
            1_183_514,
            10_000,
            25,
            Metric.ANGULAR,
            121,
            "GloVe word vectors, Twitter, 25 dims",
        ),
        StandardDataset(
            "glove-100-angular",
            1_183_514,
            10_000,
            100,
            Metric.ANGULAR,
            463,
            "GloVe word vectors, Twitter, 100 dims",
        ),
        StandardDataset(
            "fashion-mnist-784-euclidean",
            60_000,
            10_000,
            784,
            Metric.EUCLIDEAN,
            217,
            "Fashion-MNIST images as raw pixels",
        ),
        StandardDataset(
            "mnist-784-euclidean",
            60_000,
            10_000,
            784,
            Metric.EUCLIDEAN,
            217,
            "MNIST digits as raw pixels",
        ),
        StandardDataset(
            "nytimes-256-angular",
            290_000,
            10_000,
            256,
            Metric.ANGULAR,
            301,
            "New York Times articles, bag of words reduced to 256 dims",
        ),
        StandardDataset(
            "deep-image-96-angular",
            9_990_000,
            10_000,
            96,
            Metric.ANGULAR,
            3_600,
            "Deep1B image embeddings, a 10M subset",
        ),
        StandardDataset(
            "lastfm-64-dot",
            292_385,
            50_000,
            65,
            Metric.ANGULAR,
            135,
            "Last.fm matrix-factorisation vectors; inner product turned into angular "
            "by one extra dimension, as ann-benchmarks publishes it",
        ),
    )
}

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def fetch_standard(
    name: str,
    dest_dir: Path,
    base_url: str | None = None,
    progress: Progress | None = None,
    attempts: int = 5,
) -> Path:
    """Download the standard dataset ``name`` into ``dest_dir`` and verify it."""
    if name not in STANDARD:
        raise AnnbenchError(
            f"Unknown standard dataset '{name}'. Available: {', '.join(sorted(STANDARD))}"
        )
    spec = STANDARD[name]
    if base_url is not None and not base_url.strip():
        raise AnnbenchError("--url is empty; give a mirror's base URL or leave --url out")
    base = base_url or os.environ.get("ANNBENCH_DATASET_URL") or ANN_BENCHMARKS_URL
    check_base_url(base)
    dest = Path(dest_dir) / f"{name}.hdf5"
    if dest.is_file():
        verify_standard(spec, dest)
        return dest
    return download(
        f"{base.rstrip('/')}/{name}.hdf5",
        dest,
        progress,
        attempts,
        verify=lambda path: verify_standard(spec, path),
    )


def check_base_url(base: str) -> str:
    """``base`` if it is a URL a download can start from, else one line saying how to fix it."""
    shown = base if len(base) <= 80 else f"{base[:60]}...({len(base)} chars)"
    if not base.lower().startswith(("http://", "https://", "file://")):
        raise AnnbenchError(f"Dataset URL '{shown}' must start with http://, https:// or file://")
    if any(c.isspace() or not c.isprintable() for c in base):
        raise AnnbenchError(f"Dataset URL '{shown}' holds spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        (parts.hostname or "").encode("idna")
        base.encode("ascii")
    except ValueError as exc:  # UnicodeError is a ValueError
        raise AnnbenchError(
            f"Dataset URL '{shown}' is not a valid URL ({exc}); write it as "
            "http://HOST[:PORT]/PATH, an IPv6 host in brackets, non-ASCII characters "
            "percent-encoded and host names in their ASCII (punycode) form"
        ) from None
    if parts.scheme != "file" and not parts.hostname:
        raise AnnbenchError(f"Dataset URL '{shown}' names no host; write http://HOST/PATH")
    return base


def download(
    url: str,
    dest: Path,
    progress: Progress | None = None,
    attempts: int = 5,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming after a broken transfer.

    The file appears under its final name only once complete and verified; an interrupted
    download leaves ``.part`` behind and the next call resumes it with an HTTP Range request
    (or restarts if the server ignores ranges).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = "no attempt made"
    for attempt in range(attempts):
        try:
            _transfer(url, part, progress)
            break
        except _Incomplete as exc:
            last_error = str(exc)
            time.sleep(min(0.2 * 2**attempt, 2.0))
    else:
        raise AnnbenchError(
            f"Download of {url} did not complete after {attempts} attempts ({last_error}); "
            "run the same command again to resume"
        )
    if verify is not None:
        try:
            verify(part)
        except AnnbenchError as exc:
            part.unlink(missing_ok=True)
            raise AnnbenchError(
                f"Downloaded file failed verification and was removed: {exc}"
            ) from exc
    os.replace(part, dest)
    return dest


class _Incomplete(Exception):
    """The transfer stopped early; what arrived is kept for resuming."""


def _transfer(url: str, part: Path, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "annbench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is complete
            return
        raise AnnbenchError(f"Download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _Incomplete(f"cannot connect: {getattr(exc, 'reason', exc)}") from exc
    with response:
        if response.status == 206:
            total = _content_range_total(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # the server sent the whole file: start over
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
        received = have
        with open(part, mode) as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, total)
            except (OSError, http.client.HTTPException) as exc:
                raise _Incomplete(f"transfer broken after {received} bytes: {exc!r}") from exc
    if total is not None and received < total:
        raise _Incomplete(f"received {received} of {total} bytes")
    if total is not None and received > total:
        part.unlink()
        raise _Incomplete(f"received {received} bytes, more than the {total} announced")


def _content_range_total(header: str | None) -> int | None:
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None


def verify_standard(spec: StandardDataset, path: Path) -> None:
    """Check the file opens as HDF5 and has the shapes and metric the registry names."""
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("train", "test", "neighbors", "distances") if k not in f]
            if missing:
                raise AnnbenchError(f"{path.name} lacks {', '.join(missing)}")
            shapes = {key: f[key].shape for key in ("train", "test")}
            distance = f.attrs.get("distance")
    except OSError as exc:
        raise AnnbenchError(f"{path.name} is not a readable HDF5 file: {exc}") from exc
    if isinstance(distance, bytes):
        distance = distance.decode()
    expected = {"train": (spec.n, spec.d), "test": (spec.nq, spec.d)}
    if shapes != expected:
        raise AnnbenchError(f"{path.name} has shapes {shapes}, expected {expected}")
    if distance is None or Metric.parse(distance) is not spec.metric:
        raise AnnbenchError(f"{path.name} has distance {distance!r}, expected {spec.metric.value}")
