"""The dashboard's downloads: every result file assembled in one place, and their links.

:func:`result_files` asks the core for the files of a prediction (label map, report, uncertain map,
DICOM SEG, figure, harmonisation files: :meth:`brats_seg.result.Segmentation.files`, which the CLI
writes too), so a new output is added once. :func:`links_html` renders them as ``data:`` links (no
server route needed).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import viz
from ..result import Segmentation, mime_type
from ..types import Study
from .render import size_text

__all__ = [
    "LINKS",
    "ResultFiles",
    "data_uri_link",
    "figure_name",
    "figure_png",
    "links_html",
    "result_files",
    "view_settings",
]

#: File name ending -> (link text, CSS class); the first ending that matches names the link.
LINKS: dict[str, tuple[str, str]] = {
    "_uncertain.nii.gz": ("Uncertain voxels (NIfTI)", "brats-download-uncertain"),
    ".nii.gz": ("Label map (NIfTI)", "brats-download-nifti"),
    ".json": ("Report (JSON)", "brats-download-json"),
    ".png": ("Figure (PNG)", "brats-download-png"),
    ".dcm": ("Segmentation (DICOM SEG)", "brats-download-dicom-seg"),
}


@dataclass
class ResultFiles:
    """The files of one prediction and why some are missing.

    Attributes:
        files: File name -> (MIME type, bytes), in the order the links show them.
        notes: Sentences for the page about files that could not be made (no DICOM SEG, say).
    """

    files: dict[str, tuple[str, bytes]]
    notes: list[str] = field(default_factory=list)


def figure_name(study: Study) -> str:
    """The figure's file name: ``<study>_views.png``."""
    return f"{study.name}_views.png"


def view_settings(viewer: viz.SliceViewer | None) -> dict[str, Any]:
    """The views' settings as :func:`brats_seg.viz.export_png` takes them (``{}`` without a viewer)."""
    if viewer is None:
        return {}
    s = viewer.settings
    return {
        "background": s.background,
        "position": list(viewer.position),
        "mode": s.mode,
        "opacity": s.opacity,
        "percentiles": s.percentiles,
        "visible_labels": sorted(s.visible),
    }


def figure_png(
    study: Study, seg: Segmentation, scores: Mapping[str, Any] | None, viewer: viz.SliceViewer | None
) -> bytes:
    """The PNG figure of the three views as ``viewer`` shows them now (:meth:`Segmentation.views_png`)."""
    return seg.views_png(study, scores=scores, **view_settings(viewer))


def result_files(
    study: Study,
    seg: Segmentation,
    model: Any,
    *,
    scores: Mapping[str, Any] | None,
    viewer: viz.SliceViewer | None,
) -> ResultFiles:
    """Every download of one prediction: :meth:`Segmentation.files`, as ``brats-seg predict`` writes them.

    Args:
        study: The study the model read.
        seg: Its segmentation (for a harmonised raw study, the labels go back onto its native grid and
            the harmonisation's own files are added).
        model: The model (its card names the DICOM SEG's algorithm).
        scores: Dice and HD95 against the ground truth, or ``None``.
        viewer: The views, whose settings the figure shows.

    Returns:
        The files with their MIME types; a note where a DICOM SEG could not be made.
    """
    problems: list[str] = []
    files = seg.files(
        study,
        model,
        dicom_seg=bool(study.dicom),
        scores=scores,
        views=view_settings(viewer),
        problems=problems,
    )
    return ResultFiles(
        {name: (mime_type(name), data) for name, data in files.items()},
        [f"No DICOM SEG download: {p}" for p in problems],
    )


def data_uri_link(filename: str, data: bytes, mime: str, text: str, *, css: str = "") -> str:
    """An ``<a download>`` link carrying ``data`` as a base64 ``data:`` URI (works in Voilà without a
    server route)."""
    payload = base64.b64encode(data).decode("ascii")
    return (
        f'<span class="brats-download"><a class="{css}" download="{html.escape(filename)}" '
        f'href="data:{mime};base64,{payload}">{html.escape(text)}</a> '
        f"<small>({size_text(len(data))})</small></span>"
    )


def links_html(files: Mapping[str, tuple[str, bytes]]) -> str:
    """The download links of ``files`` (file name -> (MIME type, bytes)), named by :data:`LINKS`."""
    links = []
    for name, (mime, data) in files.items():
        text, css = next(v for k, v in LINKS.items() if name.endswith(k))
        links.append(data_uri_link(name, data, mime, text, css=css))
    return " ".join(links)
