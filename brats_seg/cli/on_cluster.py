"""The command line's face of :mod:`brats_seg.cluster`: run a command's per-study function as tasks, one
line per study as each finishes (with the counts so far and how many are left), and a closing count.

Imported only when ``--workers`` or ``--scheduler`` is given, so that a run without them never imports
Dask. The per-study function comes from the command (:func:`brats_seg.cli.predict.predict_study`, ...) and
returns an :class:`~brats_seg.cli.outcome.Outcome`; this module knows no command.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ClusterError, ModelError, StudyError
from .common import one_line
from .outcome import Outcome, source_text

__all__ = ["Progress", "failure", "model_loads", "run_on_cluster"]


class Progress:
    """Counts studies by status and prints one line per study: its line as a run without a cluster prints
    it (or ``<name>: <status>: <reason>``), after the counts so far: ``[2 done, 1 failed, 3 left] ...``."""

    def __init__(self, total: int, statuses: Sequence[str]) -> None:
        self.total = total
        self.counts = dict.fromkeys(statuses, 0)
        self.outcomes: list[Outcome] = []

    def report(self, outcome: Outcome) -> None:
        """Count ``outcome`` and print its line (then its other lines: notes, warnings)."""
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        self.outcomes.append(outcome)
        left = self.total - len(self.outcomes)
        counts = ", ".join(f"{n} {status}" for status, n in self.counts.items())
        text = outcome.summary if outcome.line else f"{outcome.name}: {outcome.status}: {outcome.reason}"
        print(f"[{counts}, {left} left] {text}")
        outcome.emit(without_summary=True)

    def closing(self, seconds: float, where: str) -> str:
        """The closing line: the counts, the time, where the studies ran and the model loads per worker."""
        counts = ", ".join(f"{n} {status}" for status, n in self.counts.items())
        loads = model_loads(self.outcomes)
        per_worker = ", ".join(str(n) for n in loads.values())
        shown = f"; model loads per worker: {per_worker}" if loads else ""
        noun = "study" if self.total == 1 else "studies"
        return f"{self.total} {noun}: {counts} ({seconds:.1f} s on {where}{shown})"


def model_loads(outcomes: Sequence[Outcome]) -> dict[int, int]:
    """Per worker process (pid): how many models it loaded, as the distinct model objects its studies used.

    :func:`brats_seg.model.load_model` keeps the model it loaded for the life of the process, so no two
    models share an ``id()`` there: one per worker means each loaded the model once.
    """
    ids: dict[int, set[int]] = {}
    for outcome in outcomes:
        if outcome.model_id is not None:
            ids.setdefault(outcome.pid, set()).add(outcome.model_id)
    return {pid: len(models) for pid, models in sorted(ids.items())}


def failure(name: str, error: BaseException, status: str = "failed") -> Outcome:
    """The outcome of a task that raised: the message of an error about the input, the model or the
    cluster; ``internal error: <type>: <message>`` for anything else."""
    known = isinstance(error, StudyError | ModelError | ClusterError)
    reason = one_line(error) if known else f"internal error: {type(error).__name__}: {one_line(error)}"
    return Outcome(name=name, status=status, reason=reason)


def run_on_cluster(
    task: Callable[[Any], Outcome],
    sources: Sequence[Any],
    args: argparse.Namespace,
    *,
    statuses: Sequence[str],
    settled: Sequence[Outcome] = (),
    failed: str = "failed",
) -> Progress:
    """Run ``task(source)`` for each source on the cluster the options name; print as they finish.

    Args:
        task: The per-study function (picklable: a module's function, or a ``functools.partial`` of one).
        sources: The studies left to run; with none, no cluster is started.
        args: The options: ``scheduler``, ``workers``, ``connect_timeout``.
        statuses: The command's statuses, in the order the counts show them.
        settled: Outcomes known before any task runs (skipped studies), reported first.
        failed: The status of a study whose task raised.

    Returns:
        The progress: counts by status, and every outcome.

    Raises:
        ClusterError: when the cluster cannot be reached or cannot run the tasks.
    """
    try:
        from .. import cluster
    except ModuleNotFoundError as e:
        raise ClusterError(
            f"--workers and --scheduler need dask.distributed, which is not installed ({e}); expected it "
            "installed: pip install 'brats-seg[cluster]' (or pip install -r requirements.txt)"
        ) from e
    started = time.perf_counter()
    progress = Progress(len(sources) + len(settled), statuses)
    for outcome in settled:
        progress.report(outcome)
    where = args.scheduler or f"{args.workers} local worker{'s' * (args.workers != 1)}"
    if sources:
        options = {"scheduler": args.scheduler, "workers": args.workers, "timeout": args.connect_timeout}
        with cluster.connect(**options) as client:
            for i, result, error in cluster.map_unordered(client, task, sources):
                progress.report(result if error is None else failure(source_text(sources[i]), error, failed))
    print(progress.closing(time.perf_counter() - started, where))
    return progress
