"""The downloadable figure: the three views, the legend, the volume table and the scores (matplotlib, Agg)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .colours import VIEW_AXIS, VIEWS, colour_hex, label_colours
from .viewer import SliceViewer

if TYPE_CHECKING:
    from ..types import LabelMap, Study


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

    viewer = export_viewer(study, labels, uncertain, background=background, mode=mode)
    viewer.update(opacity=opacity, percentiles=tuple(percentiles), visible=visible_labels, crosshair=False)
    viewer.centre_on(position if position is not None else viewer.focus())

    fig = Figure(figsize=(12, 6.4), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        2, 3, height_ratios=[3.2, 1.3], hspace=0.15, wspace=0.05, left=0.02, right=0.98, top=0.9, bottom=0.02
    )
    _draw_views(fig, grid, viewer, title=title or study.name)
    _draw_legend(fig.add_subplot(grid[1, 0]), viewer.settings.mode)
    if vols is not None:
        _draw_volumes(fig.add_subplot(grid[1, 1]), vols)
    if scores is not None:
        _draw_scores(fig.add_subplot(grid[1, 2]), scores)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def export_viewer(
    study: Study,
    labels: LabelMap | np.ndarray | None,
    uncertain: np.ndarray | None,
    *,
    background: str = "T1CE",
    mode: str = "prediction",
) -> SliceViewer:
    """A viewer of the study with the maps the figure shows, in a mode they allow.

    A mode whose maps are absent falls back: ``"uncertain"`` without a map and ``"truth"`` or
    ``"errors"`` without a ground truth to ``"prediction"``; a mode that needs the prediction
    without one to ``"truth"`` (or ``"none"``).
    """
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
    viewer.update(mode=mode)
    return viewer


def _draw_views(fig: Any, grid: Any, viewer: SliceViewer, *, title: str) -> None:
    """The figure's title and the three views side by side on the grid's first row."""
    fig.suptitle(
        f"{title} - background {viewer.settings.background}, overlay {viewer.settings.mode}"
        " - research use only, not for clinical use",
        fontsize=11,
    )
    for col, view in enumerate(VIEWS):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(viewer.rgb(view), interpolation="nearest")
        index = viewer.position[VIEW_AXIS[view]]
        ax.set_title(f"{view} (slice {index})", fontsize=10)
        ax.set_axis_off()


def _draw_legend(ax: Any, mode: str) -> None:
    """The overlay's colours, named."""
    from matplotlib.patches import Patch

    ax.set_axis_off()
    colours = label_colours(mode=mode)
    handles = [Patch(facecolor=colour_hex(c), edgecolor="black", label=n) for n, c in colours.items()]
    if handles:
        ax.legend(handles=handles, loc="center", frameon=False, fontsize=10, title="overlay")


def _draw_volumes(ax: Any, vols: Mapping[str, Any]) -> None:
    """The volume table (mL)."""
    from ..report import volumes_table

    ax.set_axis_off()
    rows = [[name, desc, f"{ml:.2f}"] for name, desc, ml in volumes_table(vols)]
    table = ax.table(
        cellText=rows,
        colLabels=["", "", "volume (mL)"],
        loc="center",
        cellLoc="left",
        colWidths=[0.14, 0.6, 0.26],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.1)


def _draw_scores(ax: Any, scores: Mapping[str, Mapping[str, float]]) -> None:
    """Dice and HD95 per region."""
    ax.set_axis_off()
    rows = [[region, f"{s['dice']:.3f}", f"{s['hd95']:.1f}"] for region, s in scores.items()]
    labels = ["region", "Dice", "HD95 (mm)"]
    table = ax.table(cellText=rows, colLabels=labels, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.1)
