"""From a validated ``Study`` to the network's input, and from the network's output back to the
study's grid.

Steps (each undone on the way back by :func:`restore`):

1. stack the four sequences in the card's channel order;
2. reorient to the card's orientation (e.g. ``LPS``, that of the BraTS training data);
3. crop to the brain's bounding box (voxels non-zero in any sequence) plus a margin;
4. z-score each channel over brain voxels after clipping to robust percentiles;
5. resample to the card's voxel spacing (trilinear).
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from .card import ModelCard
from .errors import StudyError
from .types import Study, bounding_box, nonzero_mask


@dataclass
class Prepared:
    """The network input and what is needed to map the output back to the study's grid.

    Attributes:
        tensor: Float32 tensor (C, X, Y, Z) at the card's spacing and orientation.
        ornt: nibabel orientation transform from the study's axes to the card's.
        oriented_shape: Shape of the study after reorientation.
        box: Crop box (start, stop) per axis in the reoriented grid.
        cropped_shape: Shape of the crop before resampling.
        brain: Where any sequence is non-zero, on the study's grid (:func:`brats_seg.types.brain_mask`), when
            the card reads every sequence of the study; else None.
    """

    tensor: torch.Tensor
    ornt: np.ndarray
    oriented_shape: tuple[int, int, int]
    box: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, int, int]
    brain: np.ndarray | None = None


def stack_channels(study: Study, channels: list[str]) -> np.ndarray:
    """Stack the study's sequences as (C, X, Y, Z) float32 in ``channels`` order."""
    return np.stack([np.asarray(study.images[c], dtype=np.float32) for c in channels])


def orientation_transform(affine: np.ndarray, axcodes: str) -> np.ndarray:
    """The nibabel orientation transform that takes arrays with ``affine`` to ``axcodes``."""
    start = nib.orientations.io_orientation(affine)
    return nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(tuple(axcodes)))


def reorient(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply an orientation transform to the last three axes of ``array``."""
    return np.ascontiguousarray(reoriented_view(array, ornt))


def reoriented_view(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """:func:`reorient` without the copy: a view of ``array`` (flips and transposes move no data)."""
    lead = array.ndim - 3
    full = np.vstack([[[i, 1] for i in range(lead)], ornt + [lead, 0]]) if lead else ornt
    return nib.orientations.apply_orientation(array, full)


def unreorient(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`reorient` (``ornt`` is the forward transform)."""
    # ornt maps study axes -> card axes; its inverse maps card axes -> study axes.
    inverse = _invert_ornt(ornt)
    return reorient(array, inverse)


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    inv = np.zeros_like(ornt)
    for src, (dst, flip) in enumerate(ornt):
        inv[int(dst)] = [src, flip]
    return inv


def brain_box(mask: np.ndarray, *, margin: int = 8) -> tuple[tuple[int, int], ...]:
    """Bounding box (start, stop) per axis of the non-zero voxels of ``mask``, grown by ``margin``.

    Raises:
        StudyError: if the mask is empty.
    """
    found = bounding_box(mask)
    if found is None:
        raise StudyError("all four sequences are zero everywhere: expected a brain with non-zero intensities")
    return tuple(
        (max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(found, mask.shape, strict=True)
    )


def reorient_box(
    box: tuple[tuple[int, int], ...], ornt: np.ndarray, shape: tuple[int, ...]
) -> tuple[tuple[int, int], ...]:
    """Where the box ``box`` of a grid of ``shape`` lies after :func:`reorient` with ``ornt``.

    ``reorient(array, ornt)[box']`` equals ``reorient(array[box], ornt)`` for ``box' = reorient_box(box,
    ornt, array.shape[-3:])``: flips and transposes move a box, they do not change what it holds.
    """
    out: list[tuple[int, int]] = [(0, 0)] * 3
    for axis, ((start, stop), (new_axis, flip)) in enumerate(zip(box, ornt, strict=True)):
        n = shape[axis]
        out[int(new_axis)] = (n - stop, n - start) if flip < 0 else (start, stop)
    return tuple(out)


def reorient_shape(shape: tuple[int, ...], ornt: np.ndarray) -> tuple[int, int, int]:
    """The shape of a grid of ``shape`` after :func:`reorient` with ``ornt``."""
    return tuple(int(shape[int(ax)]) for ax in ornt[:, 0].argsort())  # type: ignore[return-value]


def normalise(
    image: np.ndarray, mask: np.ndarray, *, clip_percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Z-score each channel over ``mask`` voxels after clipping to robust percentiles; 0 outside.

    Robust to the odd raw ranges of some BraTS cases (one reaches 32767 in every sequence).
    """
    out = np.zeros_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        values = image[c][mask]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, clip_percentiles)
        clipped = np.clip(values, lo, hi)
        std = float(clipped.std())
        out[c][mask] = (clipped - clipped.mean()) / (std if std > 1e-6 else 1.0)
    return out


def target_shape(
    shape: tuple[int, ...], spacing: tuple[float, ...], target: list[float] | tuple[float, ...]
) -> tuple[int, ...]:
    """Shape of a grid of ``shape`` voxels of size ``spacing`` resampled to ``target`` spacing."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True))


def resample(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resampling of a (C, X, Y, Z) tensor to ``shape`` (no-op when equal)."""
    if tuple(tensor.shape[-3:]) == tuple(shape):
        return tensor
    return F.interpolate(tensor[None], size=tuple(shape), mode="trilinear", align_corners=False)[0]


def oriented_spacing(study: Study, ornt: np.ndarray) -> tuple[float, ...]:
    """The study's voxel size (mm) along the axes of the reoriented array (see :func:`reorient`)."""
    # ornt[i] = (new axis of old axis i, flip): new axis j holds old axis k with ornt[k, 0] == j.
    return tuple(float(study.spacing[int(ax)]) for ax in ornt[:, 0].argsort())


def prepare(study: Study, card: ModelCard) -> Prepared:
    """Turn a study into the network's input as the card describes it.

    The brain is cropped on the study's grid and only the crop is reoriented: the same values as
    reorienting the whole study and cropping it there (:func:`reorient_box`), with copies of the crop
    instead of the whole field of view.
    """
    channels = [np.asarray(study.images[c], dtype=np.float32) for c in card.channels]
    ornt = orientation_transform(study.affine, card.orientation)
    spacing = oriented_spacing(study, ornt)
    mask = nonzero_mask(channels)
    stored_box = brain_box(mask, margin=card.crop_margin)
    box = reorient_box(stored_box, ornt, mask.shape)
    sl = tuple(slice(a, b) for a, b in stored_box)
    cropped = np.empty((len(channels), *(b - a for a, b in box)), dtype=np.float32)
    for c, channel in enumerate(channels):
        cropped[c] = reoriented_view(channel[sl], ornt)
    norm = card.normalisation
    cropped = normalise(
        cropped,
        np.ascontiguousarray(reoriented_view(mask[sl], ornt)),
        clip_percentiles=tuple(norm.get("clip_percentiles", (0.5, 99.5))),
    )
    tensor = torch.from_numpy(cropped)
    tensor = resample(tensor, target_shape(tensor.shape[1:], spacing, card.spacing))
    return Prepared(
        tensor=tensor.contiguous(),
        ornt=ornt,
        oriented_shape=reorient_shape(mask.shape, ornt),
        box=box,
        cropped_shape=tuple(cropped.shape[1:]),
        brain=mask if set(card.channels) == set(study.images) else None,
    )


def restore(probs: torch.Tensor, prepared: Prepared, *, background: np.ndarray | None = None) -> np.ndarray:
    """Map network probabilities (C, x, y, z) back to the study's grid as float32 (C, X, Y, Z).

    Args:
        probs: Probabilities at the card's spacing over the crop.
        prepared: What :func:`prepare` returned for this study.
        background: Per-channel value outside the crop (default 0; for class softmax, 1 for class 0).
    """
    probs = resample(probs.float().cpu(), prepared.cropped_shape)
    channels = probs.shape[0]
    inverse = _invert_ornt(prepared.ornt)
    shape = reorient_shape(prepared.oriented_shape, inverse)
    if background is None:
        full = np.zeros((channels, *shape), dtype=np.float32)
    else:
        full = np.empty((channels, *shape), dtype=np.float32)
        full[:] = np.asarray(background, dtype=np.float32)[:, None, None, None]
    # the crop goes back on the study's grid directly, not through a reoriented copy of the whole grid
    sl = tuple(slice(a, b) for a, b in reorient_box(prepared.box, inverse, prepared.oriented_shape))
    full[(slice(None), *sl)] = reoriented_view(probs.numpy(), inverse)
    return full
