"""fastai callbacks of the recipe: the history table, checkpoints, a log line per epoch, batch timing,
bfloat16 on the CPU and the channels-last memory format."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import torch
from fastai.callback.core import Callback
from fastai.callback.progress import CSVLogger


def lr_finding(learn: Any) -> bool:
    """Whether ``learn`` is inside ``lr_find``'s sweep (its mock fit is not training)."""
    return getattr(learn, "lr_finder", None) is not None


def skipped(cb: Callback) -> bool:
    """Whether ``cb`` sees an epoch that did not train: lr_find's sweep, or one a resumed fit skips."""
    return lr_finding(cb.learn) or cb.epoch < getattr(cb.learn, "resume_epoch", 0)


class HistoryLog(CSVLogger):
    """One CSV row per trained epoch (``history.csv``); a resumed run appends to the same table.

    fastai's ``CSVLogger`` with the file handling a resumable run needs; where it differs:

    - ``lr_find``'s sweep is a fit of its own: ``CSVLogger`` would open (and truncate) the table for it.
    - ``CSVLogger(append=True)`` writes a second header row into the table and keeps every old row;
      here the rows of the epochs before the one resumed from are kept under the one header, so an
      epoch logged but not checkpointed (a run killed in between) is logged once, when it runs again.
    - fastai's ``SkipToEpoch`` cancels the epochs a resumed fit skips, but the recorder still logs
      them: those rows are left out (and not shown by the progress bar either).
    - The learner's logger is restored only if it is still ours (``ProgressCallback`` may have
      restored its own already).

    Rows are written and flushed by ``CSVLogger``'s own line writer.
    """

    order = 60

    def before_fit(self) -> None:
        """Open the table: the header, then the kept rows of a resumed run."""
        if lr_finding(self.learn):
            return
        path = self.learn.path / self.fname
        header = ",".join(self.recorder.metric_names)
        rows: list[str] = []
        if self.append and path.is_file():
            # keep the epochs before the one resumed from: an epoch logged but not checkpointed runs again
            start = getattr(self.learn, "resume_epoch", 0)
            rows = [
                r
                for r in path.read_text().splitlines()[1:]
                if epoch_of(r) is not None and epoch_of(r) < start
            ]
        self.file = path.open("w")
        self.file.write("\n".join([header, *rows]) + "\n")
        self.file.flush()
        self.old_logger, self.learn.logger = self.learn.logger, self._write_line

    def _write_line(self, log: list[Any]) -> None:
        if skipped(self):  # a resumed fit's skipped epoch: no row, no line in the progress table
            return
        super()._write_line(log)

    def after_fit(self) -> None:
        """Close the table and give the learner its logger back."""
        if lr_finding(self.learn):
            return
        self.file.close()
        if self.learn.logger == self._write_line:  # ProgressCallback may have restored its own already
            self.learn.logger = self.old_logger


def epoch_of(row: str) -> int | None:
    """The epoch number a history row starts with (None for anything else)."""
    first = row.split(",", 1)[0]
    return int(first) if first.isdigit() else None


class Checkpoint(Callback):
    """Save weights and optimiser state after every trained epoch, for resuming: ``models/last.pth``
    and ``models/last.json`` (the epoch it holds).

    Not fastai's ``SaveModelCallback``: with ``every_epoch=True`` it writes a new file per epoch
    (``last_0.pth``, ``last_1.pth``, ...) and no record of the epoch, and it also saves during the
    epochs a resumed fit skips, overwriting a checkpoint with the weights it was resumed from.
    """

    order = 60

    def __init__(self, fname: str = "last") -> None:
        self.fname = fname

    def after_epoch(self) -> None:
        """Save after a trained epoch."""
        if skipped(self):
            return
        self.learn.save(self.fname, with_opt=True)
        (self.learn.path / self.learn.model_dir / f"{self.fname}.json").write_text(
            json.dumps({"epoch": self.epoch, "n_epoch": self.n_epoch})
        )


class EpochLog(Callback):
    """One log line per epoch (for background runs without a progress bar)."""

    order = 70

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def before_epoch(self) -> None:
        """Start the epoch's clock."""
        self.t0 = time.time()

    def after_epoch(self) -> None:
        """Log the epoch's losses and metrics."""
        if skipped(self):
            return
        names = ["train_loss", "valid_loss", *[m.name for m in self.learn.metrics]]
        values = self.learn.recorder.log[1:-1] if self.learn.recorder.log else []
        pairs = " ".join(f"{n}={v:.4f}" for n, v in zip(names, values, strict=False) if isinstance(v, float))
        self.log(f"epoch {self.epoch + 1}/{self.n_epoch} {pairs} ({time.time() - self.t0:.0f}s)")


class BatchTimer(Callback):
    """Record when each training batch ends (used to fit an epoch length to a time budget)."""

    order = 80

    def before_fit(self) -> None:
        """Start a new list of times."""
        self.times: list[float] = []

    def after_batch(self) -> None:
        """Record the end of a training batch."""
        if self.training:
            self.times.append(time.perf_counter())

    def batches_per_second(self, *, skip: int = 10) -> float:
        """Steady-state rate, leaving out the first ``skip`` batches (warm-up, cudnn autotuning).

        Raises:
            RuntimeError: with fewer than two timed batches.
        """
        times = self.times[skip:] if len(self.times) > skip + 2 else self.times
        if len(times) < 2:
            raise RuntimeError(f"too few timed batches ({len(self.times)}) to measure a rate")
        return (len(times) - 1) / (times[-1] - times[0])


class CPUAutocast(Callback):
    """bfloat16 autocast on the CPU for the forward pass and the loss (fastai's ``to_bf16`` is CUDA-only).

    bfloat16 has float32's range, so no loss scaling is needed; predictions go back to float32.
    """

    order = 10
    autocast = None

    def before_batch(self) -> None:
        """Enter autocast."""
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.autocast.__enter__()

    def after_pred(self) -> None:
        """Predictions back to float32."""
        if self.pred.dtype == torch.bfloat16:
            self.learn.pred = self.pred.float()

    def after_loss(self) -> None:
        """Leave autocast (once, whether the batch ends or is cancelled)."""
        if self.autocast is not None:
            self.autocast.__exit__(None, None, None)
            self.autocast = None

    def after_cancel_batch(self) -> None:
        """Leave autocast."""
        self.after_loss()

    def after_fit(self) -> None:
        """Leave autocast."""
        self.after_loss()


class ChannelsLast3d(Callback):
    """Train in the ``channels_last_3d`` memory format (faster 3-D convolutions on the CPU: 0.23 s
    instead of 0.31 s per 64³ step on this project's machine, ``python benchmarks/bench_train_step.py``).

    The weights go back to the standard layout after fitting, so checkpoints, exports and inference
    are unaffected; only float rounding differs.
    """

    order = 5

    def before_fit(self) -> None:
        """Weights to channels-last."""
        self.learn.model.to(memory_format=torch.channels_last_3d)

    def before_batch(self) -> None:
        """Inputs to channels-last."""
        self.learn.xb = tuple(
            x.to(memory_format=torch.channels_last_3d) if x.ndim == 5 else x for x in self.xb
        )

    def after_fit(self) -> None:
        """Weights back to the standard layout."""
        self.learn.model.to(memory_format=torch.contiguous_format)
