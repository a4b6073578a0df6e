"""DICOM input: the four MR series of a study, read from a folder of slice files.

For research-PACS workflows. A study exported from a PACS is a folder (or a ``.zip``) of DICOM
files, one file per slice, often one subfolder per series. :func:`load_dicom_study` groups the files
by series, tells which series is T1, T1CE, T2 and FLAIR from its description
(:func:`~brats_seg.files.names.series_modality`), rebuilds each volume and its voxel-to-world affine
from the slice positions, and checks that the four lie on one voxel grid. The result is the same
:class:`~brats_seg.types.RawStudy` that NIfTI files give, so the rest of the package does not know
where it came from; its ``dicom`` keeps the series for
:func:`~brats_seg.files.dicom_seg.write_dicom_seg`.

Every problem raises :class:`~brats_seg.errors.StudyError` naming the file or series and saying what
was expected and what was found. Headers are read first (without pixel data), so an oversized
series is refused before its pixels are decoded.

Example::

    raw = load_dicom_study(dicom_files("study/"), name="study", where="study", max_voxels=512**3,
                           affine_atol=1e-3)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import StudyError
from ..types import MODALITIES, RawStudy
from .checks import check_grid, check_image_content
from .dicom_series import DicomSeries, element_float, get_element, required_element, series_geometry
from .names import SEG, normalise_modality, series_modality

__all__ = [
    "MAX_DICOM_DEPTH",
    "MAX_DICOM_FILES",
    "dicom_files",
    "first_dicom_file",
    "is_dicom_file",
    "load_dicom_study",
]

#: Most files read as one study (four 1 mm series of 240 slices are about 1,000).
MAX_DICOM_FILES: int = 20_000

#: How many folder levels below a study folder are searched for DICOM files (PACS media put slices
#: four levels down: ``DICOM/PA0/ST0/SE0/IM0``).
MAX_DICOM_DEPTH: int = 5


# --------------------------------------------------------------------------------------------------
# Finding and reading files
# --------------------------------------------------------------------------------------------------


def is_dicom_file(path: str | Path) -> bool:
    """Whether a file starts like a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _walk(root: Path, max_depth: int) -> Iterator[Path]:
    """The files under ``root`` level by level, sorted per folder (hidden ones and ``__MACOSX`` skipped)."""
    level = [root]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for d in level:
            for p in sorted(d.iterdir()):
                if p.name.startswith(".") or p.name == "__MACOSX":
                    continue
                if p.is_dir():
                    nxt.append(p)
                elif p.is_file():
                    yield p
        level = nxt


def _is_slice_file(path: Path) -> bool:
    return path.name.upper() != "DICOMDIR" and is_dicom_file(path)


def first_dicom_file(folder: str | Path, *, max_depth: int = MAX_DICOM_DEPTH) -> Path | None:
    """The first DICOM file (not a ``DICOMDIR``) under ``folder``, nearest levels first; None if none."""
    return next((p for p in _walk(Path(folder), max_depth) if _is_slice_file(p)), None)


def dicom_files(folder: str | Path, *, max_depth: int = MAX_DICOM_DEPTH) -> list[Path]:
    """DICOM files in a folder and its subfolders (hidden ones skipped), sorted by path.

    Args:
        folder: Where to look.
        max_depth: How many levels of subfolders to search (0: the folder itself only).

    Returns:
        The files whose first bytes mark them as DICOM (``DICOMDIR`` excluded).

    Raises:
        StudyError: When there are more than ``MAX_DICOM_FILES`` of them.
    """
    root = Path(folder)
    found: list[Path] = []
    for p in _walk(root, max_depth):
        if _is_slice_file(p):
            found.append(p)
            if len(found) > MAX_DICOM_FILES:
                raise StudyError(
                    f"{root.name}: holds more than {MAX_DICOM_FILES:,} DICOM files; expected the series of "
                    "one study (MAX_DICOM_FILES)"
                )
    return sorted(found)


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise StudyError(
            f"{path.name}: cannot be read as DICOM ({exc}); expected an intact DICOM file"
        ) from exc
    except Exception as exc:  # pydicom parses the bytes with many exception types (the fuzzer found
        # NotImplementedError for an unknown VR and BytesLengthException): all mean a damaged file
        raise StudyError(
            f"{path.name}: cannot be read as DICOM ({type(exc).__name__}: {exc}); expected an intact "
            "DICOM file"
        ) from exc


# --------------------------------------------------------------------------------------------------
# Voxels
# --------------------------------------------------------------------------------------------------


def _read_voxels(series: DicomSeries) -> tuple[np.ndarray, str]:
    """The series as a float32 (columns, rows, slices) volume, rescaled; and sha256 over its files."""
    import pydicom

    digest = hashlib.sha256()
    volume = np.empty(series.shape, dtype=np.float32)
    for k, path in enumerate(series.files):
        raw = path.read_bytes()
        digest.update(raw)
        ds = None
        try:
            ds = pydicom.dcmread(BytesIO(raw))
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for undecodable pixel data
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            how = f" (transfer syntax {syntax.name})" if syntax is not None else ""
            raise StudyError(
                f"{path.name}: its pixel data cannot be decoded{how}: {exc}; expected uncompressed or "
                "JPEG-LS/RLE pixel data"
            ) from exc
        if pixels.shape != series.shape[1::-1]:
            raise StudyError(
                f"{path.name}: pixel data of shape {pixels.shape}; expected {series.shape[1]} x "
                f"{series.shape[0]} (Rows x Columns) as in {series.name}"
            )
        slope = element_float(ds, path, "RescaleSlope", 1.0)
        intercept = element_float(ds, path, "RescaleIntercept", 0.0)
        volume[:, :, k] = pixels.T.astype(np.float32) * slope + intercept
    if not np.all(np.isfinite(volume)):
        raise StudyError(
            f"{series.name}: holds NaN or infinite values after rescaling; expected finite intensities"
        )
    return volume, digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Which series is which sequence
# --------------------------------------------------------------------------------------------------


def _is_mr_image(ds, path: Path) -> bool:
    """Whether a dataset is an MR image (not a report, segmentation, screenshot or other modality).

    Decided by its SOP class and Modality only, so that a damaged MR slice is not skipped silently
    but refused later for what it lacks.
    """
    from pydicom.uid import UID

    sop_class = get_element(ds, path, "SOPClassUID") or getattr(
        getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None
    )
    if sop_class is not None:
        class_name = UID(str(sop_class)).name
        if class_name != str(sop_class) and (
            "Image Storage" not in class_name or "Secondary Capture" in class_name
        ):
            return False
    modality = get_element(ds, path, "Modality")
    return modality is None or str(modality).upper() == "MR"


def _group_series(paths: Sequence[Path]) -> tuple[list[DicomSeries], list[str]]:
    """Group image files by SeriesInstanceUID; return the series and the names of skipped non-image files."""
    by_uid: dict[str, DicomSeries] = {}
    skipped: list[str] = []
    study_uids: dict[str, str] = {}
    for path in paths:
        ds = _read_header(path)
        if not _is_mr_image(ds, path):
            skipped.append(path.name)  # a report, presentation state, segmentation, screenshot or CT
            continue
        uid = str(required_element(ds, path, "SeriesInstanceUID"))
        study_uids.setdefault(str(required_element(ds, path, "StudyInstanceUID")), path.name)
        if uid not in by_uid:
            description = str(
                get_element(ds, path, "SeriesDescription") or get_element(ds, path, "ProtocolName", "")
            )
            number = str(get_element(ds, path, "SeriesNumber", ""))
            by_uid[uid] = DicomSeries(uid=uid, number=number, description=description, files=[], headers=[])
        by_uid[uid].files.append(path)
        by_uid[uid].headers.append(ds)
    if len(study_uids) > 1:
        shown = ", ".join(f"{uid} (e.g. {name})" for uid, name in list(study_uids.items())[:3])
        raise StudyError(
            f"files from {len(study_uids)} studies ({shown}); expected the series of one study: pass one "
            "study's folder"
        )
    return list(by_uid.values()), skipped


def _series_keys(series: DicomSeries) -> set[str]:
    return {k for k in (series.description, series.number, series.uid) if k}


def _listing(series: Sequence[DicomSeries]) -> str:
    return "; ".join(s.name for s in series) or "none"


def _assign_series(
    series: Sequence[DicomSeries], mapping: Mapping[str, str] | None, where: str, *, partial: bool = False
) -> dict[str, DicomSeries]:
    """Decide which series is which sequence; other series (localizers, DWI, ...) are left out."""

    chosen: dict[str, list[DicomSeries]] = {}
    mapped: dict[str, str | None] = {}
    for key, value in (mapping or {}).items():
        mapped[str(key)] = normalise_modality(value, filename=str(key))
    used = set()
    for s in series:
        hits = [k for k in _series_keys(s) if k in mapped]
        if hits:
            used.update(hits)
            modality = mapped[hits[0]]
        else:
            modality = series_modality(s.description)
        if modality == SEG:
            raise StudyError(f"{s.name}: mapped to SEG; a ground truth can be read from NIfTI only")
        if modality is not None:
            chosen.setdefault(modality, []).append(s)
    unknown = sorted(set(mapped) - used)
    if unknown and not partial:
        raise StudyError(
            f"{unknown[0]!r}: named in the mapping but no series has that description, number or UID; "
            f"found {_listing(series)}"
        )
    for modality in MODALITIES:
        if len(chosen.get(modality, [])) > 1:
            raise StudyError(
                f"{where}: {len(chosen[modality])} series look like {modality} "
                f"({_listing(chosen[modality])}); "
                "expected one: say which with a mapping, e.g. {'<series description or number>': "
                f"'{modality}'}} (brats-seg predict --map '<description>={modality}'), and IGNORE for the "
                "others"
            )
    missing = [m for m in MODALITIES if m not in chosen]
    if missing:
        raise StudyError(
            f"{where}: no series for {', '.join(missing)} among {len(series)} image series "
            f"({_listing(series)}); expected the 4 sequences T1, T1CE, T2, FLAIR: name them with a mapping, "
            f"e.g. {{'<series description or number>': '{missing[0]}'}} (brats-seg predict --map "
            f"'<description>={missing[0]}')"
        )
    return {m: chosen[m][0] for m in MODALITIES}


# --------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------


def _nifti_header(shape: tuple[int, int, int], affine: np.ndarray) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_zooms(tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)))
    header.set_qform(affine, code=1)  # scanner coordinates
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return header


def load_dicom_study(
    paths: Sequence[Path],
    *,
    mapping: Mapping[str, str] | None = None,
    name: str,
    where: str,
    max_voxels: int,
    affine_atol: float,
    partial_mapping: bool = False,
    same_grid: bool = True,
) -> RawStudy:
    """Read the four MR series of one study from DICOM files.

    Args:
        paths: The study's DICOM files (any order; other series such as localizers are ignored).
        mapping: SeriesDescription, SeriesNumber or SeriesInstanceUID -> modality (``T1``, ``T1CE``,
            ``T2``, ``FLAIR`` or ``IGNORE``); overrides :func:`series_modality` for those series.
        name: Study name (e.g. the folder name; patient names are never used).
        where: How messages name the whole input (folder or zip name).
        max_voxels: Voxel budget per series, checked before pixel data are read.
        affine_atol: Largest allowed entry-wise difference (mm) between the series' affines.
        partial_mapping: Ignore mapping keys that match no series of this study (a batch's mapping).
        same_grid: Refuse series on different grids or in different frames of reference (as BraTS-style
            input must be); without it each series keeps its own grid, for :mod:`brats_seg.harmonise`.

    Returns:
        The study, with ``dicom`` holding the series (the T1CE one is referenced by
        :func:`~brats_seg.files.dicom_seg.write_dicom_seg`); ``sources`` names each series, ``sha256``
        hashes its files.

    Raises:
        StudyError: For unreadable files, files of several studies, a missing or ambiguous
            sequence, a multi-frame image, irregular slices, series on different grids, undecodable
            pixel data or non-finite values.
    """
    series, skipped = _group_series(paths)
    if not series:
        extra = f" (only non-image objects: {', '.join(skipped[:3])})" if skipped else ""
        raise StudyError(
            f"{where}: no DICOM image series{extra}; expected the 4 MR series T1, T1CE, T2, FLAIR"
        )
    assigned = _assign_series(series, mapping, where, partial=partial_mapping)
    for s in assigned.values():
        series_geometry(s, max_voxels=max_voxels)
    frames = {
        m: str(get_element(s.headers[0], s.files[0], "FrameOfReferenceUID", "")) for m, s in assigned.items()
    }
    if same_grid:
        _check_one_grid(assigned, frames, where, affine_atol=affine_atol)
    return _read_study(assigned, name=name)


def _read_study(assigned: Mapping[str, DicomSeries], *, name: str) -> RawStudy:
    """Decode the pixels of the assigned series (each checked to hold an image) into a study."""
    images: dict[str, np.ndarray] = {}
    sha256: dict[str, str] = {}
    for modality, s in assigned.items():
        volume, digest = _read_voxels(s)
        check_image_content(s.name, modality, volume)
        images[modality], sha256[modality] = volume, digest
    return RawStudy(
        name=name,
        images=images,
        affines={m: s.affine.copy() for m, s in assigned.items()},
        headers={m: _nifti_header(s.shape, s.affine) for m, s in assigned.items()},
        sources={m: s.name for m, s in assigned.items()},
        sha256=sha256,
        dicom=dict(assigned),
    )


def _check_one_grid(
    assigned: Mapping[str, DicomSeries], frames: Mapping[str, str], where: str, *, affine_atol: float
) -> None:
    """Refuse series in different frames of reference (``frames``: their UIDs), or off the T1's grid."""
    if len(set(frames.values())) > 1:
        shown = "; ".join(f"{m} {assigned[m].name}: {uid or '(none)'}" for m, uid in frames.items())
        raise StudyError(
            f"{where}: the four series have different FrameOfReferenceUIDs ({shown}); expected one frame of "
            "reference, so that their positions can be compared (series co-registered in one space)"
        )
    ref = assigned["T1"]
    for modality in MODALITIES[1:]:
        try:
            check_grid(
                ref, assigned[modality], affine_atol=affine_atol
            )  # a series has name, shape and affine
        except StudyError as exc:
            raise StudyError(
                f"{exc}\nThe series lie on different grids: let brats-seg co-register them (brats-seg "
                "predict --harmonise on, or the dashboard's raw-study preprocessing)"
            ) from None
