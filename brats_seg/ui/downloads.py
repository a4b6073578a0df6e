"""The dashboard's downloads: every result file assembled in one place, and their links.

:func:`result_files` is the one function that makes the files of a prediction (label map, report,
uncertain map, DICOM SEG, figure, harmonisation files); once the core offers ``Result.files()`` its
body becomes that call. :func:`links_html` renders them as ``data:`` links (no server route needed).
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import io, viz
from ..errors import StudyError
from ..types import Study
from .render import size_text

if TYPE_CHECKING:
    from ..harmonise import Harmonised

__all__ = ["LINKS", "ResultFiles", "data_uri_link", "figure_name", "figure_png", "links_html", "result_files"]

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


def figure_png(
    study: Study,
    seg: Any,
    volumes: Mapping[str, Any],
    scores: Mapping[str, Any] | None,
    viewer: viz.SliceViewer | None,
) -> bytes:
    """The PNG figure of the three views (:func:`brats_seg.viz.export_png`) as ``viewer`` shows them now."""
    kwargs: dict[str, Any] = {}
    if viewer is not None:
        s = viewer.settings
        kwargs = {
            "background": s.background,
            "position": list(viewer.position),
            "mode": s.mode,
            "opacity": s.opacity,
            "percentiles": s.percentiles,
            "visible_labels": sorted(s.visible),
        }
    return viz.export_png(study, seg.labels, volumes, scores=scores, uncertain=seg.uncertain, **kwargs)


def _dicom_seg(study: Study, labels: Any, model: Any, folder: Path) -> bytes:
    from .. import __version__
    from ..dicom import write_segmentation

    path = write_segmentation(
        labels,
        study,
        folder / f"{study.name}_seg.dcm",
        model_name=model.card.name,
        software_version=f"brats-seg {__version__}",
    )
    return path.read_bytes()


def result_files(
    study: Study,
    seg: Any,
    model: Any,
    *,
    report: Mapping[str, Any],
    figure: bytes,
    harmonised: Harmonised | None = None,
) -> ResultFiles:
    """Every download of one prediction, by file name (as ``brats-seg predict`` writes them).

    Args:
        study: The study the model read.
        seg: Its :class:`brats_seg.pipeline.Segmentation`.
        model: The model (its card names the DICOM SEG's algorithm).
        report: The report (:func:`brats_seg.report.study_report`), written as JSON.
        figure: The PNG figure (:func:`figure_png`).
        harmonised: The harmonisation that made ``study`` from a raw one: the labels go back onto
            its reference's native grid and its own files are added.

    Returns:
        ``<study>_seg.nii.gz``, ``_report.json``, ``_uncertain.nii.gz`` (when measured), ``_seg.dcm``
        (a DICOM study whose headers allow it; else a note), the harmonisation's files, ``_views.png``.
    """
    name = study.name
    labels = seg.native or seg.labels  # a raw study's labels go back onto its native T1CE grid
    files: dict[str, tuple[str, bytes]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="brats_seg_app_") as tmp:
        folder = Path(tmp)
        files[f"{name}_seg.nii.gz"] = (
            "application/gzip",
            io.save_labels(labels, folder / "seg.nii.gz").read_bytes(),
        )
        files[f"{name}_report.json"] = ("application/json", (json.dumps(report, indent=2) + "\n").encode())
        if seg.uncertain is not None:  # as `brats-seg predict --uncertain-map` writes it
            uncertain = seg.uncertain if seg.native is None else seg.native_uncertain
            path = io.save_hesitation(uncertain, labels, folder / "uncertain.nii.gz")
            files[f"{name}_uncertain.nii.gz"] = ("application/gzip", path.read_bytes())
        if study.dicom:
            try:
                files[f"{name}_seg.dcm"] = ("application/dicom", _dicom_seg(study, labels, model, folder))
            except StudyError as e:
                notes.append(f"No DICOM SEG download: {e}")
    if harmonised is not None and seg.native is not None:
        from ..harmonise_outputs import harmonised_files

        files.update(harmonised_files(harmonised, seg.labels, seg.native))
    files[figure_name(study)] = ("image/png", figure)
    return ResultFiles(files, notes)


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
