"""Display orientation: volumes reoriented to canonical RAS, sliced in the radiological convention."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import nibabel as nib
import numpy as np

_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
_RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))


def canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from an array with ``affine`` to canonical RAS."""
    return nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), _RAS)


def to_canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient a 3-D array on the grid of ``affine`` to RAS (a view when possible, no resampling)."""
    return nib.orientations.apply_orientation(np.asarray(array), canonical_ornt(affine))


def from_canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Undo :func:`to_canonical`: a RAS-reoriented array back on the grid of ``affine``."""
    back = nib.orientations.ornt_transform(_RAS, nib.orientations.io_orientation(affine))
    return nib.orientations.apply_orientation(np.asarray(array), back)


def canonical_affine(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The affine of the RAS-reoriented array of :func:`to_canonical`."""
    ornt = canonical_ornt(affine)
    return np.asarray(affine) @ nib.orientations.inv_ornt_aff(ornt, tuple(shape))


def canonical_spacing(spacing: Sequence[float], affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along the axes of the RAS-reoriented array."""
    ornt = canonical_ornt(affine)
    out = [1.0, 1.0, 1.0]
    for src_axis, (dst_axis, _) in enumerate(ornt):
        out[int(dst_axis)] = float(spacing[src_axis])
    return tuple(out)  # type: ignore[return-value]


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The (column, row) array axes of a slice along ``axis``."""
    a, b = (x for x in range(3) if x != axis)
    return a, b


def orientation_letters(affine: np.ndarray, axis: int) -> dict[str, str]:
    """Patient directions at the four edges of a displayed slice.

    The slice ``np.take(volume, i, axis)`` of a volume with ``affine`` is shown as
    ``slice.T[::-1, ::-1]`` (:func:`display_slice`): the first in-plane axis runs along the columns
    from right to left, the second along the rows from bottom to top. The letter at each edge is the
    direction (``nibabel.aff2axcodes``) towards which that axis points there.

    Args:
        affine: The affine of the displayed volume (for the dashboard, the canonical one).
        axis: The sliced array axis.

    Returns:
        ``{"left": .., "right": .., "top": .., "bottom": ..}``, e.g. for an axial slice of a RAS
        volume ``{"left": "R", "right": "L", "top": "A", "bottom": "P"}``.
    """
    codes = nib.aff2axcodes(np.asarray(affine))
    col_axis, row_axis = in_plane_axes(axis)
    left, top = codes[col_axis], codes[row_axis]
    return {"left": left, "right": _OPPOSITE[left], "top": top, "bottom": _OPPOSITE[top]}


def display_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2-D slice ``index`` along ``axis`` as displayed: ``np.take(...).T[::-1, ::-1]`` (a view)."""
    key: tuple[int | slice, ...] = (slice(None),) * axis + (int(index),)
    return np.asarray(volume)[key].T[::-1, ::-1]


def display_position(shape: Sequence[int], axis: int, position: Sequence[int]) -> tuple[int, int]:
    """(row, column) in the displayed slice of ``axis`` of the voxel ``position`` (3 indices)."""
    col_axis, row_axis = in_plane_axes(axis)
    row = int(shape[row_axis]) - 1 - int(position[row_axis])
    col = int(shape[col_axis]) - 1 - int(position[col_axis])
    return row, col


def largest_tumour_slices(labels: np.ndarray, *, values: Iterable[int] | None = None) -> tuple[int, int, int]:
    """Index along each axis of the slice with the largest tumour area.

    Args:
        labels: A 3-D label map.
        values: Label values counted as tumour (default: any nonzero value).

    Returns:
        ``(i, j, k)``: for each axis the slice with the most tumour voxels (the first one on ties);
        the centre slice along every axis when there is no tumour.
    """
    a = np.asarray(labels)
    mask = a != 0 if values is None else np.isin(a, list(values))
    if not mask.any():
        return tuple(n // 2 for n in a.shape)  # type: ignore[return-value]
    out = []
    for axis in range(3):
        other = tuple(x for x in range(3) if x != axis)
        out.append(int(np.argmax(mask.sum(axis=other))))
    return tuple(out)  # type: ignore[return-value]
