"""``learn.export()`` plus the model card ``model.json``, filled from the run."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..card import ModelCard
from ..model import sha256_of
from .config import TrainConfig
from .devices import hardware

#: Callbacks that only training needs; removed before export (the learner pickles its callbacks).
TRAINING_CALLBACKS = ("Checkpoint", "HistoryLog", "EpochLog", "CPUAutocast", "ChannelsLast3d")

#: What :func:`training_brief` keeps of a training record.
BRIEF_KEYS = (
    "train_cases",
    "held_out_cases",
    "fold",
    "epochs",
    "iterations",
    "batch_size",
    "patch_size",
    "intensity_augment",
    "lr",
    "wall_time_minutes",
    "hardware",
    "init_from",
    "averaged_from",
)


def export_with_card(
    learn: Any, out: Path, card: ModelCard, *, config: TrainConfig, meta: dict[str, Any], device: torch.device
) -> ModelCard:
    """``learn.export()`` to ``out/model.pkl`` and write ``out/model.json`` filled from the run.

    Args:
        learn: The trained learner (its training callbacks are removed, its weights moved to the CPU).
        out: The run folder.
        card: The run's card (:func:`brats_seg.training.config.card_for`).
        config: The run's settings.
        meta: The run's ``train_meta.json`` record.
        device: Where it trained.

    Returns:
        The card written.
    """
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ in TRAINING_CALLBACKS])
    if device.type == "cuda":
        learn.to_fp32()
    learn.model.cpu()
    learn.dls.cpu()
    if config.export_dtype == "float16":  # validated by check_config before training
        learn.model.half()  # half the file; brats_seg.model computes in float32 again
    learn.export("model.pkl")
    pkl = out / "model.pkl"
    card.files = ["model.pkl"]
    card.sha256 = {"model.pkl": sha256_of(pkl)}
    card.extra = {
        "intended_use": "Research only. Not a medical device; not for clinical use or diagnosis.",
        "architecture": architecture(config, n_params=sum(p.numel() for p in learn.model.parameters())),
        "versions": versions(),
        "training": training_record(config, meta, device),
        "scores": {},
    }
    card.save(out / "model.json")
    return card


def architecture(config: TrainConfig, *, n_params: int) -> dict[str, Any]:
    """The card's record of the network."""
    return {
        "class": "monai.networks.nets.UNet",
        "spatial_dims": 3,
        "in_channels": 4,
        "out_channels": 3,
        "channels": list(config.channels),
        "strides": [2] * (len(config.channels) - 1),
        "num_res_units": config.num_res_units,
        "act": "PRELU",
        "norm": "INSTANCE",
        "parameters": n_params,
    }


def training_record(config: TrainConfig, meta: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The card's record of how the learner was trained (a declarative table of the run's settings)."""
    packed = str(meta.get("data", "")).endswith(".npz")
    return {
        "recipe": "brats_seg.training (fastai Learner, Ranger, lr_find, fit_flat_cos, Dice+BCE on TC/WT/ET)",
        "data": "BraTS 2018 training cases (expert labels) from ../shared/data/brats"
        + (f", preprocessed into {Path(meta['data']).name} by brats-seg pack" if packed else ""),
        "train_cases": meta.get("train_cases", []),
        "held_out_cases": meta.get("held_out", []),
        "folds": config.folds,
        "fold": config.fold,
        "epochs": config.epochs,
        "iterations": config.epochs * (config.samples_per_epoch // config.batch_size),
        "batch_size": config.batch_size,
        "patch_size": list(config.patch_size),
        "intensity_augment": config.intensity_augment,
        "time_budget_minutes": config.time_budget_minutes,
        "init_from": init_record(meta.get("init_from")),
        "weights_dtype": config.export_dtype,
        "precision": meta.get("precision"),
        "channels_last": meta.get("channels_last"),
        "trained_on": meta.get("trained_on", []),
        "lr": meta.get("lr"),
        "lr_find_valley": meta.get("lr_find_valley"),
        "wall_time_minutes": round(float(meta.get("train_seconds", 0.0)) / 60, 1),
        "hardware": hardware(device),
    }


def versions() -> dict[str, str]:
    """Versions of the libraries a learner depends on."""
    import fastai
    import monai

    from .. import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "fastai": fastai.__version__,
        "numpy": np.__version__,
        "brats_seg": __version__,
    }


def init_record(init: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a fine-tuned model started from: file, sha256 and the earlier training in brief."""
    if not init:
        return None
    return {
        "file": init["file"],
        "sha256": init["sha256"],
        "training": training_brief(init.get("training") or {}),
    }


def training_brief(training: dict[str, Any]) -> dict[str, Any]:
    """The parts of a training record that say what a learner saw and how long it trained."""
    return {k: training[k] for k in BRIEF_KEYS if k in training}


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with tuples as lists and paths as strings (e.g. a ``TrainConfig``'s fields, for JSON)."""
    return {
        k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in d.items()
    }
