"""``brats-seg predict``: segment studies, write their files (:meth:`brats_seg.result.Segmentation.write`)."""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StudyError
from .common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    make_output_dir,
    one_line,
    progress_bar,
    resolve_inputs,
    window_kwargs,
)
from .outcome import Outcome, source_text

if TYPE_CHECKING:
    from ..harmonise import Harmonised
    from ..model import Model
    from ..result import Segmentation
    from ..types import Study


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict each study of ``args.inputs``; a study refused in a batch is skipped (exit 2 at the end).

    With ``--workers`` or ``--scheduler`` the studies run on a Dask cluster (:func:`predict_on_cluster`).
    """
    sources = resolve_inputs(args.inputs)
    make_output_dir(args.output)
    if getattr(args, "workers", None) or getattr(args, "scheduler", None):
        return predict_on_cluster(sources, args)
    single = len(sources) == 1
    failures = 0
    for src in sources:
        outcome = predict_study(src, args, single=single)
        if outcome.status == "failed" and not outcome.line:  # refused while loading
            if single:
                raise StudyError(outcome.reason)
            print(f"skipping {outcome.name}: {outcome.reason}", file=sys.stderr)
        outcome.emit()
        if outcome.status == "failed" and outcome.line and single:
            raise StudyError(outcome.reason)
        failures += outcome.status == "failed"
    if failures:
        print(f"brats-seg predict: {failures} of {len(sources)} studies skipped (bad input)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def predict_study(
    src: Any, args: argparse.Namespace, *, single: bool, skip_complete: bool = False
) -> Outcome:
    """Load, segment and write one study; the one place that does, here or on a cluster's worker.

    Prints nothing but the live progress (``--no-progress`` hides it): the lines are in the outcome.

    Args:
        src: A study source of :func:`~brats_seg.cli.common.resolve_inputs`.
        args: The ``predict`` options.
        single: Whether the study is the only one (``--name`` applies; the caller raises on failure).
        skip_complete: Skip the study when ``--output`` already holds its complete output
            (:func:`brats_seg.result.complete`), checked once it has loaded.

    Returns:
        ``done``; ``skipped``; or ``failed``: refused while loading (``line`` empty) or, its other files
        written, without an asked-for DICOM Segmentation (``reason`` says why).

    Raises:
        ModelError: for a model folder that cannot be loaded; other errors are internal ones.
    """
    from ..result import complete, report_path

    started = time.perf_counter()
    outcome = Outcome(name=source_text(src), status="failed")
    try:
        study, harmonised = load_for_predict(src, args, single=single, notes=outcome.out)
    except StudyError as e:
        outcome.reason = one_line(e)
        return outcome
    outcome.name = study.name
    if skip_complete and complete(args.output, study.name):
        outcome.status = "skipped"
        outcome.line = f"skipped: complete ({report_path(args.output, study.name)})"
        return outcome
    seconds_loading = time.perf_counter() - started
    from ..model import load_model  # torch, MONAI, fastai: seconds and a GB, only for work to do

    model = load_model(args.model, device=args.device, backend=args.backend)  # once per process: cached
    seg = _segment(study, model, harmonised, args)
    seg.timings["load"] = round(seconds_loading, 3)
    _write(study, seg, model, args, started=started, outcome=outcome, single=single)
    outcome.model_id, outcome.seconds = id(model), time.perf_counter() - started
    return outcome


def predict_on_cluster(sources: list[Any], args: argparse.Namespace) -> int:
    """``predict --workers N`` or ``--scheduler ADDRESS``: each study a task on a Dask cluster.

    A study whose complete output is already in ``--output`` is skipped without a task when its name
    is known from its folder, else on the worker once it has loaded; a failed study is retried by the
    next run. Exit status 2 when a study failed.
    """
    from ..result import complete, report_path
    from .on_cluster import run_on_cluster

    single = len(sources) == 1
    done: list[Outcome] = []
    todo: list[Any] = []
    for src in sources:
        name = expected_name(src, args, single=single)
        if name is not None and complete(args.output, name):
            line = f"skipped: complete ({report_path(args.output, name)})"
            done.append(Outcome(name=name, status="skipped", line=line))
        else:
            todo.append(src)
    task = partial(predict_study, args=worker_args(args), single=single, skip_complete=True)
    progress = run_on_cluster(task, todo, args, statuses=("done", "skipped", "failed"), settled=done)
    return EXIT_BAD_INPUT if progress.counts["failed"] else EXIT_OK


def expected_name(src: Any, args: argparse.Namespace, *, single: bool) -> str | None:
    """The study's name as loading will give it, where that is known without reading the study.

    ``--name`` for a single study; a folder's name for a folder that holds the NIfTI files itself;
    else None (a zip, DICOM, a study in a subfolder, four files: known once loaded).
    """
    from ..files.folders import nifti_files

    if single and args.name:
        return args.name
    if isinstance(src, Path) and src.is_dir() and nifti_files(src):
        return src.name
    return None


def worker_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options as a worker gets them: no progress bars, nothing the worker does not need."""
    return argparse.Namespace(**{**vars(args), "no_progress": True, "argv": None})


def _segment(
    study: Study, model: Model, harmonised: Harmonised | None, args: argparse.Namespace
) -> Segmentation:
    """:func:`brats_seg.pipeline.segment` with a progress bar and the window options."""
    from .. import pipeline

    bar, update = progress_bar(not args.no_progress, study.name)
    try:
        return pipeline.segment(study, model, progress=update, harmonised=harmonised, **window_kwargs(args))
    finally:
        bar.close()


def _write(
    study: Study,
    seg: Segmentation,
    model: Model,
    args: argparse.Namespace,
    *,
    started: float,
    outcome: Outcome,
    single: bool,
) -> None:
    """Write the study's files and say so in ``outcome``: ``failed`` when an asked-for DICOM
    Segmentation could not be made (its other files are written), else ``done``.

    ``started`` is ``time.perf_counter()`` when the study began loading (the report's ``wall`` time).
    """
    problems: list[str] = []
    seg.write(
        args.output,
        study,
        model,
        uncertain_map=args.uncertain_map,
        dicom_seg=args.dicom_seg,
        preprocessed=args.save_preprocessed,
        problems=problems,
        started=started,
    )
    labels = args.output / f"{study.name}_seg.nii.gz"
    outcome.line = f"{labels} ({wt_line(seg)}, {time.perf_counter() - started:.1f} s)"
    outcome.out.append(outcome.summary)
    if args.uncertain_map and seg.uncertain is None:
        outcome.err.append(
            f"no uncertain map for {study.name}: model {model.card.name} does not output region "
            "sigmoids, so it has no decision threshold to vary"
        )
    outcome.err.extend(f"warning: {warning}" for warning in seg.warnings)
    outcome.status, outcome.reason = ("failed", problems[0]) if problems else ("done", "")
    if problems and not single:
        outcome.err.extend(f"no DICOM SEG for {study.name}: {problem}" for problem in problems)
    if args.dicom_seg and not problems:
        outcome.out.append(f"{study.name}: DICOM Segmentation {args.output / f'{study.name}_seg.dcm'}")


def wt_line(seg: Segmentation) -> str:
    """``WT 30.7 mL, 25.7–41.5 mL at thresholds 0.7–0.3`` (the range when the model has one)."""
    from ..report import volumes

    ranges = ""
    if seg.volume_range is not None:
        low, high = min(seg.volume_range["regions"]["WT"]), max(seg.volume_range["regions"]["WT"])
        ts = seg.volume_range["thresholds"]
        ranges = f", {low:.1f}\u2013{high:.1f} mL at thresholds {ts[0]:g}\u2013{ts[-1]:g}"
    return f"WT {volumes(seg.labels)['regions']['WT']['mL']:.1f} mL{ranges}"


def load_for_predict(
    src: Any, args: argparse.Namespace, *, single: bool, notes: list[str] | None = None
) -> tuple[Study, Harmonised | None]:
    """Load one study, harmonised if ``--harmonise`` says so (:func:`brats_seg.harmonise.load_for_model`).

    The line that says how a raw study was harmonised goes to ``notes``, else to stdout.
    """
    from ..harmonise import load_for_model

    study, harmonised = load_for_model(
        src,
        mapping=dict(args.mapping or ()),
        name=args.name if single else None,
        mode=args.harmonise,
        partial_mapping=not single,
        need_dicom=args.dicom_seg and single,
        progress=None if args.no_progress else lambda text: print(text, file=sys.stderr),
    )
    if harmonised is not None:
        t = harmonised.timings
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if k != "total")
        note = f"{study.name}: harmonised ({'; '.join(harmonised.reasons)}) in {t['total']:.1f} s: {steps}"
        if notes is None:
            print(note)
        else:
            notes.append(note)
    return study, harmonised
