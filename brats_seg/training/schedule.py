"""The learning-rate schedule: a resumable ``fit_flat_cos``, the learning rate from ``lr_find``, and an
epoch length fitted to a time budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .callbacks import BatchTimer
from .config import TrainConfig


def fit_flat_cos(
    learn: Any, n_epoch: int, *, lr: float, pct_start: float, start_epoch: int = 0, div_final: float = 1e5
) -> None:
    """fastai's ``fit_flat_cos``, resumable: epochs before ``start_epoch`` are skipped, the rest follow
    the same schedule as an uninterrupted fit.

    fastai 2.8's own ``Learner.fit_flat_cos`` accepts ``start_epoch`` but passes 0 to ``fit``, so a
    resumed run would silently restart its 30-epoch schedule from the checkpoint's weights.
    """
    from fastai.callback.schedule import ParamScheduler, combined_cos

    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", lr)
    lrs = np.array([h["lr"] for h in learn.opt.hypers])
    learn.resume_epoch = start_epoch
    try:
        learn.fit(
            n_epoch,
            cbs=ParamScheduler({"lr": combined_cos(pct_start, lrs, lrs, lrs / div_final)}),
            start_epoch=start_epoch,
        )
    finally:
        del learn.resume_epoch


def samples_for_budget(config: TrainConfig, batches_per_second: float, *, margin: float = 0.85) -> int:
    """Patches per epoch such that ``config.epochs`` epochs fit ``margin`` x the time budget."""
    assert config.time_budget_minutes is not None
    batches = config.time_budget_minutes * 60 * margin * batches_per_second / config.epochs
    return max(1, int(batches)) * config.batch_size


def set_epoch_length(learn: Any, config: TrainConfig, samples: int) -> None:
    """Make an epoch ``samples`` training patches (in the config, the dataset and its loader)."""
    config.samples_per_epoch = samples
    learn.dls.train.dataset.length = samples
    learn.dls.train.n = samples


def choose_lr(
    learn: Any,
    config: TrainConfig,
    lr: float | None,
    *,
    start_epoch: int,
    meta: dict[str, Any],
    log: Callable[[str], None] = print,
) -> float:
    """The learning rate to train with, and the epoch length for a time budget.

    ``lr_find`` runs when no learning rate is given (unless ``config.lr_find`` is off) and, for a
    time budget, on a run's first start (its batches are timed). Its valley, clipped to
    [3e-4, 1e-2], is the learning rate unless one is given; 3e-3 without either. A resumed run keeps
    its recorded epoch length. ``meta`` (the run's ``train_meta.json``) records what was found.
    """
    budgeted = config.time_budget_minutes is not None and start_epoch == 0
    if (lr is None and config.lr_find) or budgeted:
        t = time.time()
        timer = BatchTimer()
        learn.add_cb(timer)
        try:
            suggestion = learn.lr_find(num_it=60, show_plot=False)
        finally:
            learn.remove_cb(timer)
        meta["lr_find_valley"] = float(suggestion.valley)
        if lr is None:
            lr = float(np.clip(suggestion.valley, 3e-4, 1e-2))
        log(f"lr_find valley {suggestion.valley:.2e} in {time.time() - t:.0f}s; using lr {lr:.2e}")
        if budgeted:
            fit_budget(learn, config, timer, meta=meta, log=log)
    elif config.resume and "samples_per_epoch" in meta:
        set_epoch_length(learn, config, int(meta["samples_per_epoch"]))
    meta["samples_per_epoch"] = config.samples_per_epoch
    return float(lr or 3e-3)


def fit_budget(
    learn: Any,
    config: TrainConfig,
    timer: BatchTimer,
    *,
    meta: dict[str, Any],
    log: Callable[[str], None] = print,
) -> None:
    """Fit the epoch length to the time budget from the batch rate ``timer`` measured during lr_find."""
    if len(timer.times) < 2:
        log(
            f"lr_find stopped after {len(timer.times)} batches, too few to time: "
            f"keeping {config.samples_per_epoch} samples per epoch"
        )
        return
    rate = timer.batches_per_second()
    samples = samples_for_budget(config, rate)
    meta["measured_batches_per_second"] = rate
    log(f"{rate:.2f} batches/s measured: {samples} samples per epoch fit {config.time_budget_minutes:g} min")
    set_epoch_length(learn, config, samples)
