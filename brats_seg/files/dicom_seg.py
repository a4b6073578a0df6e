"""DICOM output: the labels as a DICOM Segmentation over the study's source series (highdicom).

:func:`write_dicom_seg` writes a label map of a study read from DICOM back as a binary DICOM
Segmentation that references the source slices, so that a PACS viewer shows it over the scan.

Example::

    write_dicom_seg(labels, study, "out/study_seg.dcm", model_name="brats-seg-unet", software_version="0.1.0")
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StudyError
from ..types import LABEL_NAMES, LabelMap, Study
from .dicom_series import DicomSeries, get_element

__all__ = ["SEGMENT_CATEGORY", "SEGMENT_TYPES", "write_dicom_seg"]

# Segment codes from DICOM CID 7168/7169 (brain lesion segmentation types).
SEGMENT_CATEGORY = ("49755003", "SCT", "Morphologically Abnormal Structure")
SEGMENT_TYPES: dict[int, tuple[str, str, str]] = {
    1: ("6574001", "SCT", "Necrosis"),
    2: ("79654002", "SCT", "Edema"),
    4: ("C113842", "NCIt", "Enhancing Lesion"),
}
_SEGMENT_LABELS: dict[int, str] = {
    1: "NCR (necrotic tumour core)",
    2: "ED (peritumoural edema)",
    4: "ET (enhancing tumour)",
}


def write_dicom_seg(
    labels: LabelMap,
    study: Study,
    path: str | Path,
    *,
    model_name: str,
    software_version: str,
    reference: str = "T1CE",
) -> Path:
    """Write a label map as a DICOM Segmentation (binary, one segment per BraTS label).

    The segmentation references the slices of one source series (by default the T1CE) and lists the
    other three as further sources; its frames lie on that series' slices. Segments: 1 NCR
    (SCT 6574001 Necrosis), 2 ED (SCT 79654002 Edema), 3 ET (NCIt C113842 Enhancing Lesion), all of
    the category SCT 49755003 Morphologically Abnormal Structure (DICOM CID 7168/7169), algorithm
    type AUTOMATIC with the model's name and version.

    Args:
        labels: The label map on the study's grid (values 0, 1, 2, 4).
        study: The study it segments; it must have been read from DICOM.
        path: Output file (``.dcm``); parent folders are created.
        model_name: Recorded as the algorithm name.
        software_version: Recorded as the algorithm version and the software version.
        reference: The series (modality key) whose slices the frames refer to.

    Returns:
        The path written.

    Raises:
        StudyError: When the study was not read from DICOM, or the labels are not on its grid.
    """
    ref = _reference_series(labels, study, reference)
    descriptions, masks = _segments(labels, model_name=model_name, software_version=software_version)
    # frames follow the source slices; a frame is (rows, columns) = our (y, x) transposed
    pixel_array = np.stack(masks, axis=-1).transpose(2, 1, 0, 3).astype(np.uint8)
    others = [s for m, s in study.dicom.items() if m != reference]
    try:
        seg = _segmentation(
            ref, others, pixel_array, descriptions, model_name=model_name, software_version=software_version
        )
    except Exception as exc:  # highdicom validates many attributes of the sources, with many error types
        raise StudyError(
            f"{study.name}: cannot write a DICOM Segmentation on {ref.name} ({type(exc).__name__}: {exc}); "
            "the NIfTI labels are not affected"
        ) from exc
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out


def _reference_series(labels: LabelMap, study: Study, reference: str) -> DicomSeries:
    """The series the frames refer to, once the study is DICOM and the labels lie on that series' grid."""
    if not study.dicom:
        raise StudyError(
            f"{study.name}: read from NIfTI files; a DICOM Segmentation needs DICOM source images (write "
            "NIfTI instead)"
        )
    ref = study.dicom[reference]
    array = np.asarray(labels.array)
    if array.shape != ref.shape or not np.allclose(labels.affine, ref.affine, rtol=0, atol=1e-3):
        raise StudyError(
            f"{study.name}: the label map is not on the grid of {ref.name}; expected the study's grid"
        )
    if not get_element(ref.headers[0], ref.files[0], "FrameOfReferenceUID"):
        raise StudyError(
            f"{ref.files[0].name}: has no FrameOfReferenceUID; a DICOM Segmentation must name the frame of "
            "reference of its source images (the NIfTI labels can be used instead)"
        )
    return ref


def _segments(
    labels: LabelMap, *, model_name: str, software_version: str
) -> tuple[list[Any], list[np.ndarray]]:
    """One segment description and one mask per BraTS label: always 1 NCR, 2 ED, 3 ET, empty or not."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64],
        family=Code("113037", "DCM", "Artificial Intelligence"),
        version=software_version[:64],
    )
    array = np.asarray(labels.array)
    descriptions = []
    masks = []
    for number, value in enumerate(sorted(LABEL_NAMES), start=1):
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=_SEGMENT_LABELS[value],
                segmented_property_category=Code(*SEGMENT_CATEGORY),
                segmented_property_type=Code(*SEGMENT_TYPES[value]),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
        masks.append(array == value)
    return descriptions, masks


def _segmentation(
    ref: DicomSeries,
    others: Sequence[DicomSeries],
    pixel_array: np.ndarray,
    descriptions: Sequence[Any],
    *,
    model_name: str,
    software_version: str,
) -> Any:
    """The highdicom Segmentation on ``ref``'s slices, naming ``others`` as further sources."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    return hd.seg.Segmentation(
        source_images=_with_type2(ref.headers),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="brats-seg",
        manufacturer_model_name=model_name[:64],
        software_versions=software_version[:64],
        device_serial_number="none",
        content_description="BraTS tumour sub-regions; research use only",
        content_label="BRATS_SEG",
        series_description=f"brats-seg {model_name}"[:64],
        further_source_images=_with_type2([h for s in others for h in s.headers]),
        omit_empty_frames=False,
    )


#: Type 2 attributes (present, possibly empty) that a Segmentation copies from its sources;
#: de-identified exports often drop them.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _with_type2(headers: Sequence[Any]) -> list[Any]:
    """The headers, with copies where a Type 2 patient or study attribute is missing (set empty)."""
    out = []
    for ds in headers:
        missing = [k for k in _TYPE2_COPIED if k not in ds]
        if missing:
            ds = copy.deepcopy(ds)
            for keyword in missing:
                setattr(ds, keyword, "")
        out.append(ds)
    return out
