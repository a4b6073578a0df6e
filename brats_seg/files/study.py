"""Loading one study: from a folder, a ``.zip``, four or five files, or the bytes of an upload.

:func:`load_study` gives a :class:`~brats_seg.types.Study` (the four sequences on one grid, as the
model needs); :func:`load_native_study` a :class:`~brats_seg.types.RawStudy` (each sequence on its
own grid, for :mod:`brats_seg.harmonise`). A folder or zip without NIfTI files is read as DICOM.
``*_from_bytes`` do the same for in-memory files (a dashboard upload).

Every problem with the user's files raises :class:`~brats_seg.errors.StudyError` with a message that
names the file and says what was expected and what was found.

Example::

    study = load_study("Brats18_CBICA_ABM_1/")
    study = load_study(["a_t1.nii.gz", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz"])
    study = load_study("upload.zip", mapping={"scan3.nii.gz": "FLAIR"})
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import StudyError
from ..types import RawStudy, Study
from . import dicom_read
from .archives import extract_nifti, extract_tree, is_zip
from .checks import AFFINE_ATOL, MAX_VOXELS
from .folders import has_dicom, nifti_files, study_folder, subfolders
from .names import basename, is_hidden, is_nifti_name
from .nifti import load_nifti_study

__all__ = [
    "MAX_NAME_BYTES",
    "load_native_study",
    "load_native_study_from_bytes",
    "load_study",
    "load_study_from_bytes",
]

StrPath = str | os.PathLike[str]

#: Longest file name (UTF-8 bytes) an upload may have: what common file systems allow.
MAX_NAME_BYTES: int = 255


def load_study(
    source: StrPath | Sequence[StrPath],
    *,
    mapping: Mapping[str, str] | None = None,
    name: str | None = None,
    max_voxels: int = MAX_VOXELS,
    affine_atol: float = AFFINE_ATOL,
    load_truth: bool = True,
    partial_mapping: bool = False,
) -> Study:
    """Load and validate one study.

    Args:
        source: A study folder (or a folder holding exactly one study folder), a ``.zip`` of a study
            folder or of the files themselves, or a sequence of the 4 file paths (5 with a
            segmentation). A folder or zip without NIfTI files is read as DICOM: the MR series of
            one study, in it or in series subfolders (:mod:`brats_seg.files.dicom_read`).
        mapping: File name (base name) -> modality (``T1``, ``T1CE``, ``T2``, ``FLAIR``, ``SEG``, or
            ``IGNORE`` to skip the file). Overrides :func:`detect_modality` for those files. For
            DICOM the keys are series descriptions, numbers or UIDs.
        name: Study name. Default: the folder name; for a zip, the folder inside it or else the
            zip's stem; for files, their common prefix (e.g. ``Brats18_CBICA_ABM_1``).
        max_voxels: Voxel budget per file; a larger header is refused before its data are read.
        affine_atol: Largest allowed entry-wise difference (mm) between the files' affines.
        load_truth: Read the segmentation file, when present, into ``Study.truth``.
        partial_mapping: Ignore mapping keys that name no file (or series) of this study, as when one
            mapping serves a batch of studies; by default such a key is refused as a likely typo.

    Returns:
        The study: float32 images keyed by modality, the T1 file's affine and (copied) header,
        source file names, sha256 of each file read, and the uint8 ground truth when present.

    Raises:
        StudyError: For a missing, duplicated or unrecognised file, a file that is not a 3-D NIfTI
            image, mismatched grids, non-finite values, an empty image, an oversized header, a
            corrupt gzip or zip, or unexpected segmentation labels. The message names the file.
    """
    common = {
        "mapping": mapping,
        "name": name,
        "max_voxels": max_voxels,
        "affine_atol": affine_atol,
        "load_truth": load_truth,
        "partial_mapping": partial_mapping,
    }
    return _load(source, same_grid=True, **common).to_study()


def load_native_study(
    source: StrPath | Sequence[StrPath],
    *,
    mapping: Mapping[str, str] | None = None,
    name: str | None = None,
    max_voxels: int = MAX_VOXELS,
    affine_atol: float = AFFINE_ATOL,
    load_truth: bool = True,
    partial_mapping: bool = False,
) -> RawStudy:
    """Load one study as it came from the scanner: each sequence on its own grid.

    Everything :func:`load_study` checks is checked, except that the four files (or DICOM series)
    may lie on different grids (and, for DICOM, in different frames of reference);
    :func:`brats_seg.harmonise.harmonise` brings them onto one. The arguments are those of
    :func:`load_study`; a study with a ground truth (read with ``load_truth``) must lie on one grid.

    Returns:
        The study, each sequence with its own affine and header.

    Raises:
        StudyError: As :func:`load_study`, except for grids that differ.
    """
    return _load(
        source,
        same_grid=False,
        mapping=mapping,
        name=name,
        max_voxels=max_voxels,
        affine_atol=affine_atol,
        load_truth=load_truth,
        partial_mapping=partial_mapping,
    )


def _load(source: StrPath | Sequence[StrPath], *, same_grid: bool, **common: Any) -> RawStudy:
    """:func:`load_study` or :func:`load_native_study`, by ``same_grid``."""
    common["same_grid"] = same_grid
    if isinstance(source, str | os.PathLike):
        return _load_path(Path(source), **common)
    if isinstance(source, bytes | bytearray):
        raise TypeError("load_study takes paths; use load_study_from_bytes for in-memory files")
    paths = [Path(p) for p in source]
    for path in paths:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "nothing"
            raise StudyError(f"{path.name}: expected a NIfTI file, found {what} at {path}")
        if not is_nifti_name(path.name):
            raise StudyError(f"{path.name}: expected a NIfTI file name ending in .nii or .nii.gz")
    return load_nifti_study(paths, default_name=None, where="the given files", **common)


def _load_path(path: Path, **common: Any) -> RawStudy:
    """A study folder (NIfTI or DICOM) or a zip."""
    if not path.exists():
        raise StudyError(f"{path.name}: not found ({path}); expected a study folder, a .zip or files")
    if path.is_dir():
        if not nifti_files(path) and not any(nifti_files(p) for p in subfolders(path)) and has_dicom(path):
            return _load_dicom(path, default_name=path.name, where=path.name, **common)
        folder = study_folder(path)
        return load_nifti_study(nifti_files(folder), default_name=folder.name, where=folder.name, **common)
    if is_zip(path):
        return _load_zip(path, **common)
    raise StudyError(
        f"{path.name}: a single file; expected a study folder, a .zip, or the 4 files (T1, T1CE, T2, FLAIR)"
    )


def _load_zip(path: Path, **common: Any) -> RawStudy:
    """A zip of a study's NIfTI files (flattened), or else of its DICOM series (extracted as a tree)."""
    with tempfile.TemporaryDirectory(prefix="brats_seg_zip_") as tmp:
        root = Path(tmp)
        files, inner = extract_nifti(path, root)
        stem = path.name[: -len(".zip")] if path.name.lower().endswith(".zip") else path.stem
        if not files:
            extract_tree(
                path, root, max_files=dicom_read.MAX_DICOM_FILES, max_depth=dicom_read.MAX_DICOM_DEPTH
            )
            if has_dicom(root):
                top = [p for p in root.iterdir() if not is_hidden(p.name)]
                inner = top[0].name if len(top) == 1 and top[0].is_dir() else None
                return _load_dicom(root, default_name=inner or stem, where=path.name, **common)
        return load_nifti_study(files, default_name=inner or stem, where=path.name, **common)


def _load_dicom(
    folder: Path,
    *,
    mapping: Mapping[str, str] | None,
    name: str | None,
    default_name: str,
    where: str,
    max_voxels: int,
    affine_atol: float,
    load_truth: bool,
    partial_mapping: bool,
    same_grid: bool = True,
) -> RawStudy:
    """Load the DICOM series under ``folder`` (see :mod:`brats_seg.files.dicom_read`)."""
    del load_truth  # a ground truth is read from NIfTI only
    return dicom_read.load_dicom_study(
        dicom_read.dicom_files(folder),
        mapping=mapping,
        name=name or default_name,
        where=where,
        max_voxels=max_voxels,
        affine_atol=affine_atol,
        partial_mapping=partial_mapping,
        same_grid=same_grid,
    )


# --------------------------------------------------------------------------------------------------
# In-memory files (an upload)
# --------------------------------------------------------------------------------------------------


def load_study_from_bytes(files: Mapping[str, bytes], **kwargs: Any) -> Study:
    """Load a study from in-memory files, as a dashboard upload gives them.

    File names are never trusted: only their base names are used (``../../x_t1.nii.gz`` becomes
    ``x_t1.nii.gz``); hidden files (``.DS_Store``) are ignored. The files are written to a temporary
    folder and read with :func:`load_study`.

    Args:
        files: File name -> content (``bytes``, ``bytearray`` or ``memoryview``): the 4 or 5 NIfTI
            files of a study, or a single ``.zip``.
        **kwargs: ``mapping`` (keys are reduced to base names too), ``name`` (by default the zip's
            folder or stem, or the files' common prefix), ``max_voxels``, ``affine_atol`` and
            ``load_truth``, as in :func:`load_study`.

    Returns:
        The validated study.

    Raises:
        StudyError: As :func:`load_study`, and for an upload that mixes a zip with other files or
            holds files that are not NIfTI.
    """
    return _from_bytes(files, same_grid=True, **kwargs).to_study()


def load_native_study_from_bytes(files: Mapping[str, bytes], **kwargs: Any) -> RawStudy:
    """:func:`load_native_study` for in-memory files: each sequence keeps its own grid.

    The arguments, checks and errors are those of :func:`load_study_from_bytes`.
    """
    return _from_bytes(files, same_grid=False, **kwargs)


def _from_bytes(
    files: Mapping[str, bytes],
    *,
    same_grid: bool,
    mapping: Mapping[str, str] | None = None,
    name: str | None = None,
    max_voxels: int = MAX_VOXELS,
    affine_atol: float = AFFINE_ATOL,
    load_truth: bool = True,
) -> RawStudy:
    """Check an upload's names, write its files to a temporary folder and load them from there."""
    clean = _clean_upload(files)
    common = {
        "mapping": mapping,
        "name": name,
        "max_voxels": max_voxels,
        "affine_atol": affine_atol,
        "load_truth": load_truth,
        "partial_mapping": False,  # an upload is one study: a key that names no file is a mistake
    }
    zips = [n for n in clean if n.lower().endswith(".zip")]
    if zips and len(clean) > 1:
        raise StudyError(
            f"{', '.join(zips)}: uploaded with other files; expected either one .zip or the NIfTI files"
        )
    others = [n for n in clean if not n.lower().endswith(".zip") and not is_nifti_name(n)]
    if others:
        raise StudyError(
            f"{', '.join(others)}: not a NIfTI file name; expected .nii or .nii.gz files or one .zip (for "
            "DICOM, zip the study's folder and upload the zip)"
        )
    with tempfile.TemporaryDirectory(prefix="brats_seg_upload_") as tmp:
        paths = [_store(Path(tmp) / base, data) for base, data in clean.items()]
        return _load(paths[0] if zips else paths, same_grid=same_grid, **common)


def _clean_upload(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The upload keyed by safe base names, hidden files left out; refuse doubled names and no files."""
    clean: dict[str, bytes] = {}
    for raw_name, data in files.items():
        base = _safe_name(raw_name)
        if is_hidden(base):
            continue
        if base in clean:
            raise StudyError(f"{base}: uploaded twice; expected each file once")
        clean[base] = data
    if not clean:
        raise StudyError(
            "upload: no files; expected the 4 NIfTI files (T1, T1CE, T2, FLAIR) or one .zip (of NIfTI files "
            "or of the study's DICOM series)"
        )
    return clean


def _safe_name(raw: str) -> str:
    """The base name of an uploaded file name, refusing names with nothing left."""
    base = basename(raw).strip()
    if base in ("", ".", "..") or any(ord(c) < 32 for c in base):
        raise StudyError(f"{raw!r}: not a usable file name; expected e.g. 'case_t1.nii.gz'")
    size = len(base.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise StudyError(
            f"{base[:40]}...{base[-20:]}: a file name of {size} bytes; expected at most {MAX_NAME_BYTES} "
            "(the longest name a file system keeps): rename the file"
        )
    return base


def _store(target: Path, data: bytes) -> Path:
    """Write one uploaded file; the server's own trouble (disk full) keeps its paths out of the message."""
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise StudyError(
            f"{target.name}: the server could not store the upload ({exc.strerror or type(exc).__name__}); "
            "try again, or with fewer or smaller files"
        ) from None
    return target
