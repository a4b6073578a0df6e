"""Checks that warn, not refuse: a study that loads but does not look like what the model was trained on.

``brats_seg.files`` refuses what cannot be segmented at all (wrong count, mismatched grids, NaN, empty
images). What it lets through can still be segmented badly without any error: a head that was not
skull-stripped, voxel sizes that are wrong in the header, thick clinical slices, a sequence that
covers only part of the brain, or files whose names point to two different studies.
:func:`check_study` names each of these, with what it found and what the model expects, so that the
command line, the report and the dashboard can say so next to the labels.

The limits come from BraTS-preprocessed studies (skull-stripped, co-registered, 1 mm isotropic): on
the 23 BraTS 2018 cases and the BraTS 2023 demo case in ``../shared/data`` the non-zero region (the
brain) is 13–20 % of the field of view and 1,174–1,747 mL, and every sequence has signal on every
slice of it but one: the FLAIR of Brats18_2013_20_1 is blank on 38 coronal slices that hold 13 % of
its brain, which :func:`check_study` reports (``python benchmarks/input_checks.py ../shared/data/brats
../shared/data/demo`` prints these figures).
"""

from __future__ import annotations

import re
from typing import Any

import nibabel as nib
import numpy as np

from .files import SEG, study_id
from .types import MODALITIES, Study, bounding_box, brain_mask

#: Above this fraction of the field of view non-zero, the study still holds skull, scalp or background noise.
MAX_BRAIN_FRACTION = 0.5
#: A brain's volume in mL, generously: outside it, the voxel sizes in the header or the coverage are wrong.
BRAIN_ML = (600.0, 2500.0)
#: Voxels thicker than this (mm) along any axis are coarser than anything the model saw.
MAX_SPACING_MM = 3.0
#: A sequence blank on slices that hold more than this fraction of the brain covers only part of it.
MAX_UNCOVERED_FRACTION = 0.05


def _slices_with_signal(volume: np.ndarray) -> list[np.ndarray]:
    """For each axis, which slices along it hold a non-zero voxel (two passes over the volume, not three)."""
    nonzero = volume != 0
    across_z = nonzero.any(axis=2)  # (x, y)
    across_x = nonzero.any(axis=0)  # (y, z)
    return [across_z.any(axis=1), across_z.any(axis=0), across_x.any(axis=0)]


def blank_slices(image: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Per array axis, the slices (booleans) where ``mask`` has voxels but ``image`` is all zero."""
    pairs = zip(_slices_with_signal(image), _slices_with_signal(mask), strict=True)
    return [~signal & in_mask for signal, in_mask in pairs]


def uncovered_fraction(image: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the ``mask`` voxels that lie on slices (along any axis) where ``image`` is all zero.

    A sequence acquired over fewer slices than the others is zero on the slices it lacks; a dark
    tissue inside the brain (CSF in FLAIR) is zero only here and there, and does not count.
    """
    return _uncovered(blank_slices(image, mask), mask)


def _uncovered(blank: list[np.ndarray], mask: np.ndarray, total: int | None = None) -> float:
    """Fraction of the ``mask`` voxels (``total`` of them, counted here when None) on the ``blank``
    slices of :func:`blank_slices`."""
    total = int(np.count_nonzero(mask)) if total is None else total
    if total == 0 or not any(b.any() for b in blank):
        return 0.0
    uncovered = blank[0][:, None, None] | blank[1][None, :, None] | blank[2][None, None, :]
    return float(np.count_nonzero(uncovered & mask)) / total


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs ``(first, last)`` of sorted integer indices."""
    runs: list[tuple[int, int]] = []
    for i in indices.tolist():
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def describe_blank_slices(blank: list[np.ndarray], mask: np.ndarray, affine: np.ndarray) -> str:
    """The blank slices as the dashboard's sliders number them: views of the RAS-reoriented volume.

    Only the axes whose blank slices hold at least 1 % of ``mask`` are named (a lone edge slice is not).

    Example: ``"coronal slices 23-60 of 240"``.
    """
    ornt = nib.orientations.io_orientation(affine)  # array axis -> (RAS axis, direction)
    total = max(int(np.count_nonzero(mask)), 1)
    parts = []
    for axis, slices in enumerate(blank):
        others = tuple(a for a in range(3) if a != axis)
        if np.count_nonzero(mask, axis=others)[slices].sum() < 0.01 * total:
            continue
        ras_axis, direction = int(ornt[axis, 0]), int(ornt[axis, 1])
        n = slices.size
        index = np.flatnonzero(slices)
        shown = np.sort(n - 1 - index if direction < 0 else index)
        found = _runs(shown)
        runs = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in found[:3])
        more = ", ..." if len(found) > 3 else ""
        noun = "slice" if shown.size == 1 else "slices"
        parts.append(f"{('sagittal', 'coronal', 'axial')[ras_axis]} {noun} {runs}{more} of {n}")
    return "; ".join(parts)


def file_studies(sources: dict[str, str]) -> dict[str, list[str]]:
    """Group a study's files by the study ID in their names, when the names point to different studies.

    Two IDs agree when they are equal or one continues the other after a separator (``sub-01`` and
    ``sub-01_ce-gd``, not ``sub-1`` and ``sub-12``); names without an ID (``t1.nii.gz``) agree with any.

    Args:
        sources: File name per label: per modality (``Study.sources``), or per file name itself.

    Returns:
        Study ID -> the labels whose file names carry it; empty when the names agree.
    """
    groups: dict[str, list[str]] = {}
    for modality, filename in sources.items():
        found = study_id(filename)
        if found:
            groups.setdefault(found, []).append(modality)
    ids = [i.lower() for i in groups]
    if all(_continues(a, b) or _continues(b, a) for a in ids for b in ids) or _inner_id(ids):
        return {}
    return groups


def _inner_id(ids: list[str]) -> str | None:
    """A run of whole tokens (12+ characters, with a digit) inside every ID, not at the start of all of them.

    Scanner exports put the series description around the patient's ID
    (``T1_AX_TCGA-FG-6692_SE_10``, ``MRHR_FLAIR_AX_TCGA-FG-6692_SE_IR_5``): one ID, other words. An ID
    that only starts every name (``Brats18_CBICA_ABM_1``, ``Brats18_CBICA_ABM_2``) does not count: there
    the differing ends are the IDs.
    """
    if len(ids) < 2:
        return None
    token_lists = [re.split(r"[_.\s]+", i) for i in ids]
    first = token_lists[0]
    runs = sorted(
        {"_".join(first[a:b]) for a in range(len(first)) for b in range(a + 1, len(first) + 1)},
        key=len,
        reverse=True,
    )
    for run in runs:
        if len(run) < 12 or not any(c.isdigit() for c in run):
            continue
        joined = ["_" + "_".join(tokens) + "_" for tokens in token_lists]
        if all(f"_{run}_" in j for j in joined) and not all(j.startswith(f"_{run}_") for j in joined):
            return run
    return None


def _continues(longer: str, shorter: str) -> bool:
    """``longer`` is ``shorter``, or ``shorter`` followed by a separator and more."""
    return longer == shorter or (longer.startswith(shorter) and longer[len(shorter)] in "_-. ")


def check_study(study: Study, *, mask: np.ndarray | None = None) -> list[str]:
    """Ways in which ``study`` differs from the skull-stripped, 1 mm studies the model was trained on.

    Args:
        study: A study that :mod:`brats_seg.files` loaded (so four sequences on one grid, none empty).
        mask: ``brain_mask(study)`` when the caller has it already (:func:`brats_seg.types.brain_mask`);
            computed here when None.

    Returns:
        One sentence per finding, naming the study or file, what was found and what the model expects;
        empty when the study looks like a BraTS-preprocessed one.
    """
    if mask is None:
        mask = brain_mask(study)
    brain = _Brain(mask)
    warnings = _file_name_warnings(study) + _skull_warnings(study, brain) + _voxel_size_warnings(study, brain)
    for modality in MODALITIES:
        image = study.images.get(modality)
        if image is not None:
            warnings += _sequence_warnings(study, modality, image, brain)
    return warnings


class _Brain:
    """The brain mask of a study with what every check asks of it, computed once.

    Every sequence is zero outside the mask (the mask is where any of them is non-zero), so a
    sequence's slices with signal are found within the mask's bounding box.
    """

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask
        self.voxels = int(np.count_nonzero(mask))
        self.box = bounding_box(mask) if mask.ndim == 3 else None
        self.slices = _slices_with_signal(mask)

    def blank_slices(self, image: np.ndarray) -> list[np.ndarray]:
        """:func:`blank_slices` of a sequence of the study (zero outside the mask)."""
        if self.box is None:
            return blank_slices(image, self.mask)
        signal = []
        for axis, inside in enumerate(_slices_with_signal(image[self.box])):
            found = np.zeros(self.mask.shape[axis], dtype=bool)
            found[self.box[axis]] = inside
            signal.append(found)
        return [~found & in_mask for found, in_mask in zip(signal, self.slices, strict=True)]

    def one_value(self, image: np.ndarray) -> Any:
        """The value of ``image`` on every mask voxel when there is one (that of the first voxel in C
        order, as ``image[mask][0]``), else None; no copy of the brain's values.
        """
        if self.box is None:
            inside = image[self.mask]
            return inside[0] if inside.size and np.all(inside == inside[0]) else None
        value = image[_first_voxel(self.mask, self.box[0].start)]
        if not image[_first_voxel(self.mask, self.box[0].stop - 1, last=True)] == value:
            return None  # the common case, decided without a pass over the brain
        differs = np.not_equal(image[self.box], value) & self.mask[self.box]
        return None if differs.any() else value


def _first_voxel(mask: np.ndarray, x: int, *, last: bool = False) -> tuple[int, int, int]:
    """The first (or last) voxel of ``mask`` in C order on the plane ``x`` (which holds one)."""
    plane = mask[x]
    ys = np.flatnonzero(plane.any(axis=1))
    y = int(ys[-1] if last else ys[0])
    zs = np.flatnonzero(plane[y])
    return x, y, int(zs[-1] if last else zs[0])


def _file_name_warnings(study: Study) -> list[str]:
    """A warning when the file names point to different studies (not for DICOM: checked when read)."""
    groups = file_studies(study.sources) if study.dicom is None else {}
    if not groups:
        return []
    named = "; ".join(
        f"{sid} ({', '.join('ground truth' if m == SEG else m for m in modalities)})"
        for sid, modalities in groups.items()
    )
    return [
        f"{study.name}: the file names point to different studies: {named}. Check that all the files "
        "are of one study; sequences of two patients give labels that look real and mean nothing."
    ]


def _skull_warnings(study: Study, brain: _Brain) -> list[str]:
    """A warning when too much of the field of view is non-zero for a skull-stripped study."""
    fraction = brain.voxels / brain.mask.size  # as mask.mean(): both exact counts, one rounding
    if fraction <= MAX_BRAIN_FRACTION:
        return []
    return [
        f"{study.name}: {fraction:.0%} of the field of view is non-zero; a skull-stripped study is mostly "
        "zero around the brain (13-20% non-zero in BraTS studies). If the skull is still there, skull-strip "
        "the four sequences first (for example with HD-BET or SynthStrip): the model was trained on brains "
        "only, and its labels on a whole head are unreliable."
    ]


def _voxel_size_warnings(study: Study, brain: _Brain) -> list[str]:
    """Warnings on the voxel size: header vs affine, the brain's volume it implies, thick slices."""
    warnings: list[str] = []
    spacing = tuple(float(s) for s in study.spacing)
    shown = " x ".join(f"{s:g}" for s in spacing)
    pixdim = tuple(float(z) for z in study.header.get_zooms()[:3])
    if study.dicom is None and not np.allclose(pixdim, spacing, rtol=0.01):
        header_size = " x ".join(f"{z:g}" for z in pixdim)
        warnings.append(
            f"{study.sources.get('T1') or study.name}: the header's voxel size (pixdim {header_size} "
            f"mm) disagrees with its affine ({shown} mm); brats-seg uses the affine, as viewers do. "
            "If the affine is wrong, fix the file: sizes and volumes depend on it."
        )
    brain_ml = float(brain.voxels) * float(np.prod(spacing)) / 1000.0
    low, high = BRAIN_ML
    if not low <= brain_ml <= high:
        warnings.append(
            f"{study.name}: the non-zero region measures {brain_ml:,.0f} mL with the header's voxel size of "
            f"{shown} mm; a whole brain is about 1,100-1,800 mL. Check the voxel sizes in the header and "
            "that the study covers the whole brain: the tumour volumes are computed with these voxel sizes."
        )
    if max(spacing) > MAX_SPACING_MM:
        warnings.append(
            f"{study.name}: voxels of {shown} mm; the model was trained on 1 mm isotropic studies "
            f"(worked at 2 mm), and slices thicker than {MAX_SPACING_MM:g} mm lose detail it relies on, "
            "so expect coarse borders and missed small regions."
        )
    return warnings


def _sequence_warnings(study: Study, modality: str, image: np.ndarray, brain: _Brain) -> list[str]:
    """A warning when one sequence has no contrast over the brain, or is blank on part of it."""
    source = study.sources.get(modality) or modality
    value = brain.one_value(image)
    if value is not None:
        return [
            f"{source}: the {modality} sequence has one value ({value:g}) over the whole brain the other "
            f"sequences show: no contrast, so the network sees nothing in it and labels without {modality}."
        ]
    blank = brain.blank_slices(image)
    uncovered = _uncovered(blank, brain.mask, brain.voxels)
    if uncovered <= MAX_UNCOVERED_FRACTION:
        return []
    where = describe_blank_slices(blank, brain.mask, study.affine)
    return [
        f"{source}: the {modality} sequence is blank on slices that hold {uncovered:.0%} of the brain the "
        f"other sequences show ({where}; it covers only part of it); the labels there are made without "
        f"{modality}."
    ]
