"""Where and in which precision training runs: bfloat16, float16 or float32, channels-last, and the
hardware a run records."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import torch

from ..errors import StudyError
from .callbacks import ChannelsLast3d, CPUAutocast
from .config import PRECISIONS, TrainConfig


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision ``--precision`` means on ``device``: ``bf16``, ``fp16`` or ``fp32``.

    ``auto`` prefers bfloat16 on a GPU: float16 overflowed to NaN in 4 of 5 folds with 96-voxel
    patches at lr 3e-3 on an H200, and bfloat16 has float32's range. On the CPU ``auto`` means
    ``fp32`` (the recipe behind the bundled model); ``bf16`` is allowed where the CPU computes
    bfloat16 natively (AVX512-BF16 or AMX; about 1.3x faster per step than float32 on this project's
    machine, ``python benchmarks/bench_train_step.py``), and ``fp16`` is refused.

    Raises:
        StudyError: for an unknown setting, or a precision the device cannot run.
    """
    if precision not in PRECISIONS:
        raise StudyError(f"--precision: expected one of {PRECISIONS}, found {precision!r}")
    if device.type != "cuda":
        return cpu_precision(precision, device)
    if precision == "auto":
        # native bfloat16 from compute capability 8 (Ampere) on; older GPUs would only emulate it, slowly
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return precision


def cpu_precision(precision: str, device: torch.device) -> str:
    """:func:`resolve_precision` on the CPU: ``bf16`` where native, else ``fp32``; ``fp16`` refused."""
    if precision == "fp16":
        raise StudyError(
            f"--precision fp16: float16 mixed precision needs a GPU, but training runs on {device}; "
            "use bf16, fp32 or auto"
        )
    if precision == "bf16" and not cpu_bf16_supported():
        raise StudyError(
            "--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX) and would only "
            "emulate it, slowly; use fp32 or auto"
        )
    return precision if precision == "bf16" else "fp32"


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def apply_precision(
    learn: Any,
    precision: str,
    device: torch.device,
    config: TrainConfig,
    *,
    log: Callable[[str], None] = print,
) -> bool:
    """Set ``learn`` up for ``precision`` (from :func:`resolve_precision`) and the memory format.

    Returns:
        Whether training runs channels-last (``config.channels_last``; by default on the CPU only).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if precision == "bf16" and device.type == "cuda":
        learn.to_bf16()
    elif precision == "bf16":
        learn.add_cb(CPUAutocast())
    elif precision == "fp16":
        learn.to_fp16()
    channels_last = device.type != "cuda" if config.channels_last is None else config.channels_last
    if channels_last:
        learn.add_cb(ChannelsLast3d())
    log(f"training on {device} in {precision}" + (", channels-last" if channels_last else ""))
    return channels_last


def hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU's kind, cores and torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
