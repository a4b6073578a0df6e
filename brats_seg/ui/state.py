"""The dashboard session's state, kept in Python: what is loaded, predicted and shown.

The widgets show this state (rendered by :mod:`brats_seg.ui.render` and :mod:`brats_seg.ui.downloads`);
nothing is read back from their HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..types import Study
from .entries import Entry

if TYPE_CHECKING:
    from ..harmonise import Harmonised

__all__ = ["Result", "Session"]


@dataclass
class Result:
    """One prediction and what is shown and offered for download about it.

    Attributes:
        study: The study the model read.
        segmentation: Its :class:`brats_seg.pipeline.Segmentation`.
        volumes: :func:`brats_seg.report.volumes` of the labels.
        truth_volumes: The same of the ground truth, or None.
        scores: Dice and HD95 per region against the ground truth, or None.
        report: The JSON report (:func:`brats_seg.report.study_report`).
        downloads: File name -> (MIME type, bytes) of the download links.
        volumes_shown: The volumes table's numbers: row -> column -> mL
            (:func:`brats_seg.ui.render.volume_rows`).
        notes: Sentences for the page about downloads that could not be made.
        model_segmentation: The model's own segmentation when ``segmentation`` holds a person's
            corrections (:mod:`brats_seg.ui.editing`), else None.
    """

    study: Study
    segmentation: Any
    volumes: dict[str, Any]
    truth_volumes: dict[str, Any] | None
    scores: dict[str, dict[str, float]] | None
    report: dict[str, Any]
    downloads: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    volumes_shown: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    model_segmentation: Any = None


@dataclass
class Session:
    """What one visitor's dashboard holds.

    Attributes:
        files: File name -> content of the last upload (or the example's files).
        entries: Those files as the file list shows them.
        study: The loaded study, or None.
        harmonised: The harmonisation that made ``study`` from a raw study, or None.
        result: The last prediction, or None.
        warnings: The input warnings shown under the message.
        message_text: The message shown in the page, as plain text.
        message_kind: ``"error"``, ``"info"`` or ``""`` (no message).
        busy: Whether a prediction or an example download is running.
        run_count: Number of predictions started (a second click while running starts none).
        scroll_count: Times the page was scrolled to the review section.
        scrolled_study: The study whose first prediction scrolled the page.
    """

    files: dict[str, bytes | memoryview] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    study: Study | None = None
    harmonised: Harmonised | None = None
    result: Result | None = None
    warnings: list[str] = field(default_factory=list)
    message_text: str = ""
    message_kind: str = ""
    busy: bool = False
    run_count: int = 0
    scroll_count: int = 0
    scrolled_study: Study | None = None
