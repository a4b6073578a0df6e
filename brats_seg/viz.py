"""Rendering of a study and its label maps: slices as PNG for the dashboard, a figure for export.

Interactive views are composed with numpy and encoded with PIL (a few milliseconds per slice); only
:func:`export_png` uses matplotlib (Agg, no pyplot), for the downloadable figure.

Display convention
------------------
Arrays stay on the study's voxel grid everywhere else in the package. For display only, a volume is
reoriented once to the closest canonical orientation RAS (nibabel's ``io_orientation``: array axis
0 runs towards the patient's Right, axis 1 towards Anterior, axis 2 towards Superior), and every
2-D slice of it is shown as ``slice.T[::-1, ::-1]`` (see :func:`display_slice`). This gives the
radiological convention:

========  ==========  ===============  ===============
view      slice axis  screen left      screen top
========  ==========  ===============  ===============
axial     2 (S)       patient right R  anterior A
coronal   1 (A)       patient right R  superior S
sagittal  0 (R)       anterior A       superior S
========  ==========  ===============  ===============

so the patient's left is on the screen's right in the axial and coronal views. The letters drawn on
the image edges come from the affine of the displayed array (:func:`orientation_letters`, through
``nibabel.aff2axcodes``), not from this table.

Colours (RGB)
-------------
Labels (Okabe-Ito palette, readable with the common colour-vision deficiencies): NCR (1) yellow
``(240, 228, 66)``, ED (2) bluish green ``(0, 158, 115)``, ET (4) vermillion red ``(213, 94, 0)``.
Error view: false positive (predicted, not in the ground truth) red ``(255, 40, 40)``, false
negative (in the ground truth, missed) blue ``(40, 120, 255)``. Crosshair: cyan ``(0, 220, 255)``.
"""

from __future__ import annotations

import io as _io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .types import LABEL_NAMES

if TYPE_CHECKING:
    from .types import LabelMap, Study

__all__ = [
    "CROSSHAIR_COLOUR",
    "ERROR_COLOURS",
    "ERROR_MIN_OPACITY",
    "UNCERTAIN_CODE",
    "UNCERTAIN_COLOUR",
    "LABEL_COLOURS",
    "OVERLAY_MODES",
    "VIEWS",
    "VIEW_AXIS",
    "SliceViewer",
    "ViewSettings",
    "canonical_affine",
    "canonical_ornt",
    "canonical_spacing",
    "colour_hex",
    "display_position",
    "display_slice",
    "draw_crosshair",
    "draw_letters",
    "error_codes",
    "export_png",
    "label_colours",
    "largest_tumour_slices",
    "orientation_letters",
    "png_bytes",
    "slice_rgb",
    "to_canonical",
    "window",
    "window_limits",
    "zoom_indices",
]

#: The three views, in display order.
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Array axis of the canonical (RAS) display volume that each view slices.
VIEW_AXIS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}

#: Colour of each BraTS label value (RGB, 0-255).
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (240, 228, 66),  # NCR: yellow
    2: (0, 158, 115),  # ED: bluish green
    4: (213, 94, 0),  # ET: vermillion red
}

#: Colours of the error view: false positives and false negatives against the ground truth.
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {"FP": (255, 40, 40), "FN": (40, 120, 255)}

#: The error view is drawn at least this opaque: its marks are one or two voxels thick.
ERROR_MIN_OPACITY = 0.8

#: Colour of the crosshair lines.
CROSSHAIR_COLOUR: tuple[int, int, int] = (0, 220, 255)

#: What an overlay shows: nothing, the prediction, the ground truth, the errors (FP / FN), or the
#: prediction with the voxels whose label depends on the decision threshold (``"uncertain"``).
OVERLAY_MODES: tuple[str, ...] = ("none", "prediction", "truth", "errors", "uncertain")

#: Colour of the voxels whose label depends on the decision threshold (mode ``"uncertain"``), and the
#: display code they take over the prediction's labels (3 is not a BraTS label).
UNCERTAIN_COLOUR: tuple[int, int, int] = (230, 40, 230)
UNCERTAIN_CODE = 3

#: Codes of :func:`error_codes`.
FP_CODE, FN_CODE = 1, 2

_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
_RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))


# --------------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------------


def label_colours(*, mode: str = "prediction") -> dict[str, tuple[int, int, int]]:
    """Legend entries of an overlay mode: name -> RGB.

    Args:
        mode: One of :data:`OVERLAY_MODES`; ``"errors"`` gives ``{"FP": .., "FN": ..}``, ``"none"``
            an empty dict, ``"uncertain"`` the labels and ``"uncertain"``, the others
            ``{"NCR": .., "ED": .., "ET": ..}``.

    Returns:
        Colours keyed by display name, in legend order.
    """
    if mode == "errors":
        return dict(ERROR_COLOURS)
    if mode == "none":
        return {}
    colours = {LABEL_NAMES[v]: LABEL_COLOURS[v] for v in LABEL_NAMES}
    if mode == "uncertain":
        colours["uncertain"] = UNCERTAIN_COLOUR
    return colours


def colour_hex(rgb: Sequence[int]) -> str:
    """``(255, 40, 40)`` -> ``"#ff2828"``."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def _lut(colours: Mapping[int, Sequence[int]], visible: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """A 256-entry colour lookup (uint16 RGB) and visibility mask (bool) for code values."""
    rgb = np.zeros((256, 3), dtype=np.uint16)
    shown = np.zeros(256, dtype=bool)
    keep = {int(v) for v in visible}
    for value, colour in colours.items():
        rgb[int(value)] = colour[:3]
        shown[int(value)] = int(value) in keep
    return rgb, shown


# --------------------------------------------------------------------------------------------------
# Orientation
# --------------------------------------------------------------------------------------------------


def canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from an array with ``affine`` to canonical RAS."""
    return nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), _RAS)


def to_canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient a 3-D array on the grid of ``affine`` to RAS (a view when possible, no resampling)."""
    return nib.orientations.apply_orientation(np.asarray(array), canonical_ornt(affine))


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


def _in_plane(axis: int) -> tuple[int, int]:
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
    col_axis, row_axis = _in_plane(axis)
    left, top = codes[col_axis], codes[row_axis]
    return {"left": left, "right": _OPPOSITE[left], "top": top, "bottom": _OPPOSITE[top]}


def display_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2-D slice ``index`` along ``axis`` as displayed: ``np.take(...).T[::-1, ::-1]`` (a view)."""
    key: tuple[int | slice, ...] = (slice(None),) * axis + (int(index),)
    return np.asarray(volume)[key].T[::-1, ::-1]


def display_position(shape: Sequence[int], axis: int, position: Sequence[int]) -> tuple[int, int]:
    """(row, column) in the displayed slice of ``axis`` of the voxel ``position`` (3 indices)."""
    col_axis, row_axis = _in_plane(axis)
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


# --------------------------------------------------------------------------------------------------
# Intensities and overlays
# --------------------------------------------------------------------------------------------------


def window_limits(
    volume: np.ndarray,
    *,
    percentiles: Sequence[float] = (1.0, 99.0),
    nonzero: bool = True,
    max_samples: int = 1_000_000,
) -> tuple[float, float]:
    """Intensity limits at two percentiles of a volume.

    Args:
        volume: Image array.
        percentiles: Lower and upper percentile (0-100).
        nonzero: Compute them over the nonzero voxels (the brain of a skull-stripped scan) when
            there are any.
        max_samples: Use an evenly strided sample of at most this many voxels (fast on big volumes).

    Returns:
        ``(low, high)`` with ``high > low``.
    """
    lo_p, hi_p = sorted(float(p) for p in percentiles)
    values = np.asarray(volume).ravel()
    if nonzero:
        inside = values[values != 0]
        if inside.size:
            values = inside
    if values.size > max_samples:
        values = values[:: int(np.ceil(values.size / max_samples))]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(x) for x in np.percentile(values, [lo_p, hi_p]))
    if not high > low:
        high = low + 1.0
    return low, high


def window(
    volume: np.ndarray,
    *,
    percentiles: Sequence[float] = (1.0, 99.0),
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map intensities to uint8 grey levels: ``limits`` (default: the nonzero voxels' percentiles) to 0-255.

    Args:
        volume: Image array of any shape.
        percentiles: Percentiles giving black and white (see :func:`window_limits`).
        limits: Explicit ``(black, white)`` intensities; overrides ``percentiles``.

    Returns:
        A uint8 array of the same shape.
    """
    low, high = limits if limits is not None else window_limits(volume, percentiles=percentiles)
    scale = 255.0 / max(float(high) - float(low), 1e-12)
    out = (np.asarray(volume, dtype=np.float32) - np.float32(low)) * np.float32(scale)
    np.clip(out, 0.0, 255.0, out=out)
    out += 0.5
    return np.ascontiguousarray(out, dtype=np.uint8)


def error_codes(pred: np.ndarray, truth: np.ndarray, *, visible: Iterable[int] = (1, 2, 4)) -> np.ndarray:
    """False positives and false negatives of the region made of the ``visible`` labels.

    With all three labels visible the region is the whole tumour; with only ET visible, ET; with
    NCR and ET, the tumour core.

    Returns:
        uint8 array: ``FP_CODE`` (1) where predicted but not in the truth, ``FN_CODE`` (2) where in
        the truth but not predicted, 0 elsewhere.
    """
    keep = list(visible)
    p = np.isin(pred, keep)
    t = np.isin(truth, keep)
    out = np.zeros(np.shape(pred), dtype=np.uint8)
    out[p & ~t] = FP_CODE
    out[t & ~p] = FN_CODE
    return out


def _blend(
    background: np.ndarray, codes: np.ndarray | None, colours: np.ndarray, shown: np.ndarray, opacity: float
) -> np.ndarray:
    """RGB uint8 of a grey slice with coloured codes blended at ``opacity`` (integer arithmetic)."""
    grey = background.astype(np.uint16)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if codes is None or opacity <= 0:
        return rgb.astype(np.uint8)
    mask = shown[codes]
    if not mask.any():
        return rgb.astype(np.uint8)
    alpha = int(round(min(max(opacity, 0.0), 1.0) * 256))
    rgb[mask] = (rgb[mask] * (256 - alpha) + colours[codes[mask]] * alpha) >> 8
    return rgb.astype(np.uint8)


def _zoom_index(n: int, size_mm: float, pixel_mm: float, factor: int) -> np.ndarray:
    pixels = max(1, int(round(n * size_mm / pixel_mm))) * factor
    return np.minimum((np.arange(pixels) * n) // pixels, n - 1)


def zoom_indices(
    shape: Sequence[int], spacing: Sequence[float], *, min_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices that resample a displayed slice to square pixels, at least ``min_size`` wide.

    Args:
        shape: ``(rows, columns)`` of the displayed slice.
        spacing: ``(row, column)`` voxel size in mm.
        min_size: Upscale by an integer factor until the longer side reaches this many pixels.

    Returns:
        ``(rows, cols)`` index arrays for ``slice[np.ix_(rows, cols)]`` (nearest neighbour).
    """
    pixel_mm = float(min(spacing))
    longest = max(int(round(n * s / pixel_mm)) for n, s in zip(shape, spacing, strict=True))
    factor = max(1, int(min_size) // max(longest, 1))
    return tuple(  # type: ignore[return-value]
        _zoom_index(int(n), float(s), pixel_mm, factor) for n, s in zip(shape, spacing, strict=True)
    )


# --------------------------------------------------------------------------------------------------
# Text, crosshair and encoding
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


@lru_cache(maxsize=64)
def _letter_layer(
    height: int, width: int, left: str, right: str, top: str, bottom: str
) -> tuple[np.ndarray, np.ndarray]:
    """White letters with a black outline at the middle of each edge: (alpha float32 HxWx1, rgb HxWx3)."""
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(10, min(height, width) // 14)
    font = _font(size)
    pad = max(2, size // 4)
    spots = {
        left: (pad, height / 2, "lm"),
        right: (width - pad, height / 2, "rm"),
        top: (width / 2, pad, "mt"),
        bottom: (width / 2, height - pad, "mb"),
    }
    for text, (x, y, anchor) in (
        (left, spots[left]),
        (right, spots[right]),
        (top, spots[top]),
        (bottom, spots[bottom]),
    ):
        try:
            draw.text(
                (x, y),
                text,
                font=font,
                fill=(255, 255, 255, 255),
                anchor=anchor,
                stroke_width=max(1, size // 8),
                stroke_fill=(0, 0, 0, 255),
            )
        except ValueError:  # a bitmap font without anchor support
            draw.text(
                (x - size / 2 if anchor[0] != "l" else x, y - size / 2),
                text,
                font=font,
                fill=(255, 255, 255, 255),
            )
    arr = np.asarray(layer)
    alpha = arr[..., 3:4].astype(np.float32) / 255.0
    return alpha, arr[..., :3].astype(np.float32)


def draw_letters(rgb: np.ndarray, letters: Mapping[str, str]) -> np.ndarray:
    """Return a copy of ``rgb`` with the orientation ``letters`` drawn at the middle of its edges."""
    h, w = rgb.shape[:2]
    alpha, colour = _letter_layer(h, w, letters["left"], letters["right"], letters["top"], letters["bottom"])
    out = rgb.astype(np.float32) * (1.0 - alpha) + colour * alpha
    return (out + 0.5).astype(np.uint8)


def draw_crosshair(
    rgb: np.ndarray,
    row: int | None,
    col: int | None,
    *,
    colour: Sequence[int] = CROSSHAIR_COLOUR,
    gap: int = 6,
    opacity: float = 0.8,
) -> np.ndarray:
    """Return a copy of ``rgb`` with a horizontal line at ``row`` and a vertical one at ``col``.

    The lines leave a gap of ``gap`` pixels on each side of their crossing so the voxel under the
    crosshair stays visible. Either line may be None (not drawn).
    """
    out = rgb.copy()
    h, w = out.shape[:2]
    c = np.asarray(colour[:3], dtype=np.float32)

    def paint(region: np.ndarray) -> None:
        region[...] = (region.astype(np.float32) * (1.0 - opacity) + c * opacity + 0.5).astype(np.uint8)

    if row is not None and 0 <= row < h:
        line = out[row]
        if col is not None:
            paint(line[: max(col - gap, 0)])
            paint(line[col + gap + 1 :])
        else:
            paint(line)
    if col is not None and 0 <= col < w:
        line = out[:, col]
        if row is not None:
            paint(line[: max(row - gap, 0)])
            paint(line[row + gap + 1 :])
        else:
            paint(line)
    return out


def png_bytes(rgb: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode an RGB (HxWx3) or grey (HxW) uint8 array as PNG with PIL (fast compression by default)."""
    buffer = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# One slice
# --------------------------------------------------------------------------------------------------


def _overlay_codes(
    mode: str,
    axis: int,
    index: int,
    labels: np.ndarray | None,
    truth: np.ndarray | None,
    visible: Iterable[int],
    uncertain: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Displayed code slice and its colour lookup for an overlay mode."""
    if mode == "uncertain" and labels is not None and uncertain is not None:
        codes = display_slice(labels, axis, index).copy()
        codes[display_slice(uncertain, axis, index).astype(bool)] = UNCERTAIN_CODE
        colours, shown = _lut({**LABEL_COLOURS, UNCERTAIN_CODE: UNCERTAIN_COLOUR}, (*visible, UNCERTAIN_CODE))
        return codes, colours, shown
    if mode == "errors" and labels is not None and truth is not None:
        codes = error_codes(
            display_slice(labels, axis, index), display_slice(truth, axis, index), visible=visible
        )
        colours, shown = _lut(
            {FP_CODE: ERROR_COLOURS["FP"], FN_CODE: ERROR_COLOURS["FN"]}, (FP_CODE, FN_CODE)
        )
        return codes, colours, shown
    source = {"prediction": labels, "uncertain": labels, "truth": truth}.get(mode)  # "uncertain" without a map: the prediction
    colours, shown = _lut(LABEL_COLOURS, visible)
    if source is None:
        return None, colours, shown
    return display_slice(source, axis, index), colours, shown


def slice_rgb(
    background_u8: np.ndarray,
    labels: np.ndarray | None,
    axis: int,
    index: int,
    *,
    opacity: float = 0.4,
    visible_labels: Iterable[int] = (1, 2, 4),
    crosshair: Sequence[int] | None = None,
    truth: np.ndarray | None = None,
    mode: str = "prediction",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    letters: Mapping[str, str] | None = None,
    min_size: int = 0,
    uncertain: np.ndarray | None = None,
) -> np.ndarray:
    """Compose one displayed slice: grey background, coloured labels, crosshair and letters.

    All 3-D inputs share one voxel grid; for the radiological convention pass canonical (RAS)
    volumes (:func:`to_canonical`) and the letters of :func:`orientation_letters`.

    Args:
        background_u8: uint8 background volume (:func:`window`).
        labels: Label map (values 0, 1, 2, 4) or None for the scan alone.
        axis: Sliced array axis (:data:`VIEW_AXIS`).
        index: Slice index along ``axis``.
        opacity: Overlay opacity, 0-1.
        visible_labels: Label values drawn (the others are hidden).
        crosshair: A voxel position ``(i, j, k)``; lines are drawn through it in this slice.
        truth: Ground-truth label map, for ``mode="truth"`` and ``mode="errors"``.
        mode: ``"prediction"`` (``labels``), ``"truth"``, ``"errors"`` (FP red / FN blue),
            ``"uncertain"`` (``labels``, with ``uncertain`` voxels in :data:`UNCERTAIN_COLOUR`) or
            ``"none"``.
        spacing: Voxel size (mm) along the three axes, to show square pixels.
        letters: Orientation letters drawn on the edges (``{"left", "right", "top", "bottom"}``).
        min_size: Upscale (nearest neighbour, integer factor) until the longer side has this many
            pixels; 0 keeps one pixel per voxel on the finest axis.
        uncertain: Where the label depends on the decision threshold (non-zero), for
            ``mode="uncertain"``.

    Returns:
        An RGB uint8 image (rows, columns, 3).
    """
    codes, colours, shown = _overlay_codes(mode, axis, index, labels, truth, visible_labels, uncertain)
    if mode == "errors" and opacity > 0:  # thin error rims vanish at a label opacity; the slider still turns them off
        opacity = max(opacity, ERROR_MIN_OPACITY)
    rgb = _blend(display_slice(background_u8, axis, index), codes, colours, shown, opacity)
    col_axis, row_axis = _in_plane(axis)
    rows, cols = zoom_indices(rgb.shape[:2], (spacing[row_axis], spacing[col_axis]), min_size=min_size)
    if rows.size != rgb.shape[0] or cols.size != rgb.shape[1]:
        rgb = rgb[np.ix_(rows, cols)]
    if letters is not None:
        rgb = draw_letters(rgb, letters)
    if crosshair is not None:
        row, col = display_position(background_u8.shape, axis, crosshair)
        rgb = draw_crosshair(rgb, _pixel_of(rows, row), _pixel_of(cols, col))
    return rgb


def _pixel_of(index: np.ndarray, voxel: int) -> int | None:
    """Middle pixel of a voxel in a zoom index array (None when it is not shown)."""
    hits = np.flatnonzero(index == voxel)
    return int(hits[hits.size // 2]) if hits.size else None


# --------------------------------------------------------------------------------------------------
# Interactive viewer with caches
# --------------------------------------------------------------------------------------------------


@dataclass
class ViewSettings:
    """Display settings of a :class:`SliceViewer` (change them with :meth:`SliceViewer.update`)."""

    background: str
    percentiles: tuple[float, float] = (1.0, 99.0)
    opacity: float = 0.4
    visible: frozenset[int] = frozenset(LABEL_NAMES)
    mode: str = "none"
    crosshair: bool = True


@dataclass
class SliceViewer:
    """Three linked views of one study, rendered to PNG with caches for instant slider moves.

    Volumes are reoriented to RAS once (:func:`to_canonical`) and backgrounds windowed to uint8
    once per sequence and contrast setting. Each view keeps its composed slice (background +
    overlay + letters) until its slice or a display setting changes; the crosshair is drawn on a
    copy at each encode. Moving one slice therefore composes one view and, with the crosshair on,
    re-encodes the other two (to move their crosshair lines).

    Attributes:
        images: The study's sequences, canonical (RAS).
        affine: The canonical affine; ``spacing`` its voxel size.
        position: The crosshair voxel ``[i, j, k]`` in the canonical grid; each view shows the
            slice ``position[VIEW_AXIS[view]]``.
        composed: Number of slice compositions per view (for tests and profiling).
        encoded: Number of PNG encodes per view.
        min_size: Upscaling target of small images (pixels).
    """

    images: dict[str, np.ndarray]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    settings: ViewSettings
    position: list[int]
    min_size: int = 256
    source_affine: np.ndarray | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    composed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VIEWS, 0))
    encoded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VIEWS, 0))
    _u8: dict[tuple[str, tuple[float, float]], np.ndarray] = field(default_factory=dict, repr=False)
    _limits: dict[tuple[str, tuple[float, float]], tuple[float, float]] = field(default_factory=dict, repr=False)
    _base: dict[str, tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _version: int = 0

    @classmethod
    def from_study(cls, study: Study, *, background: str | None = None, min_size: int = 256) -> SliceViewer:
        """A viewer of a study's four sequences (and its ground truth, when present)."""
        affine = np.asarray(study.affine)
        images = {m: to_canonical(a, affine) for m, a in study.images.items()}
        shape = next(iter(images.values())).shape
        bg = background or ("T1CE" if "T1CE" in images else next(iter(images)))
        viewer = cls(
            images=images,
            affine=canonical_affine(affine, study.shape),
            spacing=canonical_spacing(study.spacing, affine),
            settings=ViewSettings(background=bg),
            position=[n // 2 for n in shape],
            min_size=min_size,
            source_affine=affine,
        )
        if study.truth is not None:
            viewer.set_labels("truth", study.truth)
        return viewer

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical grid shape."""
        return tuple(next(iter(self.images.values())).shape)  # type: ignore[return-value]

    def set_labels(self, name: str, array: np.ndarray | None) -> None:
        """Set (or with None remove) the ``"prediction"``, ``"truth"`` or ``"uncertain"`` map, on the study's grid."""
        if array is None:
            self.labels.pop(name, None)
        else:
            source = self.source_affine
            canon = to_canonical(array, source) if source is not None else np.asarray(array)
            self.labels[name] = np.ascontiguousarray(canon, dtype=np.uint8)
        self._invalidate()

    def update(self, **settings: Any) -> bool:
        """Change display settings (``background``, ``percentiles``, ``opacity``, ``visible``, ``mode``,
        ``crosshair``); returns whether anything changed (then every view is recomposed)."""
        changed = False
        for key, value in settings.items():
            if key == "visible":
                value = frozenset(int(v) for v in value)
            elif key == "percentiles":
                value = tuple(float(v) for v in value)
            if getattr(self.settings, key) != value:
                setattr(self.settings, key, value)
                changed = True
        if changed:
            self._invalidate()
        return changed

    def _invalidate(self) -> None:
        self._version += 1

    def background_u8(self) -> np.ndarray:
        """The current background sequence, windowed to uint8 (cached per sequence and contrast)."""
        key = (self.settings.background, self.settings.percentiles)
        if key not in self._u8:
            if len(self._u8) >= 4:
                self._u8.pop(next(iter(self._u8)))
            self._u8[key] = window(self.images[key[0]], limits=self.window_limits())
        return self._u8[key]

    def window_limits(self) -> tuple[float, float]:
        """The current background's intensities shown black and white (in the file's units)."""
        key = (self.settings.background, self.settings.percentiles)
        if key not in self._limits:
            self._limits[key] = window_limits(self.images[key[0]], percentiles=key[1])
        return self._limits[key]

    def letters(self, view: str) -> dict[str, str]:
        """Orientation letters of a view (from the canonical affine)."""
        return orientation_letters(self.affine, VIEW_AXIS[view])

    def _composed(self, view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The view's slice with overlay and letters (no crosshair) and its zoom indices (cached)."""
        axis = VIEW_AXIS[view]
        index = int(self.position[axis])
        key = (index, self._version)
        cached = self._base.get(view)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2], cached[3]
        s = self.settings
        rgb = slice_rgb(
            self.background_u8(),
            self.labels.get("prediction"),
            axis,
            index,
            opacity=s.opacity,
            visible_labels=s.visible,
            truth=self.labels.get("truth"),
            mode=s.mode,
            spacing=self.spacing,
            letters=self.letters(view),
            min_size=self.min_size,
            uncertain=self.labels.get("uncertain"),
        )
        col_axis, row_axis = _in_plane(axis)
        shown = (self.shape[row_axis], self.shape[col_axis])
        rows, cols = zoom_indices(
            shown, (self.spacing[row_axis], self.spacing[col_axis]), min_size=self.min_size
        )
        self._base[view] = (key, rgb, rows, cols)
        self.composed[view] += 1
        return rgb, rows, cols

    def rgb(self, view: str) -> np.ndarray:
        """The view as an RGB array, with the crosshair when it is on."""
        base, rows, cols = self._composed(view)
        if not self.settings.crosshair:
            return base
        row, col = display_position(self.shape, VIEW_AXIS[view], self.position)
        return draw_crosshair(base, _pixel_of(rows, row), _pixel_of(cols, col))

    def png(self, view: str) -> bytes:
        """The view as PNG bytes."""
        data = png_bytes(self.rgb(view))
        self.encoded[view] += 1
        return data

    def move(self, view: str, index: int) -> list[str]:
        """Move a view to slice ``index``; returns the views whose image changed, moved view first.

        The moved view is recomposed; the other two change only when the crosshair is shown (their
        crosshair line moves), and reuse their composed slice.
        """
        axis = VIEW_AXIS[view]
        index = int(min(max(int(index), 0), self.shape[axis] - 1))
        if self.position[axis] == index:
            return []
        self.position[axis] = index
        if not self.settings.crosshair:
            return [view]
        return [view, *(v for v in VIEWS if v != view)]

    def click(self, view: str, x: float, y: float) -> list[str]:
        """Move the crosshair to the voxel under pixel ``(x, y)`` of a view's image.

        Args:
            view: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
            x: Column of the clicked pixel in the view's PNG (0 = left edge); clamped to the image.
            y: Row of the clicked pixel (0 = top edge); clamped to the image.

        Returns:
            The views whose image changed: the two views whose slice moved, and the clicked view
            itself when the crosshair is shown (its lines move); empty when the voxel is unchanged.
        """
        _, rows, cols = self._composed(view)
        row = int(rows[min(max(int(y), 0), rows.size - 1)])
        col = int(cols[min(max(int(x), 0), cols.size - 1)])
        col_axis, row_axis = _in_plane(VIEW_AXIS[view])
        target = list(self.position)
        target[row_axis] = self.shape[row_axis] - 1 - row
        target[col_axis] = self.shape[col_axis] - 1 - col
        if target == self.position:
            return []
        moved = [v for v in VIEWS if target[VIEW_AXIS[v]] != self.position[VIEW_AXIS[v]]]
        self.position = target
        return [*moved, view] if self.settings.crosshair else moved

    def centre_on(self, position: Sequence[int]) -> None:
        """Set the crosshair voxel (canonical grid)."""
        self.position = [int(min(max(int(p), 0), n - 1)) for p, n in zip(position, self.shape, strict=True)]

    def focus(self) -> tuple[int, int, int]:
        """Slices with the largest tumour area: of the prediction, else the truth, else the centre."""
        for name in ("prediction", "truth"):
            labels = self.labels.get(name)
            if labels is not None and labels.any():
                return largest_tumour_slices(labels)
        return tuple(n // 2 for n in self.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Export figure (matplotlib)
# --------------------------------------------------------------------------------------------------


def export_png(
    study: Study,
    labels: LabelMap | np.ndarray | None,
    vols: Mapping[str, Any] | None,
    *,
    scores: Mapping[str, Mapping[str, float]] | None = None,
    background: str = "T1CE",
    position: Sequence[int] | None = None,
    mode: str = "prediction",
    opacity: float = 0.4,
    percentiles: Sequence[float] = (1.0, 99.0),
    visible_labels: Iterable[int] = (1, 2, 4),
    dpi: int = 100,
    title: str | None = None,
    uncertain: np.ndarray | None = None,
) -> bytes:
    """A PNG figure of the three views with the label legend and the volume table.

    Args:
        study: The study.
        labels: The predicted label map on the study's grid (or None).
        vols: :func:`brats_seg.report.volumes` of the prediction, shown as a table (or None).
        scores: :func:`brats_seg.metrics.score` output, shown beside the volumes (or None).
        background: Sequence shown in grey.
        position: Crosshair voxel in the canonical (RAS) grid; default the slices with the largest
            tumour area.
        mode: Overlay mode (:data:`OVERLAY_MODES`).
        opacity: Overlay opacity.
        percentiles: Contrast percentiles of the background.
        visible_labels: Label values drawn.
        dpi: Resolution of the figure (it is 12 x 6.4 inches).
        title: Figure title; default the study name.
        uncertain: Where the label depends on the decision threshold, for ``mode="uncertain"``.

    Returns:
        PNG bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .report import volumes_table

    viewer = SliceViewer.from_study(
        study, background=background if background in study.images else None, min_size=0
    )
    if labels is not None:
        viewer.set_labels("prediction", np.asarray(getattr(labels, "array", labels)))
    if uncertain is not None:
        viewer.set_labels("uncertain", np.asarray(uncertain))
    if mode == "uncertain" and "uncertain" not in viewer.labels:
        mode = "prediction"
    if mode in ("truth", "errors") and "truth" not in viewer.labels:
        mode = "prediction"
    if mode in ("prediction", "errors", "uncertain") and "prediction" not in viewer.labels:
        mode = "truth" if "truth" in viewer.labels else "none"
    viewer.update(
        mode=mode, opacity=opacity, percentiles=tuple(percentiles), visible=visible_labels, crosshair=False
    )
    viewer.centre_on(position if position is not None else viewer.focus())

    fig = Figure(figsize=(12, 6.4), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        2, 3, height_ratios=[3.2, 1.3], hspace=0.15, wspace=0.05, left=0.02, right=0.98, top=0.9, bottom=0.02
    )
    for col, view in enumerate(VIEWS):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(viewer.rgb(view), interpolation="nearest")
        index = viewer.position[VIEW_AXIS[view]]
        ax.set_title(f"{view} (slice {index})", fontsize=10)
        ax.set_axis_off()
    fig.suptitle(
        f"{title or study.name} - background {viewer.settings.background}, overlay {viewer.settings.mode}"
        " - research use only, not for clinical use",
        fontsize=11,
    )

    ax_legend = fig.add_subplot(grid[1, 0])
    ax_legend.set_axis_off()
    handles = [
        Patch(facecolor=colour_hex(c), edgecolor="black", label=n)
        for n, c in label_colours(mode=viewer.settings.mode).items()
    ]
    if handles:
        ax_legend.legend(handles=handles, loc="center", frameon=False, fontsize=10, title="overlay")

    if vols is not None:
        ax_table = fig.add_subplot(grid[1, 1])
        ax_table.set_axis_off()
        rows = [[name, desc, f"{ml:.2f}"] for name, desc, ml in volumes_table(vols)]
        table = ax_table.table(
            cellText=rows,
            colLabels=["", "", "volume (mL)"],
            loc="center",
            cellLoc="left",
            colWidths=[0.14, 0.6, 0.26],
        )
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1.0, 1.1)
    if scores is not None:
        ax_scores = fig.add_subplot(grid[1, 2])
        ax_scores.set_axis_off()
        rows = [[region, f"{s['dice']:.3f}", f"{s['hd95']:.1f}"] for region, s in scores.items()]
        table = ax_scores.table(
            cellText=rows, colLabels=["region", "Dice", "HD95 (mm)"], loc="center", cellLoc="left"
        )
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1.0, 1.1)

    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()
