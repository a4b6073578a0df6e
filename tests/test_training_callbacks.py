"""fastai callbacks of the recipe (brats_seg.training.callbacks)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from brats_seg.training.callbacks import ChannelsLast3d, CPUAutocast, HistoryLog
from brats_seg.training.network import DiceBCELoss, build_unet
from brats_seg.training.schedule import fit_flat_cos


def test_history_log_with_a_progress_bar_skips_epochs_and_restores_the_logger(tmp_path: Path) -> None:
    from fastai.callback.progress import ProgressCallback
    from fastai.test_utils import synth_learner

    learn = synth_learner(n_trn=32, path=tmp_path, cbs=[HistoryLog("history.csv")])
    assert any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
    logger = learn.logger
    fit_flat_cos(learn, 3, lr=1e-2, pct_start=0.5, start_epoch=2)
    assert learn.logger is logger
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["epoch"] for r in rows] == ["2"]


def test_channels_last_changes_layout_not_results() -> None:
    """One training step in channels_last_3d gives the same loss and gradients as in the standard layout."""
    torch.manual_seed(0)
    net = build_unet(channels=(4, 8, 16), num_res_units=1)
    x, y = torch.randn(2, 4, 16, 16, 16), (torch.rand(2, 3, 16, 16, 16) > 0.5).float()
    loss_fn = DiceBCELoss()
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        net.zero_grad()
        net.to(memory_format=layout)
        loss = loss_fn(net(x.to(memory_format=layout)), y)
        loss.backward()
        grads.append((float(loss), [p.grad.clone() for p in net.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads[0][1], grads[1][1], strict=True))
    assert ChannelsLast3d.order < CPUAutocast.order  # the layout is set before autocast enters
