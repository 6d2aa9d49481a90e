"""Scale-out: the same build jobs dispatched to a Dask distributed cluster.

Each job asks for one unit of the worker resource ``annbench``, so a worker started with
``--resources annbench=1 --nthreads 1`` runs one measurement at a time on its own cores.
Inside the Dask worker, each job still runs in its own process (crashes are recorded, not
fatal); Dask workers must therefore be allowed children::

    DASK_DISTRIBUTED__WORKER__DAEMON=False dask worker tcp://HOST:8786 \
        --nthreads 1 --resources annbench=1
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from annbench.errors import AnnbenchError
from annbench.record import RunRecord
from annbench.results.store import ResultStore
from annbench.sweep.measure import BuildJob
from annbench.sweep.runner import Progress, SweepSummary, pending_jobs, run_in_worker

log = logging.getLogger(__name__)

RESOURCE = "annbench"
#: Seconds to wait for a suitable worker to join before the sweep is refused.
WORKER_WAIT_SECONDS = 10.0
WORKER_COMMAND = (
    "DASK_DISTRIBUTED__WORKER__DAEMON=False dask worker {scheduler} --nthreads 1 "
    "--resources annbench=1"
)


def check_scheduler_address(scheduler: str) -> str:
    """``scheduler`` if it is 'local' or a well-formed ``tcp://HOST:PORT`` (an IPv6 host in
    brackets, ``tcp://[::1]:8786``), else one line saying how to write it."""
    if scheduler == "local":
        return scheduler
    shown = scheduler if len(scheduler) <= 80 else f"{scheduler[:60]}...({len(scheduler)} chars)"
    form = f"--scheduler must be 'local' or tcp://HOST:PORT (port 1-65535), got '{shown}'"
    rest = scheduler[len("tcp://") :] if scheduler.startswith("tcp://") else None
    host, sep, port = (rest or "").rpartition(":")
    valid = bool(rest) and bool(sep) and bool(host.strip("[]")) and port.isdigit()
    if not valid or not 0 < int(port) < 65536 or any(c.isspace() for c in scheduler):
        raise AnnbenchError(form)
    if host.startswith("[") or host.endswith("]") or ":" in host:
        address = host[1:-1] if host.startswith("[") and host.endswith("]") else None
        try:
            ipaddress.IPv6Address(address or "")
        except ValueError:
            raise AnnbenchError(
                f"{form}; an IPv6 host is written in brackets, e.g. tcp://[::1]:8786"
            ) from None
        return scheduler
    try:
        ascii_host = host.encode("idna").decode()
    except UnicodeError:
        raise AnnbenchError(
            f"{form}; the host is not a valid host name (labels of 1-63 letters, digits "
            "or hyphens separated by dots)"
        ) from None
    if len(ascii_host) > 253:
        raise AnnbenchError(f"{form}; the host name is longer than 253 characters")
    return scheduler


def check_cluster(client: Any, scheduler: str, wait: float | None = None) -> None:
    """Refuse, within ``wait`` seconds, a cluster where no worker offers the ``annbench``
    resource and allows child processes: its jobs would wait forever."""
    deadline = time.monotonic() + (WORKER_WAIT_SECONDS if wait is None else wait)
    while True:
        workers = client.scheduler_info().get("workers", {})
        offering = [a for a, info in workers.items() if info.get("resources", {}).get(RESOURCE)]
        if offering or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    fix = f"start one with: {WORKER_COMMAND.format(scheduler=scheduler)}"
    if not offering:
        found = f"{len(workers)} worker(s), none" if workers else "no workers, so none"
        raise AnnbenchError(
            f"The Dask cluster at {scheduler} has {found} offering the '{RESOURCE}' resource; {fix}"
        )
    daemonic = client.run(_is_daemon, workers=offering)
    if all(daemonic.values()):
        raise AnnbenchError(
            f"The Dask workers at {scheduler} offering '{RESOURCE}' run as daemons, which may "
            f"not start the process each measurement runs in; {fix}"
        )
    log.info("%d Dask worker(s) offer the '%s' resource", len(offering), RESOURCE)


def _is_daemon() -> bool:
    return multiprocessing.current_process().daemon


@contextmanager
def dask_client(scheduler: str, workers: int = 2) -> Iterator[Any]:
    """A client of ``scheduler`` (``tcp://HOST:PORT``), or of a new LocalCluster for 'local'."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise AnnbenchError("--scheduler needs Dask: pip install 'dask[distributed]'") from exc
    check_scheduler_address(scheduler)
    if scheduler == "local":
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                resources={RESOURCE: 1},
                processes=True,
                dashboard_address=None,
            )
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: an address Dask refuses
        raise AnnbenchError(f"Cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
    with client:
        check_cluster(client, scheduler)
        yield client


def run_sweep_dask(
    jobs: list[BuildJob],
    store: ResultStore,
    client: Any,
    force: bool = False,
    timeout: float | None = None,
    progress: Progress | None = None,
    memory_limit: float | None = None,
) -> SweepSummary:
    """Run ``jobs`` on the cluster, one per worker slot; store each job's records as it ends."""
    from distributed import as_completed

    summary = SweepSummary()
    todo, summary.skipped = pending_jobs(jobs, store, force)
    futures = {
        client.submit(
            _remote_job, job, timeout, memory_limit, resources={RESOURCE: 1}, pure=False
        ): job
        for job in todo
    }
    for future in as_completed(futures):
        job = futures[future]
        try:
            records = future.result()
        except Exception as exc:  # the Dask worker itself died or the task could not run
            text = " ".join(str(exc).split())
            error = f"Dask worker failed: {type(exc).__name__}: {text}"
            records = [
                r for s in job.search_configs for r in job.records(s, status="failed", error=error)
            ]
        for record in records:
            summary.keep(record, store, progress)
    return summary


def _remote_job(
    job: BuildJob, timeout: float | None, memory_limit: float | None
) -> list[RunRecord]:
    """Runs on a Dask worker: the job in its own process, as the local runner does."""
    if multiprocessing.current_process().daemon:
        raise AnnbenchError(
            "Dask workers must be allowed child processes: start them with "
            "DASK_DISTRIBUTED__WORKER__DAEMON=False"
        )
    return list(run_in_worker(job, timeout, memory_limit))
