"""The network, its loss and its metrics: module-level so that an exported learner pickles them by reference.

- Model: MONAI ``UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(16, 32, 64, 128, 256),
  strides=(2, 2, 2, 2), num_res_units=2, act=PRELU)``.
- Target: the nested BraTS regions TC, WT, ET as sigmoid outputs; loss Dice + BCE; Dice per region as
  metrics.

The shipped learners refer to ``DiceBCELoss`` and ``dice_tc``/``dice_wt``/``dice_et`` under their old
module ``brats_seg.train`` (see :mod:`brats_seg.training.pickled_names`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .config import REGION_ORDER


def build_unet(
    *,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] | None = None,
    num_res_units: int = 2,
    in_channels: int = 4,
    out_channels: int = 3,
    dropout: float = 0.0,
) -> nn.Module:
    """The original work's 5-level residual MONAI UNet with PReLU activations.

    ``strides`` defaults to 2 between every pair of levels (``len(channels) - 1`` values).
    """
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides) if strides is not None else (2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        act="PRELU",
        norm=Norm.INSTANCE,
        dropout=dropout,
    )


class DiceBCELoss(nn.Module):
    """Soft Dice (per region, batch-averaged) plus binary cross-entropy on region logits."""

    def __init__(self, *, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum of soft Dice and BCE, computed in float32."""
        logits = logits.float()
        target = target.float()
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * self.bce(logits, target)


def region_dice(logits: torch.Tensor, target: torch.Tensor, channel: int) -> torch.Tensor:
    """Hard Dice of one region channel over a batch of patches (1 when both are empty)."""
    pred = logits[:, channel] > 0
    truth = target[:, channel] > 0.5
    inter = (pred & truth).sum().float()
    total = pred.sum().float() + truth.sum().float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def dice_tc(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of the tumour core over a batch of patches."""
    return region_dice(logits, target, REGION_ORDER.index("TC"))


def dice_wt(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of the whole tumour over a batch of patches."""
    return region_dice(logits, target, REGION_ORDER.index("WT"))


def dice_et(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of the enhancing tumour over a batch of patches."""
    return region_dice(logits, target, REGION_ORDER.index("ET"))
