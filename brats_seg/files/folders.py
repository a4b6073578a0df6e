"""Folders: which folders hold studies, and where in a study folder its files lie.

A study folder holds the NIfTI files of one study, or its DICOM files (directly, in series
subfolders, or as PACS media a few levels down). :func:`find_studies` lists the studies of a
folder of studies; :func:`study_folder` finds the one folder with a study's NIfTI files.

Example::

    for folder in find_studies("BraTS2018/"):
        print(folder.name, has_truth(folder))
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StudyError
from .dicom_read import first_dicom_file
from .names import SEG, detect_modality, is_hidden, is_nifti_name

__all__ = ["find_studies", "has_dicom", "has_truth", "nifti_files", "study_folder", "subfolders"]

StrPath = str | os.PathLike[str]


def nifti_files(folder: Path) -> list[Path]:
    """NIfTI files directly in ``folder`` (no hidden files), sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not is_hidden(p.name) and is_nifti_name(p.name)
    )


def has_truth(folder: str | Path) -> bool:
    """Whether a study folder holds a ground-truth label map (``*_seg`` / ``-seg``)."""
    return any(detect_modality(p.name) == SEG for p in Path(folder).iterdir() if p.is_file())


def find_studies(folder: StrPath) -> list[Path]:
    """List the study folders in a folder of studies.

    Args:
        folder: A folder of study folders, or one study folder.

    Returns:
        The sorted subfolders (not hidden) that contain NIfTI files or DICOM series; ``[folder]``
        when the folder itself is one study (NIfTI files, or DICOM files directly or in series
        subfolders of a single ``StudyInstanceUID``); an empty list when there are none.

    Raises:
        StudyError: When ``folder`` is not an existing folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise StudyError(f"{root.name}: expected a folder of studies, found no folder at {root}")
    if nifti_files(root) or _is_dicom_study(root):
        return [root]
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name) and (nifti_files(p) or has_dicom(p))
    )


def subfolders(folder: Path) -> list[Path]:
    """The folders directly in ``folder`` (no hidden ones), sorted by name."""
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and not is_hidden(p.name)]


def has_dicom(folder: Path) -> bool:
    """Whether DICOM files lie in ``folder`` or below it (series folders, PACS media)."""
    return first_dicom_file(folder) is not None


def _is_dicom_study(folder: Path) -> bool:
    """Whether ``folder`` is one DICOM study: DICOM files in it, or below it in subfolders of one study.

    A folder whose subfolders hold DICOM files of different studies (``StudyInstanceUID`` of the
    first file of each) is a folder of studies instead.
    """
    if any(nifti_files(p) for p in subfolders(folder)):
        return False
    if first_dicom_file(folder, max_depth=0) is not None:
        return True
    firsts = [f for f in (first_dicom_file(p) for p in subfolders(folder)) if f is not None]
    if not firsts:
        return False
    return len({_study_uid(f) for f in firsts}) == 1


def _study_uid(path: Path) -> str:
    """The StudyInstanceUID of a DICOM file ('' when absent; a mark of its own when unreadable)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.get("StudyInstanceUID", ""))
    except Exception:  # an unreadable file is reported when the study is loaded
        return f"unreadable:{path}"


def study_folder(folder: Path) -> Path:
    """The folder holding the study's NIfTI files: ``folder`` or its single study subfolder.

    Raises:
        StudyError: When several subfolders hold NIfTI files, or none does (the message lists what
            the folder holds).
    """
    if nifti_files(folder):
        return folder
    studies = [p for p in subfolders(folder) if nifti_files(p)]
    if len(studies) == 1:
        return studies[0]
    if len(studies) > 1:
        shown = ", ".join(p.name for p in studies[:5]) + (", ..." if len(studies) > 5 else "")
        raise StudyError(
            f"{folder.name}: holds {len(studies)} study folders ({shown}); expected one study: pass "
            "one of them (find_studies lists them)"
        )
    content = sorted(p.name for p in folder.iterdir() if not is_hidden(p.name))
    shown = ", ".join(content[:8]) + (", ..." if len(content) > 8 else "") if content else "nothing"
    raise StudyError(
        f"{folder.name}: no NIfTI files (.nii, .nii.gz) found (found {shown}); expected 4 "
        "(T1, T1CE, T2, FLAIR) and optionally a segmentation"
    )
