"""One displayed slice: intensity window, overlay codes, blending, zoom, letters, crosshair, PNG encoding.

Composed with numpy and encoded with PIL (a few milliseconds per slice).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colours import (
    CROSSHAIR_COLOUR,
    ERROR_COLOURS,
    ERROR_MIN_OPACITY,
    FN_CODE,
    FP_CODE,
    LABEL_COLOURS,
    UNCERTAIN_CODE,
    UNCERTAIN_COLOUR,
    colour_lookup,
)
from .orientation import display_position, display_slice, in_plane_axes

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
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# One slice
# --------------------------------------------------------------------------------------------------


def overlay_codes(
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
        colours, shown = colour_lookup(
            {**LABEL_COLOURS, UNCERTAIN_CODE: UNCERTAIN_COLOUR}, (*visible, UNCERTAIN_CODE)
        )
        return codes, colours, shown
    if mode == "errors" and labels is not None and truth is not None:
        codes = error_codes(
            display_slice(labels, axis, index), display_slice(truth, axis, index), visible=visible
        )
        colours, shown = colour_lookup(
            {FP_CODE: ERROR_COLOURS["FP"], FN_CODE: ERROR_COLOURS["FN"]}, (FP_CODE, FN_CODE)
        )
        return codes, colours, shown
    # "uncertain" without a map shows the prediction
    source = {"prediction": labels, "uncertain": labels, "truth": truth}.get(mode)
    colours, shown = colour_lookup(LABEL_COLOURS, visible)
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
    codes, colours, shown = overlay_codes(mode, axis, index, labels, truth, visible_labels, uncertain)
    # thin error rims vanish at a label opacity; the slider still turns them off
    if mode == "errors" and opacity > 0:
        opacity = max(opacity, ERROR_MIN_OPACITY)
    rgb = _blend(display_slice(background_u8, axis, index), codes, colours, shown, opacity)
    col_axis, row_axis = in_plane_axes(axis)
    rows, cols = zoom_indices(rgb.shape[:2], (spacing[row_axis], spacing[col_axis]), min_size=min_size)
    if rows.size != rgb.shape[0] or cols.size != rgb.shape[1]:
        rgb = rgb[np.ix_(rows, cols)]
    if letters is not None:
        rgb = draw_letters(rgb, letters)
    if crosshair is not None:
        row, col = display_position(background_u8.shape, axis, crosshair)
        rgb = draw_crosshair(rgb, pixel_of(rows, row), pixel_of(cols, col))
    return rgb


def pixel_of(index: np.ndarray, voxel: int) -> int | None:
    """Middle pixel of a voxel in a zoom index array (None when it is not shown)."""
    hits = np.flatnonzero(index == voxel)
    return int(hits[hits.size // 2]) if hits.size else None
