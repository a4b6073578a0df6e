"""Augmentations of training patches: MONAI dictionary transforms plus a coil bias field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .config import INTENSITY_AUGMENTS


class BrainBiasField:
    """A smooth multiplicative intensity field over the brain (an MRI coil bias), shared by all channels.

    The patch holds z-scored channels whose background is exactly 0. The field ``f`` is applied as
    if to the raw intensities before z-scoring: ``(z + shift) * f - shift`` inside the brain (any
    channel non-zero), with ``shift`` about the z-score of dark brain tissue, so brightness drifts
    across the brain as it does on an uncorrected coil (e.g. a brightened frontal lobe on an old
    FLAIR) while the background stays 0. ``log f`` is Gaussian noise on a coarse ``grid`` of control
    points, upsampled smoothly to the patch, with standard deviation ``sigma``.

    A MONAI-style randomisable dictionary transform: ``set_random_state`` (called by ``Compose``)
    seeds it, so a seeded :class:`~brats_seg.training.data.PatchDataset` stays reproducible.

    Args:
        keys: The image key.
        prob: Probability of applying the field to a patch.
        sigma: Standard deviation of ``log f`` at the control points (0.25: about ±25 %).
        grid: Control points per axis (3: one smooth bump or dip across a brain-sized patch).
        shift: Added before and taken away after the multiplication.
    """

    def __init__(
        self,
        keys: str = "image",
        *,
        prob: float = 0.3,
        sigma: float = 0.25,
        grid: int = 3,
        shift: float = 3.0,
    ) -> None:
        if not 0.0 <= prob <= 1.0 or sigma < 0 or grid < 2:
            raise ValueError(
                "BrainBiasField: expected 0 <= prob <= 1, sigma >= 0 and grid >= 2, "
                f"found {prob}, {sigma}, {grid}"
            )
        self.keys, self.prob, self.sigma, self.grid, self.shift = keys, prob, sigma, grid, shift
        self.R = np.random.RandomState()

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> BrainBiasField:
        """Seed the transform (the MONAI ``Randomizable`` protocol)."""
        self.R = state if state is not None else np.random.RandomState(seed)
        return self

    def field(self, shape: Sequence[int]) -> torch.Tensor:
        """A random smooth field of ``shape`` (X, Y, Z), positive, 1 on average in the log domain."""
        size = (1, 1, self.grid, self.grid, self.grid)
        coarse = torch.from_numpy(self.R.normal(0.0, self.sigma, size=size).astype(np.float32))
        log_f = torch.nn.functional.interpolate(
            coarse, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=True
        )
        return torch.exp(log_f[0, 0])

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with the field applied to the image (with probability ``prob``)."""
        if self.R.random_sample() >= self.prob:
            return data
        out = dict(data)
        img = torch.as_tensor(data[self.keys])
        brain = img.abs().sum(0, keepdim=True) > 0
        f = self.field(img.shape[1:]).to(img.dtype)
        out[self.keys] = torch.where(brain, (img + self.shift) * f - self.shift, img)
        return out


def augmentations(*, flip: bool = True, zoom: bool = True, affine: bool = True, intensity: bool | str = True):
    """MONAI dictionary transforms on ``{"image", "label"}`` patches: flips, zoom, affine, intensity.

    Args:
        flip: Random flips along each axis.
        zoom: Random zoom.
        affine: Random rotation and scaling.
        intensity: ``"mild"`` (or True): scale and shift all channels together by up to 10 %.
            ``"strong"``: in the spirit of nnU-Net, each channel scaled (±25 %) and shifted (±0.2) on
            its own, so the tumour's contrast in one sequence varies against the others, plus gamma,
            Gaussian noise, blur and simulated low resolution, for scanners and protocols the
            training cases do not cover. ``"strong-bias"``: ``"strong"`` plus a smooth coil bias
            field shared by the channels (:class:`BrainBiasField`), first among the intensity
            transforms. ``"none"`` (or False): no intensity augmentation.

    Raises:
        ValueError: for an unknown ``intensity``.
    """
    from monai import transforms as T

    if intensity is True:
        intensity = "mild"
    elif intensity is False:
        intensity = "none"
    if intensity not in INTENSITY_AUGMENTS:
        raise ValueError(f"intensity augmentation: expected one of {INTENSITY_AUGMENTS}, found {intensity!r}")
    return T.Compose(
        spatial_transforms(flip=flip, zoom=zoom, affine=affine) + intensity_transforms(intensity)
    )


def spatial_transforms(*, flip: bool, zoom: bool, affine: bool) -> list[Any]:
    """Random flips along each axis, zoom, and rotation with scaling, on image and label alike."""
    from monai import transforms as T

    keys = ["image", "label"]
    tfms: list[Any] = []
    if flip:
        tfms += [T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)]
    if zoom:
        tfms.append(
            T.RandZoomd(
                keys, prob=0.2, min_zoom=0.9, max_zoom=1.15, mode=("trilinear", "trilinear"), keep_size=True
            )
        )
    if affine:
        tfms.append(
            T.RandAffined(
                keys,
                prob=0.25,
                rotate_range=(0.26, 0.26, 0.26),
                scale_range=(0.1, 0.1, 0.1),
                mode=("bilinear", "bilinear"),
                padding_mode="zeros",
            )
        )
    return tfms


def intensity_transforms(intensity: str) -> list[Any]:
    """The image-only transforms of an intensity preset (see :func:`augmentations`)."""
    from monai import transforms as T

    if intensity == "mild":
        return [
            T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
            T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    if intensity not in ("strong", "strong-bias"):
        return []
    bias = [BrainBiasField("image", prob=0.3)] if intensity == "strong-bias" else []
    return bias + [
        T.RandScaleIntensityd("image", factors=0.25, prob=0.5, channel_wise=True),
        T.RandShiftIntensityd("image", offsets=0.2, prob=0.5, channel_wise=True),
        T.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3, retain_stats=True),
        T.RandGaussianNoised("image", std=0.1, prob=0.15),
        T.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2),
        T.RandSimulateLowResolutiond("image", zoom_range=(0.5, 1.0), prob=0.15),
    ]
