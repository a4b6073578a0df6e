"""The resumable schedule and the time budget (brats_seg.training.schedule)."""

from __future__ import annotations

import pytest

from brats_seg.training.config import TrainConfig
from brats_seg.training.schedule import fit_flat_cos, samples_for_budget


def test_samples_for_budget_fits_the_epochs_into_the_budget() -> None:
    config = TrainConfig(epochs=4, batch_size=2, time_budget_minutes=1.0)
    # 60 s x 0.85 x 10 batches/s / 4 epochs = 127.5 -> 127 batches of 2
    assert samples_for_budget(config, 10.0) == 254
    assert samples_for_budget(config, 0.001) == 2  # at least one batch


def test_resumed_fit_flat_cos_follows_the_uninterrupted_schedule() -> None:
    from fastai.callback.core import Callback
    from fastai.test_utils import synth_learner

    class LrLog(Callback):
        def before_fit(self) -> None:
            self.lrs: list[tuple[int, float]] = []

        def after_batch(self) -> None:
            if self.training:
                self.lrs.append((self.epoch, self.opt.hypers[0]["lr"]))

    whole, resumed = LrLog(), LrLog()
    fit_flat_cos(synth_learner(n_trn=32, cbs=[whole]), 4, lr=1e-2, pct_start=0.5)
    fit_flat_cos(synth_learner(n_trn=32, cbs=[resumed]), 4, lr=1e-2, pct_start=0.5, start_epoch=3)
    assert {e for e, _ in resumed.lrs} == {3}  # epochs 0-2 skipped
    last_epoch = [lr for e, lr in whole.lrs if e == 3]
    assert [lr for _, lr in resumed.lrs] == pytest.approx(last_epoch)
    assert max(last_epoch) < 0.6e-2  # annealing (half-way at 75 %), not the flat 1e-2 of a restarted schedule
