"""File access, all of it: NIfTI, DICOM, zip archives, folders of studies, uploads.

Turns what a user gives (a folder, a ``.zip``, four or five files, uploaded bytes, a DICOM export)
into a validated :class:`~brats_seg.types.Study`, and writes label maps back: NIfTI with the input's
geometry, or a DICOM Segmentation over the source series. Nothing else in the package opens a
user's file. Every problem with the user's files raises :class:`~brats_seg.errors.StudyError`
naming the file and saying what was expected and what was found.

Modules (none imports from the package itself, so none depends on this file):

- :mod:`.names`: which sequence a file or series name means; the study's name; assigning files.
- :mod:`.checks`: limits and checks shared by NIfTI and DICOM (geometry, content, one grid, labels).
- :mod:`.nifti`: reading a study's NIfTI files (headers before data) and writing NIfTI.
- :mod:`.dicom_series`: one DICOM series: its header values and the voxel grid its slices make.
- :mod:`.dicom_read`: reading the four MR series of a DICOM study.
- :mod:`.dicom_seg`: writing labels as a DICOM Segmentation.
- :mod:`.dicom_write`: writing a study's sequences as DICOM MR series (NIfTI to DICOM).
- :mod:`.dicom_sr`: writing their volumes as a DICOM Structured Report (TID 1500).
- :mod:`.archives`: extracting zips safely; :mod:`.zip_series`: the DICOM series a zip holds.
- :mod:`.folders`: finding studies in folders.
- :mod:`.study`: loading one study from a folder, zip, files or bytes.

Example::

    from brats_seg import files

    study = files.load_study("Brats18_CBICA_ABM_1/")
    files.save_labels(labels, "out/Brats18_CBICA_ABM_1_seg.nii.gz")
"""

from .archives import MAX_ZIP_BYTES
from .checks import (
    AFFINE_ATOL,
    BRATS_LABELS,
    MAX_FOV_MM,
    MAX_PIXDIM_MM,
    MAX_VOXEL_MM,
    MAX_VOXELS,
    MIN_VOXEL_MM,
    check_geometry,
    check_image_content,
)
from .dicom_read import (
    MAX_DICOM_DEPTH,
    MAX_DICOM_FILES,
    dicom_files,
    first_dicom_file,
    is_dicom_file,
    load_dicom_study,
)
from .dicom_seg import write_dicom_seg
from .dicom_series import DicomSeries, series_label
from .dicom_sr import write_volume_report
from .dicom_write import DICOM_DESCRIPTIONS, write_dicom_images, write_dicom_series, write_dicom_study
from .folders import find_studies, has_truth
from .names import NIFTI_SUFFIXES, SEG, detect_modality, series_modality, study_id
from .nifti import UNCERTAIN_DESCRIPTION, save_image, save_labels, save_uncertain, sha256_file
from .study import (
    MAX_NAME_BYTES,
    load_native_study,
    load_native_study_from_bytes,
    load_study,
    load_study_from_bytes,
)
from .zip_series import ZippedSeries, zipped_series

__all__ = [
    "DICOM_DESCRIPTIONS",
    "write_dicom_images",
    "write_dicom_series",
    "write_dicom_study",
    "ZippedSeries",
    "zipped_series",
    "AFFINE_ATOL",
    "BRATS_LABELS",
    "MAX_DICOM_DEPTH",
    "MAX_DICOM_FILES",
    "MAX_FOV_MM",
    "MAX_NAME_BYTES",
    "MAX_PIXDIM_MM",
    "MAX_VOXELS",
    "MAX_VOXEL_MM",
    "MAX_ZIP_BYTES",
    "MIN_VOXEL_MM",
    "NIFTI_SUFFIXES",
    "SEG",
    "UNCERTAIN_DESCRIPTION",
    "DicomSeries",
    "check_geometry",
    "check_image_content",
    "detect_modality",
    "dicom_files",
    "find_studies",
    "first_dicom_file",
    "has_truth",
    "is_dicom_file",
    "load_dicom_study",
    "load_native_study",
    "load_native_study_from_bytes",
    "load_study",
    "load_study_from_bytes",
    "save_image",
    "save_labels",
    "save_uncertain",
    "series_label",
    "series_modality",
    "sha256_file",
    "study_id",
    "write_dicom_seg",
    "write_volume_report",
]
