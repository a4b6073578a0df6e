"""Temporary files that go with their dashboard kernel on a shared server (see also
:mod:`brats_seg.kernel_cap` and :mod:`brats_seg.turns`).

:func:`session_temp_dir`: each kernel keeps its temporary files (uploads unpacked, downloads made)
  in a folder of its own, ``<temp>/brats_seg_session_<pid>_*``, removed when the kernel exits; a kernel
  that was killed (culled mid-run, out of memory) leaves its folder behind, and the next kernel that
  starts removes the folders of processes that no longer run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["SESSION_PREFIX", "session_temp_dir", "stale_session_dirs"]

SESSION_PREFIX = "brats_seg_session_"


def _pid_of(folder: Path) -> int | None:
    try:
        return int(folder.name[len(SESSION_PREFIX) :].split("_")[0])
    except (ValueError, IndexError):
        return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_session_dirs(root: str | Path | None = None) -> list[Path]:
    """Session folders under ``root`` (default the system's temporary folder) whose process no longer runs."""
    base = Path(root or tempfile.gettempdir())
    return [
        p
        for p in base.glob(f"{SESSION_PREFIX}*")
        if p.is_dir() and (pid := _pid_of(p)) is not None and not _running(pid)
    ]


def session_temp_dir(root: str | Path | None = None) -> Path:
    """Make this process's session folder the default temporary folder (``tempfile.tempdir``).

    Removes the folders that killed kernels left first, and this one when the process exits.

    Returns:
        The new folder.
    """
    current = Path(tempfile.gettempdir())
    if current.name.startswith(f"{SESSION_PREFIX}{os.getpid()}_"):
        return current  # this process has its folder already (the notebook was run again)
    base = Path(root or current)
    for stale in stale_session_dirs(base):
        shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{os.getpid()}_", dir=base))
    tempfile.tempdir = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
