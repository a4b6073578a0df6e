"""What :func:`brats_seg.pipeline.segment` returns, and the files it becomes.

:meth:`Segmentation.files` is the one place that turns a result into files (names and bytes), for the
dashboard's downloads; :meth:`Segmentation.write` puts them in a folder, for the CLI. A new output is
added there, once. The files of a study named ``<study>``:

- ``<study>_seg.nii.gz``: the labels with the input's geometry (for a harmonised raw study, on the
  reference's native grid);
- ``<study>_report.json``: inputs and their sha256, model, settings, volumes, warnings, timings
  (:meth:`Segmentation.study_report`);
- ``<study>_uncertain.nii.gz``: 1 where the label changes between the decision thresholds 0.7 and 0.3
  (models with region sigmoids);
- ``<study>_seg.dcm``: a DICOM Segmentation on the T1CE series (DICOM input);
- for a harmonised raw study, ``<study>_seg_1mm.nii.gz``, ``<study>_registration.png``,
  ``<study>_native.png`` and, when asked, ``<study>_preprocessed/`` (:mod:`brats_seg.harmonise_outputs`);
- ``<study>_views.png``: the three views with the volume table (:func:`brats_seg.viz.export_png`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import StudyError
from .files import save_labels, save_uncertain
from .report import volumes
from .types import LabelMap, Study

if TYPE_CHECKING:
    from .harmonise import Harmonised
    from .model import Model

__all__ = ["MIME_TYPES", "Segmentation", "complete", "mime_type", "report_path", "write_atomic"]

#: The MIME type of each kind of file, by the end of its name (the first that matches).
MIME_TYPES: dict[str, str] = {
    ".nii.gz": "application/gzip",
    ".json": "application/json",
    ".png": "image/png",
    ".dcm": "application/dicom",
}


def mime_type(name: str) -> str:
    """The MIME type of a file of :meth:`Segmentation.files`, by its name (else application/octet-stream)."""
    return next((mime for end, mime in MIME_TYPES.items() if name.endswith(end)), "application/octet-stream")


@dataclass
class Segmentation:
    """The result of :func:`brats_seg.pipeline.segment`.

    Attributes:
        labels: BraTS label map on the study's grid, with the study's affine and header.
        settings: The sliding-window settings used.
        timings: Seconds spent in each step (``prepare``, ``predict``, ``postprocess``, ``total``).
        warnings: Ways in which the study differs from what the model was trained on
            (:func:`brats_seg.quality.check_study`); the labels are made all the same.
        volume_range: How the volumes move with the decision threshold
            (:func:`brats_seg.pipeline.volume_range`), for models with region sigmoids; ``None`` otherwise.
        uncertain: Where the label at the strictest of those thresholds differs from the label at the
            loosest (boolean, on the study's grid): the uncertain voxels (with the card's
            post-processing, a whole part kept at one threshold and not the other counts too).
            ``None`` with ``volume_range``.
        native: For a harmonised raw study, the labels on the reference file's own grid
            (:func:`brats_seg.harmonise.to_native`); ``labels`` and the volumes stay on the 1 mm grid
            the model labelled. ``None`` otherwise.
        native_uncertain: ``uncertain`` on that native grid, or ``None``.
        harmonisation: :meth:`brats_seg.harmonise.Harmonised.record` of a harmonised study, or ``None``.
        harmonised: The harmonisation itself (for the pictures of its files), or ``None``.
        correction: When a person corrected the labels (:func:`brats_seg.editing.correction_record`):
            who, the model, and the voxels changed per label; the report records it. ``None`` otherwise.
    """

    labels: LabelMap
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    volume_range: dict[str, Any] | None = None
    uncertain: np.ndarray | None = None
    native: LabelMap | None = None
    native_uncertain: np.ndarray | None = None
    harmonisation: dict[str, Any] | None = None
    harmonised: Harmonised | None = None
    correction: dict[str, Any] | None = None

    @property
    def output_labels(self) -> LabelMap:
        """The labels in ``<study>_seg.nii.gz``: on the native grid of a harmonised study, else ``labels``."""
        return self.labels if self.native is None else self.native

    @property
    def output_uncertain(self) -> np.ndarray | None:
        """``uncertain`` on the grid of :attr:`output_labels`, or ``None``."""
        return self.uncertain if self.native is None else self.native_uncertain

    def study_report(
        self, study: Study, model: Model, *, scores: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The JSON report of one prediction (``<study>_report.json``).

        Args:
            study: The segmented study (its source file names and sha256 are listed under ``inputs``).
            model: The model used (name, file sha256 and folder are recorded).
            scores: :func:`brats_seg.metrics.score` against the ground truth, when there is one.
        """
        from . import __version__

        card = model.card
        report: dict[str, Any] = {
            "study": study.name,
            "inputs": {
                m: {"file": study.sources.get(m), "sha256": study.sha256.get(m)} for m in study.sources
            },
            "shape": list(study.shape),
            "spacing_mm": list(study.spacing),
            "model": {
                "name": card.name,
                "files": {f: card.sha256[f] for f in card.files},
                "directory": str(model.directory),
            },
            "settings": self.settings,
            "volumes": volumes(self.labels),
            "warnings": list(self.warnings),
            "timings_s": self.timings,
            "brats_seg": __version__,
            "intended_use": "Research only, not for clinical use.",
        }
        if self.volume_range is not None:
            report["volume_range"] = {
                **self.volume_range,
                "meaning": "mL of each label and region if the labels were decoded at these thresholds "
                "instead of the card's: the volume's sensitivity to the decision threshold, not a calibrated "
                "interval",
            }
        if self.harmonisation is not None:
            report["harmonisation"] = {
                **self.harmonisation,
                "volumes_on": "the 1 mm grid the model labelled (exact voxel counts of its labels); the "
                "label map on the native grid is those labels resampled, so its voxel counts differ a little",
            }
        if self.correction is not None:
            report["correction"] = {
                **self.correction,
                "meaning": "the labels were corrected by a person after the model made them; volumes, "
                "scores and files are of the corrected labels, the uncertain voxels are the model's",
            }
        if scores is not None:
            report["scores"] = scores
        return report

    def views_png(self, study: Study, *, scores: Mapping[str, Any] | None = None, **view: Any) -> bytes:
        """``<study>_views.png``: :func:`brats_seg.viz.export_png` of the labels, volumes and scores.

        Args:
            study: The study the model labelled (for a harmonised raw study, its 1 mm study).
            scores: :func:`brats_seg.metrics.score` against the ground truth, shown beside the volumes.
            **view: The view's settings (``background``, ``position``, ``mode``, ``opacity``,
                ``percentiles``, ``visible_labels``) as :func:`brats_seg.viz.export_png` takes them.
        """
        from .viz import export_png

        return export_png(
            study, self.labels, volumes(self.labels), scores=scores, uncertain=self.uncertain, **view
        )

    def files(
        self,
        study: Study,
        model: Model,
        *,
        uncertain_map: bool = True,
        dicom_seg: bool = False,
        preprocessed: bool = False,
        scores: Mapping[str, Any] | None = None,
        views: Mapping[str, Any] | None = None,
        problems: list[str] | None = None,
        started: float | None = None,
    ) -> dict[str, bytes]:
        """The result's files, by file name (see the module's description), in the order above.

        Args:
            study: The study the model labelled (for a harmonised raw study, its 1 mm study).
            model: The model used (for the report and the DICOM Segmentation).
            uncertain_map: Add ``<study>_uncertain.nii.gz`` (when the model has one: region sigmoids).
            dicom_seg: Add ``<study>_seg.dcm``, a DICOM Segmentation on the T1CE series.
            preprocessed: For a harmonised study, add ``<study>_preprocessed/``: the four sequences
                and the brain mask on the 1 mm grid the model read, BraTS-named.
            scores: :func:`brats_seg.metrics.score` for the report; ``None``: scored against the
                study's ground truth when it has one.
            views: Add ``<study>_views.png`` drawn with these view settings (see :meth:`views_png`);
                ``None``: no picture.
            problems: Where to say why an asked-for file cannot be made (a DICOM Segmentation of
                NIfTI input): the reason is appended and the file left out; ``None``: raise.
            started: ``time.perf_counter()`` when the study began loading: the report's timings then
                add ``wall``, the seconds from then until every other file was made.

        Raises:
            StudyError: when a DICOM Segmentation is asked for and cannot be made, and ``problems`` is
                ``None``.
        """
        if scores is None and study.truth is not None:
            from .metrics import score

            scores = score(self.labels, study.truth_map)
        name = study.name
        files = {
            f"{name}_seg.nii.gz": _nifti_bytes(f"{name}_seg.nii.gz", save_labels, self.output_labels),
            f"{name}_report.json": b"",
        }  # made last, for its wall time; here for the order
        uncertain = self.output_uncertain
        if uncertain_map and uncertain is not None:
            files[f"{name}_uncertain.nii.gz"] = _nifti_bytes(
                f"{name}_uncertain.nii.gz", save_uncertain, uncertain, self.output_labels
            )
        if dicom_seg:
            self._add_dicom_seg(files, study, model, problems)
        if self.harmonised is not None and self.native is not None:
            from .harmonise_outputs import harmonised_files

            extra = harmonised_files(self.harmonised, self.labels, self.native, preprocessed=preprocessed)
            files.update({file: data for file, (_mime, data) in extra.items()})
        if views is not None:
            files[f"{name}_views.png"] = self.views_png(study, scores=scores, **views)
        files[f"{name}_report.json"] = self._report_bytes(study, model, scores=scores, started=started)
        return files

    def _add_dicom_seg(
        self, files: dict[str, bytes], study: Study, model: Model, problems: list[str] | None
    ) -> None:
        """Add ``<study>_seg.dcm``, or say in ``problems`` why it cannot be made (raise without them)."""
        try:
            files[f"{study.name}_seg.dcm"] = self._dicom_seg(study, model)
        except StudyError as e:
            if problems is None:
                raise
            problems.append(str(e))

    def _report_bytes(
        self, study: Study, model: Model, *, scores: Mapping[str, Any] | None, started: float | None
    ) -> bytes:
        """``<study>_report.json``; with ``started``, its timings add ``wall``: the seconds until now."""
        timed = self
        if started is not None:
            timed = replace(self, timings={**self.timings, "wall": round(time.perf_counter() - started, 3)})
        return (json.dumps(timed.study_report(study, model, scores=scores), indent=2) + "\n").encode()

    def write(self, folder: Path, study: Study, model: Model, **options: Any) -> list[Path]:
        """Write :meth:`files` into ``folder`` (created if needed); returns their paths, in that order.

        Each file is written under a temporary name beside its place and renamed into it, and the report
        ``<study>_report.json`` is written last: when the report is there, so is every other file of the
        same call (:func:`complete`), also after a crash or a killed worker.

        Args:
            folder: The output folder; files go to ``folder / name`` (``<study>_preprocessed/``: a subfolder).
            study: As for :meth:`files`.
            model: As for :meth:`files`.
            **options: The keyword options of :meth:`files`.
        """
        files = self.files(study, model, **options)
        report = f"{study.name}_report.json"
        for name in [*(n for n in files if n != report), report]:
            write_atomic(Path(folder) / name, files[name])
        return [Path(folder) / name for name in files]

    def _dicom_seg(self, study: Study, model: Model) -> bytes:
        """``<study>_seg.dcm`` (:func:`brats_seg.files.write_dicom_seg`) of the output labels."""
        from . import __version__
        from .files import write_dicom_seg

        if study.dicom is None:
            raise StudyError(
                f"{study.name}: NIfTI input, so no DICOM Segmentation (its NIfTI labels were written)"
            )
        with tempfile.TemporaryDirectory(prefix="brats_seg_result_") as tmp:
            path = write_dicom_seg(
                self.output_labels,
                study,
                Path(tmp) / f"{study.name}_seg.dcm",
                model_name=model.card.name,
                software_version=f"brats-seg {__version__}",
            )
            return path.read_bytes()


def report_path(folder: Path, name: str) -> Path:
    """Where :meth:`Segmentation.write` puts the report of the study ``name``."""
    return Path(folder) / f"{name}_report.json"


def complete(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds the complete output of the study ``name``: its report, written last.

    :meth:`Segmentation.write` renames each file into place and the report after all the others, so a
    write that stopped half-way leaves no report. Which options made the files is not compared: a
    study written without ``--uncertain-map`` counts as complete for a run with it.
    """
    return report_path(folder, name).is_file()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (its folder created if needed) so that ``path`` is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _nifti_bytes(name: str, save: Any, *args: Any) -> bytes:
    """The bytes of the file ``name`` as ``save(*args, path)`` (a :mod:`brats_seg.files` writer) writes it.

    The name matters: gzip records it in the file.
    """
    with tempfile.TemporaryDirectory(prefix="brats_seg_result_") as tmp:
        return save(*args, Path(tmp) / name).read_bytes()
