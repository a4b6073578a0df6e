"""Training packs (``brats-seg pack``): every case preprocessed once and stored compactly in one ``.npz``.

A pack carries a training set to another machine (a GPU server) without the NIfTI files.
Intensities are stored as 8-bit codes over each channel's range inside the brain, region targets as
8-bit fractions that keep every voxel on its side of the 0.5 threshold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..card import ModelCard
from ..errors import StudyError
from ..files import find_studies, has_truth
from .config import TrainConfig, card_for
from .data import Case, load_cases, make_case

#: Format version of a training pack (``brats-seg pack``).
PACK_VERSION = 1

#: Target fractions are stored as k / TARGET_LEVELS (even, so that 0.5 itself is exact).
TARGET_LEVELS = 254

#: The card's preprocessing settings a pack records and training checks.
PACKED_SETTINGS = ("spacing", "orientation", "channels", "normalisation", "crop_margin")


def quantize(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 codes per channel: 0 outside the brain, 1..255 spanning each channel's range inside it.

    Returns:
        The codes, and per channel the value of code 1 and the step between codes.
    """
    x = image.numpy()
    brain = (x != 0).any(0)
    codes = np.zeros(x.shape, dtype=np.uint8)
    lo = np.zeros(x.shape[0], dtype=np.float32)
    step = np.ones(x.shape[0], dtype=np.float32)
    for c in range(x.shape[0]):
        v = x[c][brain]
        if v.size == 0:
            continue
        lo[c] = v.min()
        step[c] = max(float(v.max() - lo[c]) / 254.0, 1e-6)
        codes[c][brain] = np.round((v - lo[c]) / step[c]).astype(np.uint8) + 1
    return codes, lo, step


def dequantize(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> torch.Tensor:
    """The intensities that :func:`quantize`'s codes stand for (0 outside the brain)."""
    x = lo[:, None, None, None] + (codes.astype(np.float32) - 1) * step[:, None, None, None]
    x[:, ~(codes > 0).any(0)] = 0.0
    return torch.from_numpy(x.astype(np.float32))


def quantize_target(target: np.ndarray) -> np.ndarray:
    """uint8 codes of region fractions that keep every voxel on its side of the 0.5 threshold."""
    codes = np.round(target * TARGET_LEVELS)
    half = TARGET_LEVELS // 2
    codes = np.where(target > 0.5, np.maximum(codes, half + 1), np.minimum(codes, half))
    return codes.astype(np.uint8)


def pack_cases(
    data_dir: str | Path,
    out_path: str | Path,
    *,
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    log: Callable[[str], None] = print,
) -> Path:
    """Preprocess every case with ground truth once and store them compactly in one ``.npz`` file.

    Intensities are stored as 8-bit codes over each channel's range inside the brain (a step of
    0.01-0.03 standard deviations on the 23 BraTS cases, well below the intensity augmentation),
    region targets as 8-bit fractions. ``brats-seg train PACK.npz`` trains from it exactly as from
    the folder.

    Args:
        data_dir: Folder of BraTS case folders with ``*_seg`` ground truth.
        out_path: The ``.npz`` file to write.
        spacing: Voxel spacing (mm) the network works at; training must use the same.
        log: Where progress lines go.

    Returns:
        ``out_path``.

    Raises:
        StudyError: for an output name not ending in ``.npz``, or a folder without cases with ground truth.
    """
    out = Path(out_path)
    if out.suffix != ".npz":
        raise StudyError(f"{out}: expected a file name ending in .npz")
    card = card_for(TrainConfig(spacing=tuple(float(s) for s in spacing)), name="pack")  # type: ignore[arg-type]
    folders = [f for f in find_studies(data_dir) if has_truth(f)]
    if not folders:
        raise StudyError(f"no cases with a *_seg ground truth under {data_dir}")
    arrays: dict[str, np.ndarray] = {}
    for case in load_cases(folders, card, log=log):
        codes, lo, step = quantize(case.image)
        arrays[f"{case.name}__image"] = codes
        arrays[f"{case.name}__lo"] = lo
        arrays[f"{case.name}__step"] = step
        arrays[f"{case.name}__target"] = quantize_target(case.target.numpy())
    meta = {
        "version": PACK_VERSION,
        "cases": [f.name for f in folders],
        **{key: getattr(card, key) for key in PACKED_SETTINGS},
        "source": str(data_dir),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)
    return out


def load_pack(path: str | Path, card: ModelCard) -> dict[str, Case]:
    """The cases of a pack written by :func:`pack_cases`, checked against the card's preprocessing.

    Raises:
        StudyError: naming the file, when it is not a pack or was made with other preprocessing.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            check_pack(path, meta, card)
            return {name: unpack_case(data, name) for name in meta["cases"]}
    except StudyError:
        raise
    except (OSError, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise StudyError(
            f"{path}: expected a training pack written by brats-seg pack, "
            f"cannot read it ({type(e).__name__}: {e})"
        ) from e


def check_pack(path: Path, meta: dict, card: ModelCard) -> None:
    """Refuse a pack of another format version or made with other preprocessing than ``card``'s.

    Raises:
        StudyError: naming the file, the setting, what the pack holds and what training asks for.
    """
    if meta.get("version") != PACK_VERSION:
        raise StudyError(f"{path}: expected pack version {PACK_VERSION}, found {meta.get('version')}")
    for key in PACKED_SETTINGS:
        if meta.get(key) != getattr(card, key):
            raise StudyError(
                f"{path}: packed with {key} {meta.get(key)}, "
                f"but training asks for {getattr(card, key)}; re-pack"
            )


def unpack_case(data: np.lib.npyio.NpzFile, name: str) -> Case:
    """One case of an open pack."""
    image = dequantize(data[f"{name}__image"], data[f"{name}__lo"], data[f"{name}__step"])
    target = torch.from_numpy(data[f"{name}__target"].astype(np.float32) / TARGET_LEVELS)
    return make_case(name, image, target)
