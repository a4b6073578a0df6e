"""The UNet, the Dice + BCE loss and the Dice metrics (brats_seg.training.network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brats_seg.training.network import DiceBCELoss, build_unet, dice_et, dice_tc, dice_wt


def test_loss_and_metrics_on_perfect_prediction() -> None:
    target = torch.zeros(1, 3, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 20
    assert float(DiceBCELoss()(logits, target)) < 1e-3
    for fn in (dice_tc, dice_wt, dice_et):
        assert float(fn(logits, target)) == pytest.approx(1.0)
    assert float(dice_et(-logits, target)) == 0.0
    empty = torch.zeros_like(target)
    assert float(dice_wt(-20 * torch.ones_like(target), empty)) == 1.0  # both empty: a match


def test_build_unet_default_is_the_original_architecture() -> None:
    net = build_unet()
    n = sum(p.numel() for p in net.parameters())
    assert 4_000_000 < n < 6_000_000
    out = net(torch.zeros(1, 4, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)
    assert any(isinstance(m, torch.nn.PReLU) for m in net.modules())
    assert np.isfinite(out.detach().numpy()).all()
