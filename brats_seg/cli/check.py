"""``brats-seg check``: load and check studies without a model: what would be refused, and warnings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import StudyError
from ..types import Study
from .common import EXIT_BAD_INPUT, EXIT_OK, one_line, resolve_inputs


def cmd_check(args: argparse.Namespace) -> int:
    """Print one line per study (refused, ok, or its warnings) and a count; exit 2 when one is refused."""
    from .. import quality

    sources = resolve_inputs(args.inputs)
    counts = {"ok": 0, "with warnings": 0, "refused": 0}
    for src in sources:
        try:
            study, note = _load(src, args, batch=len(sources) > 1)
        except StudyError as e:
            counts["refused"] += 1
            where = src if isinstance(src, Path) else ", ".join(str(p) for p in src)
            print(f"{where}: refused: {one_line(e)}")
            continue
        warnings = quality.check_study(study)
        counts["with warnings" if warnings else "ok"] += 1
        files = ", ".join(f"{m} {study.sources[m]}" for m in study.sources)
        status = f"{len(warnings)} warning{'s' * (len(warnings) != 1)}" if warnings else "ok"
        print(f"{study.name}: {status} ({note}{study.grid_text}; {files})")
        for warning in warnings:
            print(f"  warning: {warning}")
    print(
        f"{len(sources)} {'study' if len(sources) == 1 else 'studies'}: "
        + ", ".join(f"{n} {what}" for what, n in counts.items())
    )
    return EXIT_BAD_INPUT if counts["refused"] else EXIT_OK


def _load(src: Any, args: argparse.Namespace, *, batch: bool) -> tuple[Study, str]:
    """The study as predict reads it (:func:`brats_seg.harmonise.load_for_model`, so harmonised when
    raw: registration and skull stripping can refuse a study too), and a note on its harmonisation."""
    from ..harmonise import load_for_model

    study, harmonised = load_for_model(
        src, mapping=dict(args.mapping or ()), mode=args.harmonise, partial_mapping=batch
    )
    if harmonised is None:
        return study, ""
    note = f"raw study, harmonised in {harmonised.timings['total']:.1f} s ({'; '.join(harmonised.reasons)}); "
    return study, note
