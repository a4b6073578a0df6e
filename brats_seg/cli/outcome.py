"""What one study of a batch came to, as a value: the same for a study run here and one run on a cluster.

:func:`brats_seg.cli.predict.predict_study` and :func:`brats_seg.cli.check.check_study` return an
:class:`Outcome` instead of printing, so that a worker process can send it back and the command prints it
where it runs (:mod:`brats_seg.cli.on_cluster`), with the same lines as a run without a cluster.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome", "source_text"]


@dataclass
class Outcome:
    """One study's result.

    Attributes:
        name: The study's name, or how its source is named when it did not load.
        status: What happened, in the command's words (``done``, ``skipped``, ``failed``;
            ``ok``, ``with warnings``, ``refused``).
        line: The study's one-line summary, without its name (see :attr:`summary`).
        out: The lines for stdout, in order, :attr:`summary` among them where the study has one.
        err: Lines for stderr (warnings, notes), in order.
        reason: Why the study failed or was refused (one line); empty otherwise.
        seconds: Wall time of the study, loading included.
        pid: The process that ran it (a worker's, on a cluster).
        model_id: ``id()`` of the model object it used, or None: a process that loaded its model once
            shows one id for all its studies (the cached model stays alive for the process's life).
        data: The study's result as data, where the command gathers it (a row of ``evaluate``'s scores).
    """

    name: str
    status: str
    line: str = ""
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0
    pid: int = field(default_factory=os.getpid)
    model_id: int | None = None
    data: dict[str, Any] | None = None

    @property
    def summary(self) -> str:
        """``<name>: <line>``, the study's line as a run without a cluster prints it among ``out``."""
        return f"{self.name}: {self.line}"

    def emit(self, *, without_summary: bool = False) -> None:
        """Print ``out`` to stdout (``without_summary``: all but :attr:`summary`) and ``err`` to stderr."""
        for text in self.out:
            if not (without_summary and text == self.summary):
                print(text)
        for text in self.err:
            print(text, file=sys.stderr)


def source_text(src: Any) -> str:
    """How messages name a study source: its path, or the files given together."""
    return ", ".join(str(p) for p in src) if isinstance(src, list) else str(src)
