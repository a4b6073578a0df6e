"""Correcting a label map by hand: brush and erase strokes, undo and redo, and what was changed.

Pure functions and one small class over arrays, so the dashboard (and anything else) stays a thin face:
a stroke is a list of points on one slice of one view, painted as discs of a radius in millimetres
(spacing-aware: a disc on the slice's two axes, or a ball over all three) joined along the drag. The
editor keeps the model's labels, the current labels and one record per stroke, so undo and redo restore
the labels byte for byte, and it says how many voxels differ from the model's and to what.

    editor = LabelEditor(labels.array, spacing=labels.spacing)
    editor.paint(axis=2, index=77, points=[(120, 100), (130, 104)], label=2, radius_mm=3)
    editor.undo(); editor.redo()
    editor.changed_voxels()          # voxels whose label differs from the model's
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .files import save_image, save_labels
from .result import Segmentation
from .types import LABEL_NAMES, LabelMap, Study

#: Where "save for training" writes corrected studies, unless ``BRATS_SEG_CORRECTIONS_DIR`` says otherwise.
DEFAULT_CORRECTIONS_DIR = "corrections"
#: The BraTS 2018 file suffix of each sequence, as ``brats-seg train`` and ``brats-seg pack`` read them.
BRATS_SUFFIXES = {"T1": "t1", "T1CE": "t1ce", "T2": "t2", "FLAIR": "flair"}

#: The tools a stroke can use: paint a label, or erase (to background).
TOOLS = ("brush", "erase")


@dataclass(frozen=True)
class Stroke:
    """What one stroke changed: the flat indices of the voxels, their labels before and after."""

    index: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @property
    def size(self) -> int:
        """How many voxels the stroke changed."""
        return int(self.index.size)


def _check_radius(radius_mm: float, spacing: Sequence[float]) -> None:
    if not np.isfinite(radius_mm) or radius_mm <= 0:
        raise ValueError(f"brush radius: expected a positive number of mm, found {radius_mm!r}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing: expected three positive voxel sizes in mm, found {tuple(spacing)!r}")


def brush_mask(
    shape: Sequence[int],
    *,
    spacing: Sequence[float],
    axis: int,
    index: int,
    points: Sequence[tuple[float, float]],
    radius_mm: float,
    ball: bool = False,
) -> np.ndarray:
    """The voxels a stroke covers: a disc (or a ball) of ``radius_mm`` at each point, joined along the path.

    Args:
        shape: The label map's shape.
        spacing: Voxel size in mm along the three array axes.
        axis: The array axis the slice is taken across (the view's normal).
        index: The slice's index along ``axis``.
        points: Voxel coordinates ``(u, v)`` on the slice, in the order of the array's two other axes;
            consecutive points are joined by discs every half radius, so a fast drag leaves no gaps.
        radius_mm: The brush radius in mm; a voxel is covered when its centre lies within it (the
            point's own voxel always is).
        ball: Cover a ball over the three axes instead of a disc on the slice.

    Returns:
        A boolean array of ``shape``.

    Raises:
        ValueError: On a radius that is not positive, an axis outside 0–2 or a slice outside the volume.
    """
    _check_radius(radius_mm, spacing)
    if axis not in (0, 1, 2) or not 0 <= index < shape[axis]:
        last = shape[axis] - 1 if axis in (0, 1, 2) else "the last"
        raise ValueError(
            f"slice: expected axis 0–2 and an index in 0–{last}, found axis {axis}, index {index}"
        )
    centres = _path(
        np.asarray(points, dtype=np.float64).reshape(-1, 2), spacing, axis=axis, radius_mm=radius_mm
    )
    mask = np.zeros(tuple(shape), dtype=bool)
    in_plane = [a for a in range(3) if a != axis]
    for u, v in centres:
        centre = np.empty(3)
        centre[axis], centre[in_plane[0]], centre[in_plane[1]] = index, u, v
        _stamp(mask, centre, spacing=spacing, radius_mm=radius_mm, axes=range(3) if ball else in_plane)
    return mask


def _path(points: np.ndarray, spacing: Sequence[float], *, axis: int, radius_mm: float) -> np.ndarray:
    """The points, with extra ones between consecutive points at most half a radius apart (in mm)."""
    in_plane = np.array([s for a, s in enumerate(spacing) if a != axis])
    out = [points[:1]]
    for a, b in zip(points[:-1], points[1:], strict=True):
        steps = max(1, int(np.ceil(np.linalg.norm((b - a) * in_plane) / (radius_mm / 2))))
        out.append(a + (b - a) * (np.arange(1, steps + 1)[:, None] / steps))
    return np.concatenate(out) if len(points) else points


def _stamp(
    mask: np.ndarray,
    centre: np.ndarray,
    *,
    spacing: Sequence[float],
    radius_mm: float,
    axes: Sequence[int] | range,
) -> None:
    """Set the voxels of ``mask`` within ``radius_mm`` of ``centre`` along ``axes``, and the centre voxel."""
    axes = list(axes)
    lo, hi, grids = [], [], []
    for a in range(3):
        c = centre[a]
        reach = radius_mm / spacing[a] if a in axes else 0.0
        first, last = max(0, int(np.ceil(c - reach))), min(mask.shape[a] - 1, int(np.floor(c + reach)))
        nearest = min(max(int(round(c)), 0), mask.shape[a] - 1)
        first, last = min(first, nearest), max(last, nearest)
        lo.append(first)
        hi.append(last + 1)
        grids.append(
            ((np.arange(first, last + 1) - c) * spacing[a]) ** 2 if a in axes else np.zeros(last + 1 - first)
        )
    d2 = grids[0][:, None, None] + grids[1][None, :, None] + grids[2][None, None, :]
    inside = d2 <= radius_mm**2
    near = tuple(min(max(int(round(centre[a])), 0), mask.shape[a] - 1) - lo[a] for a in range(3))
    inside[near] = True
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= inside


@dataclass
class LabelEditor:
    """The labels being corrected, the model's labels they started from, and the strokes to undo and redo.

    Attributes:
        model_labels: The model's label map (never changed).
        spacing: Voxel size in mm along the three array axes.
        labels: The current labels (a copy, changed by each stroke).
    """

    model_labels: np.ndarray
    spacing: tuple[float, float, float]
    labels: np.ndarray = field(init=False)
    _done: list[Stroke] = field(default_factory=list, init=False, repr=False)
    _undone: list[Stroke] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.model_labels = np.asarray(self.model_labels, dtype=np.uint8)
        self.labels = self.model_labels.copy()
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]

    def paint(
        self,
        *,
        axis: int,
        index: int,
        points: Sequence[tuple[float, float]],
        radius_mm: float,
        tool: str = "brush",
        label: int = 2,
        only_label: int | None = None,
        ball: bool = False,
    ) -> Stroke:
        """Apply one stroke (one drag) and record it for undo.

        Args:
            axis: The array axis the slice is taken across.
            index: The slice's index along ``axis``.
            points: The drag's voxel coordinates on the slice (see :func:`brush_mask`).
            radius_mm: Brush radius in mm.
            tool: ``"brush"`` paints ``label``; ``"erase"`` sets background.
            label: The label to paint (1 NCR, 2 ED, 4 ET).
            only_label: Change only voxels that hold this label (erase one label and leave the others);
                ``None`` changes every covered voxel.
            ball: A ball over the three axes instead of a disc on the slice.

        Returns:
            The stroke (with ``size`` 0 when it changed nothing; such a stroke is not recorded).

        Raises:
            ValueError: On an unknown tool or label, or a bad radius or slice.
        """
        if tool not in TOOLS:
            raise ValueError(f"tool: expected one of {', '.join(TOOLS)}, found {tool!r}")
        if tool == "brush" and label not in LABEL_NAMES:
            raise ValueError(f"label: expected one of {sorted(LABEL_NAMES)} (NCR, ED, ET), found {label!r}")
        mask = brush_mask(
            self.labels.shape,
            spacing=self.spacing,
            axis=axis,
            index=index,
            points=points,
            radius_mm=radius_mm,
            ball=ball,
        )
        if only_label is not None:
            mask &= self.labels == only_label
        value = np.uint8(label if tool == "brush" else 0)
        mask &= self.labels != value
        index_flat = np.flatnonzero(mask)
        stroke = Stroke(
            index_flat, self.labels.ravel()[index_flat].copy(), np.full(index_flat.size, value, np.uint8)
        )
        if stroke.size:
            self.labels.ravel()[index_flat] = value
            self._done.append(stroke)
            self._undone.clear()
        return stroke

    def undo(self) -> Stroke | None:
        """Take back the last stroke (or the last reset); ``None`` when there is nothing to undo."""
        if not self._done:
            return None
        stroke = self._done.pop()
        self.labels.ravel()[stroke.index] = stroke.before
        self._undone.append(stroke)
        return stroke

    def redo(self) -> Stroke | None:
        """Apply again the last stroke taken back; ``None`` when there is nothing to redo."""
        if not self._undone:
            return None
        stroke = self._undone.pop()
        self.labels.ravel()[stroke.index] = stroke.after
        self._done.append(stroke)
        return stroke

    def reset(self) -> Stroke:
        """Go back to the model's labels, as one stroke (so that it can be undone too)."""
        index_flat = np.flatnonzero(self.labels != self.model_labels)
        stroke = Stroke(
            index_flat, self.labels.ravel()[index_flat].copy(), self.model_labels.ravel()[index_flat].copy()
        )
        if stroke.size:
            self.labels.ravel()[index_flat] = stroke.after
            self._done.append(stroke)
            self._undone.clear()
        return stroke

    def begin_drag(self) -> int:
        """Mark the start of a drag whose strokes :meth:`end_drag` joins into one (one undo)."""
        return len(self._done)

    def end_drag(self, start: int) -> Stroke | None:
        """Join the strokes recorded since :meth:`begin_drag` returned ``start`` into one stroke.

        Returns:
            The joined stroke (each voxel's label before the first and after the last part), or
            ``None`` when the drag changed nothing.
        """
        parts = self._done[start:]
        if not parts:
            return None
        del self._done[start:]
        index = np.concatenate([p.index for p in parts])
        before = np.concatenate([p.before for p in parts])
        unique, first = np.unique(index, return_index=True)  # the first part that touched each voxel
        before, after = before[first], self.labels.ravel()[unique]
        changed = before != after  # painted and then erased again within the drag: not a change
        if not changed.any():
            return None
        joined = Stroke(unique[changed], before[changed], after[changed].copy())
        self._done.append(joined)
        return joined

    @property
    def can_undo(self) -> bool:
        """Whether a stroke can be taken back."""
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        """Whether a stroke taken back can be applied again."""
        return bool(self._undone)

    def changed_voxels(self) -> int:
        """How many voxels hold a label other than the model's."""
        return int(np.count_nonzero(self.labels != self.model_labels))

    def edits(self) -> dict[str, int]:
        """The voxels that differ from the model's labels, by the label they hold now.

        Returns:
            ``{"NCR": n, "ED": n, "ET": n, "background": n, "total": n}``: for example ``background`` counts
            the tumour voxels a person erased.
        """
        changed = self.labels != self.model_labels
        now = self.labels[changed]
        counts = {name: int(np.count_nonzero(now == value)) for value, name in LABEL_NAMES.items()}
        counts["background"] = int(np.count_nonzero(now == 0))
        counts["total"] = int(changed.sum())
        return counts


def uncertain_slices(uncertain: np.ndarray, *, axis: int, most: int = 10) -> list[int]:
    """The slices along ``axis`` with the most uncertain voxels, most first (slices with none left out).

    Args:
        uncertain: Boolean map of where the label changes between the decision thresholds.
        axis: The array axis the slices are taken across.
        most: How many slices at the most.
    """
    other = tuple(a for a in range(3) if a != axis)
    counts = np.asarray(uncertain, dtype=bool).sum(axis=other)
    order = np.argsort(-counts, kind="stable")
    return [int(i) for i in order[:most] if counts[i] > 0]


def correction_record(editor: LabelEditor, *, model_name: str) -> dict[str, Any]:
    """The report's record of a person's correction: the model, and the voxels changed per label now held."""
    return {
        "corrected_by": "a person, in the brats-seg dashboard",
        "model": model_name,
        "changed_voxels": editor.changed_voxels(),
        "changed_voxels_by_label": editor.edits(),
    }


def corrections_dir() -> Path:
    """The folder corrected studies are saved to: ``$BRATS_SEG_CORRECTIONS_DIR``, else ``./corrections``."""
    return Path(os.environ.get("BRATS_SEG_CORRECTIONS_DIR") or DEFAULT_CORRECTIONS_DIR)


def save_for_training(study: Study, labels: np.ndarray, folder: Path) -> Path:
    """Write a study's four sequences and its corrected labels as one BraTS case folder for training.

    The case folder ``folder/<name>/`` holds ``<name>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair`` and
    ``_seg.nii.gz`` with the study's affine and header, the layout ``brats-seg train`` (and fine-tuning with
    ``--init-from``) and ``brats-seg evaluate`` read. Saving the same study again replaces its files.

    Args:
        study: The study as the model saw it (for a raw study, the harmonised one, on the labels' grid).
        labels: The corrected BraTS label map (0, 1, 2, 4) on the study's grid.
        folder: The folder of corrected cases.

    Returns:
        The case folder.

    Raises:
        ValueError: When the labels are not on the study's grid or hold values other than 0, 1, 2, 4.
    """
    labels = np.asarray(labels)
    if labels.shape != study.shape:
        raise ValueError(
            f"{study.name}: expected labels of the study's shape {study.shape}, found {labels.shape}"
        )
    if not np.isin(labels, (0, *LABEL_NAMES)).all():
        raise ValueError(
            f"{study.name}: expected labels 0, 1, 2, 4, found {sorted(np.unique(labels).tolist())}"
        )
    name = re.sub(r"[^A-Za-z0-9._-]", "_", study.name).strip("._") or "study"
    case = Path(folder) / name
    case.mkdir(parents=True, exist_ok=True)
    for modality, suffix in BRATS_SUFFIXES.items():
        save_image(study.images[modality], study, case / f"{name}_{suffix}.nii.gz")
    save_labels(LabelMap(labels.astype(np.uint8), study.affine, study.header), case / f"{name}_seg.nii.gz")
    return case


def corrected_segmentation(seg: Segmentation, labels: np.ndarray, *, record: dict[str, Any]) -> Segmentation:
    """The model's result with a person's corrected labels in place of its own, for volumes and files.

    Args:
        seg: The model's result.
        labels: The corrected label map on the grid of ``seg.labels``.
        record: :func:`correction_record`, kept in the report.

    Returns:
        A copy of ``seg`` whose labels (and, for a harmonised raw study, native labels) are the corrected
        ones; the uncertain voxels and the volume range stay the model's.
    """
    corrected = LabelMap(np.asarray(labels, dtype=np.uint8), seg.labels.affine, seg.labels.header)
    native = seg.native
    if seg.harmonised is not None and native is not None:
        from .harmonise import to_native

        native = to_native(corrected, seg.harmonised)
    return replace(seg, labels=corrected, native=native, correction=dict(record))
