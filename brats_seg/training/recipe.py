"""The training recipe of the original fastai + MONAI work, as ``brats-seg train``.

- Data: a folder of BraTS cases (2018-2021 or 2023+ naming, see :mod:`brats_seg.files`) or a pack
  (:mod:`.pack`), a seeded k-fold split written to the run folder (:mod:`.splits`), each case
  preprocessed once (reorient, brain crop, z-score, resample to the card's spacing) and cached;
  random patches biased towards tumour (:mod:`.data`); random flips, zoom, affine, intensity
  scale/shift (:mod:`.augment`) in fastai ``DataLoaders``.
- Model, target, loss and metrics: :mod:`.network`.
- Training: fastai ``Learner`` with the Ranger optimiser, ``lr_find``, ``fit_flat_cos``
  (:mod:`.schedule`); mixed precision on a GPU, bfloat16 where it has it (:mod:`.devices`); a
  checkpoint each epoch, from which ``--resume`` continues the same schedule; a CSV log
  (:mod:`.callbacks`).
- Output: ``learn.export()`` plus the model card ``model.json`` (:mod:`.export`).

Everything the exported pickle refers to lives in importable modules (cloudpickle stores
``__main__`` definitions by value, tied to one Python version).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fastai.callback.schedule  # noqa: F401  (patches Learner with fit_flat_cos and lr_find)
import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.optimizer import ranger

from ..errors import StudyError
from .callbacks import Checkpoint, EpochLog, HistoryLog
from .config import TrainConfig, card_for, check_config
from .data import Case, FixedPatchDataset, PatchDataset
from .devices import apply_precision, hardware, resolve_precision
from .export import export_with_card, jsonable
from .finetune import init_weights
from .network import DiceBCELoss, build_unet, dice_et, dice_tc, dice_wt
from .schedule import choose_lr, fit_flat_cos
from .sources import open_source
from .splits import fold_split

Log = Callable[[str], None]


def train(
    data_dir: str | Path, out_dir: str | Path, config: TrainConfig | None = None, *, log: Log = print
) -> Path:
    """Train one fold (or all cases with ``fold=-1``) and export the learner with its card.

    Args:
        data_dir: A folder of BraTS cases with ground truth, or a pack written by ``brats-seg pack``.
        out_dir: The run folder.
        config: The knobs; default the shipped model's.
        log: Where progress lines go.

    Returns:
        The run folder, holding ``model.pkl``, ``model.json``, ``splits.json``, ``history.csv``,
        ``train_meta.json`` and checkpoints under ``models/``.

    Raises:
        StudyError: for bad settings, data, packs, splits or checkpoints (before training where possible).
    """
    config = config or TrainConfig()
    check_config(config)
    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = resolve_precision(config.precision, device)  # before minutes of data loading
    card = card_for(config, name=f"brats-seg-unet-{'x'.join(f'{s:g}' for s in config.spacing)}mm")
    source = open_source(data_dir, card, cache_dir=out.parent / "cache", log=log)
    train_names, held_out = fold_split(source.names, out, config, data_dir=data_dir, log=log)
    t0 = time.time()
    train_cases, val_cases = source.load(train_names), source.load(held_out)
    log(f"data ready in {time.time() - t0:.0f}s")
    resuming = config.resume and (out / "models" / "last.json").is_file()
    learn = build_learner(
        train_cases, val_cases or train_cases[:2], config, out=out, device=device, append=resuming, log=log
    )
    channels_last = apply_precision(learn, precision, device, config, log=log)
    meta = read_meta(out) if resuming else {}
    init = start_weights(learn, config, resuming=resuming, held_out=held_out, log=log)
    start_epoch, lr = resume(learn, config, out, meta=meta, log=log) if resuming else (0, config.lr)
    lr = choose_lr(learn, config, lr, start_epoch=start_epoch, meta=meta, log=log)
    session = f"{hardware(device)}, {precision}, from epoch {start_epoch + 1}"
    sessions = [
        *(meta.get("trained_on", []) if resuming else []),
        *([session] if start_epoch < config.epochs else []),
    ]
    run = {"lr": lr, "precision": precision, "channels_last": channels_last, "trained_on": sessions}
    cases = {"train_cases": train_names, "held_out": held_out, "data": str(data_dir)}
    meta.update(
        {**run, "config": jsonable(config.__dict__), **cases, **({} if resuming else {"init_from": init})}
    )
    write_meta(out, meta)
    fit(learn, config, lr=lr, start_epoch=start_epoch, meta=meta)
    write_meta(out, meta)
    export_with_card(learn, out, card, config=config, meta=meta, device=device)
    log(f"exported {out / 'model.pkl'} after {meta['train_seconds'] / 60:.1f} min of training")
    return out


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_learner(
    train_cases: list[Case],
    val_cases: list[Case],
    config: TrainConfig,
    *,
    out: Path,
    device: torch.device,
    append: bool,
    log: Log = print,
) -> Learner:
    """The fastai ``Learner``: patch datasets, the UNet, Dice + BCE, Ranger, the history and checkpoints.

    Args:
        train_cases: Cases to draw random training patches from.
        val_cases: Cases to cut the fixed validation patches from.
        config: The run's settings.
        out: The run folder (the learner's path; checkpoints under ``models/``).
        device: Where the batches go.
        append: Continue the run's ``history.csv`` (a resumed run).
        log: Where a run without a progress bar logs each epoch.
    """
    train_ds = PatchDataset(
        train_cases,
        patch_size=config.patch_size,
        length=config.samples_per_epoch,
        intensity_augment=config.intensity_augment,
        seed=config.seed,
    )
    valid_ds = FixedPatchDataset(
        val_cases, patch_size=config.patch_size, per_case=config.val_patches, seed=config.seed + 1
    )
    dls = DataLoaders.from_dsets(
        train_ds, valid_ds, bs=config.batch_size, num_workers=config.num_workers, device=device, shuffle=False
    )
    learn = Learner(
        dls,
        build_unet(channels=config.channels, num_res_units=config.num_res_units),
        loss_func=DiceBCELoss(),
        opt_func=ranger,
        metrics=[dice_tc, dice_wt, dice_et],
        wd=config.weight_decay,
        path=out,
        model_dir="models",
        cbs=[HistoryLog("history.csv", append=append), Checkpoint("last")],
    )
    if not config.progress:
        from fastai.callback.progress import ProgressCallback
        from fastcore.basics import noop

        learn.remove_cb(ProgressCallback)
        learn.logger = noop
        learn.add_cb(EpochLog(log))
    return learn


def start_weights(
    learn: Learner, config: TrainConfig, *, resuming: bool, held_out: Sequence[str], log: Log = print
) -> dict[str, Any] | None:
    """Copy ``--init-from``'s weights into the network (not when resuming: the checkpoint has them).

    Returns:
        What was loaded (:func:`~brats_seg.training.finetune.init_weights`), or None.
    """
    if config.init_from is None:
        return None
    if resuming:
        log(f"--init-from {config.init_from} ignored: resuming from the run's own checkpoint")
        return None
    init = init_weights(learn.model, config.init_from, held_out=held_out)
    log(f"initialised from {init['file']} ({init['sha256'][:12]})")
    return init


def resume(
    learn: Learner, config: TrainConfig, out: Path, *, meta: dict[str, Any], log: Log = print
) -> tuple[int, float | None]:
    """Load the run's last checkpoint (weights and optimiser state) to continue its schedule.

    Returns:
        The epoch to continue at, and the learning rate (``--lr`` or the run's own).

    Raises:
        StudyError: for a missing checkpoint, or one that does not fit the network asked for.
    """
    state_file = out / "models" / "last.json"
    checkpoint = out / "models" / "last.pth"
    if not checkpoint.is_file():
        raise StudyError(
            f"{checkpoint}: expected the checkpoint that {state_file.name} beside it describes, "
            "found none; start a new run folder"
        )
    try:
        learn.load("last", with_opt=True)
    except Exception as e:  # noqa: BLE001 (torch.load and load_state_dict raise many kinds)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise StudyError(
            f"{checkpoint}: cannot resume from this checkpoint, it does not fit the network asked for "
            f"(--channels, --num-res-units) or is damaged ({type(e).__name__}: {detail}); resume with the "
            "run's own settings or start a new run folder"
        ) from e
    start_epoch = json.loads(state_file.read_text())["epoch"] + 1
    # a fresh stream of patches, not a replay of the ones epoch 1 drew
    learn.dls.train.dataset.reseed(
        int(np.random.SeedSequence([config.seed, start_epoch]).generate_state(1)[0])
    )
    lr = config.lr or meta.get("lr")
    log(f"resuming at epoch {start_epoch} with lr {lr}")
    return start_epoch, lr


def fit(learn: Learner, config: TrainConfig, *, lr: float, start_epoch: int, meta: dict[str, Any]) -> None:
    """Train the epochs left (all of them for a new run), adding the time taken to ``meta``."""
    t = time.time()
    if start_epoch < config.epochs:
        fit_flat_cos(learn, config.epochs, lr=lr, pct_start=config.pct_start, start_epoch=start_epoch)
    meta["train_seconds"] = time.time() - t + float(meta.get("train_seconds", 0.0))
    meta["batches_per_epoch"] = len(learn.dls.train)


def read_meta(out: Path) -> dict[str, Any]:
    """The run's ``train_meta.json`` (empty when there is none)."""
    path = out / "train_meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write the run's ``train_meta.json``."""
    (out / "train_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
