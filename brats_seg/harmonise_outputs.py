"""The files of a harmonised study's result, and the pictures that let a reviewer trust or reject it.

:func:`registration_png`: one row per sequence, the three views through the brain's centre; each tile
is a checkerboard of the reference (T1CE) and the registered sequence, so edges that run on across
the squares show a good registration and steps at the squares' borders a bad one; the brain mask is
outlined in cyan. :func:`native_png` draws labels over the reference on its own (native) grid.
Display conventions are those of :mod:`brats_seg.viz`. :func:`harmonised_files` gathers them with
the labels on the 1 mm grid and, when asked, the preprocessed sequences, for
:meth:`brats_seg.result.Segmentation.files`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from . import viz
from .files import save_image, save_labels
from .harmonise import Harmonised
from .types import MODALITIES, LabelMap, Study

__all__ = ["CHECKER_MM", "MASK_COLOUR", "checkerboard", "harmonised_files", "native_png", "registration_png"]

#: Side of one checkerboard square in mm.
CHECKER_MM: int = 16

#: Colour of the brain-mask outline (RGB).
MASK_COLOUR: tuple[int, int, int] = (0, 220, 255)


def checkerboard(a: np.ndarray, b: np.ndarray, *, square: int = CHECKER_MM) -> np.ndarray:
    """``a`` on the white squares and ``b`` on the black ones of a checkerboard of ``square`` pixels."""
    rows, cols = np.indices(a.shape[:2])
    white = ((rows // square) + (cols // square)) % 2 == 0
    return np.where(white if a.ndim == 2 else white[..., None], a, b)


def _u8(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    low, high = np.percentile(volume[brain], [1.0, 99.0]) if brain.any() else (0.0, 1.0)
    return (np.clip((volume - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def _tile(ref: np.ndarray, other: np.ndarray, brain: np.ndarray, axis: int, index: int) -> np.ndarray:
    grey = checkerboard(viz.display_slice(ref, axis, index), viz.display_slice(other, axis, index))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    mask = viz.display_slice(brain, axis, index).astype(bool)
    rgb[mask & ~ndimage.binary_erosion(mask)] = MASK_COLOUR
    return rgb


def registration_png(harmonised: Harmonised) -> bytes:
    """The registration check of a harmonised study (see the module's description) as PNG bytes."""
    study, ref_name = harmonised.study, harmonised.reference
    brain = viz.to_canonical(harmonised.brain.astype(np.uint8), study.affine).astype(bool)
    images = {m: _u8(viz.to_canonical(study.images[m], study.affine), brain) for m in MODALITIES}
    centre = (
        [int(round(c)) for c in ndimage.center_of_mass(brain)]
        if brain.any()
        else [n // 2 for n in brain.shape]
    )
    rows = []
    for modality in MODALITIES:
        tiles = [
            _tile(images[ref_name], images[modality], brain, viz.VIEW_AXIS[v], centre[viz.VIEW_AXIS[v]])
            for v in viz.VIEWS
        ]
        height = max(t.shape[0] for t in tiles)
        band = np.zeros(
            (height + 18, sum(t.shape[1] for t in tiles) + 8 * (len(tiles) - 1), 3), dtype=np.uint8
        )
        x = 0
        for t in tiles:
            band[18 : 18 + t.shape[0], x : x + t.shape[1]] = t
            x += t.shape[1] + 8
        picture = Image.fromarray(band)
        ImageDraw.Draw(picture).text((4, 3), _row_title(harmonised, modality), fill=(255, 255, 255))
        rows.append(np.asarray(picture))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    return viz.png_bytes(sheet)


def _row_title(harmonised: Harmonised, modality: str) -> str:
    """The title of a row of :func:`registration_png`: the mutual information, or what the reference shows."""
    ref_name = harmonised.reference
    figures = harmonised.registration.get(modality)
    if figures:
        return (
            f"{modality} over {ref_name}: mutual information {figures['mutual_information_before']:.2f} "
            f"as scanned, {figures['mutual_information_after']:.2f} registered"
        )
    mask = "skull stripped" if harmonised.skull_stripped else "non-zero"
    return f"{ref_name} (reference) with the brain mask ({mask})"


def native_png(harmonised: Harmonised, labels: LabelMap, *, title: str) -> bytes:
    """The labels over the reference sequence on its native grid, as :func:`brats_seg.viz.export_png` draws.

    Args:
        harmonised: The harmonisation (the reference as loaded, and its geometry).
        labels: Labels on that grid (:func:`brats_seg.harmonise.to_native`).
        title: The figure's title.
    """
    native = harmonised.native
    study = Study(
        name=harmonised.study.name,
        images={harmonised.reference: harmonised.native_image},
        affine=native.affine,
        header=native.header,
    )
    return viz.export_png(study, labels, None, background=harmonised.reference, title=title)


#: File-name suffixes of the preprocessed sequences (BraTS 2018-2021 names, so that the folder is a study).
PREPROCESSED_SUFFIXES: dict[str, str] = {"T1": "t1", "T1CE": "t1ce", "T2": "t2", "FLAIR": "flair"}


def harmonised_files(
    harmonised: Harmonised, labels_1mm: LabelMap, native: LabelMap, *, preprocessed: bool = False
) -> dict[str, tuple[str, bytes]]:
    """What a harmonised study's result adds to its files, by file name (``(mime type, bytes)``).

    ``<study>_seg_1mm.nii.gz`` (the model's labels on the 1 mm grid), ``<study>_registration.png``
    (:func:`registration_png`), ``<study>_native.png`` (:func:`native_png`) and, with
    ``preprocessed``, the four sequences and the brain mask on the 1 mm grid as
    ``<study>_preprocessed/<study>_t1.nii.gz`` ... ``_brainmask.nii.gz`` (a BraTS-named study folder).
    """
    name = harmonised.study.name
    files: dict[str, tuple[str, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="brats_seg_harmonised_") as tmp:
        folder = Path(tmp)
        labels_file = save_labels(labels_1mm, folder / "seg.nii.gz")
        files[f"{name}_seg_1mm.nii.gz"] = ("application/gzip", labels_file.read_bytes())
        if preprocessed:
            study = harmonised.study
            for modality, suffix in PREPROCESSED_SUFFIXES.items():
                path = save_image(study.images[modality], study, folder / f"{suffix}.nii.gz")
                files[f"{name}_preprocessed/{name}_{suffix}.nii.gz"] = ("application/gzip", path.read_bytes())
            mask = LabelMap(harmonised.brain.astype(np.uint8), study.affine, study.header)
            path = save_labels(
                mask, folder / "mask.nii.gz", description="brats_seg brain mask 0/1", cal_max=1
            )
            files[f"{name}_preprocessed/{name}_brainmask.nii.gz"] = ("application/gzip", path.read_bytes())
    files[f"{name}_registration.png"] = ("image/png", registration_png(harmonised))
    files[f"{name}_native.png"] = (
        "image/png",
        native_png(harmonised, native, title=f"{name} - labels on the native {harmonised.reference} grid"),
    )
    return files
