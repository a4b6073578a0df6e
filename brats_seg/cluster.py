"""Run one function over many studies on a Dask cluster (``dask.distributed``), each study a task.

The command line uses it for ``--workers N`` (a :class:`distributed.LocalCluster` of N worker processes on
this machine, one thread each) and ``--scheduler ADDRESS`` (a cluster that runs already: on Kubernetes
with dask-kubernetes, on an HPC scheduler with dask-jobqueue, or ``dask scheduler`` and ``dask worker`` by
hand; see ``docs/cluster.md``). Only those options import this module, and so Dask.

Each worker process gets one CPU thread for torch and OpenVINO (:class:`TorchThreads`; the worker's
``$BRATS_SEG_TORCH_THREADS`` overrides it) and loads the model once, at its first study:
:func:`brats_seg.model.load_model` keeps one per process. The function and its arguments travel to the
workers by reference (pickled), so the workers need this package installed, the model folder and the
studies' paths visible at the same paths, and ``--output`` writable.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin, as_completed
from distributed import comm as dask_comm

from .errors import ClusterError

__all__ = ["CONNECT_TIMEOUT_S", "TorchThreads", "connect", "map_unordered"]

#: Seconds to wait for a scheduler to answer, and for it to have a worker.
CONNECT_TIMEOUT_S = 10.0


class TorchThreads(WorkerPlugin):
    """Sets each worker's torch (and so OpenVINO) CPU threads before its first task.

    One thread by default: a worker runs one study at a time, and N workers on N cores share them
    out. A worker started with ``$BRATS_SEG_TORCH_THREADS`` (a larger HPC node with one worker) uses
    that number instead (:func:`brats_seg.inference.configure_threads`).
    """

    name = "brats-seg-torch-threads"

    def setup(self, worker: Any) -> None:
        """Configure the threads in the worker's process."""
        from .inference import THREADS_ENV, configure_threads

        configure_threads(None if os.environ.get(THREADS_ENV, "").strip() else 1)


@contextmanager
def connect(
    *, scheduler: str | None = None, workers: int | None = None, timeout: float = CONNECT_TIMEOUT_S
) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a local cluster of ``workers`` processes.

    Args:
        scheduler: The address of a running scheduler (``tcp://HOST:PORT``); None: start a local one.
        workers: Worker processes of the local cluster (one thread each); ignored with ``scheduler``.
        timeout: Seconds to wait for the scheduler to answer and to have at least one worker.

    Raises:
        ClusterError: naming the address, when no scheduler answers there in time, when it has no
            worker, or when its workers cannot import this package.
    """
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # its HTTP server starts anyway: on a free port, not 8787
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        client = _client_of(scheduler, timeout)
    try:
        _check_workers(client, scheduler or "the local cluster", timeout)
        client.register_plugin(TorchThreads())
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _client_of(scheduler: str, timeout: float) -> Client:
    """A client of the scheduler at ``scheduler``; :class:`ClusterError` when it does not answer.

    The scheduler is asked who it is first, with a deadline: ``Client(address, timeout=...)`` waits for
    ever on a port that accepts the connection and then says nothing.
    """
    expected = "the address of a running scheduler, e.g. tcp://10.0.0.5:8786 (dask scheduler prints it)"
    try:
        identity = asyncio.run(asyncio.wait_for(_identity(scheduler, timeout), timeout))
        if not isinstance(identity, dict) or identity.get("type") != "Scheduler":
            found = identity.get("type") if isinstance(identity, dict) else type(identity).__name__
            raise ClusterError(f"--scheduler {scheduler}: expected {expected}, found a {found} there")
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(
            f"--scheduler {scheduler}: no Dask scheduler answered within {timeout:g} s "
            f"({type(e).__name__}{': ' * bool(str(e))}{e}); expected {expected}"
        ) from e


async def _identity(address: str, timeout: float) -> Any:
    """What the Dask server at ``address`` says it is (``{"type": "Scheduler", ...}`` for a scheduler)."""
    comm = await dask_comm.connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _check_workers(client: Client, where: str, timeout: float) -> None:
    """At least one worker, and every worker imports the brats_seg version of this process (the tasks
    run its functions)."""
    from . import __version__

    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError as e:
        raise ClusterError(
            f"{where}: no Dask worker joined within {timeout:g} s; expected at least one "
            "(start them with: dask worker ADDRESS)"
        ) from e
    try:
        versions = client.run(_import_package)
    except Exception as e:  # noqa: BLE001 - whatever the worker raised, it cannot run the tasks
        raise ClusterError(
            f"{where}: a Dask worker cannot import brats_seg ({type(e).__name__}: {e}); expected the "
            "package installed on every worker"
        ) from e
    other = {worker: version for worker, version in versions.items() if version != __version__}
    if other:
        raise ClusterError(
            f"{where}: expected brats-seg {__version__} on every Dask worker (as here), found {other}"
        )


def _import_package() -> str:
    """Run on each worker by :func:`_check_workers`: the package version it imports."""
    import brats_seg

    return brats_seg.__version__


def map_unordered(
    client: Client, task: Callable[[Any], Any], items: Sequence[Any]
) -> Iterator[tuple[int, Any, BaseException | None]]:
    """Run ``task(item)`` for each item as one task each; yield them as they finish.

    A task that raises does not stop the others.

    Yields:
        ``(index of the item, the task's result or None, the exception it raised or None)``.
    """
    futures = client.map(task, list(items), pure=False)
    index = {future.key: i for i, future in enumerate(futures)}
    for future in as_completed(futures, loop=client.loop):
        try:
            result, error = future.result(), None
        except Exception as e:  # noqa: BLE001 - the task's error (or a lost worker's) is the item's result
            result, error = None, e
        future.release()
        yield index[future.key], result, error
