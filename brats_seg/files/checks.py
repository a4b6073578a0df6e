"""Checks shared by NIfTI and DICOM input: plausible geometry, real image content, one grid, labels.

Each check raises :class:`~brats_seg.errors.StudyError` naming the file (or series) and saying what
was expected and what was found. The limits are module constants, documented where they are set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import StudyError

__all__ = [
    "AFFINE_ATOL",
    "BRATS_LABELS",
    "MAX_FOV_MM",
    "MAX_PIXDIM_MM",
    "MAX_VOXELS",
    "MAX_VOXEL_MM",
    "MIN_VOXEL_MM",
    "OnGrid",
    "check_finite",
    "check_geometry",
    "check_grid",
    "check_image_content",
    "to_labels",
]

#: Voxel budget per file: 512**3 = 134,217,728 voxels (512 MiB as float32). A header describing more
#: voxels is refused before any image data are read.
MAX_VOXELS: int = 512**3

#: Largest absolute difference (in mm, entry-wise) allowed between the affines of a study's files.
AFFINE_ATOL: float = 1e-3

#: Largest plausible voxel size in mm; header spacings outside (0, MAX_PIXDIM_MM] are refused.
MAX_PIXDIM_MM: float = 100.0

#: Plausible voxel edge in mm, measured from the affine (what places the voxels; :func:`check_geometry`).
MIN_VOXEL_MM: float = 0.1
MAX_VOXEL_MM: float = 10.0

#: Largest field of view (voxels x voxel size) along any axis in mm: a head, with room to spare. It
#: bounds the grids the model works on: at most 160 voxels per axis at its 2 mm, 320 at the 1 mm of a
#: harmonised raw study.
MAX_FOV_MM: float = 320.0

#: Label values allowed in a BraTS segmentation (there is no label 3 before BraTS 2023).
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)


def check_geometry(name: str, affine: np.ndarray, shape: Sequence[int]) -> None:
    """Refuse a voxel-to-world affine that cannot place a head: singular, or implausible sizes.

    Args:
        name: The file (or series) named in the message.
        affine: The 4 x 4 voxel-to-world affine.
        shape: The voxel grid.

    Raises:
        StudyError: For a singular 3 x 3 part (e.g. all zeros), a voxel edge outside
            [:data:`MIN_VOXEL_MM`, :data:`MAX_VOXEL_MM`] mm, or a field of view over :data:`MAX_FOV_MM` mm.
    """
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    if (
        not abs(float(np.linalg.det(linear))) > 1e-9 * max(float(np.prod(spacing)), 1e-30)
        or not spacing.all()
    ):
        raise StudyError(
            f"{name}: the affine (voxel-to-world matrix) is singular (rows {np.round(linear, 4).tolist()}); "
            "expected an invertible matrix that places each voxel in the scanner's space (check the "
            "sform/qform of the header)"
        )
    shown = " x ".join(f"{v:.4g}" for v in spacing)
    if not ((spacing >= MIN_VOXEL_MM) & (spacing <= MAX_VOXEL_MM)).all():
        raise StudyError(
            f"{name}: voxels of {shown} mm according to its affine; expected each edge within "
            f"{MIN_VOXEL_MM:g}-{MAX_VOXEL_MM:g} mm (MIN_VOXEL_MM, MAX_VOXEL_MM) for a brain MR image"
        )
    fov = spacing * np.asarray(shape[:3], dtype=np.float64)
    if fov.max() > MAX_FOV_MM:
        raise StudyError(
            f"{name}: a field of view of {' x '.join(f'{v:.0f}' for v in fov)} mm "
            f"({' x '.join(map(str, shape[:3]))} voxels of {shown} mm); expected at most {MAX_FOV_MM:g} mm "
            "along each axis (MAX_FOV_MM: a head), which bounds the time and memory a study can take"
        )


def check_finite(name: str, data: np.ndarray) -> None:
    """Refuse an image with NaN or infinite voxels, saying how many."""
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise StudyError(
            f"{name}: {n_bad:,} of {data.size:,} voxels are not finite (NaN or inf); expected finite values"
        )


def check_image_content(name: str, modality: str, data: np.ndarray) -> None:
    """Refuse an image that holds no picture: every voxel 0, or every voxel one value.

    Raises:
        StudyError: naming the file (or series) and the value found.
    """
    if not np.any(data):
        raise StudyError(f"{name}: every voxel is 0 (an empty image); expected an MRI {modality} sequence")
    first = data.flat[0]
    if np.all(data == first):
        raise StudyError(
            f"{name}: every voxel is {first:g} (an image without contrast); expected an MRI {modality} "
            "sequence"
        )


def to_labels(name: str, data: np.ndarray) -> np.ndarray:
    """Validate a segmentation (values in 0, 1, 2, 4) and return it as uint8.

    Raises:
        StudyError: For any other value (with a hint for the label 3 of BraTS 2023+ data).
    """
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0 and hi <= 255 and np.array_equal(data, np.round(data)):
        present = np.flatnonzero(np.bincount(data.astype(np.uint8).ravel(), minlength=256))
    else:
        present = np.unique(data)
    bad = [v for v in present.tolist() if v not in BRATS_LABELS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        hint = (
            " (label 3 is the enhancing tumour in BraTS 2023+ data: relabel 3 -> 4 first)" if 3 in bad else ""
        )
        raise StudyError(
            f"{name}: unexpected label values {shown} in the segmentation; expected BraTS labels "
            f"0, 1, 2, 4 (background, NCR, ED, ET){hint}"
        )
    return data.astype(np.uint8)


class OnGrid(Protocol):
    """What :func:`check_grid` compares: a :class:`~brats_seg.files.nifti.NiftiHeader` or a
    :class:`~brats_seg.files.dicom_read.DicomSeries`."""

    name: str
    shape: tuple[int, int, int]
    affine: np.ndarray


def check_grid(ref: OnGrid, other: OnGrid, *, affine_atol: float) -> None:
    """Check that ``other`` lies on the voxel grid of ``ref``: the same shape and affine.

    Raises:
        StudyError: For another shape, or an affine more than ``affine_atol`` mm off (both printed).
    """
    if other.shape != ref.shape:
        raise StudyError(
            f"{other.name}: shape {other.shape} differs from {ref.name} {ref.shape}; expected all "
            "files of a study on one voxel grid (co-registered and resampled to the same space)"
        )
    diff = float(np.max(np.abs(other.affine - ref.affine)))
    if not diff <= affine_atol:
        fmt = {"float_kind": lambda x: f"{x:.4g}"}
        raise StudyError(
            f"{other.name}: affine differs from that of {ref.name} by up to {diff:.4g} mm; expected "
            f"the same affine within affine_atol={affine_atol:g} mm.\n"
            f"{ref.name}:\n{np.array2string(ref.affine, formatter=fmt)}\n"
            f"{other.name}:\n{np.array2string(other.affine, formatter=fmt)}"
        )
