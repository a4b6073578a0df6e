"""A shared server: the kernel cap, and temporary files that go with their kernel."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
from tornado import web

from brats_seg.kernel_cap import CappedKernelManager
from brats_seg.server import SESSION_PREFIX, stale_session_dirs

ROOT = Path(__file__).resolve().parents[1]


def test_the_kernel_cap_refuses_with_503_before_starting_anything() -> None:
    manager = CappedKernelManager(max_kernels=0)
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(manager.start_kernel())
    assert info.value.status_code == 503 and "at most 0 sessions at once" in info.value.log_message
    assert manager.list_kernel_ids() == []


def test_voila_json_names_the_capped_manager() -> None:
    config = json.loads((ROOT / "voila.json").read_text())
    assert (
        config["VoilaConfiguration"]["multi_kernel_manager_class"]
        == "brats_seg.kernel_cap.CappedKernelManager"
    )
    assert config["CappedKernelManager"]["max_kernels"] >= 1


CHILD = """
import os, sys, tempfile
from brats_seg.server import session_temp_dir
folder = session_temp_dir(sys.argv[1])
assert tempfile.gettempdir() == str(folder) and session_temp_dir() == folder  # a second call keeps it
open(os.path.join(folder, "upload.nii.gz"), "wb").write(b"x")
print(folder, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), 9)  # a kernel killed mid-run: no cleanup
"""


def test_session_folders_go_with_their_process_or_with_the_next_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "exit"], capture_output=True, text=True, check=True
    )
    assert not Path(done.stdout.strip()).exists()  # removed at exit
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "kill"], capture_output=True, text=True
    )
    left = Path(killed.stdout.strip())
    assert killed.returncode == -9 and left.name.startswith(SESSION_PREFIX) and left.exists()
    assert stale_session_dirs(tmp_path) == [left]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "exit"], capture_output=True, text=True, check=True
    )
    assert not left.exists()  # the next kernel swept it
    assert not list(tmp_path.glob(f"{SESSION_PREFIX}*"))


def test_a_running_processs_folder_is_not_stale(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    (tmp_path / f"{SESSION_PREFIX}{ctx.current_process().pid}_abc").mkdir()
    assert stale_session_dirs(tmp_path) == []
