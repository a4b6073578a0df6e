"""Rigid registration of MR sequences with SimpleITK, and the checks that say whether it worked.

:func:`to_sitk` / :func:`from_sitk` convert between nibabel's arrays and affines (RAS) and SimpleITK
images (LPS); :func:`register_rigid` registers one sequence onto another (Mattes mutual information,
three levels); :func:`judge_registration` refuses a registration whose mutual information or motion
says it failed. :mod:`brats_seg.harmonise` builds the harmonised study from these.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import StudyError

__all__ = [
    "MAX_ROTATION_DEG",
    "MAX_SHIFT_MM",
    "MIN_MUTUAL_INFORMATION",
    "check_overlap",
    "corners",
    "from_sitk",
    "judge_registration",
    "mutual_information",
    "register_rigid",
    "resample",
    "rigid_motion",
    "to_sitk",
]

#: Mutual information (nats, 32-bin joint histogram inside the brain) a registered sequence must
#: reach with the reference. Measured: 0.21-0.40 for T1, T2 and FLAIR of real studies after
#: registration; 0.00-0.02 for noise or an unrelated volume (``benchmarks/harmonise_accuracy.py``).
MIN_MUTUAL_INFORMATION: float = 0.1

#: Rigid motions larger than these between two sequences of one session are refused as a failed
#: registration (the sequences of a study move by millimetres and degrees between acquisitions).
MAX_ROTATION_DEG: float = 45.0
MAX_SHIFT_MM: float = 80.0

_LPS = np.diag([-1.0, -1.0, 1.0])  # NIfTI/nibabel world (RAS) <-> ITK world (LPS)


# --------------------------------------------------------------------------------------------------
# nibabel <-> SimpleITK
# --------------------------------------------------------------------------------------------------


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of ``array`` (indexed i, j, k) placed in the world by the RAS ``affine``.

    ITK works in LPS and indexes arrays (k, j, i); a test checks this against ``sitk.ReadImage`` of
    the same NIfTI file.
    """
    image = sitk.GetImageFromArray(
        np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(2, 1, 0))
    )
    linear = _LPS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (linear / spacing).ravel()])
    image.SetOrigin([float(v) for v in _LPS @ np.asarray(affine, dtype=np.float64)[:3, 3]])
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The array (indexed i, j, k) and RAS affine of a SimpleITK image; the inverse of :func:`to_sitk`."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS @ np.array(image.GetOrigin(), dtype=np.float64)
    return array, affine


def resample(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    """``image`` resampled (linear, 0 outside) onto ``grid`` through ``transform``; an (i, j, k) array."""
    out = sitk.Resample(image, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def corners(image: sitk.Image) -> np.ndarray:
    """The physical (LPS) positions of the eight corner voxels of ``image``."""
    size = image.GetSize()
    idx = [(i, j, k) for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)]
    return np.array([image.TransformIndexToPhysicalPoint(p) for p in idx])


def check_overlap(
    fixed: sitk.Image, moving: sitk.Image, *, source: str, modality: str, reference: str
) -> None:
    """Refuse a sequence whose field of view shares nothing with the reference's in scanner space."""
    a, b = corners(fixed), corners(moving)
    low, high = np.maximum(a.min(0), b.min(0)), np.minimum(a.max(0), b.max(0))
    shared = float(np.prod(np.clip(high - low, 0, None)))
    own = float(np.prod(a.max(0) - a.min(0))) or 1.0
    if shared / own < 0.1:
        raise StudyError(
            f"{source}: the {modality} field of view and the {reference}'s share {shared / own:.0%} "
            f"of the {reference}'s box in scanner coordinates; expected two sequences of one session "
            "around the same head (over 10% shared), "
            "so it cannot be registered: check that it belongs to this study"
        )


def register_rigid(fixed: sitk.Image, moving: sitk.Image, *, source: str) -> sitk.Transform:
    """Rigid (Euler 3-D) registration of ``moving`` onto ``fixed`` from their scanner positions."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, 1234)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=150,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    initial = sitk.Euler3DTransform()
    centre = np.mean(corners(fixed), axis=0)
    initial.SetCenter([float(c) for c in centre])
    method.SetInitialTransform(initial, inPlace=False)
    try:
        return method.Execute(sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1][:200]
        raise StudyError(
            f"{source}: registration failed ({detail}); expected an MR sequence of this study's head"
        ) from None


def rigid_motion(transform: sitk.Transform) -> tuple[float, float]:
    """Rotation angle (degrees) and the largest displacement (mm) of a rigid transform near its centre."""
    euler = (
        sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetNthTransform(0))
        if transform.GetName() == "CompositeTransform"
        else sitk.Euler3DTransform(transform)
    )
    matrix = np.array(euler.GetMatrix()).reshape(3, 3)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0))))
    return angle, float(np.linalg.norm(euler.GetTranslation()))


def mutual_information(a: np.ndarray, b: np.ndarray, *, bins: int = 32) -> float:
    """Mutual information (nats) of two equally long samples, from their joint histogram."""
    if a.size == 0:
        return 0.0
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    p = joint / joint.sum()
    px, py = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def judge_registration(
    ref: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    brain: np.ndarray,
    transform: sitk.Transform,
    *,
    source: str,
    modality: str,
    reference: str,
) -> dict[str, float]:
    """Figures of one registration; refuse it when they say it failed."""
    mi_before = mutual_information(ref[brain], before[brain])
    mi_after = mutual_information(ref[brain], after[brain])
    angle, shift = rigid_motion(transform)
    figures = {
        "mutual_information_before": mi_before,
        "mutual_information_after": mi_after,
        "rotation_deg": angle,
        "shift_mm": shift,
    }
    if mi_after < MIN_MUTUAL_INFORMATION:
        raise StudyError(
            f"{source}: registration of {modality} onto {reference} did not converge: "
            f"mutual information inside the brain {mi_after:.3f} (from {mi_before:.3f} as scanned); "
            f"expected at least {MIN_MUTUAL_INFORMATION:g} "
            "for two sequences of one head (real studies reach 0.2-0.4): check that the file is this study's "
            f"{modality}, or give the study already co-registered"
        )
    if angle > MAX_ROTATION_DEG or shift > MAX_SHIFT_MM:
        raise StudyError(
            f"{source}: registration of {modality} onto {reference} moved it by {angle:.0f} degrees "
            f"and {shift:.0f} mm; expected at most {MAX_ROTATION_DEG:g} degrees and {MAX_SHIFT_MM:g} mm "
            "between sequences of one session, so the registration is taken as failed"
        )
    return figures
