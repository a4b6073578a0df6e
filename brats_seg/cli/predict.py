"""``brats-seg predict``: segment studies, write their files (:meth:`brats_seg.result.Segmentation.write`)."""

from __future__ import annotations

import argparse
import sys
import time
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

if TYPE_CHECKING:
    from ..harmonise import Harmonised
    from ..model import Model
    from ..result import Segmentation
    from ..types import Study


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict each study of ``args.inputs``; a study refused in a batch is skipped (exit 2 at the end)."""
    sources = resolve_inputs(args.inputs)
    make_output_dir(args.output)
    single = len(sources) == 1
    model = None
    failures = 0
    for src in sources:
        t0 = time.perf_counter()
        try:
            study, harmonised = load_for_predict(src, args, single=single)
        except StudyError as e:
            if single:
                raise
            print(f"skipping {src}: {one_line(e)}", file=sys.stderr)
            failures += 1
            continue
        seconds_loading = time.perf_counter() - t0
        if model is None:  # after the first study passed its checks: bad input is refused without this cost
            from ..model import load_model  # torch, MONAI, fastai: seconds and a GB, only for work to do

            model = load_model(args.model, device=args.device, backend=args.backend)
        seg = _segment(study, model, harmonised, args)
        seg.timings["load"] = round(seconds_loading, 3)
        failures += not _write(study, seg, model, args, started=t0, single=single)
    if failures:
        print(f"brats-seg predict: {failures} of {len(sources)} studies skipped (bad input)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


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
    study: Study, seg: Segmentation, model: Model, args: argparse.Namespace, *, started: float, single: bool
) -> bool:
    """Write the study's files and say so; False when an asked-for DICOM Segmentation could not be made.

    ``started`` is ``time.perf_counter()`` when the study began loading (the report's ``wall`` time).

    Raises:
        StudyError: for a single study whose DICOM Segmentation cannot be made (its other files are written).
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
    print(f"{study.name}: {labels} ({wt_line(seg)}, {time.perf_counter() - started:.1f} s)")
    if args.uncertain_map and seg.uncertain is None:
        print(
            f"no uncertain map for {study.name}: model {model.card.name} does not output region "
            "sigmoids, so it has no decision threshold to vary",
            file=sys.stderr,
        )
    for warning in seg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if problems and single:
        raise StudyError(problems[0])
    for problem in problems:
        print(f"no DICOM SEG for {study.name}: {problem}", file=sys.stderr)
    if args.dicom_seg and not problems:
        print(f"{study.name}: DICOM Segmentation {args.output / f'{study.name}_seg.dcm'}")
    return not problems


def wt_line(seg: Segmentation) -> str:
    """``WT 30.7 mL, 25.7–41.5 mL at thresholds 0.7–0.3`` (the range when the model has one)."""
    from ..report import volumes

    ranges = ""
    if seg.volume_range is not None:
        low, high = min(seg.volume_range["regions"]["WT"]), max(seg.volume_range["regions"]["WT"])
        ts = seg.volume_range["thresholds"]
        ranges = f", {low:.1f}\u2013{high:.1f} mL at thresholds {ts[0]:g}\u2013{ts[-1]:g}"
    return f"WT {volumes(seg.labels)['regions']['WT']['mL']:.1f} mL{ranges}"


def load_for_predict(src: Any, args: argparse.Namespace, *, single: bool) -> tuple[Study, Harmonised | None]:
    """Load one study, harmonised if ``--harmonise`` says so (:func:`brats_seg.harmonise.load_for_model`)."""
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
        print(
            f"{study.name}: harmonised ({'; '.join(harmonised.reasons)}) in {t['total']:.1f} s: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if k != "total")
        )
    return study, harmonised
