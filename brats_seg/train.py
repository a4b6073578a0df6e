"""The training recipe of the original fastai + MONAI work, as ``brats-seg train``.

- Data: a folder of BraTS cases (2018-2021 or 2023+ naming, see :mod:`brats_seg.io`), a seeded
  k-fold split written to the run folder, each case preprocessed once (reorient, brain crop,
  z-score, resample to the card's spacing) and cached; random patches biased towards tumour; random
  flips, zoom, affine, intensity scale/shift (MONAI transforms) in fastai ``DataLoaders``.
- Model: MONAI ``UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(16, 32, 64, 128, 256),
  strides=(2, 2, 2, 2), num_res_units=2, act=PRELU)``.
- Target: the nested BraTS regions TC, WT, ET as sigmoid outputs; loss Dice + BCE; Dice per
  region as metrics.
- Training: fastai ``Learner`` with the Ranger optimiser, ``lr_find``, ``fit_flat_cos``; mixed
  precision on a GPU (bfloat16 where it has it); a checkpoint each epoch, from which ``--resume``
  continues the same schedule; a CSV log.
- Output: ``learn.export()`` plus the model card ``model.json``.

Everything the exported pickle refers to lives in this importable module (cloudpickle stores
``__main__`` definitions by value, tied to one Python version).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from fastai.callback.core import Callback

from . import io, postprocess, preprocess
from .card import ModelCard
from .errors import StudyError
from .train_config import EXPORT_DTYPES, INTENSITY_AUGMENTS, PRECISIONS, TrainConfig
from .types import MODALITIES, Study

REGION_ORDER = ("TC", "WT", "ET")
DEFAULT_CHANNELS = ("T1", "T1CE", "T2", "FLAIR")


# ----------------------------------------------------------------------------------------------------
# Model, loss and metrics (module-level so the exported learner pickles them by reference)
# ----------------------------------------------------------------------------------------------------


def build_unet(
    *,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] | None = None,
    num_res_units: int = 2,
    in_channels: int = 4,
    out_channels: int = 3,
    dropout: float = 0.0,
) -> nn.Module:
    """The original work's 5-level residual MONAI UNet with PReLU activations.

    ``strides`` defaults to 2 between every pair of levels (``len(channels) - 1`` values).
    """
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides) if strides is not None else (2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        act="PRELU",
        norm=Norm.INSTANCE,
        dropout=dropout,
    )


class DiceBCELoss(nn.Module):
    """Soft Dice (per region, batch-averaged) plus binary cross-entropy on region logits."""

    def __init__(self, *, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = target.float()
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * self.bce(logits, target)


def _region_dice(logits: torch.Tensor, target: torch.Tensor, channel: int) -> torch.Tensor:
    pred = logits[:, channel] > 0
    truth = target[:, channel] > 0.5
    inter = (pred & truth).sum().float()
    total = pred.sum().float() + truth.sum().float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def dice_tc(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of the tumour core over a batch of patches."""
    return _region_dice(logits, target, REGION_ORDER.index("TC"))


def dice_wt(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of the whole tumour over a batch of patches."""
    return _region_dice(logits, target, REGION_ORDER.index("WT"))


def dice_et(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice of the enhancing tumour over a batch of patches."""
    return _region_dice(logits, target, REGION_ORDER.index("ET"))


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One preprocessed training case at the network's spacing."""

    name: str
    image: torch.Tensor  # (4, x, y, z) float32, z-scored
    target: torch.Tensor  # (3, x, y, z) float32 in [0, 1], TC/WT/ET
    fg: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))  # tumour voxels
    brain: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))


def preprocess_case(study: Study, card: ModelCard) -> Case:
    """Preprocess a study with ground truth exactly as inference will, plus its region targets."""
    if study.truth is None:
        raise ValueError(f"{study.name}: training needs a ground-truth *_seg file")
    prepared = preprocess.prepare(study, card)
    regions = postprocess.labels_to_regions(study.truth, regions=REGION_ORDER).astype(np.float32)
    regions = preprocess.reorient(regions, prepared.ornt)
    sl = tuple(slice(a, b) for a, b in prepared.box)
    target = torch.from_numpy(np.ascontiguousarray(regions[(slice(None), *sl)]))
    target = preprocess.resample(target, tuple(prepared.tensor.shape[1:])).clamp(0, 1)
    return make_case(study.name, prepared.tensor, target)


def make_case(name: str, image: torch.Tensor, target: torch.Tensor) -> Case:
    """Wrap tensors as a ``Case`` with the index lists used for tumour-biased sampling."""
    fg = np.argwhere(target[REGION_ORDER.index("WT")].numpy() > 0.5)
    brain = np.argwhere((image != 0).any(0).numpy())
    return Case(name=name, image=image, target=target, fg=fg, brain=brain)


def load_cases(
    folders: Sequence[Path], card: ModelCard, *, cache_dir: Path | None = None, log=print
) -> list[Case]:
    """Load and preprocess cases, caching the tensors in ``cache_dir``."""
    cases = []
    tag = "sp" + "x".join(f"{s:g}" for s in card.spacing) + "_" + card.orientation + "_" + "".join(c[:2] for c in card.channels)
    for folder in folders:
        cached = cache_dir / f"{folder.name}_{tag}.pt" if cache_dir else None
        if cached is not None and cached.is_file():
            d = torch.load(cached, weights_only=True)
            cases.append(make_case(folder.name, d["image"], d["target"]))
            continue
        t = time.time()
        case = preprocess_case(io.load_study(folder), card)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"image": case.image, "target": case.target}, cached)
        log(f"preprocessed {folder.name} -> {tuple(case.image.shape)} in {time.time() - t:.1f}s")
        cases.append(case)
    return cases


#: Format version of a training pack (``brats-seg pack``).
PACK_VERSION = 1


def _quantize(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 codes per channel: 0 outside the brain, 1..255 spanning each channel's range inside it."""
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


def _dequantize(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> torch.Tensor:
    x = lo[:, None, None, None] + (codes.astype(np.float32) - 1) * step[:, None, None, None]
    x[:, ~(codes > 0).any(0)] = 0.0
    return torch.from_numpy(x.astype(np.float32))


#: Target fractions are stored as k / TARGET_LEVELS (even, so that 0.5 itself is exact).
TARGET_LEVELS = 254


def _quantize_target(target: np.ndarray) -> np.ndarray:
    """uint8 codes of region fractions that keep every voxel on its side of the 0.5 threshold."""
    codes = np.round(target * TARGET_LEVELS)
    half = TARGET_LEVELS // 2
    codes = np.where(target > 0.5, np.maximum(codes, half + 1), np.minimum(codes, half))
    return codes.astype(np.uint8)


def pack_cases(data_dir: str | Path, out_path: str | Path, *, spacing: Sequence[float] = (2.0, 2.0, 2.0), log=print) -> Path:
    """Preprocess every case with ground truth once and store them compactly in one ``.npz`` file.

    A pack carries a training set to another machine (a GPU server) without the NIfTI files:
    intensities are stored as 8-bit codes over each channel's range inside the brain (a step of
    0.01-0.03 standard deviations on the 23 BraTS cases, well below the intensity augmentation), region targets as
    8-bit fractions. ``brats-seg train PACK.npz`` trains from it exactly as from the folder.

    Args:
        data_dir: Folder of BraTS case folders with ``*_seg`` ground truth.
        out_path: The ``.npz`` file to write.
        spacing: Voxel spacing (mm) the network works at; training must use the same.

    Returns:
        ``out_path``.
    """
    out = Path(out_path)
    if out.suffix != ".npz":
        raise StudyError(f"{out}: expected a file name ending in .npz")
    config = TrainConfig(spacing=tuple(float(s) for s in spacing))  # type: ignore[arg-type]
    card = _card_for(config, name="pack")
    folders = [f for f in io.find_studies(data_dir) if io.has_truth(f)]
    if not folders:
        raise StudyError(f"no cases with a *_seg ground truth under {data_dir}")
    arrays: dict[str, np.ndarray] = {}
    for case in load_cases(folders, card, log=log):
        codes, lo, step = _quantize(case.image)
        arrays[f"{case.name}__image"] = codes
        arrays[f"{case.name}__lo"] = lo
        arrays[f"{case.name}__step"] = step
        arrays[f"{case.name}__target"] = _quantize_target(case.target.numpy())
    meta = {
        "version": PACK_VERSION,
        "cases": [f.name for f in folders],
        "spacing": card.spacing,
        "orientation": card.orientation,
        "channels": card.channels,
        "normalisation": card.normalisation,
        "crop_margin": card.crop_margin,
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
    cases = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != PACK_VERSION:
                raise StudyError(f"{path}: expected pack version {PACK_VERSION}, found {meta.get('version')}")
            for key in ("spacing", "orientation", "channels", "normalisation", "crop_margin"):
                if meta.get(key) != getattr(card, key):
                    raise StudyError(
                        f"{path}: packed with {key} {meta.get(key)}, but training asks for {getattr(card, key)}; re-pack"
                    )
            for name in meta["cases"]:
                image = _dequantize(data[f"{name}__image"], data[f"{name}__lo"], data[f"{name}__step"])
                target = torch.from_numpy(data[f"{name}__target"].astype(np.float32) / TARGET_LEVELS)
                cases[name] = make_case(name, image, target)
    except StudyError:
        raise
    except (OSError, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise StudyError(f"{path}: expected a training pack written by brats-seg pack, cannot read it ({type(e).__name__}: {e})") from e
    return cases


def crop_patch(case: Case, center: Sequence[int], size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch of ``size`` around ``center``, zero-padded where it leaves the volume."""
    shape = case.image.shape[1:]
    starts = [int(c) - s // 2 for c, s in zip(center, size, strict=True)]
    starts = [min(max(st, min(0, n - s)), max(n - s, 0)) for st, n, s in zip(starts, shape, size, strict=True)]
    img = torch.zeros((case.image.shape[0], *size), dtype=case.image.dtype)
    tgt = torch.zeros((case.target.shape[0], *size), dtype=case.target.dtype)
    src = tuple(slice(max(st, 0), min(st + s, n)) for st, s, n in zip(starts, size, shape, strict=True))
    dst = tuple(slice(sl.start - st, sl.stop - st) for sl, st in zip(src, starts, strict=True))
    img[(slice(None), *dst)] = case.image[(slice(None), *src)]
    tgt[(slice(None), *dst)] = case.target[(slice(None), *src)]
    return img, tgt


class BrainBiasField:
    """A smooth multiplicative intensity field over the brain (an MRI coil bias), shared by all channels.

    The patch holds z-scored channels whose background is exactly 0. The field ``f`` is applied as
    if to the raw intensities before z-scoring: ``(z + shift) * f - shift`` inside the brain (any
    channel non-zero), with ``shift`` about the z-score of dark brain tissue, so brightness drifts
    across the brain as it does on an uncorrected coil (e.g. a brightened frontal lobe on an old
    FLAIR) while the background stays 0. ``log f`` is Gaussian noise on a coarse ``grid`` of control
    points, upsampled smoothly to the patch, with standard deviation ``sigma``.

    A MONAI-style randomisable dictionary transform: ``set_random_state`` (called by ``Compose``)
    seeds it, so a seeded :class:`PatchDataset` stays reproducible.

    Args:
        keys: The image key.
        prob: Probability of applying the field to a patch.
        sigma: Standard deviation of ``log f`` at the control points (0.25: about ±25 %).
        grid: Control points per axis (3: one smooth bump or dip across a brain-sized patch).
        shift: Added before and taken away after the multiplication.
    """

    def __init__(self, keys: str = "image", *, prob: float = 0.3, sigma: float = 0.25, grid: int = 3, shift: float = 3.0) -> None:
        if not 0.0 <= prob <= 1.0 or sigma < 0 or grid < 2:
            raise ValueError(f"BrainBiasField: expected 0 <= prob <= 1, sigma >= 0 and grid >= 2, found {prob}, {sigma}, {grid}")
        self.keys, self.prob, self.sigma, self.grid, self.shift = keys, prob, sigma, grid, shift
        self.R = np.random.RandomState()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> BrainBiasField:
        """Seed the transform (the MONAI ``Randomizable`` protocol)."""
        self.R = state if state is not None else np.random.RandomState(seed)
        return self

    def field(self, shape: Sequence[int]) -> torch.Tensor:
        """A random smooth field of ``shape`` (X, Y, Z), positive, 1 on average in the log domain."""
        coarse = torch.from_numpy(self.R.normal(0.0, self.sigma, size=(1, 1, self.grid, self.grid, self.grid)).astype(np.float32))
        log_f = torch.nn.functional.interpolate(coarse, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=True)
        return torch.exp(log_f[0, 0])

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.R.random_sample() >= self.prob:
            return data
        out = dict(data)
        img = torch.as_tensor(data[self.keys])
        brain = img.abs().sum(0, keepdim=True) > 0
        f = self.field(img.shape[1:]).to(img.dtype)
        out[self.keys] = torch.where(brain, (img + self.shift) * f - self.shift, img)
        return out


def augmentations(
    *, flip: bool = True, zoom: bool = True, affine: bool = True, intensity: bool | str = True
):
    """MONAI dictionary transforms on ``{"image", "label"}`` patches: flips, zoom, affine, intensity.

    Args:
        flip: Random flips along each axis.
        zoom: Random zoom.
        affine: Random rotation and scaling.
        intensity: ``"mild"`` (or True): scale and shift all channels together by up to 10 %.
            ``"strong"``: in the spirit of nnU-Net, each channel scaled (±25 %) and shifted (±0.2) on
            its own, so the tumour's contrast in one sequence varies against the others, plus gamma,
            Gaussian noise, blur and simulated low resolution, for scanners and protocols the
            training cases do not cover. ``"strong-bias"``: ``"strong"`` plus a smooth coil bias
            field shared by the channels (:class:`BrainBiasField`), first among the intensity
            transforms. ``"none"`` (or False): no intensity augmentation.
    """
    from monai import transforms as T

    if intensity is True:
        intensity = "mild"
    elif intensity is False:
        intensity = "none"
    if intensity not in INTENSITY_AUGMENTS:
        raise ValueError(f"intensity augmentation: expected one of {INTENSITY_AUGMENTS}, found {intensity!r}")
    keys = ["image", "label"]
    tfms: list[Any] = []
    if flip:
        tfms += [T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)]
    if zoom:
        tfms.append(T.RandZoomd(keys, prob=0.2, min_zoom=0.9, max_zoom=1.15, mode=("trilinear", "trilinear"), keep_size=True))
    if affine:
        tfms.append(
            T.RandAffined(
                keys, prob=0.25, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.1, 0.1, 0.1),
                mode=("bilinear", "bilinear"), padding_mode="zeros",
            )
        )
    if intensity == "mild":
        tfms += [T.RandScaleIntensityd("image", factors=0.1, prob=0.5), T.RandShiftIntensityd("image", offsets=0.1, prob=0.5)]
    if intensity == "strong-bias":
        tfms.append(BrainBiasField("image", prob=0.3))
    if intensity in ("strong", "strong-bias"):
        tfms += [
            T.RandScaleIntensityd("image", factors=0.25, prob=0.5, channel_wise=True),
            T.RandShiftIntensityd("image", offsets=0.2, prob=0.5, channel_wise=True),
            T.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3, retain_stats=True),
            T.RandGaussianNoised("image", std=0.1, prob=0.15),
            T.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2),
            T.RandSimulateLowResolutiond("image", zoom_range=(0.5, 1.0), prob=0.15),
        ]
    return T.Compose(tfms)


class PatchDataset(torch.utils.data.Dataset):
    """Random training patches: a centre in the tumour with probability ``pos_fraction``, else in the brain.

    ``length`` patches make one epoch. ``new_empty`` keeps ``learn.export()`` small (no cases).
    """

    def __init__(
        self,
        cases: list[Case],
        *,
        patch_size: Sequence[int] = (64, 64, 64),
        length: int = 200,
        pos_fraction: float = 0.67,
        augment: bool = True,
        intensity_augment: str = "mild",
        seed: int = 0,
    ) -> None:
        self.cases = cases
        self.patch_size = tuple(patch_size)
        self.length = length
        self.pos_fraction = pos_fraction
        self.tfms = augmentations(intensity=intensity_augment) if augment else None
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Start a new random stream of centres, cases and augmentations (e.g. for a resumed run)."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        if self.tfms is not None:
            self.tfms.set_random_state(seed=seed)
        self._worker_key: tuple[int, int] | None = None

    def _reseed_in_worker(self) -> None:
        """Give each data-loader worker its own random stream (a forked copy would repeat the parent's)."""
        info = torch.utils.data.get_worker_info()
        if info is None or self._worker_key == (info.id, info.seed):
            return
        self._worker_key = (info.id, info.seed)
        self.rng = np.random.default_rng([self.seed, info.id, info.seed % (2**32)])
        if self.tfms is not None:
            self.tfms.set_random_state(seed=int(self.rng.integers(2**31)))

    def __len__(self) -> int:
        return self.length if self.cases else 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._reseed_in_worker()
        case = self.cases[int(self.rng.integers(len(self.cases)))]
        pool = case.fg if (len(case.fg) and self.rng.random() < self.pos_fraction) else case.brain
        center = pool[int(self.rng.integers(len(pool)))] if len(pool) else [n // 2 for n in case.image.shape[1:]]
        img, tgt = crop_patch(case, center, self.patch_size)
        if self.tfms is not None:
            from monai.data import set_track_meta

            set_track_meta(False)
            out = self.tfms({"image": img, "label": tgt})
            img, tgt = torch.as_tensor(out["image"]), torch.as_tensor(out["label"]).clamp(0, 1)
        return img.float().contiguous(), tgt.float().contiguous()

    def new_empty(self) -> PatchDataset:
        return PatchDataset([], patch_size=self.patch_size, length=0, augment=False)


class FixedPatchDataset(torch.utils.data.Dataset):
    """Deterministic validation patches: ``per_case`` centres per case (tumour first, then brain)."""

    def __init__(self, cases: list[Case], *, patch_size: Sequence[int] = (64, 64, 64), per_case: int = 2, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for case in cases:
            for k in range(per_case):
                pool = case.fg if (len(case.fg) and k % 2 == 0) else case.brain
                center = pool[int(rng.integers(len(pool)))] if len(pool) else [n // 2 for n in case.image.shape[1:]]
                self.items.append(crop_patch(case, center, patch_size))
        self.patch_size = tuple(patch_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[i]

    def new_empty(self) -> FixedPatchDataset:
        return FixedPatchDataset([], patch_size=self.patch_size)


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------


def read_splits(path: str | Path) -> list[list[str]]:
    """The folds of a ``splits.json`` written by an earlier run.

    Raises:
        StudyError: naming the file, when it is missing or has no list of case-name lists ``folds``.
    """
    path = Path(path)
    try:
        folds = json.loads(path.read_text())["folds"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise StudyError(f"--splits {path}: expected a splits.json with a 'folds' list, cannot read it ({type(e).__name__}: {e})") from e
    if not (isinstance(folds, list) and len(folds) >= 2 and all(isinstance(f, list) for f in folds)):
        raise StudyError(f"--splits {path}: expected 'folds' to be a list of at least 2 lists of case names")
    return folds


def make_folds(names: Sequence[str], *, k: int = 5, seed: int = 0) -> list[list[str]]:
    """Split case names into ``k`` seeded folds of near-equal size."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if len(names) < k:
        raise ValueError(f"{len(names)} cases cannot make {k} folds")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


# ----------------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------------


def _lr_finding(learn) -> bool:
    """Whether ``learn`` is inside ``lr_find``'s sweep (its mock fit is not training)."""
    return getattr(learn, "lr_finder", None) is not None


def _skipped(cb: Callback) -> bool:
    """Whether ``cb`` sees an epoch that did not train: lr_find's sweep, or one a resumed fit skips."""
    return _lr_finding(cb.learn) or cb.epoch < getattr(cb.learn, "resume_epoch", 0)


def fit_flat_cos(learn, n_epoch: int, *, lr: float, pct_start: float, start_epoch: int = 0, div_final: float = 1e5) -> None:
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
        learn.fit(n_epoch, cbs=ParamScheduler({"lr": combined_cos(pct_start, lrs, lrs, lrs / div_final)}),
                  start_epoch=start_epoch)
    finally:
        del learn.resume_epoch


class HistoryLog(Callback):
    """One CSV row per trained epoch (``history.csv``); a resumed run appends to the same table."""

    order = 60

    def __init__(self, fname: str = "history.csv", *, append: bool = False) -> None:
        self.fname, self.append = fname, append

    def before_fit(self) -> None:
        if _lr_finding(self.learn):
            return
        path = self.learn.path / self.fname
        header = ",".join(self.recorder.metric_names)
        rows: list[str] = []
        if self.append and path.is_file():
            # keep the epochs before the one resumed from: an epoch logged but not checkpointed runs again
            start = getattr(self.learn, "resume_epoch", 0)
            rows = [r for r in path.read_text().splitlines()[1:] if r.split(",", 1)[0].isdigit() and int(r.split(",", 1)[0]) < start]
        self.file = path.open("w")
        self.file.write("\n".join([header, *rows]) + "\n")
        self.file.flush()
        self.old_logger, self.learn.logger = self.learn.logger, self._write_line

    def _write_line(self, log) -> None:
        if _skipped(self):  # a resumed fit's skipped epoch: no row, no line in the progress table
            return
        self.file.write(",".join(str(t) for t in log) + "\n")
        self.file.flush()
        self.old_logger(log)

    def after_fit(self) -> None:
        if _lr_finding(self.learn):
            return
        self.file.close()
        if self.learn.logger == self._write_line:  # ProgressCallback may have restored its own already
            self.learn.logger = self.old_logger


class Checkpoint(Callback):
    """Save weights and optimiser state after every epoch, for resuming."""

    order = 60

    def __init__(self, fname: str = "last") -> None:
        self.fname = fname

    def after_epoch(self) -> None:
        if _skipped(self):
            return
        self.learn.save(self.fname, with_opt=True)
        (self.learn.path / self.learn.model_dir / f"{self.fname}.json").write_text(
            json.dumps({"epoch": self.epoch, "n_epoch": self.n_epoch})
        )


class EpochLog(Callback):
    """One log line per epoch (for background runs without a progress bar)."""

    order = 70

    def __init__(self, log=print) -> None:
        self.log = log

    def before_epoch(self) -> None:
        self.t0 = time.time()

    def after_epoch(self) -> None:
        if _skipped(self):
            return
        names = ["train_loss", "valid_loss", *[m.name for m in self.learn.metrics]]
        values = self.learn.recorder.log[1:-1] if self.learn.recorder.log else []
        pairs = " ".join(f"{n}={v:.4f}" for n, v in zip(names, values, strict=False) if isinstance(v, float))
        self.log(f"epoch {self.epoch + 1}/{self.n_epoch} {pairs} ({time.time() - self.t0:.0f}s)")


class BatchTimer(Callback):
    """Record when each training batch ends (used to fit an epoch length to a time budget)."""

    order = 80

    def before_fit(self) -> None:
        self.times: list[float] = []

    def after_batch(self) -> None:
        if self.training:
            self.times.append(time.perf_counter())

    def batches_per_second(self, *, skip: int = 10) -> float:
        """Steady-state rate, leaving out the first ``skip`` batches (warm-up, cudnn autotuning)."""
        times = self.times[skip:] if len(self.times) > skip + 2 else self.times
        if len(times) < 2:
            raise RuntimeError(f"too few timed batches ({len(self.times)}) to measure a rate")
        return (len(times) - 1) / (times[-1] - times[0])


def samples_for_budget(config: TrainConfig, batches_per_second: float, *, margin: float = 0.85) -> int:
    """Patches per epoch such that ``config.epochs`` epochs fit ``margin`` x the time budget."""
    assert config.time_budget_minutes is not None
    batches = config.time_budget_minutes * 60 * margin * batches_per_second / config.epochs
    return max(1, int(batches)) * config.batch_size


# ----------------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------------


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
        if precision == "fp16":
            raise StudyError(f"--precision fp16: float16 mixed precision needs a GPU, but training runs on {device}; "
                             "use bf16, fp32 or auto")
        if precision == "bf16" and not cpu_bf16_supported():
            raise StudyError("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX) and would only "
                             "emulate it, slowly; use fp32 or auto")
        return precision if precision == "bf16" else "fp32"
    if precision == "auto":
        # native bfloat16 from compute capability 8 (Ampere) on; older GPUs would only emulate it, slowly
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return precision


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class CPUAutocast(Callback):
    """bfloat16 autocast on the CPU for the forward pass and the loss (fastai's ``to_bf16`` is CUDA-only).

    bfloat16 has float32's range, so no loss scaling is needed; predictions go back to float32.
    """

    order = 10
    autocast = None

    def before_batch(self) -> None:
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.autocast.__enter__()

    def after_pred(self) -> None:
        if self.pred.dtype == torch.bfloat16:
            self.learn.pred = self.pred.float()

    def after_loss(self) -> None:
        if self.autocast is not None:  # exited once, whether the batch ends or is cancelled
            self.autocast.__exit__(None, None, None)
            self.autocast = None

    def after_cancel_batch(self) -> None:
        self.after_loss()

    def after_fit(self) -> None:
        self.after_loss()


class ChannelsLast3d(Callback):
    """Train in the ``channels_last_3d`` memory format (faster 3-D convolutions on the CPU: 0.23 s
    instead of 0.31 s per 64³ step on this project's machine, ``python benchmarks/bench_train_step.py``).

    The weights go back to the standard layout after fitting, so checkpoints, exports and inference
    are unaffected; only float rounding differs.
    """

    order = 5

    def before_fit(self) -> None:
        self.learn.model.to(memory_format=torch.channels_last_3d)

    def before_batch(self) -> None:
        self.learn.xb = tuple(x.to(memory_format=torch.channels_last_3d) if x.ndim == 5 else x for x in self.xb)

    def after_fit(self) -> None:
        self.learn.model.to(memory_format=torch.contiguous_format)


def check_config(config: TrainConfig) -> None:
    """Refuse settings that could only fail later (after minutes or hours of training).

    Raises:
        StudyError: saying which setting and what was expected.
    """
    if config.epochs < 1:
        raise StudyError(f"--epochs: expected at least 1, found {config.epochs}")
    if config.time_budget_minutes is not None and not config.time_budget_minutes > 0:
        raise StudyError(f"--time-budget: expected a positive number of minutes, found {config.time_budget_minutes}")
    if config.export_dtype not in EXPORT_DTYPES:
        raise StudyError(f"--export-dtype: expected one of {EXPORT_DTYPES}, found {config.export_dtype!r}")
    if config.precision not in PRECISIONS:
        raise StudyError(f"--precision: expected one of {PRECISIONS}, found {config.precision!r}")
    if config.init_from is not None and not (Path(config.init_from) / "model.json").is_file():
        raise StudyError(f"--init-from {config.init_from}: expected a run or model folder with a model.json, found none")


def _card_for(config: TrainConfig, name: str) -> ModelCard:
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


def versions() -> dict[str, str]:
    """Versions of the libraries a learner depends on."""
    import fastai
    import monai

    from . import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "fastai": fastai.__version__,
        "numpy": np.__version__,
        "brats_seg": __version__,
    }


def train(data_dir: str | Path, out_dir: str | Path, config: TrainConfig | None = None, *, log=print) -> Path:
    """Train one fold (or all cases with ``fold=-1``) and export the learner with its card.

    Returns:
        The run folder, holding ``model.pkl``, ``model.json``, ``splits.json``, ``history.csv`` and
        checkpoints under ``models/``.
    """
    import fastai.callback.schedule  # noqa: F401  (patches Learner with fit_flat_cos and lr_find)
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.optimizer import ranger

    config = config or TrainConfig()
    check_config(config)
    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = resolve_precision(config.precision, device)  # before minutes of data loading

    card = _card_for(config, name=f"brats-seg-unet-{'x'.join(f'{s:g}' for s in config.spacing)}mm")
    packed: dict[str, Case] | None = None
    if data_dir.suffix == ".npz":
        packed = load_pack(data_dir, card)
        names = list(packed)
    else:
        folders = [f for f in io.find_studies(data_dir) if io.has_truth(f)]
        if not folders:
            raise StudyError(f"no cases with a *_seg ground truth under {data_dir}")
        names = [f.name for f in folders]
        by_name = dict(zip(names, folders, strict=True))
    split_path = out / "splits.json"
    if config.splits is not None:
        folds = read_splits(config.splits)
        config.folds = len(folds)
        split_path.write_text(json.dumps({"k": len(folds), "from": str(config.splits), "folds": folds}, indent=2) + "\n")
    elif config.resume and split_path.is_file():
        folds = json.loads(split_path.read_text())["folds"]
    else:
        folds = make_folds(names, k=config.folds, seed=config.seed)
        split_path.write_text(json.dumps({"k": config.folds, "seed": config.seed, "folds": folds}, indent=2) + "\n")
    if config.fold >= len(folds):
        raise StudyError(f"--fold {config.fold}: expected -1 (all cases) or a fold below {len(folds)}, the split's k")
    held_out = [] if config.fold < 0 else folds[config.fold]
    train_names = [n for n in names if n not in held_out]
    log(f"{len(train_names)} training cases, {len(held_out)} held out (fold {config.fold} of {config.folds})")

    unknown = sorted(set(held_out) - set(names))
    if unknown:
        raise StudyError(f"the split holds out {unknown}, which are not among the cases of {data_dir}")
    t0 = time.time()
    if packed is not None:
        train_cases = [packed[n] for n in train_names]
        val_cases = [packed[n] for n in held_out]
    else:
        cache = out.parent / "cache"
        train_cases = load_cases([by_name[n] for n in train_names], card, cache_dir=cache, log=log)
        val_cases = load_cases([by_name[n] for n in held_out], card, cache_dir=cache, log=log)
    val_cases = val_cases or train_cases[:2]
    log(f"data ready in {time.time() - t0:.0f}s")

    state_file = out / "models" / "last.json"
    resuming = config.resume and state_file.is_file()
    train_ds = PatchDataset(train_cases, patch_size=config.patch_size, length=config.samples_per_epoch,
                            intensity_augment=config.intensity_augment, seed=config.seed)
    valid_ds = FixedPatchDataset(val_cases, patch_size=config.patch_size, per_case=config.val_patches, seed=config.seed + 1)
    dls = DataLoaders.from_dsets(
        train_ds, valid_ds, bs=config.batch_size, num_workers=config.num_workers, device=device, shuffle=False
    )
    net = build_unet(channels=config.channels, num_res_units=config.num_res_units)
    learn = Learner(
        dls,
        net,
        loss_func=DiceBCELoss(),
        opt_func=ranger,
        metrics=[dice_tc, dice_wt, dice_et],
        wd=config.weight_decay,
        path=out,
        model_dir="models",
        cbs=[HistoryLog("history.csv", append=resuming), Checkpoint("last")],
    )
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
    if not config.progress:
        from fastai.callback.progress import ProgressCallback
        from fastcore.basics import noop

        learn.remove_cb(ProgressCallback)
        learn.logger = noop
        learn.add_cb(EpochLog(log))

    start_epoch = 0
    init = None
    if config.init_from is not None and not resuming:
        init = init_weights(learn.model, config.init_from, held_out=held_out)
        log(f"initialised from {init['file']} ({init['sha256'][:12]})")
    elif config.init_from is not None:
        log(f"--init-from {config.init_from} ignored: resuming from the run's own checkpoint")
    lr = config.lr
    meta_path = out / "train_meta.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if (resuming and meta_path.is_file()) else {}
    if resuming:
        checkpoint = out / "models" / "last.pth"
        if not checkpoint.is_file():
            raise StudyError(f"{checkpoint}: expected the checkpoint that {state_file.name} beside it describes, found none; "
                             "start a new run folder")
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
        train_ds.reseed(int(np.random.SeedSequence([config.seed, start_epoch]).generate_state(1)[0]))
        lr = lr or meta.get("lr")
        log(f"resuming at epoch {start_epoch} with lr {lr}")
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
        if budgeted and len(timer.times) < 2:
            log(f"lr_find stopped after {len(timer.times)} batches, too few to time: keeping {config.samples_per_epoch} samples per epoch")
        elif budgeted:
            rate = timer.batches_per_second()
            samples = samples_for_budget(config, rate)
            meta["measured_batches_per_second"] = rate
            log(f"{rate:.2f} batches/s measured: {samples} samples per epoch fit {config.time_budget_minutes:g} min")
            config.samples_per_epoch = samples
            train_ds.length = samples
            learn.dls.train.n = samples
    elif config.resume and "samples_per_epoch" in meta:
        config.samples_per_epoch = train_ds.length = learn.dls.train.n = int(meta["samples_per_epoch"])
    meta["samples_per_epoch"] = config.samples_per_epoch
    lr = float(lr or 3e-3)
    sessions = meta.get("trained_on", []) if resuming else []
    if start_epoch < config.epochs:
        sessions.append(f"{_hardware(device)}, {precision}, from epoch {start_epoch + 1}")
    meta.update({"lr": lr, "precision": precision, "channels_last": channels_last, "trained_on": sessions, "config": _jsonable(config.__dict__), "train_cases": train_names, "held_out": held_out,
                 "data": str(data_dir)})
    if not resuming:
        meta["init_from"] = init
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")

    t = time.time()
    if start_epoch < config.epochs:
        fit_flat_cos(learn, config.epochs, lr=lr, pct_start=config.pct_start, start_epoch=start_epoch)
    train_seconds = time.time() - t + float(meta.get("train_seconds", 0.0))
    meta["train_seconds"] = train_seconds
    meta["batches_per_epoch"] = len(learn.dls.train)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")

    export_with_card(learn, out, card, config=config, meta=meta, device=device)
    log(f"exported {out / 'model.pkl'} after {train_seconds / 60:.1f} min of training")
    return out


def pick_member(card: ModelCard, held_out: Sequence[str], *, what: str) -> tuple[str, dict[str, Any]]:
    """The learner of a model folder that a run of the same fold may start from or average with.

    A run folder has one learner. A bundle of fold models has several: the member whose
    ``held_out_cases`` are exactly ``held_out`` (the same fold of the same split) is picked.

    Args:
        card: The folder's model card.
        held_out: The cases the new run or average holds out.
        what: How messages name the folder (e.g. ``"--init-from model"``).

    Returns:
        The learner's file name (as the card lists it) and its ``training`` record.

    Raises:
        StudyError: for a bundle none of whose members holds out exactly ``held_out``.
    """
    members = card.extra.get("members")
    if not members:
        return card.files[0], dict(card.extra.get("training", {}))
    for member in members:
        training = member.get("training", {})
        if held_out and set(training.get("held_out_cases", [])) == set(held_out):
            return member["file"], dict(training)
    found = "; ".join(f"{m['file']}: {sorted(m.get('training', {}).get('held_out_cases', []))}" for m in members)
    raise StudyError(
        f"{what}: expected a bundle member that holds out exactly {sorted(held_out)} (the same fold of the same "
        f"split), found none among its {len(members)} members ({found})"
    )


def init_weights(net: nn.Module, model_dir: str | Path, *, held_out: Sequence[str] = ()) -> dict[str, Any]:
    """Copy the weights of a trained model folder's learner into ``net`` (to fine-tune it).

    The learner is loaded the safe way (sha256 checked against its card first). From a run folder
    that is its one learner; from a bundle of fold models (e.g. the shipped ``model/``), the member
    of the same fold (:func:`pick_member`). ``held_out`` are the cases the new run holds out: a
    source trained on any of them is refused, since its scores on them would no longer come from
    unseen cases.

    Returns:
        What was loaded: ``file``, ``sha256`` and the earlier run's ``training`` record.

    Raises:
        StudyError: naming the folder, when its network's layers or shapes differ from ``net``'s, when
            it was trained on a case in ``held_out``, or when no bundle member is of this fold.
    """
    from .model import load_model

    source = load_model(model_dir, device="cpu")
    fname, training = pick_member(source.card, held_out, what=f"--init-from {model_dir}")
    seen = set(held_out) & set(training.get("train_cases", []))
    if seen:
        raise StudyError(
            f"--init-from {model_dir}: it was trained on {sorted(seen)}, which this run holds out; "
            "expected a model that never saw the held-out cases (e.g. the same fold of the same split)"
        )
    state = source.networks[source.card.files.index(fname)].state_dict()
    ours = net.state_dict()
    mismatched = sorted(k for k in ours if k not in state or state[k].shape != ours[k].shape)
    if mismatched or len(state) != len(ours):
        raise StudyError(
            f"--init-from {model_dir}: its network differs from the one being trained "
            f"({len(mismatched)} of {len(ours)} tensors missing or of another shape, e.g. {mismatched[:2]}); "
            "expected the same --channels and --num-res-units"
        )
    net.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()})
    return {"file": str(Path(model_dir) / fname), "sha256": source.card.sha256[fname], "training": training}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def export_with_card(learn, out: Path, card: ModelCard, *, config: TrainConfig, meta: dict[str, Any], device) -> ModelCard:
    """``learn.export()`` to ``out/model.pkl`` and write ``out/model.json`` filled from the run."""
    from .model import sha256_of

    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ in
                      ("Checkpoint", "HistoryLog", "EpochLog", "CPUAutocast", "ChannelsLast3d")])
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
    n_params = sum(p.numel() for p in learn.model.parameters())
    iterations = config.epochs * (config.samples_per_epoch // config.batch_size)
    card.extra = {
        "intended_use": "Research only. Not a medical device; not for clinical use or diagnosis.",
        "architecture": {
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
        },
        "versions": versions(),
        "training": {
            "recipe": "brats_seg.train (fastai Learner, Ranger, lr_find, fit_flat_cos, Dice+BCE on TC/WT/ET)",
            "data": "BraTS 2018 training cases (expert labels) from ../shared/data/brats"
            + (f", preprocessed into {Path(meta['data']).name} by brats-seg pack" if str(meta.get("data", "")).endswith(".npz") else ""),
            "train_cases": meta.get("train_cases", []),
            "held_out_cases": meta.get("held_out", []),
            "folds": config.folds,
            "fold": config.fold,
            "epochs": config.epochs,
            "iterations": iterations,
            "batch_size": config.batch_size,
            "patch_size": list(config.patch_size),
            "intensity_augment": config.intensity_augment,
            "time_budget_minutes": config.time_budget_minutes,
            "init_from": _init_record(meta.get("init_from")),
            "weights_dtype": config.export_dtype,
            "precision": meta.get("precision"),
            "channels_last": meta.get("channels_last"),
            "trained_on": meta.get("trained_on", []),
            "lr": meta.get("lr"),
            "lr_find_valley": meta.get("lr_find_valley"),
            "wall_time_minutes": round(float(meta.get("train_seconds", 0.0)) / 60, 1),
            "hardware": _hardware(device),
        },
        "scores": {},
    }
    card.save(out / "model.json")
    return card


def bundle(
    runs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    name: str | None = None,
    postprocess: dict[str, float] | None = None,
    weights_dtype: str | None = None,
    tta_flips: bool = False,
) -> ModelCard:
    """Gather trained runs into one model folder: ``<run>.pkl`` per run and one card listing them all.

    Runs must agree on everything that changes how the input is read and the output is decoded
    (channels, output, spacing, orientation, normalisation, roi_size).

    Args:
        runs: Run folders written by :func:`train`.
        out_dir: Model folder to write.
        name: Model name; default the first run's, with ``-ensemble`` for several runs.
        postprocess: The card's post-processing settings (see
            :func:`brats_seg.postprocess.clean_labels`); settings of 0 are left out. Default none.
        weights_dtype: ``"float16"`` or ``"float32"`` to store every learner's weights in that type
            (each run's learner is loaded after its sha256 check, converted and exported again, and
            the member's ``weights_dtype`` says so); default ``None`` copies the files unchanged.
            ``float16`` halves the files; :func:`brats_seg.model.load_model` computes in float32.
        tta_flips: The card's default for test-time flips (see :func:`brats_seg.inference.predict`).

    Raises:
        ModelError: for runs that read inputs differently, or an unknown ``weights_dtype``.
    """
    import shutil

    from .errors import ModelError

    if weights_dtype is not None and weights_dtype not in EXPORT_DTYPES:
        raise ModelError(f"bundle: expected weights_dtype in {EXPORT_DTYPES} or None, found {weights_dtype!r}")

    runs = [Path(r) for r in runs]
    cards = [ModelCard.load(r / "model.json") for r in runs]
    first = cards[0]
    _refuse_other_reading(runs, cards, verb="bundle")
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ModelError(f"cannot bundle runs with the same folder name (each becomes <run>.pkl): {', '.join(names)}")
    for run, card in zip(runs, cards, strict=True):  # every run checked before anything is written
        _check_run_learner(run, card)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, sha, members = [], {}, []
    for run, card in zip(runs, cards, strict=True):
        fname = f"{run.name}.pkl"
        training = dict(card.extra.get("training", {}))
        source_sha = card.sha256[card.files[0]]
        if weights_dtype is None:
            shutil.copyfile(run / card.files[0], out / fname)
            sha[fname] = source_sha
        else:
            sha[fname] = _export_as(run / card.files[0], source_sha, out / fname, weights_dtype)
            training["weights_dtype"] = weights_dtype
            training["converted_from"] = {"file": str(run / card.files[0]), "sha256": source_sha}
        files.append(fname)
        members.append({"file": fname, "training": training})
    extra = dict(first.extra)
    extra["members"] = members
    extra.pop("training", None)
    held = [set(m["training"].get("held_out_cases", [])) for m in members]
    extra["held_out_cases"] = sorted(set.intersection(*held)) if held else []
    extra["scores"] = {}
    merged = dataclasses.replace(
        first,
        name=name or (first.name + ("-ensemble" if len(runs) > 1 else "")),
        files=files,
        sha256=sha,
        postprocess={k: float(v) for k, v in (postprocess or {}).items() if v},
        tta_flips=bool(tta_flips),
        extra=extra,
    )
    merged.save(out / "model.json")
    return merged


def _refuse_other_reading(folders: Sequence[Path], cards: Sequence[ModelCard], *, verb: str) -> None:
    """Refuse model folders that read inputs or decode outputs differently from the first one."""
    from .errors import ModelError

    must_match = ("channels", "output", "spacing", "orientation", "normalisation", "roi_size")
    for folder, card in zip(folders[1:], cards[1:], strict=True):
        for key in must_match:
            if getattr(card, key) != getattr(cards[0], key):
                raise ModelError(
                    f"cannot {verb} {folder}: its {key} {getattr(card, key)} differs from {getattr(cards[0], key)} of {folders[0]}"
                )


def average(sources: Sequence[str | Path], out_dir: str | Path, *, weights_dtype: str | None = None) -> ModelCard:
    """Average the weights of several runs of one fold into one learner (a "model soup").

    Fine-tunes that start from the same weights stay close enough for the mean of their weights to be
    a network of its own, often better than each of them, at the cost of one network when predicting.
    Every learner is loaded the safe way (sha256 checked against its card). Sources must hold out the
    same cases: a run folder's one learner, or a bundle's member of that fold (:func:`pick_member`),
    so that the average's scores on the held-out cases still come from unseen cases.

    Args:
        sources: Model folders: at least two, the first a run folder written by :func:`train` (its
            card and held-out cases are the average's).
        out_dir: Run folder to write (``model.pkl`` and ``model.json``), usable by :func:`bundle`.
        weights_dtype: ``"float16"`` or ``"float32"`` for the stored weights; default the first
            run's. The mean itself is computed in float32.

    Returns:
        The card written; its ``training.averaged_from`` lists each source learner and its sha256.

    Raises:
        ModelError: for fewer than two sources, a first source that is not a run, sources that hold
            out other cases, read inputs differently or hold other networks, or a changed learner.
    """
    from .errors import ModelError
    from .model import load_learner_checked, sha256_of

    sources = [Path(src) for src in sources]
    if len(sources) < 2:
        raise ModelError(f"average: expected at least two model folders, found {len(sources)}")
    cards = [ModelCard.load(src / "model.json") for src in sources]
    if weights_dtype is not None and weights_dtype not in EXPORT_DTYPES:
        raise ModelError(f"average: expected weights_dtype in {EXPORT_DTYPES} or None, found {weights_dtype!r}")
    if cards[0].extra.get("members"):
        raise ModelError(f"cannot average into {sources[0]}'s card: expected a run folder first (one learner), found a bundle")
    _refuse_other_reading(sources, cards, verb="average")
    held_out = cards[0].extra.get("training", {}).get("held_out_cases", [])
    picked: list[tuple[Path, str, dict[str, Any]]] = []
    for src, card in zip(sources, cards, strict=True):
        try:
            fname, training = pick_member(card, held_out, what=f"cannot average {src}")
        except StudyError as e:
            raise ModelError(str(e)) from e
        if set(training.get("held_out_cases", [])) != set(held_out):
            raise ModelError(
                f"cannot average {src}: it holds out {sorted(training.get('held_out_cases', []))}, expected "
                f"{sorted(held_out)} (those of {sources[0]}); only runs of the same fold can be averaged"
            )
        seen = set(held_out) & set(training.get("train_cases", []))
        if seen:
            raise ModelError(
                f"cannot average {src}: it was trained on {sorted(seen)}, which {sources[0]} holds out; "
                "expected learners that never saw the held-out cases"
            )
        picked.append((src, fname, training))
    learners = [load_learner_checked(src / fname, card.sha256[fname], cpu=True) for (src, fname, _), card in zip(picked, cards, strict=True)]
    states = [learn.model.state_dict() for learn in learners]
    for (src, _, _), state in zip(picked[1:], states[1:], strict=True):
        if state.keys() != states[0].keys() or any(state[k].shape != states[0][k].shape for k in state):
            raise ModelError(f"cannot average {src}: its network differs from {sources[0]}'s (other layers or shapes)")
    mean = {}
    for key, ref in states[0].items():
        if ref.is_floating_point():
            mean[key] = torch.stack([state[key].float() for state in states]).mean(0)
        else:
            mean[key] = ref.clone()
    learn = learners[0]
    dtype = getattr(torch, weights_dtype) if weights_dtype else next(learn.model.parameters()).dtype
    learn.model.load_state_dict({k: v.to(ref.dtype) for (k, v), ref in zip(mean.items(), states[0].values(), strict=True)})
    learn.model.to(dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    learn.path = out
    learn.export("model.pkl")
    training = dict(picked[0][2])
    training["averaged_from"] = [
        {"file": str(src / fname), "sha256": card.sha256[fname], "training": _training_brief(t)}
        for (src, fname, t), card in zip(picked, cards, strict=True)
    ]
    training["train_cases"] = sorted(set().union(*(t.get("train_cases", []) for _, _, t in picked)))
    training["weights_dtype"] = str(dtype).removeprefix("torch.")
    extra = dict(cards[0].extra)
    extra["training"] = training
    extra["scores"] = {}
    card = dataclasses.replace(cards[0], files=["model.pkl"], sha256={"model.pkl": sha256_of(out / "model.pkl")}, extra=extra)
    card.save(out / "model.json")
    return card


def _check_run_learner(run: Path, card: ModelCard) -> None:
    """Refuse a run whose card does not list exactly one learner, or whose learner is missing or changed."""
    from .errors import ModelError
    from .model import sha256_of

    if len(card.files) != 1:
        raise ModelError(f"cannot bundle {run}: expected a run card listing one learner file, found {card.files}")
    path = run / card.files[0]
    if not path.is_file():
        raise ModelError(f"cannot bundle {run}: its learner {path} is missing")
    actual, expected = sha256_of(path), card.sha256.get(card.files[0])
    if actual != expected:
        raise ModelError(f"cannot bundle {run}: expected {path} to have sha256 {expected} (its card), found {actual}")


def _export_as(source: Path, expected_sha256: str, dest: Path, dtype: str) -> str:
    """Load an exported learner (sha256-checked), store its weights as ``dtype``, export it to ``dest``.

    Returns:
        The sha256 of the new file.
    """
    from .model import load_learner_checked, sha256_of

    learn = load_learner_checked(source, expected_sha256, cpu=True)
    learn.model.to(getattr(torch, dtype))
    learn.path = dest.parent
    learn.export(dest.name)
    return sha256_of(dest)


def _init_record(init: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a fine-tuned model started from: file, sha256 and the earlier training in brief."""
    if not init:
        return None
    return {"file": init["file"], "sha256": init["sha256"], "training": _training_brief(init.get("training") or {})}


def _training_brief(training: dict[str, Any]) -> dict[str, Any]:
    """The parts of a training record that say what a learner saw and how long it trained."""
    keep = ("train_cases", "held_out_cases", "fold", "epochs", "iterations", "batch_size", "patch_size", "intensity_augment",
            "lr", "wall_time_minutes", "hardware", "init_from", "averaged_from")
    return {k: training[k] for k in keep if k in training}


def _hardware(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


__all__ = [
    "MODALITIES",
    "BrainBiasField",
    "DiceBCELoss",
    "FixedPatchDataset",
    "PatchDataset",
    "TrainConfig",
    "average",
    "build_unet",
    "dice_et",
    "dice_tc",
    "dice_wt",
    "make_folds",
    "train",
]
