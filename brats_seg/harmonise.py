"""Harmonise a study as it comes from the scanner into one the model can read, and map labels back.

A raw study has its four sequences on their own grids (thick slices, different fields of view), the
skull still on, and the sequences a few millimetres apart. :func:`harmonise` does what BraTS
preprocessing does, with the patient's own post-contrast T1 as the reference instead of an atlas
(no atlas ships with any package that installs offline):

1. a 1 mm isotropic grid in the reference's frame, covering its field of view;
2. a brain mask: deepbet (a CNN whose weights ship inside its wheel) on the reference when it shows
   a skull, else where the reference is non-zero;
3. rigid registration of the other three onto the reference (SimpleITK, Mattes mutual information,
   three resolution levels), each checked by the mutual information it reaches inside the brain;
4. all four resampled (linear) onto the 1 mm grid and masked.

The result is a :class:`~brats_seg.types.Study` like a BraTS one; :func:`to_native` takes labels made
on it back onto the reference's native grid. :func:`decide` says whether a study needs this at all.

Example::

    raw = files.load_native_study("TCGA-FG-6692/")
    harmonised = harmonise(raw)
    seg = pipeline.segment(harmonised.study, model)
    native = to_native(seg.labels, harmonised)        # on the T1CE file's own grid
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .errors import StudyError
from .quality import MAX_BRAIN_FRACTION, MAX_SPACING_MM
from .registration import (
    check_overlap,
    from_sitk,
    judge_registration,
    register_rigid,
    resample,
    to_sitk,
)
from .types import MODALITIES, LabelMap, RawStudy, Study, affine_spacing

__all__ = [
    "GRID_MM",
    "MIN_BRAIN_ML",
    "MIN_EXTENT_MM",
    "MODES",
    "REFERENCE",
    "Harmonised",
    "decide",
    "harmonise",
    "harmonise_if_needed",
    "to_native",
]

#: The sequence the others are registered onto, and whose native grid the labels go back to.
REFERENCE: str = "T1CE"

#: Voxel size of the grid the model reads, in mm (BraTS studies are 1 mm isotropic).
GRID_MM: float = 1.0

#: A skull-stripping mask smaller than this (mL) means no brain was found (a brain is 1,100-1,800 mL).
MIN_BRAIN_ML: float = 200.0

#: The smallest field of view (mm, along each axis) that harmonising takes: less is no head.
MIN_EXTENT_MM: float = 16.0

#: What ``--harmonise`` / the dashboard's choice accept.
MODES: tuple[str, ...] = ("auto", "on", "off")

ProgressText = Callable[[str], None]


def grid_1mm(
    affine: np.ndarray, shape: tuple[int, ...], *, mm: float = GRID_MM
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An isotropic grid in the frame of (``affine``, ``shape``) that covers the same field of view.

    Returns:
        The new grid's affine (same axis directions, voxels of ``mm``) and shape.
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    directions = affine[:3, :3] / spacing
    extent = np.asarray(shape[:3]) * spacing
    new_shape = tuple(int(n) for n in np.maximum(1, np.round(extent / mm)))
    new = np.eye(4)
    new[:3, :3] = directions * mm
    # the first voxel's centre sits half a new voxel inside the first old voxel's outer edge
    new[:3, 3] = affine[:3, 3] + directions @ ((mm - spacing) / 2.0)
    return new, new_shape  # type: ignore[return-value]


def _header(shape: tuple[int, ...], affine: np.ndarray, description: str) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    header["descrip"] = description.encode()[:79]
    return header


# --------------------------------------------------------------------------------------------------
# Deciding
# --------------------------------------------------------------------------------------------------


def decide(raw: RawStudy, *, mode: str = "auto", atol: float = 1e-3) -> list[str]:
    """Why ``raw`` needs harmonising (empty: it can go to the model as it is).

    Args:
        raw: The study as loaded by :func:`brats_seg.files.load_native_study`.
        mode: ``"auto"`` decides from the study; ``"on"`` always harmonises, ``"off"`` never (a study
            on several grids is then refused).
        atol: Largest entry-wise affine difference (mm) that still counts as one grid.

    Returns:
        One reason per finding (sequences on different grids, slices thicker than 3 mm, a skull).

    Raises:
        StudyError: With ``mode="off"`` for sequences on different grids; for an unknown mode.
    """
    if mode not in MODES:
        raise StudyError(f"{raw.name}: harmonise mode {mode!r}; expected one of {', '.join(MODES)}")
    differ = raw.grids_differ(atol=atol)
    if mode == "off":
        if differ:
            raise StudyError(
                f"{raw.sources.get(differ[0], differ[0])}: {differ[0]} is on another grid than T1 "
                f"({raw.grid_text(differ[0])} against {raw.grid_text('T1')}); "
                "expected all files of a study on one voxel "
                "grid (co-registered and resampled to the same space); let brats-seg co-register them "
                "(--harmonise auto or on)"
            )
        return []
    reasons = []
    if differ:
        reasons.append(
            f"{', '.join(differ)} on other grids than T1 ("
            + "; ".join(f"{m} {raw.grid_text(m)}" for m in ("T1", *differ))
            + ")"
        )
    reference = raw.images[REFERENCE]
    spacing = affine_spacing(raw.affines[REFERENCE])
    if max(spacing) > MAX_SPACING_MM:
        reasons.append(f"{REFERENCE} slices of {max(spacing):.3g} mm (thicker than {MAX_SPACING_MM:g} mm)")
    fraction = float(np.count_nonzero(reference)) / reference.size
    if fraction > MAX_BRAIN_FRACTION:
        reasons.append(f"{fraction:.0%} of the {REFERENCE} field of view non-zero: not skull-stripped")
    if mode == "on" and not reasons:
        reasons.append("asked for (--harmonise on)")
    return reasons


# --------------------------------------------------------------------------------------------------
# Harmonising
# --------------------------------------------------------------------------------------------------


@dataclass
class Harmonised:
    """A raw study brought onto the model's terms, with what it takes to go back.

    Attributes:
        study: The four sequences on a 1 mm grid in the reference's frame, registered and masked.
        reference: The sequence the others were registered onto (``T1CE``).
        native: An empty label map on the reference's own grid (its affine and header): where
            :func:`to_native` puts labels.
        native_image: The reference sequence as loaded, on that grid.
        brain: The brain mask on the 1 mm grid.
        skull_stripped: Whether the mask came from skull stripping (else from the non-zero reference).
        transforms: Per registered sequence, the rigid transform from the reference's world to
            that sequence's world (SimpleITK, LPS).
        registration: Per registered sequence: ``mutual_information_before`` / ``_after`` (inside
            the brain, nats), ``rotation_deg``, ``shift_mm``.
        reasons: Why the study was harmonised (:func:`decide`).
        timings: Seconds per step (``grid``, ``skull_strip``, ``register_T1`` ..., ``resample``, ``total``).
    """

    study: Study
    reference: str
    native: LabelMap
    native_image: np.ndarray
    brain: np.ndarray
    skull_stripped: bool
    transforms: dict[str, sitk.Transform] = field(default_factory=dict)
    registration: dict[str, dict[str, float]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What the report JSON says about the harmonisation."""
        return {
            "reference": self.reference,
            "reasons": list(self.reasons),
            "grid": self.study.grid_text + f" in the {self.reference} frame",
            "native_grid": " x ".join(str(n) for n in self.native.shape)
            + " voxels of "
            + " x ".join(f"{s:.3g}" for s in self.native.spacing)
            + f" mm ({self.reference})",
            "skull_stripped": self.skull_stripped,
            "brain_mL": round(float(self.brain.sum()) * GRID_MM**3 / 1000.0, 1),
            "registration": {m: {k: round(v, 4) for k, v in r.items()} for m, r in self.registration.items()},
            "timings": dict(self.timings),
        }


def harmonise(
    raw: RawStudy,
    *,
    reference: str = REFERENCE,
    skull_strip: bool | None = None,
    reasons: list[str] | None = None,
    progress: ProgressText | None = None,
) -> Harmonised:
    """Co-register, skull-strip and resample a raw study onto a 1 mm grid in the reference's frame.

    Args:
        raw: The study, each sequence on its own grid (:func:`brats_seg.files.load_native_study`).
        reference: The sequence to register onto (default the post-contrast T1).
        skull_strip: Strip the skull with deepbet; default when over half the reference is non-zero.
        reasons: Why it is harmonised (:func:`decide`), kept in the result.
        progress: Called with a line of text before each step.

    Returns:
        The harmonised study and what it takes to map labels back (:func:`to_native`).

    Raises:
        StudyError: When a sequence does not overlap the reference, a registration fails (the
            message names the sequence and the mutual information it reached), or no brain is found.
    """
    say = progress or (lambda _text: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ref_image, ref_affine = raw.images[reference], raw.affines[reference]
    affine, shape = grid_1mm(ref_affine, ref_image.shape)
    _check_head_sized(shape, source=raw.sources.get(reference, reference))
    fixed = to_sitk(ref_image, ref_affine)
    grid = to_sitk(np.zeros(shape, dtype=np.float32), affine)
    ref_1mm = resample(fixed, grid, sitk.Transform(3, sitk.sitkIdentity))
    timings["grid"] = round(time.perf_counter() - t_start, 3)
    if skull_strip is None:
        skull_strip = np.count_nonzero(ref_image) / ref_image.size > MAX_BRAIN_FRACTION
    t0 = time.perf_counter()
    stripping = f"Skull-stripping {reference} (deepbet)..."
    say(stripping if skull_strip else f"Brain mask: where {reference} is non-zero...")
    brain = _brain(raw, reference, ref_1mm, grid, skull_strip=skull_strip)
    timings["skull_strip"] = round(time.perf_counter() - t0, 3)
    transforms, registration, moved = _register_others(
        raw, reference, fixed, grid, ref_1mm, brain, say=say, timings=timings
    )
    images = {reference: np.where(brain, ref_1mm, 0.0).astype(np.float32), **moved}
    timings["total"] = round(time.perf_counter() - t_start, 3)
    study = _harmonised_study(raw, images, affine, shape, reference=reference)
    return Harmonised(
        study=study,
        reference=reference,
        native=_empty_native(raw, reference),
        native_image=ref_image,
        brain=brain,
        skull_stripped=bool(skull_strip),
        transforms=transforms,
        registration=registration,
        reasons=list(reasons or []),
        timings=timings,
    )


def _empty_native(raw: RawStudy, reference: str) -> LabelMap:
    """An empty label map on the reference's own grid (with its affine and header), for :func:`to_native`."""
    image = raw.images[reference]
    return LabelMap(
        np.zeros(image.shape, dtype=np.uint8),
        np.array(raw.affines[reference], dtype=np.float64),
        raw.headers[reference].copy(),
    )


def _register_others(
    raw: RawStudy,
    reference: str,
    fixed: sitk.Image,
    grid: sitk.Image,
    ref_1mm: np.ndarray,
    brain: np.ndarray,
    *,
    say: ProgressText,
    timings: dict[str, float],
) -> tuple[dict[str, sitk.Transform], dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Register every sequence but the reference onto it, timing each in ``timings``.

    Returns:
        Per sequence: the transform, the registration figures, and the image on the 1 mm grid with
        zero outside the brain.
    """
    transforms: dict[str, sitk.Transform] = {}
    registration: dict[str, dict[str, float]] = {}
    images: dict[str, np.ndarray] = {}
    others = [m for m in MODALITIES if m != reference]
    for n, modality in enumerate(others, start=1):
        say(f"Registering {modality} onto {reference} ({n} of {len(others)})...")
        t0 = time.perf_counter()
        transforms[modality], registration[modality], after = _register_one(
            raw, modality, fixed=fixed, grid=grid, ref_1mm=ref_1mm, brain=brain, reference=reference
        )
        images[modality] = np.where(brain, after, 0.0).astype(np.float32)
        timings[f"register_{modality}"] = round(time.perf_counter() - t0, 3)
    return transforms, registration, images


def _harmonised_study(
    raw: RawStudy,
    images: dict[str, np.ndarray],
    affine: np.ndarray,
    shape: tuple[int, ...],
    *,
    reference: str,
) -> Study:
    """The four 1 mm images as a ``Study`` that keeps the raw study's name, sources and hashes."""
    return Study(
        name=raw.name,
        images={m: images[m] for m in MODALITIES},
        affine=affine,
        sources=dict(raw.sources),
        header=_header(shape, affine, f"brats_seg harmonised: 1 mm, {reference} frame"),
        sha256=dict(raw.sha256),
        dicom=raw.dicom,
    )


def _check_head_sized(shape: tuple[int, ...], *, source: str) -> None:
    """Refuse a reference too small to register and skull-strip (a slice, a crop of a few mm)."""
    if min(shape) * GRID_MM < MIN_EXTENT_MM:
        raise StudyError(
            f"{source}: a field of view of {' x '.join(f'{n * GRID_MM:g}' for n in shape)} mm; "
            f"expected a head, at least {MIN_EXTENT_MM:g} mm along each axis, to register the sequences "
            "and find the brain (or give the study "
            "already skull-stripped and co-registered, with --harmonise off)"
        )


def _brain(
    raw: RawStudy, reference: str, ref_1mm: np.ndarray, grid: sitk.Image, *, skull_strip: bool
) -> np.ndarray:
    """The brain mask on the 1 mm grid: deepbet's, or where the (stripped) reference is non-zero."""
    if skull_strip:
        return _skull_strip(ref_1mm, from_sitk(grid)[1], source=raw.sources.get(reference, reference))
    # the stripped brain's own edge, not the partial-volume rim that interpolation leaves around it
    nonzero = (raw.images[reference] != 0).astype(np.float32)
    return (
        resample(to_sitk(nonzero, raw.affines[reference]), grid, sitk.Transform(3, sitk.sitkIdentity)) >= 0.5
    )


def _register_one(
    raw: RawStudy,
    modality: str,
    *,
    fixed: sitk.Image,
    grid: sitk.Image,
    ref_1mm: np.ndarray,
    brain: np.ndarray,
    reference: str,
) -> tuple[sitk.Transform, dict[str, float], np.ndarray]:
    """Register one sequence onto the reference and judge it: transform, figures, image on the 1 mm grid."""
    moving = to_sitk(raw.images[modality], raw.affines[modality])
    source = raw.sources.get(modality, modality)
    check_overlap(fixed, moving, source=source, modality=modality, reference=reference)
    transform = register_rigid(fixed, moving, source=source)
    before = resample(moving, grid, sitk.Transform(3, sitk.sitkIdentity))
    after = resample(moving, grid, transform)
    figures = judge_registration(
        ref_1mm, before, after, brain, transform, source=source, modality=modality, reference=reference
    )
    return transform, figures, after


def _skull_strip(image: np.ndarray, affine: np.ndarray, *, source: str) -> np.ndarray:
    """deepbet's brain mask of ``image`` (on the 1 mm grid); refuse a mask too small to be a brain."""
    import torch
    from deepbet import BrainExtraction  # weights inside the wheel: nothing is downloaded

    nifti = nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine)
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            # torch.jit.load's deprecation note: deepbet's to mend
            warnings.simplefilter("ignore", FutureWarning)
            _, mask_image, _ = BrainExtraction(no_gpu=not torch.cuda.is_available()).run(nifti)
    except (AssertionError, ValueError, RuntimeError) as exc:  # deepbet asserts on an empty foreground; torch
        # refuses a box of no voxels (both found by benchmarks/hostile_inputs.py)
        raise StudyError(
            f"{source}: skull stripping found no brain ({str(exc)[:120]}); expected a head MR image"
        ) from None
    finally:
        torch.set_num_threads(threads)
    mask = np.asarray(mask_image.dataobj).astype(bool).reshape(image.shape)
    ml = float(mask.sum()) * float(np.prod(affine_spacing(affine))) / 1000.0
    if ml < MIN_BRAIN_ML:
        raise StudyError(
            f"{source}: skull stripping found no brain (a mask of {ml:.0f} mL); "
            f"expected a brain of about 1,100-1,800 mL "
            f"(at least {MIN_BRAIN_ML:g} mL): check that this is a head MR image"
        )
    return mask


def harmonise_if_needed(
    raw: RawStudy,
    *,
    mode: str = "auto",
    progress: ProgressText | None = None,
) -> tuple[Study, Harmonised | None]:
    """The study the model reads: ``raw`` as it is when :func:`decide` finds nothing, else harmonised.

    Args:
        raw: The study as loaded by :func:`brats_seg.files.load_native_study`.
        mode: ``"auto"``, ``"on"`` or ``"off"`` (see :func:`decide`).
        progress: Called with a line of text before each step.

    Returns:
        The study for :func:`brats_seg.pipeline.segment`, and the harmonisation (None when none was done).
    """
    reasons = decide(raw, mode=mode)
    if not reasons:
        return raw.to_study(), None
    harmonised = harmonise(raw, reasons=reasons, progress=progress)
    return harmonised.study, harmonised


def load_for_model(
    source: Any,
    *,
    mapping: dict[str, str] | None = None,
    name: str | None = None,
    mode: str = "auto",
    partial_mapping: bool = False,
    need_dicom: bool = False,
    progress: ProgressText | None = None,
) -> tuple[Study, Harmonised | None]:
    """Load one study and harmonise it when ``mode`` says so, as ``brats-seg predict`` does.

    Args:
        source: A study folder (NIfTI or DICOM), a zip, or the four files.
        mapping: Which file or series is which sequence (see :func:`brats_seg.files.load_study`).
        name: The study's name (default: told from the files).
        mode: ``"auto"``, ``"on"`` or ``"off"`` (see :func:`decide`); ``"off"`` loads with
            :func:`brats_seg.files.load_study`, which refuses sequences on different grids.
        partial_mapping: Let ``mapping`` name files the study does not have (a batch's mapping).
        need_dicom: Refuse NIfTI input, before any harmonising (a DICOM Segmentation is asked for).
        progress: Called with ``"<study>: <step>"`` before each harmonisation step.

    Returns:
        The study the model reads and the harmonisation (None when none was done).

    Raises:
        StudyError: For a study that cannot be loaded or harmonised (naming the file).
    """
    from .files import load_native_study, load_study

    load = load_study if mode == "off" else load_native_study
    raw = load(source, mapping=dict(mapping or {}), name=name, partial_mapping=partial_mapping)
    if need_dicom and raw.dicom is None:
        raise StudyError(
            f"{raw.name}: --dicom-seg needs DICOM input, found NIfTI files; a DICOM Segmentation refers to "
            "the source DICOM images (leave out --dicom-seg to write the NIfTI labels)"
        )
    if not isinstance(raw, RawStudy):
        return raw, None

    def say(text: str) -> None:
        if progress is not None:
            progress(f"{raw.name}: {text}")

    return harmonise_if_needed(raw, mode=mode, progress=say)


# --------------------------------------------------------------------------------------------------
# Back to the native grid
# --------------------------------------------------------------------------------------------------


def to_native(
    labels: LabelMap | np.ndarray, harmonised: Harmonised, *, description: str | None = None
) -> LabelMap:
    """Labels on the harmonised 1 mm grid, mapped onto the reference's native grid.

    Each native voxel takes the label that a Gaussian-weighted vote of the 1 mm voxels around it
    gives (SimpleITK's label-Gaussian interpolator), which treats a thick slice better than the
    single nearest voxel.

    Args:
        labels: A label map (or an integer array) on ``harmonised.study``'s grid.
        harmonised: The result of :func:`harmonise`.
        description: The ``descrip`` of the returned header (default that of the reference file).

    Returns:
        A uint8 label map with the reference file's affine and header.
    """
    array = labels.array if isinstance(labels, LabelMap) else labels
    source = to_sitk(np.asarray(array, dtype=np.float32), harmonised.study.affine)
    source = sitk.Cast(source, sitk.sitkUInt8)
    native = to_sitk(harmonised.native.array, harmonised.native.affine)
    out = sitk.Resample(
        source, native, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLabelGaussian, 0, sitk.sitkUInt8
    )
    result = sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(np.uint8)
    header = harmonised.native.header.copy()
    header.set_data_dtype(np.uint8)
    if description is not None:
        header["descrip"] = description.encode()[:79]
    return LabelMap(result, harmonised.native.affine.copy(), header)
