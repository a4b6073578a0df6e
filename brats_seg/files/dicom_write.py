"""Writing a study's four sequences as DICOM MR series (NIfTI to DICOM), one folder per series.

The series carry BraTS-like SeriesDescriptions (:data:`DICOM_DESCRIPTIONS`) that
:func:`brats_seg.files.series_modality` recognises, one StudyInstanceUID and one FrameOfReferenceUID,
and the geometry of the study's affine; so ``load_study`` of the folder gives back the same arrays
(within the int16 rescale's rounding) and the same affine.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import StudyError

if TYPE_CHECKING:
    from ..types import Study

__all__ = ["DICOM_DESCRIPTIONS", "write_dicom_images", "write_dicom_series", "write_dicom_study"]

#: SeriesDescription of each sequence, as a scanner might write them.
DICOM_DESCRIPTIONS: dict[str, str] = {
    "T1": "AX T1 SE",
    "T1CE": "AX T1 POST GD",
    "T2": "AX T2 FSE",
    "FLAIR": "AX T2 FLAIR",
}

_INT16 = 32767


def _stored(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 pixel values with the slope and intercept that give ``values`` back (within rounding)."""
    if not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values)))
        raise StudyError(f"expected finite voxel values to write as DICOM, found {bad} NaN or infinite")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if np.array_equal(values, np.round(values)) and -_INT16 - 1 <= low and high <= _INT16:
        return values.astype(np.int16), 1.0, 0.0
    slope = (high - low) / (2 * _INT16) or 1.0
    intercept = (high + low) / 2
    return np.round((values - intercept) / slope).astype(np.int16), slope, intercept


def _geometry(affine: np.ndarray) -> tuple[np.ndarray, list[float], list[float], float]:
    """LPS affine, ImageOrientationPatient, PixelSpacing and SliceThickness of a RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    col_spacing, row_spacing = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = [round(float(v), 8) for v in (*(lps[:3, 0] / col_spacing), *(lps[:3, 1] / row_spacing))]
    spacing = [round(float(row_spacing), 6), round(float(col_spacing), 6)]
    return lps, orientation, spacing, round(float(np.linalg.norm(lps[:3, 2])), 6)


def write_dicom_series(
    folder: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    description: str,
    series_number: int,
    study_uid: str,
    frame_uid: str,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "Anonymous",
    shuffle_seed: int | None = None,
) -> list[Path]:
    """Write a 3-D volume as single-frame MR Image Storage files (``IM0001``...), one per slice.

    ``data[i, j, k]`` is column ``i``, row ``j`` of slice ``k``; the RAS ``affine`` becomes LPS
    ImageOrientationPatient, PixelSpacing and ImagePositionPatient. Pixel data are int16, with a
    RescaleSlope and RescaleIntercept when the values are not integers in int16's range.

    Args:
        folder: Output folder (created).
        data: The volume.
        affine: Its voxel-to-world (RAS) affine.
        description, series_number, study_uid, frame_uid, patient_id, patient_name: SeriesDescription,
            SeriesNumber, StudyInstanceUID, FrameOfReferenceUID, PatientID and PatientName.
        shuffle_seed: Number the files in a random order drawn from this seed (None: slice order).

    Returns:
        The files written, in slice order.
    """
    from pydicom.uid import generate_uid

    values = np.asarray(data)
    stored, slope, intercept = _stored(values)
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    lps, orientation, spacing, thickness = _geometry(affine)
    same = dict(  # the values every slice of the series shares
        PatientName=patient_name, PatientID=patient_id, StudyInstanceUID=study_uid,
        SeriesInstanceUID=generate_uid(), FrameOfReferenceUID=frame_uid, SeriesNumber=series_number,
        SeriesDescription=description, ImageOrientationPatient=orientation, PixelSpacing=spacing,
        SliceThickness=thickness, RescaleSlope=f"{slope:.10g}", RescaleIntercept=f"{intercept:.10g}",
    )  # fmt: skip
    n, paths = values.shape[2], []
    order = np.random.default_rng(shuffle_seed).permutation(n) if shuffle_seed is not None else np.arange(n)
    for k in range(n):
        ds = _slice(stored[:, :, k], same)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [round(float(v), 6) for v in lps[:3, 3] + k * lps[:3, 2]]
        path = folder / f"IM{order[k] + 1:04d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice(pixels: np.ndarray, same: Mapping[str, object]) -> object:
    """One MR Image Storage dataset of int16 ``pixels`` (columns, rows) with the series' ``same`` values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Modality, ds.Manufacturer = "MR", "brats-seg"
    for keyword, value in same.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(pixels.T).tobytes()
    return ds


def write_dicom_images(
    folder: str | Path,
    images: Mapping[str, np.ndarray],
    affine: np.ndarray,
    *,
    descriptions: Mapping[str, str] | None = None,
    affines: Mapping[str, np.ndarray] | None = None,
    study_uid: str | None = None,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "Anonymous",
    shuffle: bool = False,
) -> dict[str, list[Path]]:
    """Write volumes keyed by sequence as the DICOM series of one study, in subfolders ``S1``, ``S2``...

    Args:
        folder: Output folder.
        images: Volumes keyed by sequence (``T1``, ``T1CE``, ``T2``, ``FLAIR``).
        affine: RAS affine of every series (unless ``affines`` overrides one).
        descriptions: SeriesDescription per sequence on top of :data:`DICOM_DESCRIPTIONS`.
        affines: Per-sequence affine overrides.
        study_uid: StudyInstanceUID (default: a new one).
        patient_id: PatientID.
        patient_name: PatientName.
        shuffle: Number each series' files in a random order (as exporters often do).

    Returns:
        The files of each series keyed by sequence.
    """
    from pydicom.uid import generate_uid

    descriptions = {**DICOM_DESCRIPTIONS, **(descriptions or {})}
    study_uid, frame_uid = study_uid or generate_uid(), generate_uid()
    return {
        modality: write_dicom_series(
            Path(folder) / f"S{n}",
            data,
            (affines or {}).get(modality, affine),
            description=descriptions[modality],
            series_number=n,
            study_uid=study_uid,
            frame_uid=frame_uid,
            patient_id=patient_id,
            patient_name=patient_name,
            shuffle_seed=n if shuffle else None,
        )
        for n, (modality, data) in enumerate(images.items(), start=1)
    }


def write_dicom_study(
    study: Study, folder: str | Path, *, patient_id: str | None = None, study_uid: str | None = None
) -> dict[str, list[Path]]:
    """Write a loaded study's four sequences as DICOM MR series (see :func:`write_dicom_images`).

    Args:
        study: From :func:`brats_seg.files.load_study`.
        folder: Output folder (one subfolder per series).
        patient_id: PatientID and PatientName (default: the study's name).
        study_uid: StudyInstanceUID (default: a new one).

    Returns:
        The files of each series keyed by sequence.
    """
    patient = patient_id or study.name
    name = patient if "^" in patient else f"{patient}^"  # one component: a family name, said so
    return write_dicom_images(
        folder, study.images, study.affine, study_uid=study_uid, patient_id=patient, patient_name=name
    )
