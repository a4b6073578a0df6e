"""Sections 4 and 5 of the page, Numbers and Downloads, filled from a :class:`~brats_seg.ui.state.Result`."""

from __future__ import annotations

from typing import Any

from .. import viz
from .downloads import figure_name, figure_png, links_html, result_files
from .layout import FIGURE_CURRENT, FIGURE_STALE, Page
from .render import scores_html, volume_rows, volumes_html
from .state import Result

__all__ = ["add_files", "mark_figure", "refresh_figure", "reset", "show", "show_volumes", "shown_scores"]


def add_files(result: Result, model: Any, viewer: viz.SliceViewer | None) -> None:
    """Make the result's downloads (the figure as ``viewer`` shows the views now) and its table's numbers."""
    seg = result.segmentation
    made = result_files(result.study, seg, model, scores=result.scores, viewer=viewer)
    result.downloads, result.notes = made.files, made.notes
    result.volumes_shown = volume_rows(result.volumes, result.truth_volumes, seg.volume_range)


def show(page: Page, result: Result) -> None:
    """Show the result's tables and download links."""
    correction = result.segmentation.correction
    page.volumes_table.value = volumes_html(
        result.volumes,
        result.truth_volumes,
        result.segmentation.volume_range,
        corrected=None if correction is None else int(correction["changed_voxels"]),
    )
    page.metrics_table.value = scores_html(result.scores) if result.scores is not None else ""
    page.numbers_box.layout.display = "flex"
    note = ""
    if correction is not None:
        note = (
            '<div class="brats-downloads-corrected">These files hold the corrected labels '
            f"({int(correction['changed_voxels'])} voxels changed).</div>"
        )
    page.downloads_html.value = note + links_html(result.downloads)
    page.downloads_box.layout.display = "flex"
    mark_figure(page, current=True)


def show_volumes(page: Page, result: Result, volumes: dict[str, Any], *, corrected: int | None) -> None:
    """Show the volumes of labels being corrected at once; the scores and downloads follow (:func:`show`)."""
    result.volumes_shown = volume_rows(volumes, result.truth_volumes, result.segmentation.volume_range)
    page.volumes_table.value = volumes_html(
        volumes, result.truth_volumes, result.segmentation.volume_range, corrected=corrected
    )
    page.downloads_html.value = (
        '<div class="brats-downloads-updating">Updating the downloads with the corrections...</div>'
        + links_html(result.downloads)
    )


def refresh_figure(page: Page, result: Result, viewer: viz.SliceViewer | None) -> None:
    """Make the figure download again from the views as they are now."""
    png = figure_png(result.study, result.segmentation, result.scores, viewer)
    result.downloads[figure_name(result.study)] = ("image/png", png)
    show(page, result)


def mark_figure(page: Page, *, current: bool) -> None:
    """Say on the figure button whether the PNG download still shows the views on the page."""
    description, style = (FIGURE_CURRENT, "") if current else (FIGURE_STALE, "warning")
    button = page.refresh_png_button
    if button.description != description:
        button.description, button.button_style = description, style


def reset(page: Page) -> None:
    """Empty and hide both sections, and the progress bar."""
    page.volumes_table.value = page.metrics_table.value = page.downloads_html.value = ""
    page.numbers_box.layout.display = page.downloads_box.layout.display = "none"
    page.progress.value, page.progress.bar_style, page.progress_label.value = 0, "", ""


def shown_scores(result: Result | None) -> dict[str, dict[str, float]]:
    """The Dice / HD95 table's numbers: region -> ``{"dice", "hd95"}`` (empty without truth)."""
    if result is None or result.scores is None:
        return {}
    return {r: {"dice": float(s["dice"]), "hd95": float(s["hd95"])} for r, s in result.scores.items()}
