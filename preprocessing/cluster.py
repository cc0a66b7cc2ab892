"""Where Dask work runs: a local cluster by default, or an existing one by address.

One helper for every Dask stage (preprocess, stats), so they choose a cluster
the same way: `--workers N` starts a `LocalCluster` of N single-threaded worker
processes bound to 127.0.0.1; `--dask-address tcp://host:port` connects to a
running scheduler instead (its workers need the project installed and the
source and output paths visible at the same places).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bounded_workers(requested: int | None, tasks: int | None = None) -> int:
    """How many local worker processes to start for `requested` (None: all cores).

    At most the cores this process may use, and at most the number of tasks:
    more would only cost memory (each worker is a Python process of 100-300
    MB); a request above the bound says so on stderr.
    """
    cores = default_workers()
    n = cores if requested is None else requested
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    bound = min(cores, tasks) if tasks else cores
    if n > bound:
        why = f"{cores} cores" if bound == cores else f"{tasks} tasks to run"
        if requested is not None:
            print(f"alexnet: --workers {n} is more than the {why}: using {bound}", file=sys.stderr)
        n = bound
    return max(n, 1)


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """Restore os.environ afterwards: starting its workers, Dask sets OMP_NUM_THREADS=1
    (and the like) in this process's environment and leaves it there, so every process
    started later (a training run after preprocess in one flow) ran on one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class ClusterLost(RuntimeError):
    """The Dask scheduler (or every worker) went away while a stage was using it."""


def _lost_errors() -> tuple[type[BaseException], ...]:
    """What a client raises when its scheduler dies under it (a killed scheduler cancels
    every future: FutureCancelledError; a closed connection: CommClosedError)."""
    from concurrent.futures import CancelledError

    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return (CancelledError, FutureCancelledError, CommClosedError)


@contextlib.contextmanager
def dask_client(
    workers: int | None = None, address: str | None = None, tasks: int | None = None
) -> Iterator[Client]:
    """A Dask client on a fresh local cluster (`bounded_workers`), or on the scheduler at
    `address`."""
    import dask
    from distributed import Client, LocalCluster

    # Dask's own logs are chatty at INFO; our progress line says what matters.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if address:
        client = Client(address, timeout="30s")
        try:
            yield client
        except _lost_errors() as err:
            raise ClusterLost(
                f"the Dask cluster at {address} went away in the middle of the work "
                f"({type(err).__name__}); what was finished is kept: run the same command "
                "again once the scheduler and its workers are back"
            ) from None
        finally:
            with contextlib.suppress(Exception):  # a dead scheduler: do not wait for it
                client.close(timeout=5)
        return
    n = bounded_workers(workers, tasks)
    with (
        _environment_kept(),
        # Dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which makes glibc
        # hand every freed image buffer back to the kernel and fault it in again:
        # measured 40% slower per image here. Our tasks' memory is bounded by one
        # shard, so the allocator's default is the better choice.
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # Loopback, any free port: never 0.0.0.0:8787, which Dask binds even
            # with the dashboard "off" (dashboard_address=None).
            dashboard_address="127.0.0.1:0",
            # A failed task reaches the client, and the stage reports it once, in one line;
            # the workers' own "Compute Failed" logs (with a traceback) would repeat it.
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


class StageCluster:
    """One Dask client for a whole stage, started the first time work asks for one (never,
    when there is nothing to do): the archives' listing and the shards share it, so a
    first run from the archives starts one cluster, not two. A later ask for more tasks
    than the local cluster has workers for adds workers (up to `bounded_workers`)."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers, self.address = workers, address
        self._stack = contextlib.ExitStack()
        self._client: Client | None = None

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def parallel(self) -> bool:
        """Whether work given to it would run on more than one process."""
        return self.address is not None or min(default_workers(), self.workers or 1 << 30) > 1

    def client(self, tasks: int | None = None) -> Client:
        if self._client is None:
            self._client = self._stack.enter_context(dask_client(self.workers, self.address, tasks))
        elif self.address is None:
            n = bounded_workers(self.workers, tasks)
            if n > len(self._client.scheduler_info()["workers"]):
                self._client.cluster.scale(n)
                self._client.wait_for_workers(n)
        return self._client

    def __enter__(self) -> StageCluster:
        return self

    def __exit__(self, *exc: object) -> bool | None:
        return self._stack.__exit__(*exc)  # type: ignore[arg-type]
