"""Scoring saved or cross-validated predictions: what ``brats-seg evaluate`` and the benchmarks share.

:func:`load_prediction` reads a saved label map and checks it lies on its study's grid;
:func:`cross_validation_members` splits a bundle of fold models into, for each held-out case, the
members that never trained on it.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from .errors import StudyError
from .files import AFFINE_ATOL
from .postprocess import check_labels
from .types import LabelMap, Study

if TYPE_CHECKING:
    from .model import Model

__all__ = ["cross_validation_members", "load_prediction"]


def load_prediction(path: Path, study: Study) -> LabelMap:
    """Read a predicted label map for ``study`` and check it lies on the study's grid.

    Args:
        path: A NIfTI label map (``<case>_seg.nii.gz``).
        study: The study it predicts; its shape and affine must match.

    Returns:
        The labels as a ``LabelMap`` with the study's affine and header.

    Raises:
        StudyError: naming the file, when it is missing or unreadable, not on the study's grid, or
            holds values other than the BraTS labels 0, 1, 2, 4.
    """
    if not path.is_file():
        raise StudyError(
            f"{path.name}: no prediction for case {study.name} at {path}; expected <case>_seg.nii.gz"
        )
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as e:
        raise StudyError(
            f"{path.name}: cannot be read as a NIfTI label map ({e}); expected a .nii or .nii.gz file"
        ) from e
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(study.shape):
        raise StudyError(
            f"{path.name}: expected the shape {tuple(study.shape)} of study {study.name}, "
            f"found {tuple(data.shape)}"
        )
    diff = float(np.max(np.abs(np.asarray(image.affine) - study.affine)))
    if not diff <= AFFINE_ATOL:
        raise StudyError(
            f"{path.name}: affine differs from that of study {study.name} by up to {diff:.4g} mm; "
            f"expected the study's affine within {AFFINE_ATOL:g} mm"
        )
    try:
        check_labels(data, name=path.name)
    except ValueError as e:
        raise StudyError(str(e)) from e
    return LabelMap(np.asarray(data).astype(np.uint8), study.affine.copy(), study.header.copy())


def cross_validation_members(model: Model) -> dict[str, Model]:
    """For each case some member of the ensemble held out, a ``Model`` of only those members.

    Raises:
        StudyError: when the card lists no members with held-out cases (not a bundle of fold runs).
    """
    listed = model.card.extra.get("members") or []
    if len(listed) != len(model.networks):
        raise StudyError(
            f"--cross-validation: model {model.card.name} lists {len(listed)} members in its card for "
            f"{len(model.networks)} networks; expected a bundle of fold runs (brats-seg bundle)"
        )
    by_case: dict[str, list[int]] = {}
    for i, member in enumerate(listed):
        for case in (member.get("training") or {}).get("held_out_cases") or []:
            by_case.setdefault(case, []).append(i)
    if not by_case:
        raise StudyError(f"--cross-validation: no member of {model.card.name} records held-out cases")
    return {
        case: dataclasses.replace(model, networks=[model.networks[i] for i in idx])
        for case, idx in by_case.items()
    }
