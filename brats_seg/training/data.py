"""Training cases and patches: each case preprocessed once as inference will, random patches biased
towards tumour for training, fixed patches for validation.

``PatchDataset`` and ``FixedPatchDataset`` are pickled (empty) inside every exported learner; the
shipped learners refer to them under their old module ``brats_seg.train`` (see
:mod:`brats_seg.training.pickled_names`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import postprocess, preprocess
from ..card import ModelCard
from ..files import load_study
from ..types import Study
from .augment import augmentations
from .config import REGION_ORDER


@dataclass
class Case:
    """One preprocessed training case at the network's spacing."""

    name: str
    image: torch.Tensor  # (4, x, y, z) float32, z-scored
    target: torch.Tensor  # (3, x, y, z) float32 in [0, 1], TC/WT/ET
    fg: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))  # tumour voxels
    brain: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))


def preprocess_case(study: Study, card: ModelCard) -> Case:
    """Preprocess a study with ground truth exactly as inference will, plus its region targets.

    Raises:
        ValueError: for a study without ground truth.
    """
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


def cache_tag(card: ModelCard) -> str:
    """What the cached tensors of a case depend on: spacing, orientation and channels."""
    spacing = "x".join(f"{s:g}" for s in card.spacing)
    return f"sp{spacing}_{card.orientation}_" + "".join(c[:2] for c in card.channels)


def load_cases(
    folders: Sequence[Path],
    card: ModelCard,
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[Case]:
    """Load and preprocess cases, caching the tensors in ``cache_dir``."""
    cases = []
    tag = cache_tag(card)
    for folder in folders:
        cached = cache_dir / f"{folder.name}_{tag}.pt" if cache_dir else None
        if cached is not None and cached.is_file():
            d = torch.load(cached, weights_only=True)
            cases.append(make_case(folder.name, d["image"], d["target"]))
            continue
        t = time.time()
        case = preprocess_case(load_study(folder), card)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"image": case.image, "target": case.target}, cached)
        log(f"preprocessed {folder.name} -> {tuple(case.image.shape)} in {time.time() - t:.1f}s")
        cases.append(case)
    return cases


def crop_patch(case: Case, center: Sequence[int], size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch of ``size`` around ``center``, zero-padded where it leaves the volume."""
    shape = case.image.shape[1:]
    starts = [int(c) - s // 2 for c, s in zip(center, size, strict=True)]
    starts = [
        min(max(st, min(0, n - s)), max(n - s, 0)) for st, n, s in zip(starts, shape, size, strict=True)
    ]
    img = torch.zeros((case.image.shape[0], *size), dtype=case.image.dtype)
    tgt = torch.zeros((case.target.shape[0], *size), dtype=case.target.dtype)
    src = tuple(slice(max(st, 0), min(st + s, n)) for st, s, n in zip(starts, size, shape, strict=True))
    dst = tuple(slice(sl.start - st, sl.stop - st) for sl, st in zip(src, starts, strict=True))
    img[(slice(None), *dst)] = case.image[(slice(None), *src)]
    tgt[(slice(None), *dst)] = case.target[(slice(None), *src)]
    return img, tgt


def draw_center(case: Case, pool: np.ndarray, rng: np.random.Generator) -> Sequence[int]:
    """A random voxel of ``pool`` (the case's centre when the pool is empty)."""
    return pool[int(rng.integers(len(pool)))] if len(pool) else [n // 2 for n in case.image.shape[1:]]


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
        img, tgt = crop_patch(case, draw_center(case, pool, self.rng), self.patch_size)
        if self.tfms is not None:
            from monai.data import set_track_meta

            set_track_meta(False)
            out = self.tfms({"image": img, "label": tgt})
            img, tgt = torch.as_tensor(out["image"]), torch.as_tensor(out["label"]).clamp(0, 1)
        return img.float().contiguous(), tgt.float().contiguous()

    def new_empty(self) -> PatchDataset:
        """An empty copy (what ``learn.export()`` stores)."""
        return PatchDataset([], patch_size=self.patch_size, length=0, augment=False)


class FixedPatchDataset(torch.utils.data.Dataset):
    """Deterministic validation patches: ``per_case`` centres per case (tumour first, then brain)."""

    def __init__(
        self, cases: list[Case], *, patch_size: Sequence[int] = (64, 64, 64), per_case: int = 2, seed: int = 1
    ) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for case in cases:
            for k in range(per_case):
                pool = case.fg if (len(case.fg) and k % 2 == 0) else case.brain
                self.items.append(crop_patch(case, draw_center(case, pool, rng), patch_size))
        self.patch_size = tuple(patch_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[i]

    def new_empty(self) -> FixedPatchDataset:
        """An empty copy (what ``learn.export()`` stores)."""
        return FixedPatchDataset([], patch_size=self.patch_size)
