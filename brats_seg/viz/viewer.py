"""The dashboard's interactive viewer: three linked views of one study, rendered to PNG with caches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import LABEL_NAMES
from .colours import VIEW_AXIS, VIEWS
from .orientation import (
    canonical_affine,
    canonical_spacing,
    display_position,
    in_plane_axes,
    largest_tumour_slices,
    orientation_letters,
    to_canonical,
)
from .slices import draw_crosshair, pixel_of, png_bytes, slice_rgb, window, window_limits, zoom_indices

if TYPE_CHECKING:
    from ..types import Study


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
    _limits: dict[tuple[str, tuple[float, float]], tuple[float, float]] = field(
        default_factory=dict, repr=False
    )
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
        """Set (or with None remove) the ``"prediction"``, ``"truth"`` or ``"uncertain"`` map (study grid)."""
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
        col_axis, row_axis = in_plane_axes(axis)
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
        return draw_crosshair(base, pixel_of(rows, row), pixel_of(cols, col))

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

    def voxel_at(self, view: str, x: float, y: float) -> list[int]:
        """The voxel (canonical grid) under pixel ``(x, y)`` of a view's image, on the view's slice.

        Args:
            view: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
            x: Column of the pixel in the view's PNG (0 = left edge); clamped to the image.
            y: Row of the pixel (0 = top edge); clamped to the image.
        """
        _, rows, cols = self._composed(view)
        row = int(rows[min(max(int(y), 0), rows.size - 1)])
        col = int(cols[min(max(int(x), 0), cols.size - 1)])
        col_axis, row_axis = in_plane_axes(VIEW_AXIS[view])
        voxel = list(self.position)
        voxel[row_axis] = self.shape[row_axis] - 1 - row
        voxel[col_axis] = self.shape[col_axis] - 1 - col
        return voxel

    def click(self, view: str, x: float, y: float) -> list[str]:
        """Move the crosshair to the voxel under pixel ``(x, y)`` of a view's image (see :meth:`voxel_at`).

        Returns:
            The views whose image changed: the two views whose slice moved, and the clicked view
            itself when the crosshair is shown (its lines move); empty when the voxel is unchanged.
        """
        target = self.voxel_at(view, x, y)
        if target == self.position:
            return []
        moved = [v for v in VIEWS if target[VIEW_AXIS[v]] != self.position[VIEW_AXIS[v]]]
        self.position = target
        return [*moved, view] if self.settings.crosshair else moved

    def replace_labels(self, name: str, canonical: np.ndarray) -> None:
        """Show ``canonical`` (already on the canonical grid, e.g. labels being corrected) as map ``name``."""
        self.labels[name] = np.ascontiguousarray(canonical, dtype=np.uint8)
        self._invalidate()

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
