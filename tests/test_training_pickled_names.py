"""Learners pickled before the recipe became a package still load (brats_seg.training.pickled_names)."""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import pytest
import torch

import brats_seg
from brats_seg.model import RenamingUnpickler, renamed_module
from brats_seg.training import network, pickled_names

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "model").glob("fold*.pkl"))


def pickled_globals(path: Path) -> set[tuple[str, str]]:
    """Every ``(module, name)`` a torch zip file's pickle refers to, as written (no renaming)."""
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    found, pushed, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            found.add((pushed[-2], pushed[-1]))
        if op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = pushed[-1]
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(arg))
        elif "UNICODE" in op.name or "STRING" in op.name:
            pushed.append(arg)
        elif op.name not in ("FRAME", "STOP"):
            pushed.append(None)
    return found


@pytest.mark.skipif(not SHIPPED, reason="the shipped model/fold*.pkl are absent")
def test_the_table_covers_exactly_the_moved_names_the_shipped_learners_refer_to() -> None:
    ours = {(m, n) for path in SHIPPED for m, n in pickled_globals(path) if m.startswith("brats_seg")}
    assert ours == set(pickled_names.MOVED)
    for (module, name), new in pickled_names.MOVED.items():
        assert getattr(importlib.import_module(new), name).__module__ == new, (module, name)
        old = Path(brats_seg.__file__).parent.joinpath(*module.split(".")[1:])
        assert not old.with_suffix(".py").exists() and not old.is_dir(), (
            "no alias of the old module is left behind"
        )


def test_unpickler_finds_moved_names_and_leaves_others_alone() -> None:
    blob = pickle.dumps((network.DiceBCELoss, network.dice_wt, torch.float16), protocol=2)
    old = blob.replace(b"brats_seg.training.network", b"brats_seg.train")  # as pickled before the move
    assert b"brats_seg.training" not in old
    assert RenamingUnpickler(io.BytesIO(old)).load() == (network.DiceBCELoss, network.dice_wt, torch.float16)
    assert renamed_module("brats_seg.train", "dice_tc") == "brats_seg.training.network"
    assert renamed_module("brats_seg.train", "elsewhere") == "brats_seg.train"
