"""The dashboard's widgets and their places in the page, one small builder per section.

Widgets only, no behaviour: :class:`brats_seg.ui.app.App` wires them. Stable CSS classes for browser
tests: ``brats-app``, ``brats-model-status``, ``brats-upload``, ``brats-example``, ``brats-example-note``,
``brats-files``, ``brats-file-row``, ``brats-modality``, ``brats-predict``, ``brats-keep-parts``,
``brats-quick``, ``brats-progress``, ``brats-progress-label``, ``brats-message``, ``brats-warnings``,
``brats-scroller``, ``brats-volumes``, ``brats-metrics``, ``brats-downloads``, ``brats-refresh-png``
(and those of :mod:`brats_seg.ui.views` and :mod:`brats_seg.ui.harmonise`).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as W

from ..files import SEG
from .entries import Entry
from .render import CSS, size_text

__all__ = ["FIGURE_CURRENT", "FIGURE_STALE", "MODALITY_CHOICES", "Page", "build_page", "file_rows"]

#: Dropdown choices for a file's sequence: (label, value). "" means "not chosen yet".
MODALITY_CHOICES: tuple[tuple[str, str], ...] = (
    ("choose...", ""),
    ("T1", "T1"),
    ("T1CE (T1 + contrast)", "T1CE"),
    ("T2", "T2"),
    ("FLAIR", "FLAIR"),
    ("ground truth (seg)", SEG),
    ("ignore", "IGNORE"),
)

#: The figure button's text while the PNG download shows the views on the page, and once they have moved on.
FIGURE_CURRENT = "Figure (PNG) shows the current view"
FIGURE_STALE = "Update the figure (PNG) to the current view"

HEADER = (
    CSS + "<h2>brats-seg: brain-tumour segmentation of one MRI study</h2>"
    "<p>Upload the four sequences of one study (T1, T1CE, T2, FLAIR as NIfTI, or one .zip of the "
    "study folder with NIfTI files or DICOM series; optionally a ground-truth label map), press "
    "<b>Predict</b>, then review the "
    "tumour sub-regions over the scan. <b>Research use only; not for clinical use.</b></p>"
)


@dataclass
class Page:
    """The widgets of the page outside the review section (see the module's CSS classes)."""

    widget: W.VBox
    model_status: W.HTML
    upload: W.FileUpload
    example_button: W.Button
    example_note: W.HTML
    files_box: W.VBox
    predict_button: W.Button
    keep_parts: W.Checkbox
    quick: W.Checkbox
    progress: W.IntProgress
    progress_label: W.Label
    message: W.HTML
    warnings_html: W.HTML
    scroller: W.Output
    volumes_table: W.HTML
    metrics_table: W.HTML
    numbers_box: W.VBox
    downloads_html: W.HTML
    refresh_png_button: W.Button
    downloads_box: W.VBox


def _css(widget: Any, name: str) -> Any:
    widget.add_class(f"brats-{name}")
    return widget


def _study_section() -> dict[str, Any]:
    upload = W.FileUpload(
        accept=".nii,.gz,.zip",
        multiple=True,
        description="Upload files",
        icon="",
        tooltip="The four NIfTI sequences of one study (T1, T1CE, T2, FLAIR), optionally a fifth "
        "file with the ground truth, or one .zip of the study folder (NIfTI files or DICOM series)",
    )
    return {
        "model_status": _css(
            W.HTML("Model: not loaded yet (it loads on the first prediction)."), "model-status"
        ),
        "upload": _css(upload, "upload"),
        "example_button": _css(
            W.Button(description="Load example", tooltip="Load a real BraTS example study"), "example"
        ),
        # takes the button's place once the example proved unreachable from this server
        "example_note": _css(W.HTML("", layout=W.Layout(display="none", margin="0 0 0 8px")), "example-note"),
        "files_box": _css(W.VBox([]), "files"),
    }


def _predict_section() -> dict[str, Any]:
    keep_parts = W.Checkbox(
        value=False,
        indent=False,
        description="Keep every tumour part (skip the model card's post-processing)",
        tooltip="The card may remove small separate tumour parts (see the model line above); tick to see the "
        "network's own output",
        layout=W.Layout(width="auto", display="none"),
    )
    # shown once a card that turns test-time flips on is loaded; checked = this run skips them
    quick = W.Checkbox(
        value=False,
        indent=False,
        description="Quick prediction (skip the test-time flips: about a quarter of the "
        "network time, slightly less accurate)",
        tooltip="The model card averages the scan flipped along each axis; tick for a faster first look",
        layout=W.Layout(width="auto", display="none"),
    )
    predict = W.Button(
        description="Predict",
        button_style="primary",
        disabled=True,
        tooltip="Segment the loaded study with the model",
    )
    return {
        "predict_button": _css(predict, "predict"),
        "keep_parts": _css(keep_parts, "keep-parts"),
        "quick": _css(quick, "quick"),
        "progress": _css(W.IntProgress(value=0, min=0, max=100, layout=W.Layout(width="320px")), "progress"),
        "progress_label": _css(W.Label(""), "progress-label"),
        "message": _css(W.HTML(""), "message"),
        "warnings_html": _css(W.HTML(""), "warnings"),
        # runs SCROLL_TO_REVIEW_JS in the browser; shows nothing
        "scroller": _css(W.Output(layout=W.Layout(display="none")), "scroller"),
    }


def _results_section() -> dict[str, Any]:
    volumes, metrics = _css(W.HTML(""), "volumes"), _css(W.HTML(""), "metrics")
    downloads = _css(W.HTML(""), "downloads")
    refresh = _css(
        W.Button(
            description=FIGURE_CURRENT,
            tooltip="Rebuild the PNG figure with the current slices and settings",
            layout=W.Layout(width="auto"),
        ),
        "refresh-png",
    )
    return {
        "volumes_table": volumes,
        "metrics_table": metrics,
        "numbers_box": W.VBox(
            [W.HTML("<h3>4. Numbers</h3>"), W.HBox([volumes, metrics])], layout=W.Layout(display="none")
        ),
        "downloads_html": downloads,
        "refresh_png_button": refresh,
        "downloads_box": W.VBox(
            [W.HTML("<h3>5. Downloads</h3>"), downloads, refresh], layout=W.Layout(display="none")
        ),
    }


def build_page(review: W.Widget, harmonise_mode: W.Widget, harmonise_box: W.Widget) -> Page:
    """The whole page: header, model line, 1. Study, 2. Predict, the raw-study section, ``review``
    (3. Review), 4. Numbers and 5. Downloads."""
    parts = {**_study_section(), **_predict_section(), **_results_section()}
    p = parts
    root = W.VBox(
        [
            W.HTML(HEADER),
            p["model_status"],
            W.HTML("<h3>1. Study</h3>"),
            W.HBox([p["upload"], p["example_button"], p["example_note"]]),
            p["files_box"],
            harmonise_mode,
            W.HTML("<h3>2. Predict</h3>"),
            W.HBox([p["predict_button"], p["progress"], p["progress_label"]]),
            p["keep_parts"],
            p["quick"],
            p["message"],
            p["warnings_html"],
            harmonise_box,
            review,
            p["numbers_box"],
            p["downloads_box"],
            p["scroller"],
        ]
    )
    root.add_class("brats-app")
    return Page(widget=root, **parts)


def _file_note(entry: Entry) -> tuple[str, str]:
    """The sequence a file's dropdown starts on, and the words beside it."""
    if entry.label:  # a DICOM series: one left unrecognised (a localizer, DWI) is ignored
        detected = entry.detected or "IGNORE"
        note = (
            "detected: " + entry.detected
            if entry.detected
            else "not recognised from its description: ignored"
        )
        return detected, note
    detected = entry.detected or ""
    return detected, f"detected: {detected}" if detected else "not recognised from the name: choose"


def file_rows(
    entries: list[Entry], on_change: Callable[[Any], None]
) -> tuple[list[W.HBox], dict[str, W.Dropdown]]:
    """The file list's rows (name, size, sequence dropdown, note) and the dropdowns by entry name."""
    rows = []
    dropdowns: dict[str, W.Dropdown] = {}
    for entry in entries:
        where = f" (in {entry.source})" if entry.source != entry.name else ""
        size = f", {size_text(entry.size)}" if entry.size else ""
        label = W.HTML(
            f"<code>{html.escape(entry.label or entry.name)}</code>{html.escape(where + size)}",
            layout=W.Layout(width="420px"),
        )
        if entry.nifti:
            detected, note = _file_note(entry)
            dropdown = _css(
                W.Dropdown(options=list(MODALITY_CHOICES), value=detected, layout=W.Layout(width="200px")),
                "modality",
            )
            dropdown.observe(on_change, "value")
            dropdowns[entry.name] = dropdown
            row = W.HBox([label, dropdown, W.Label(note)])
        else:
            reason = "not a NIfTI file" if not entry.name.lower().endswith(".zip") else "not a readable zip"
            row = W.HBox([label, W.Label(reason)])
        rows.append(_css(row, "file-row"))
    return rows, dropdowns
