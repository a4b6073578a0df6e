"""``brats-seg check``: load and check studies without a model: what would be refused, and warnings."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from ..errors import StudyError
from ..types import Study
from .common import EXIT_BAD_INPUT, EXIT_OK, one_line, resolve_inputs
from .outcome import Outcome, source_text

#: The statuses of a checked study, in the order the closing count gives them.
STATUSES = ("ok", "with warnings", "refused")


def cmd_check(args: argparse.Namespace) -> int:
    """Print one line per study (refused, ok, or its warnings) and a count; exit 2 when one is refused.

    With ``--workers`` or ``--scheduler`` each study is a task on a Dask cluster
    (:func:`brats_seg.cli.on_cluster.run_on_cluster`), its lines printed as it finishes.
    """
    sources = resolve_inputs(args.inputs)
    batch = len(sources) > 1
    if getattr(args, "workers", None) or getattr(args, "scheduler", None):
        from .on_cluster import run_on_cluster

        progress = run_on_cluster(
            partial(check_study, args=args, batch=batch), sources, args, statuses=STATUSES
        )
        return EXIT_BAD_INPUT if progress.counts["refused"] else EXIT_OK
    counts = dict.fromkeys(STATUSES, 0)
    for src in sources:
        outcome = check_study(src, args, batch=batch)
        counts[outcome.status] += 1
        outcome.emit()
    print(
        f"{len(sources)} {'study' if len(sources) == 1 else 'studies'}: "
        + ", ".join(f"{n} {what}" for what, n in counts.items())
    )
    return EXIT_BAD_INPUT if counts["refused"] else EXIT_OK


def check_study(src: Any, args: argparse.Namespace, *, batch: bool) -> Outcome:
    """Load and check one study; here or on a cluster's worker. Prints nothing: the lines are in the outcome.

    Returns:
        ``ok``, ``with warnings`` (one ``  warning: ...`` line each) or ``refused`` (``reason`` says why).
    """
    from .. import quality

    try:
        study, note = _load(src, args, batch=batch)
    except StudyError as e:
        outcome = Outcome(name=source_text(src), status="refused", reason=one_line(e))
        outcome.line = f"refused: {outcome.reason}"
        outcome.out.append(outcome.summary)
        return outcome
    warnings = quality.check_study(study)
    files = ", ".join(f"{m} {study.sources[m]}" for m in study.sources)
    count = f"{len(warnings)} warning{'s' * (len(warnings) != 1)}" if warnings else "ok"
    outcome = Outcome(name=study.name, status="with warnings" if warnings else "ok")
    outcome.line = f"{count} ({note}{study.grid_text}; {files})"
    outcome.out.append(outcome.summary)
    outcome.out.extend(f"  warning: {warning}" for warning in warnings)
    return outcome


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
