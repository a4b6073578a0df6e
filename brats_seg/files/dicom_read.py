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
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import StudyError
from ..types import MODALITIES, RawStudy
from .checks import check_geometry, check_grid, check_image_content
from .names import SEG, normalise_modality, series_modality

__all__ = [
    "MAX_DICOM_DEPTH",
    "MAX_DICOM_FILES",
    "SLICE_STEP_RTOL",
    "DicomSeries",
    "dicom_files",
    "first_dicom_file",
    "get_element",
    "is_dicom_file",
    "load_dicom_study",
    "series_label",
]

#: Most files read as one study (four 1 mm series of 240 slices are about 1,000).
MAX_DICOM_FILES: int = 20_000

#: How many folder levels below a study folder are searched for DICOM files (PACS media put slices
#: four levels down: ``DICOM/PA0/ST0/SE0/IM0``).
MAX_DICOM_DEPTH: int = 5

#: Largest allowed relative deviation of a slice step from the series' median step.
SLICE_STEP_RTOL: float = 0.01

#: Slices closer than this (mm) along the normal count as the same position.
_SAME_POSITION_MM: float = 1e-3


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
    """Yield the files under ``root`` level by level (hidden ones and ``__MACOSX`` skipped), sorted per folder."""
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
    """The first DICOM file (not a ``DICOMDIR``) found under ``folder``, nearest levels first; None if none."""
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
                    f"{root.name}: holds more than {MAX_DICOM_FILES:,} DICOM files; expected the series of one "
                    "study (MAX_DICOM_FILES)"
                )
    return sorted(found)


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise StudyError(f"{path.name}: cannot be read as DICOM ({exc}); expected an intact DICOM file") from exc
    except Exception as exc:  # pydicom parses the bytes with many exception types (the fuzzer found
        # NotImplementedError for an unknown VR and BytesLengthException): all mean a damaged file
        raise StudyError(f"{path.name}: cannot be read as DICOM ({type(exc).__name__}: {exc}); expected an intact "
                         "DICOM file") from exc


# --------------------------------------------------------------------------------------------------
# One series: geometry and voxels
# --------------------------------------------------------------------------------------------------


@dataclass
class DicomSeries:
    """One image series of a study, its slices in spatial order.

    Attributes:
        uid: SeriesInstanceUID.
        number: SeriesNumber ('' when absent).
        description: SeriesDescription (or ProtocolName when it has none).
        files: The slice files, ordered along the slice normal (the third array axis).
        headers: Their datasets without pixel data, in the same order.
        shape: Voxel grid (columns, rows, slices).
        affine: Voxel-to-world affine in RAS+ millimetres, as NIfTI uses it.
    """

    uid: str
    number: str
    description: str
    files: list[Path]
    headers: list[Any]
    shape: tuple[int, int, int] = (0, 0, 0)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))

    @property
    def name(self) -> str:
        """How messages name the series: ``series 3 'AX T1 POST' (155 files)``."""
        return series_label(self.number, self.description, len(self.files))


def series_label(number: str, description: str, n_files: int) -> str:
    """How messages and the dashboard name a series: ``series 3 'AX T1 POST' (155 files)``."""
    shown = f" {number}" if number else ""
    return f"series{shown} {description!r} ({n_files} files)"


def get_element(ds, path: Path, keyword: str, default: Any = None) -> Any:
    """An element's value, or ``default`` when absent; a value that cannot be decoded is a StudyError."""
    try:
        value = getattr(ds, keyword, None)
    except Exception as exc:  # pydicom decodes lazily: a corrupt element fails here, with many types
        raise StudyError(f"{path.name}: its {keyword} cannot be decoded ({exc}); expected an intact DICOM file") from exc
    return default if value is None or value == "" else value


def _int(ds, path: Path, keyword: str, default: int) -> int:
    value = get_element(ds, path, keyword, default)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{path.name}: {keyword} is {value!r}; expected a whole number") from exc


def _float(ds, path: Path, keyword: str, default: float) -> float:
    value = get_element(ds, path, keyword, default)
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{path.name}: {keyword} is {value!r}; expected a number") from exc
    if not np.isfinite(out):
        raise StudyError(f"{path.name}: {keyword} is {value!r}; expected a finite number")
    return out


def _required(ds, path: Path, keyword: str):
    value = get_element(ds, path, keyword)
    if value is None or (isinstance(value, str | bytes | list) and len(value) == 0):
        raise StudyError(
            f"{path.name}: has no {keyword}; expected an MR image slice with its identifiers, position and "
            "orientation (is the file truncated?)"
        )
    return value


def _floats(value, n: int, path: Path, keyword: str) -> np.ndarray:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{path.name}: {keyword} is not numeric ({value!r})") from exc
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise StudyError(f"{path.name}: {keyword} {list(value)!r}; expected {n} finite numbers")
    return out


@dataclass
class _SliceGrid:
    """What every slice of a series must share with its first: size, orientation and pixel spacing."""

    path: Path  # the first slice
    rows: int
    cols: int
    orientation: np.ndarray  # ImageOrientationPatient: row direction, then column direction
    spacing: np.ndarray  # PixelSpacing: between rows, then between columns

    @property
    def normal(self) -> np.ndarray:
        """The slice normal (row direction x column direction)."""
        return np.cross(self.orientation[:3], self.orientation[3:])


def _series_geometry(series: DicomSeries, *, max_voxels: int) -> None:
    """Order the slices along their normal and set ``shape`` and ``affine``; check the grid is regular."""
    where = series.name
    grid = _first_slice_grid(series, max_voxels=max_voxels)
    positions = [_slice_position(ds, path, grid, where) for path, ds in zip(series.files, series.headers, strict=True)]
    if len(positions) < 2:
        raise StudyError(f"{where}: a single slice; expected a 3-D volume of at least 2 slices")
    pos = _order_slices(series, np.array(positions), grid.normal)
    step_vec = _check_stack(pos, grid.normal, where)
    lps = np.eye(4)
    lps[:3, 0] = grid.orientation[:3] * grid.spacing[1]  # along a row: column index grows, one column spacing
    lps[:3, 1] = grid.orientation[3:] * grid.spacing[0]  # down a column: row index grows, one row spacing
    lps[:3, 2] = step_vec
    lps[:3, 3] = pos[0]
    series.shape = (grid.cols, grid.rows, len(pos))
    series.affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS
    check_geometry(where, series.affine, series.shape)


def _first_slice_grid(series: DicomSeries, *, max_voxels: int) -> _SliceGrid:
    """The first slice's size, orientation and spacing, checked; and the series' voxel budget."""
    first_path, first = series.files[0], series.headers[0]
    rows, cols = _int(first, first_path, "Rows", 0), _int(first, first_path, "Columns", 0)
    if rows < 1 or cols < 1:
        raise StudyError(f"{first_path.name}: {cols} x {rows} pixels; expected an MR image slice (Rows, Columns)")
    iop = _floats(_required(first, first_path, "ImageOrientationPatient"), 6, first_path, "ImageOrientationPatient")
    spacing = _floats(_required(first, first_path, "PixelSpacing"), 2, first_path, "PixelSpacing")
    if not np.all(spacing > 0):
        raise StudyError(f"{first_path.name}: PixelSpacing {spacing.tolist()}; expected positive sizes in mm")
    n_voxels = rows * cols * len(series.files)
    if n_voxels > max_voxels:
        raise StudyError(
            f"{series.name}: {cols} x {rows} x {len(series.files)} = {n_voxels:,} voxels; expected at most "
            f"{max_voxels:,} (max_voxels)"
        )
    row_dir, col_dir = iop[:3], iop[3:]
    unit = abs(np.linalg.norm(row_dir) - 1) < 1e-3 and abs(np.linalg.norm(col_dir) - 1) < 1e-3
    if not (unit and abs(row_dir @ col_dir) < 1e-3):
        raise StudyError(
            f"{first_path.name}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors"
        )
    return _SliceGrid(first_path, rows, cols, iop, spacing)


def _slice_position(ds, path: Path, grid: _SliceGrid, where: str) -> np.ndarray:
    """A slice's ImagePositionPatient, once it is checked to be a single grey-scale frame on ``grid``."""
    frames = _int(ds, path, "NumberOfFrames", 1)
    if frames > 1:
        raise StudyError(
            f"{path.name}: a multi-frame (enhanced) DICOM image with {frames} frames in {where}; expected "
            "single-frame MR images, one file per slice (convert the series with dcm2niix and load the NIfTI)"
        )
    photometric = str(get_element(ds, path, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric != "MONOCHROME2" or _int(ds, path, "SamplesPerPixel", 1) != 1:
        raise StudyError(
            f"{path.name}: PhotometricInterpretation {photometric} in {where}; expected MONOCHROME2 grey-scale MR "
            "images (MONOCHROME1 stores inverted grey values, colour images are not MR intensities)"
        )
    first = grid.path.name
    if (_int(ds, path, "Rows", 0), _int(ds, path, "Columns", 0)) != (grid.rows, grid.cols):
        raise StudyError(
            f"{path.name}: {ds.Columns} x {ds.Rows} pixels, but {first} has {grid.cols} x {grid.rows}; "
            f"expected one slice size in {where}"
        )
    other = _floats(_required(ds, path, "ImageOrientationPatient"), 6, path, "ImageOrientationPatient")
    if np.max(np.abs(other - grid.orientation)) > 1e-4:
        raise StudyError(
            f"{path.name}: orientation {other.round(4).tolist()} differs from {first} "
            f"{grid.orientation.round(4).tolist()}; expected one slice orientation in {where}"
        )
    other_spacing = _floats(_required(ds, path, "PixelSpacing"), 2, path, "PixelSpacing")
    if np.max(np.abs(other_spacing - grid.spacing)) > 1e-4:
        raise StudyError(
            f"{path.name}: PixelSpacing {other_spacing.tolist()} differs from {first} "
            f"{grid.spacing.tolist()}; expected one pixel size in {where}"
        )
    return _floats(_required(ds, path, "ImagePositionPatient"), 3, path, "ImagePositionPatient")


def _order_slices(series: DicomSeries, positions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Sort the series' files (and positions) along the normal; refuse doubled or unevenly spaced slices."""
    where = series.name
    order = np.argsort(positions @ normal, kind="stable")
    pos = positions[order]
    series.files = [series.files[i] for i in order]
    series.headers = [series.headers[i] for i in order]
    along = pos @ normal
    gaps = np.diff(along)
    same = np.flatnonzero(gaps < _SAME_POSITION_MM)
    if same.size:
        i = int(same[0])
        raise StudyError(
            f"{series.files[i].name} and {series.files[i + 1].name}: two slices at the same position in {where} "
            f"(at {along[i]:.2f} mm along the slice normal); expected one slice per position (several echoes, "
            "time points or a repeated acquisition in one series cannot be read as one volume)"
        )
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > SLICE_STEP_RTOL * step + 1e-3)
    if bad.size:
        i = int(bad[0])
        raise StudyError(
            f"{series.files[i].name} to {series.files[i + 1].name}: slice gap {gaps[i]:.3f} mm in {where}; "
            f"expected evenly spaced slices ({step:.3f} mm apart): a slice is missing or the series is not one volume"
        )
    return pos


def _check_stack(pos: np.ndarray, normal: np.ndarray, where: str) -> np.ndarray:
    """The step from slice to slice (mm); refuse a sheared stack or positions off a straight line."""
    step = float(np.median(np.diff(pos @ normal)))
    step_vec = (pos[-1] - pos[0]) / (len(pos) - 1)
    lateral = float(np.linalg.norm(step_vec - (step_vec @ normal) * normal))
    if lateral > 1e-3 * float(np.linalg.norm(step_vec)) + 1e-4:
        raise StudyError(
            f"{where}: each slice is shifted {lateral:.3f} mm sideways from the last (a tilted or sheared stack); "
            "expected slices stacked along their normal (resample the series, e.g. with dcm2niix, and load the NIfTI)"
        )
    residual = np.max(np.linalg.norm(pos - (pos[0] + np.outer(np.arange(len(pos)), step_vec)), axis=1))
    if residual > 0.01 + SLICE_STEP_RTOL * step:
        raise StudyError(
            f"{where}: slice positions are off a straight line by up to {residual:.3f} mm; expected the slices "
            "of one volume"
        )
    return step_vec


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
                f"{path.name}: pixel data of shape {pixels.shape}; expected {series.shape[1]} x {series.shape[0]} "
                f"(Rows x Columns) as in {series.name}"
            )
        slope = _float(ds, path, "RescaleSlope", 1.0)
        intercept = _float(ds, path, "RescaleIntercept", 0.0)
        volume[:, :, k] = pixels.T.astype(np.float32) * slope + intercept
    if not np.all(np.isfinite(volume)):
        raise StudyError(f"{series.name}: holds NaN or infinite values after rescaling; expected finite intensities")
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

    sop_class = get_element(ds, path, "SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if sop_class is not None:
        class_name = UID(str(sop_class)).name
        if class_name != str(sop_class) and ("Image Storage" not in class_name or "Secondary Capture" in class_name):
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
        uid = str(_required(ds, path, "SeriesInstanceUID"))
        study_uids.setdefault(str(_required(ds, path, "StudyInstanceUID")), path.name)
        if uid not in by_uid:
            description = str(get_element(ds, path, "SeriesDescription") or get_element(ds, path, "ProtocolName", ""))
            number = str(get_element(ds, path, "SeriesNumber", ""))
            by_uid[uid] = DicomSeries(uid=uid, number=number, description=description, files=[], headers=[])
        by_uid[uid].files.append(path)
        by_uid[uid].headers.append(ds)
    if len(study_uids) > 1:
        shown = ", ".join(f"{uid} (e.g. {name})" for uid, name in list(study_uids.items())[:3])
        raise StudyError(
            f"files from {len(study_uids)} studies ({shown}); expected the series of one study: pass one study's folder"
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
                f"{where}: {len(chosen[modality])} series look like {modality} ({_listing(chosen[modality])}); "
                "expected one: say which with a mapping, e.g. {'<series description or number>': "
                f"'{modality}'}} (brats-seg predict --map '<description>={modality}'), and IGNORE for the others"
            )
    missing = [m for m in MODALITIES if m not in chosen]
    if missing:
        raise StudyError(
            f"{where}: no series for {', '.join(missing)} among {len(series)} image series ({_listing(series)}); "
            "expected the 4 sequences T1, T1CE, T2, FLAIR: name them with a mapping, e.g. "
            f"{{'<series description or number>': '{missing[0]}'}} (brats-seg predict --map '<description>={missing[0]}')"
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
        raise StudyError(f"{where}: no DICOM image series{extra}; expected the 4 MR series T1, T1CE, T2, FLAIR")
    assigned = _assign_series(series, mapping, where, partial=partial_mapping)
    for s in assigned.values():
        _series_geometry(s, max_voxels=max_voxels)
    frames = {m: str(get_element(s.headers[0], s.files[0], "FrameOfReferenceUID", "")) for m, s in assigned.items()}
    if same_grid:
        _check_one_grid(assigned, frames, where, affine_atol=affine_atol)
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
        dicom=assigned,
    )


def _check_one_grid(
    assigned: Mapping[str, DicomSeries], frames: Mapping[str, str], where: str, *, affine_atol: float
) -> None:
    """Refuse series in different frames of reference (``frames``: their UIDs), or on another grid than the T1's."""
    if len(set(frames.values())) > 1:
        shown = "; ".join(f"{m} {assigned[m].name}: {uid or '(none)'}" for m, uid in frames.items())
        raise StudyError(
            f"{where}: the four series have different FrameOfReferenceUIDs ({shown}); expected one frame of "
            "reference, so that their positions can be compared (series co-registered in one space)"
        )
    ref = assigned["T1"]
    for modality in MODALITIES[1:]:
        try:
            check_grid(ref, assigned[modality], affine_atol=affine_atol)  # a series has name, shape and affine
        except StudyError as exc:
            raise StudyError(
                f"{exc}\nThe series lie on different grids: let brats-seg co-register them (brats-seg predict "
                "--harmonise on, or the dashboard's raw-study preprocessing)"
            ) from None


