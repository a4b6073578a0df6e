"""One DICOM series: its slices, their header values, and the voxel grid they make.

:class:`DicomSeries` holds the slice files of one series and their headers (no pixel data);
:func:`series_geometry` orders the slices along their normal, checks that they make one regular
volume, and sets the series' shape and voxel-to-world affine (RAS+ mm, as NIfTI uses it). The
element readers (:func:`get_element` and its typed siblings) turn a damaged header value into a
:class:`~brats_seg.errors.StudyError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StudyError
from .checks import check_geometry

__all__ = [
    "SLICE_STEP_RTOL",
    "DicomSeries",
    "element_float",
    "element_floats",
    "element_int",
    "get_element",
    "required_element",
    "series_geometry",
    "series_label",
]

#: Largest allowed relative deviation of a slice step from the series' median step.
SLICE_STEP_RTOL: float = 0.01

#: Slices closer than this (mm) along the normal count as the same position.
_SAME_POSITION_MM: float = 1e-3


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
        raise StudyError(
            f"{path.name}: its {keyword} cannot be decoded ({exc}); expected an intact DICOM file"
        ) from exc
    return default if value is None or value == "" else value


def element_int(ds, path: Path, keyword: str, default: int) -> int:
    value = get_element(ds, path, keyword, default)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{path.name}: {keyword} is {value!r}; expected a whole number") from exc


def element_float(ds, path: Path, keyword: str, default: float) -> float:
    value = get_element(ds, path, keyword, default)
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{path.name}: {keyword} is {value!r}; expected a number") from exc
    if not np.isfinite(out):
        raise StudyError(f"{path.name}: {keyword} is {value!r}; expected a finite number")
    return out


def required_element(ds, path: Path, keyword: str):
    value = get_element(ds, path, keyword)
    if value is None or (isinstance(value, str | bytes | list) and len(value) == 0):
        raise StudyError(
            f"{path.name}: has no {keyword}; expected an MR image slice with its identifiers, position and "
            "orientation (is the file truncated?)"
        )
    return value


def element_floats(value, n: int, path: Path, keyword: str) -> np.ndarray:
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


def series_geometry(series: DicomSeries, *, max_voxels: int) -> None:
    """Order the slices along their normal and set ``shape`` and ``affine``; check the grid is regular."""
    where = series.name
    grid = _first_slice_grid(series, max_voxels=max_voxels)
    positions = [
        _slice_position(ds, path, grid, where) for path, ds in zip(series.files, series.headers, strict=True)
    ]
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
    rows, cols = element_int(first, first_path, "Rows", 0), element_int(first, first_path, "Columns", 0)
    if rows < 1 or cols < 1:
        raise StudyError(
            f"{first_path.name}: {cols} x {rows} pixels; expected an MR image slice (Rows, Columns)"
        )
    iop = element_floats(
        required_element(first, first_path, "ImageOrientationPatient"),
        6,
        first_path,
        "ImageOrientationPatient",
    )
    spacing = element_floats(
        required_element(first, first_path, "PixelSpacing"), 2, first_path, "PixelSpacing"
    )
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
    frames = element_int(ds, path, "NumberOfFrames", 1)
    if frames > 1:
        raise StudyError(
            f"{path.name}: a multi-frame (enhanced) DICOM image with {frames} frames in {where}; expected "
            "single-frame MR images, one file per slice (convert the series with dcm2niix and load the NIfTI)"
        )
    photometric = str(get_element(ds, path, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric != "MONOCHROME2" or element_int(ds, path, "SamplesPerPixel", 1) != 1:
        raise StudyError(
            f"{path.name}: PhotometricInterpretation {photometric} in {where}; expected MONOCHROME2 "
            "grey-scale MR "
            "images (MONOCHROME1 stores inverted grey values, colour images are not MR intensities)"
        )
    first = grid.path.name
    if (element_int(ds, path, "Rows", 0), element_int(ds, path, "Columns", 0)) != (grid.rows, grid.cols):
        raise StudyError(
            f"{path.name}: {ds.Columns} x {ds.Rows} pixels, but {first} has {grid.cols} x {grid.rows}; "
            f"expected one slice size in {where}"
        )
    other = element_floats(
        required_element(ds, path, "ImageOrientationPatient"), 6, path, "ImageOrientationPatient"
    )
    if np.max(np.abs(other - grid.orientation)) > 1e-4:
        raise StudyError(
            f"{path.name}: orientation {other.round(4).tolist()} differs from {first} "
            f"{grid.orientation.round(4).tolist()}; expected one slice orientation in {where}"
        )
    other_spacing = element_floats(required_element(ds, path, "PixelSpacing"), 2, path, "PixelSpacing")
    if np.max(np.abs(other_spacing - grid.spacing)) > 1e-4:
        raise StudyError(
            f"{path.name}: PixelSpacing {other_spacing.tolist()} differs from {first} "
            f"{grid.spacing.tolist()}; expected one pixel size in {where}"
        )
    return element_floats(required_element(ds, path, "ImagePositionPatient"), 3, path, "ImagePositionPatient")


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
            f"{series.files[i].name} and {series.files[i + 1].name}: two slices at the same position in "
            f"{where} (at {along[i]:.2f} mm along the slice normal); expected one slice per position "
            "(several echoes, time points or a repeated acquisition in one series cannot be read as one "
            "volume)"
        )
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > SLICE_STEP_RTOL * step + 1e-3)
    if bad.size:
        i = int(bad[0])
        raise StudyError(
            f"{series.files[i].name} to {series.files[i + 1].name}: slice gap {gaps[i]:.3f} mm in {where}; "
            f"expected evenly spaced slices ({step:.3f} mm apart): a slice is missing or the series is not "
            "one volume"
        )
    return pos


def _check_stack(pos: np.ndarray, normal: np.ndarray, where: str) -> np.ndarray:
    """The step from slice to slice (mm); refuse a sheared stack or positions off a straight line."""
    step = float(np.median(np.diff(pos @ normal)))
    step_vec = (pos[-1] - pos[0]) / (len(pos) - 1)
    lateral = float(np.linalg.norm(step_vec - (step_vec @ normal) * normal))
    if lateral > 1e-3 * float(np.linalg.norm(step_vec)) + 1e-4:
        raise StudyError(
            f"{where}: each slice is shifted {lateral:.3f} mm sideways from the last (a tilted or sheared "
            "stack); expected slices stacked along their normal (resample the series, e.g. with dcm2niix, "
            "and load the NIfTI)"
        )
    residual = np.max(np.linalg.norm(pos - (pos[0] + np.outer(np.arange(len(pos)), step_vec)), axis=1))
    if residual > 0.01 + SLICE_STEP_RTOL * step:
        raise StudyError(
            f"{where}: slice positions are off a straight line by up to {residual:.3f} mm; expected the "
            "slices of one volume"
        )
    return step_vec
