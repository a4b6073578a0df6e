"""Shared fixtures: tiny generated studies and the real BraTS cases in ``../shared/data``."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # make ``from helpers import write_tiny_study`` work
    sys.path.insert(0, str(TESTS_DIR))

from helpers import write_tiny_study  # noqa: E402

# Converted networks (and downloaded examples) go to one cache per test session, shared with the
# servers and CLI processes the tests start, never to the user's ~/.cache.
os.environ.setdefault("BRATS_SEG_CACHE", tempfile.mkdtemp(prefix="brats-seg-test-cache-"))

#: The real data beside the project checkout (never copied into the repository).
SHARED_DATA = (TESTS_DIR.parent / ".." / "shared" / "data").resolve()
BRATS_CASE = "Brats18_CBICA_ABM_1"
DEMO_CASE = "BraTS-GLI-00001-000"


@pytest.fixture
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Path]]:
    """Factory writing a tiny generated study into a fresh folder; returns modality -> path.

    Call it as ``tiny_study(name="Tiny_001", shape=(32, 32, 24), affine=None, naming="2018",
    seed=0, seg=True)`` (see ``helpers.write_tiny_study``); the folder is ``paths["T1"].parent``
    and is named after the study.
    """

    def make(name: str = "Tiny_001", **kwargs) -> dict[str, Path]:
        folder = tmp_path_factory.mktemp("study") / name
        return write_tiny_study(folder, name, **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ready-made tiny study folder ``Tiny_001`` (2018 naming, with seg). Do not modify it."""
    folder = tmp_path_factory.mktemp("tiny_shared") / "Tiny_001"
    write_tiny_study(folder, "Tiny_001")
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real BraTS data folder ``../shared/data``; skips the test when it is absent."""
    if not (SHARED_DATA / "brats").is_dir():
        pytest.skip(
            f"real BraTS data not found at {SHARED_DATA} (expected ../shared/data beside the checkout)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def brats_case(shared_data: Path) -> Path:
    """Folder of the BraTS 2018 case ``Brats18_CBICA_ABM_1`` (with ground truth)."""
    folder = shared_data / "brats" / BRATS_CASE
    if not folder.is_dir():
        pytest.skip(f"BraTS case {BRATS_CASE} not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def demo_case(shared_data: Path) -> Path:
    """Folder of the BraTS 2023-named demo case ``BraTS-GLI-00001-000`` (no ground truth)."""
    folder = shared_data / "demo" / DEMO_CASE
    if not folder.is_dir():
        pytest.skip(f"demo case {DEMO_CASE} not found at {folder}")
    return folder


#: Settings of the tiny model trained by the ``tiny_model_dir`` fixture (seconds on a CPU).
TINY_TRAIN_ARGS = [
    "--folds",
    "3",
    "--fold",
    "0",
    "--epochs",
    "2",
    "--samples-per-epoch",
    "4",
    "--batch-size",
    "2",
    "--patch-size",
    "16",
    "16",
    "16",
    "--spacing",
    "2",
    "2",
    "2",
    "--channels",
    "4",
    "8",
    "16",
    "--num-res-units",
    "1",
    "--lr",
    "3e-3",
    "--val-patches",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three tiny generated cases with ground truth (two naming schemes)."""
    root = tmp_path_factory.mktemp("tiny_data")
    write_tiny_study(root / "Tiny_001", "Tiny_001", seed=1)
    write_tiny_study(root / "Tiny_002", "Tiny_002", seed=2)
    write_tiny_study(root / "Tiny-003", "Tiny-003", seed=3, naming="2023")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    """A real exported fastai learner + model card made by ``brats-seg train`` on tiny data."""
    from brats_seg.cli import main

    out = tmp_path_factory.mktemp("tiny_model") / "run"
    code = main(["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS])
    assert code == 0
    return out


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread per test module: on a busy 2-core machine OpenMP threads otherwise spin
    against each other (a tiny prediction took 11.6 s with 2 threads and 0.05 s with 1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
