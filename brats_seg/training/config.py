"""The knobs of ``brats-seg train``, without the libraries that train (so ``--help`` needs no torch).

:mod:`brats_seg.training.recipe` uses these; the command line reads their defaults for its help.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..card import ModelCard
from ..errors import StudyError

#: How exported weights are stored (``--export-dtype``); inference always computes in float32.
EXPORT_DTYPES: tuple[str, ...] = ("float32", "float16")

#: Training precision (``--precision``): ``auto`` is bfloat16 mixed precision on a GPU that has it,
#: else float16 mixed precision on a GPU, and float32 on the CPU.
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")

#: Intensity augmentation presets (``--intensity-augment``).
INTENSITY_AUGMENTS: tuple[str, ...] = ("mild", "strong", "strong-bias", "none")

#: The network's output channels: the nested BraTS regions, as sigmoid outputs.
REGION_ORDER: tuple[str, ...] = ("TC", "WT", "ET")

#: The network's input channels.
DEFAULT_CHANNELS: tuple[str, ...] = ("T1", "T1CE", "T2", "FLAIR")


@dataclass
class TrainConfig:
    """Every knob of ``brats-seg train`` (defaults are the shipped model's, see ``--help``)."""

    folds: int = 5
    fold: int = 0
    seed: int = 0
    epochs: int = 30
    samples_per_epoch: int = 200
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    lr: float | None = None
    lr_find: bool = True
    weight_decay: float = 1e-4
    pct_start: float = 0.6
    intensity_augment: str = "mild"
    val_patches: int = 4
    overlap: float = 0.5
    num_workers: int = 0
    time_budget_minutes: float | None = None
    init_from: Path | None = None
    export_dtype: str = "float32"
    precision: str = "auto"
    channels_last: bool | None = None  # None: on the CPU (measured faster), off on a GPU (not measured)
    device: str | None = None
    resume: bool = False
    progress: bool = True
    splits: Path | None = None


def check_config(config: TrainConfig) -> None:
    """Refuse settings that could only fail later (after minutes or hours of training).

    Raises:
        StudyError: saying which setting and what was expected.
    """
    if config.epochs < 1:
        raise StudyError(f"--epochs: expected at least 1, found {config.epochs}")
    if config.time_budget_minutes is not None and not config.time_budget_minutes > 0:
        raise StudyError(
            f"--time-budget: expected a positive number of minutes, found {config.time_budget_minutes}"
        )
    if config.export_dtype not in EXPORT_DTYPES:
        raise StudyError(f"--export-dtype: expected one of {EXPORT_DTYPES}, found {config.export_dtype!r}")
    if config.precision not in PRECISIONS:
        raise StudyError(f"--precision: expected one of {PRECISIONS}, found {config.precision!r}")
    if config.init_from is not None and not (Path(config.init_from) / "model.json").is_file():
        raise StudyError(
            f"--init-from {config.init_from}: expected a run or model folder with a model.json, found none"
        )


def card_for(config: TrainConfig, name: str) -> ModelCard:
    """The model card of a run with ``config``: what inference needs to read inputs and decode outputs.

    Args:
        config: The run's settings (spacing, patch size as the window, overlap).
        name: The model's name.

    Returns:
        A card without files; :func:`brats_seg.training.export.export_with_card` fills them in.
    """
    return ModelCard(
        name=name,
        files=[],
        sha256={},
        channels=list(DEFAULT_CHANNELS),
        output={"type": "regions_sigmoid", "regions": list(REGION_ORDER), "threshold": 0.5},
        spacing=[float(s) for s in config.spacing],
        orientation="LPS",
        roi_size=[int(s) for s in config.patch_size],
        overlap=config.overlap,
        sw_batch_size=2,
        mode="gaussian",
        crop_margin=8,
    )
