"""The knobs of ``brats-seg train``, without the libraries that train (so ``--help`` needs no torch).

:mod:`brats_seg.train` uses these; the command line reads their defaults for its help.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: How exported weights are stored (``--export-dtype``); inference always computes in float32.
EXPORT_DTYPES: tuple[str, ...] = ("float32", "float16")

#: Training precision (``--precision``): ``auto`` is bfloat16 mixed precision on a GPU that has it,
#: else float16 mixed precision on a GPU, and float32 on the CPU.
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")

#: Intensity augmentation presets (``--intensity-augment``).
INTENSITY_AUGMENTS: tuple[str, ...] = ("mild", "strong", "strong-bias", "none")


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
