"""MONAI's sliding window (``monai.inferers.sliding_window_inference``), without importing MONAI.

Importing MONAI loads every MONAI module (``monai/__init__`` does), which takes 5–8 s on this project's
2-core machine: more than all the work of a prediction with the OpenVINO backend. A fresh
``brats-seg predict`` process therefore slides its windows here, the way MONAI does: the same zero
padding up to the window, the same window corners (``dense_patch_slices``), the same Gaussian weights
(``compute_importance_map`` with ``sigma_scale=0.125``, clamped to at least 0.001) and the same
weighted average. ``tests/test_windows.py`` checks the outputs against MONAI's on many shapes, windows,
overlaps, batch sizes and both blending modes; keep it so when MONAI changes.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: Sigma of the Gaussian weights, as a fraction of the window size (MONAI's default ``sigma_scale``).
SIGMA_SCALE = 0.125


def pad_to_window(batch: torch.Tensor, roi_size: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad a batch (N, C, X, Y, Z) with zeros up to ``roi_size`` as MONAI's sliding window pads it (the
    smaller half before), and return it with the slices that cut the original back out."""
    before, pad = [], []
    for size, roi in zip(batch.shape[2:], roi_size, strict=True):
        diff = max(int(roi) - int(size), 0)
        before.append(diff // 2)
        pad = [diff // 2, diff - diff // 2, *pad]  # F.pad takes the last axis first
    crop = tuple(slice(b, b + s) for b, s in zip(before, batch.shape[2:], strict=True))
    return (F.pad(batch, pad) if any(pad) else batch), (slice(None), slice(None), *crop)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where the windows along one axis of ``size`` voxels (at least ``roi``) start, as MONAI places them:
    every ``int(roi * (1 - overlap))`` voxels (at least 1), the last one moved back to end at the edge."""
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = next(d for d in range(math.ceil(size / interval)) if d * interval + roi >= size) + 1
    return [min(d * interval, size - roi) for d in range(count)]


@functools.lru_cache(maxsize=8)
def importance_map(roi_size: tuple[int, ...], mode: str) -> torch.Tensor:
    """Each window voxel's weight: a Gaussian centred on the window (``"gaussian"``) or 1 (``"constant"``).

    Computed once per window size and mode; the tensor is shared, so callers must not change it.

    Raises:
        ValueError: for another mode.
    """
    if mode == "constant":
        return torch.ones(tuple(roi_size))
    if mode != "gaussian":
        raise ValueError(f"sliding window: expected mode 'gaussian' or 'constant', found {mode!r}")
    weights = torch.ones(())
    for size in roi_size:
        x = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float)
        weights = weights.unsqueeze(-1) * torch.exp(x**2 / (-2 * (size * SIGMA_SCALE) ** 2))
    return weights.clamp(min=max(weights.min().item(), 1e-3))


def sliding_window(
    image: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    *,
    roi_size: Sequence[int],
    sw_batch_size: int = 1,
    overlap: float = 0.5,
    mode: str = "gaussian",
) -> torch.Tensor:
    """The predictor's output over a whole image (1, C, X, Y, Z), window by window, on the CPU.

    Args:
        image: One image (a batch of one).
        predictor: From a batch of windows (N, C, *roi_size) to outputs (N, K, *roi_size).
        roi_size: Window size in voxels.
        sw_batch_size: Windows per call of ``predictor``.
        overlap: Fraction of overlap between neighbouring windows, in [0, 1).
        mode: Blending of overlapping windows, ``"gaussian"`` or ``"constant"``.

    Returns:
        The blended outputs (1, K, X, Y, Z), float32.
    """
    padded, crop = pad_to_window(image, roi_size)
    starts = [window_starts(s, r, overlap) for s, r in zip(padded.shape[2:], roi_size, strict=True)]
    slices = [
        (slice(None), slice(None), *(slice(a, a + r) for a, r in zip(corner, roi_size, strict=True)))
        for corner in itertools.product(*starts)
    ]
    weights = importance_map(tuple(int(r) for r in roi_size), mode)
    out = count = None
    for first in range(0, len(slices), sw_batch_size):
        batch = slices[first : first + sw_batch_size]
        windows = padded[batch[0]] if len(batch) == 1 else torch.cat([padded[s] for s in batch])
        logits = predictor(windows).to("cpu", torch.float32)
        if out is None:
            out = torch.zeros((1, logits.shape[1], *padded.shape[2:]))
            count = torch.zeros((1, 1, *padded.shape[2:]))
        for k, s in enumerate(batch):
            out[s] += logits[k : k + 1] * weights
            count[s] += weights
    return (out / count)[crop]
