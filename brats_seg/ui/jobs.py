"""The work behind the dashboard's buttons, without widgets: load an upload, measure a prediction.

Loading and validating is :mod:`brats_seg.files` (and :mod:`brats_seg.harmonise` for a raw study),
the prediction :func:`brats_seg.pipeline.segment`, the numbers :mod:`brats_seg.report` and
:mod:`brats_seg.metrics`. Torch is imported only by the functions that predict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import quality, report
from ..errors import StudyError
from ..files import SEG, load_native_study_from_bytes, load_study_from_bytes
from ..types import MODALITIES, Study
from .state import Result

if TYPE_CHECKING:
    from ..harmonise import Harmonised
    from ..turns import Turns

__all__ = ["explain_load_error", "load_upload", "loaded_message", "measure", "segment", "timings_text"]


def load_upload(
    files: Mapping[str, bytes | memoryview],
    mapping: Mapping[str, str] | None,
    *,
    mode: str,
    turns: Turns,
    say: Callable[[str], None],
    wait: Callable[[int, float], None],
) -> tuple[Study, Harmonised | None]:
    """The uploaded study as the model reads it: harmonised when it is raw (and ``mode`` allows).

    Args:
        files: File name -> content.
        mapping: File name -> sequence as chosen in the file list, or None.
        mode: ``auto``, ``on`` or ``off`` (:data:`brats_seg.harmonise.MODES`).
        turns: The server's queue of heavy jobs (harmonising waits for its turn).
        say: Shows a progress line.
        wait: Shows this session's place in the queue (:meth:`brats_seg.turns.Turns.turn`).

    Returns:
        The study, and the harmonisation that made it (None for a BraTS-like study).
    """
    from ..harmonise import decide, harmonise

    if mode == "off":
        return load_study_from_bytes(files, mapping=mapping), None
    raw = load_native_study_from_bytes(files, mapping=mapping)
    reasons = decide(raw, mode=mode)
    if not reasons:
        return raw.to_study(), None
    with turns.turn(wait):  # a heavy job: after the other sessions' jobs
        harmonised = harmonise(
            raw, reasons=reasons, progress=lambda text: say(f"Preprocessing {raw.name}: {text}")
        )
    say(f"Preprocessed in {timings_text(harmonised.timings)}")
    return harmonised.study, harmonised


def timings_text(timings: Mapping[str, float]) -> str:
    """``"12.0 s: register 8.0 s, skull strip 4.0 s"`` from timings with a ``total``."""
    steps = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timings.items() if k != "total")
    return f"{timings['total']:.1f} s: {steps}"


def explain_load_error(error: StudyError, files: Mapping[str, Any]) -> StudyError:
    """``error`` with what to do when the upload names several studies or is incomplete."""
    studies = quality.file_studies({name: name for name in files})
    if len(studies) > 1:
        return StudyError(
            f"{error}. The files name {len(studies)} studies ({', '.join(studies)}): upload one study at a "
            "time, "
            'or choose "ignore" in the list next to each file of the others.'
        )
    if len(files) < 4 and not any(name.lower().endswith(".zip") for name in files):
        return StudyError(
            f"{error}. Each upload replaces the files before it: select the four sequences (and the ground "
            "truth, if any) together in one upload, or upload one .zip of them."
        )
    return error


def loaded_message(study: Study, harmonised: Harmonised | None, origin: str) -> str:
    """The information line once a study is loaded."""
    found = ", ".join(f"{m} {study.sources[m]}" for m in MODALITIES)
    truth = f"; ground truth {study.sources[SEG]}" if study.truth is not None else ""
    raw, grid = "", study.grid_text
    if harmonised is not None:
        raw = (
            f" Raw study: preprocessed in {harmonised.timings['total']:.1f} s onto {study.grid_text} (see "
            '"Preprocessing of a raw study" below: check the registration).'
        )
        shape = harmonised.native.shape
        grid = f"as uploaded {shape[0]} x {shape[1]} x {shape[2]} ({harmonised.reference})"
    return f"Loaded {study.name} ({origin}): {grid}; {found}{truth}.{raw} Press Predict."


def segment(
    study: Study,
    model: Any,
    *,
    keep_parts: bool,
    quick: bool,
    progress: Callable[[float], None],
    harmonised: Harmonised | None,
) -> Any:
    """:func:`brats_seg.pipeline.segment` with the page's choices (its input warnings included:
    the page shows ``Segmentation.warnings`` after Predict instead of checking the study again)."""
    from .. import pipeline

    return pipeline.segment(
        study,
        model,
        postprocess=not keep_parts,
        tta_flips=False if quick else None,
        progress=progress,
        harmonised=harmonised,
    )


def measure(study: Study, seg: Any, model: Any) -> Result:
    """Volumes, scores against the ground truth (if any) and the report of a prediction."""
    vols = report.volumes(seg.labels)
    truth_vols = scores = None
    if study.truth is not None:
        from ..metrics import score

        truth_vols = report.volumes(study.truth_map)
        scores = score(seg.labels, study.truth_map)
    rep = seg.study_report(study, model, scores=scores)
    return Result(study, seg, vols, truth_vols, scores, rep)
