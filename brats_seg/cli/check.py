"""``brats-seg check``: load and check studies without a model: what would be refused, and warnings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import StudyError
from ..types import RawStudy, Study
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
    """The study as predict would read it (harmonised if need be), and a note on its harmonisation."""
    from ..files import load_native_study, load_study
    from ..harmonise import decide, harmonise

    load = load_study if args.harmonise == "off" else load_native_study
    raw = load(src, mapping=dict(args.mapping or ()), partial_mapping=batch)
    reasons = decide(raw, mode=args.harmonise) if isinstance(raw, RawStudy) else []
    if reasons:  # as predict would: registration and skull stripping can refuse a study too
        harmonised = harmonise(raw, reasons=reasons)
        note = f"raw study, harmonised in {harmonised.timings['total']:.1f} s ({'; '.join(reasons)}); "
        return harmonised.study, note
    return (raw.to_study() if isinstance(raw, RawStudy) else raw), ""
