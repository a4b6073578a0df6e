"""The options that run a command's studies on a Dask cluster: ``--workers``, ``--scheduler``,
``--connect-timeout`` (for ``predict``, ``check`` and ``evaluate``); see :mod:`brats_seg.cluster`."""

from __future__ import annotations

import argparse
import re

from .common import positive_float, positive_int

#: A scheduler address: ``[SCHEME://]HOST:PORT`` with one of Dask's network schemes.
_ADDRESS = re.compile(r"^(?:(tcp|tls|ws|wss|ucx)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def scheduler_address(value: str) -> str:
    """``--scheduler``: ``tcp://HOST:PORT`` (or ``tls://``, ``ws://``, ``wss://``, ``ucx://``; plain
    ``HOST:PORT`` means tcp), port 1 to 65535."""
    match = _ADDRESS.match(value.strip())
    if match is None or not 1 <= int(match.group(3)) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a Dask scheduler address such as tcp://10.0.0.5:8786 (tcp, tls, ws, wss or ucx; "
            f"port 1-65535), found {value!r}"
        )
    return value.strip() if match.group(1) else f"tcp://{value.strip()}"


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """Add ``--workers`` and ``--scheduler`` (one or the other) and ``--connect-timeout`` to ``p``."""
    group = p.add_argument_group(
        "cluster", "run each study as a task on a Dask cluster (dask.distributed); see docs/cluster.md"
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="start a local Dask cluster of N worker processes (one thread each, one torch thread each, "
        "each loading the model once) (default: no cluster: one study after another in this process)",
    )
    where.add_argument(
        "--scheduler",
        type=scheduler_address,
        default=None,
        metavar="ADDRESS",
        help="send the studies to the Dask scheduler at ADDRESS, e.g. tcp://10.0.0.5:8786; its workers need "
        "brats-seg, the model folder, the studies and --output at the same paths (default: no cluster)",
    )
    group.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="with --scheduler or --workers: how long to wait for the scheduler to answer and for a "
        "worker to join before giving up with an error",
    )
