"""Data types that carry their own geometry: a ``Study`` and a ``LabelMap``.

No function takes "the affine" as a loose argument: each volume travels with the affine and header
of the file it came from, so outputs keep the input's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

#: The four MRI sequences of a study, in the package's canonical order. The model card decides the
#: order in which they are stacked as network channels.
MODALITIES: tuple[str, ...] = ("T1", "T1CE", "T2", "FLAIR")

#: BraTS label values and their meaning.
LABEL_NAMES: dict[int, str] = {1: "NCR", 2: "ED", 4: "ET"}

#: The evaluated BraTS regions as sets of labels.
REGIONS: dict[str, tuple[int, ...]] = {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the three array axes, from the voxel-to-world affine (its column lengths).

    The affine is what places the voxels in the world (and what viewers use); a NIfTI header's
    ``pixdim`` can disagree with it, and then the affine is right about where the voxels are.
    """
    lengths = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return tuple(round(float(v), 6) for v in lengths)  # type: ignore[return-value]


@dataclass
class Study:
    """Four co-registered 3-D MRI sequences of one study.

    Attributes:
        name: Study identifier (folder name or the common prefix of the file names).
        images: Arrays keyed by modality (``T1``, ``T1CE``, ``T2``, ``FLAIR``), all of one shape.
        affine: The voxel-to-world affine shared by the four files (that of the T1 file).
        header: The NIfTI header of the T1 file; outputs are written with a copy of it.
        sources: File name of each modality (and ``SEG`` for a ground truth, when present).
        truth: Optional ground-truth BraTS label map (values 0, 1, 2, 4) on the same grid.
        sha256: sha256 of each source file, keyed like ``sources`` (for a DICOM series, of its
            files in slice order).
        dicom: For a study read from DICOM, the series keyed by modality
            (:class:`brats_seg.files.DicomSeries`, used to write a DICOM Segmentation); else None.
    """

    name: str
    images: dict[str, np.ndarray]
    affine: np.ndarray
    header: nib.Nifti1Header
    sources: dict[str, str] = field(default_factory=dict)
    truth: np.ndarray | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    dicom: dict[str, Any] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel grid shape shared by the four sequences."""
        return tuple(next(iter(self.images.values())).shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return affine_spacing(self.affine)

    @property
    def grid_text(self) -> str:
        """The grid in words for messages, e.g. ``"240 x 240 x 155 voxels of 1 x 1 x 1 mm"``."""
        shape = " x ".join(str(n) for n in self.shape)
        return f"{shape} voxels of {' x '.join(f'{s:g}' for s in self.spacing)} mm"

    @property
    def truth_map(self) -> LabelMap | None:
        """The ground truth as a ``LabelMap`` on the study's grid, or None."""
        if self.truth is None:
            return None
        return LabelMap(self.truth.astype(np.uint8), self.affine, self.header)


@dataclass
class RawStudy:
    """The four sequences of a study as they came, each on its own grid (a scanner's study).

    :func:`brats_seg.harmonise.harmonise` co-registers and resamples them into a :class:`Study`;
    :meth:`to_study` takes them as they are when they already share one grid.

    Attributes:
        name: Study identifier.
        images: Arrays keyed by modality, each of its own shape.
        affines: The voxel-to-world affine of each modality's file or series.
        headers: The NIfTI header of each modality (for DICOM, one made from the series' geometry).
        sources: File (or series) name of each modality (and ``SEG`` when a ground truth is present).
        truth: Optional ground truth on the T1 grid (a study with one shares that grid in every file).
        sha256: sha256 of each source, keyed like ``sources``.
        dicom: For DICOM input, the series keyed by modality; else None.
    """

    name: str
    images: dict[str, np.ndarray]
    affines: dict[str, np.ndarray]
    headers: dict[str, nib.Nifti1Header]
    sources: dict[str, str] = field(default_factory=dict)
    truth: np.ndarray | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    dicom: dict[str, Any] | None = None

    def grid_text(self, modality: str) -> str:
        """One sequence's grid in words, e.g. ``"256 x 224 x 26 voxels of 0.9 x 0.9 x 5.5 mm"``."""
        shape = " x ".join(str(n) for n in self.images[modality].shape)
        return (
            f"{shape} voxels of {' x '.join(f'{s:.3g}' for s in affine_spacing(self.affines[modality]))} mm"
        )

    def grids_differ(self, *, atol: float) -> list[str]:
        """The modalities whose grid (shape, or affine beyond ``atol`` mm) differs from the T1's."""
        ref_shape, ref_affine = self.images["T1"].shape, self.affines["T1"]
        return [
            m
            for m in MODALITIES[1:]
            if self.images[m].shape != ref_shape
            or not float(np.max(np.abs(self.affines[m] - ref_affine))) <= atol
        ]

    def to_study(self) -> Study:
        """The study as it is, on the T1's grid (check :meth:`grids_differ` first)."""
        return Study(
            name=self.name,
            images=dict(self.images),
            affine=self.affines["T1"],
            header=self.headers["T1"],
            sources=dict(self.sources),
            truth=self.truth,
            sha256=dict(self.sha256),
            dicom=self.dicom,
        )


def brain_mask(study: Study) -> np.ndarray:
    """Voxels where any of the four sequences is non-zero (the skull-stripped brain), on the study's grid."""
    return nonzero_mask(list(study.images.values()))


def nonzero_mask(images: list[np.ndarray]) -> np.ndarray:
    """Where any of ``images`` (arrays of one shape) is non-zero, in the memory order of the first.

    One scratch array for all the comparisons, and no mixing of memory orders (images loaded from
    NIfTI are Fortran-ordered): a pass at memory speed per image.
    """
    mask = np.not_equal(images[0], 0)
    scratch = np.empty_like(mask)
    for image in images[1:]:
        mask |= np.not_equal(image, 0, out=scratch)
    return mask


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box (a slice per axis) that holds every non-zero voxel of a 3-D ``mask``; None if none."""
    across_z = mask.any(axis=2)  # (x, y): two passes over the volume, not three
    if not across_z.any():
        return None
    seen = (across_z.any(axis=1), across_z.any(axis=0), mask.any(axis=(0, 1)))
    box = []
    for axis in seen:
        idx = np.flatnonzero(axis)
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


@dataclass
class LabelMap:
    """A BraTS label map (0 background, 1 NCR, 2 ED, 4 ET) with the geometry of its study."""

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel grid shape."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return affine_spacing(self.affine)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(np.prod(self.spacing))
