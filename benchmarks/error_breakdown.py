"""Where each case's whole-tumour (or other region's) errors are: missed tumour, extra tumour, islands.

For each ``<case>_seg.nii.gz`` in PREDICTIONS (written by ``brats-seg evaluate --save-predictions``)
and its ground truth under ``--data``, prints the region's Dice, the voxels of truth, of false
positives and of false negatives, the predicted connected parts, and the false-positive islands
(predicted parts that touch no true voxel of the region): how many and how many voxels. Ends with
how many cases miss more than they add, which says whether a lower threshold is worth checking.

    python benchmarks/error_breakdown.py artifacts/eval_stage3_tta --data ../shared/data/brats
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage

from brats_seg.files import load_study

REGION_LABELS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}


class Breakdown(NamedTuple):
    """One case's errors for one region, in voxels."""

    case: str
    dice: float
    truth: int
    false_positive: int
    false_negative: int
    parts: int
    islands: int
    island_voxels: int


def breakdown(case: str, predicted: np.ndarray, truth: np.ndarray, *, region: str = "WT") -> Breakdown:
    """Count one case's errors for ``region`` from its BraTS label maps (0/1/2/4)."""
    labels = REGION_LABELS[region]
    pred, true = np.isin(predicted, labels), np.isin(truth, labels)
    tp = int((pred & true).sum())
    fp, fn = int((pred & ~true).sum()), int((true & ~pred).sum())
    parts, n = ndimage.label(pred, structure=np.ones((3, 3, 3)))
    touching = np.unique(parts[pred & true])
    sizes = np.bincount(parts.ravel(), minlength=n + 1)
    islands = [i for i in range(1, n + 1) if i not in set(touching.tolist())]
    dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return Breakdown(
        case, dice, int(true.sum()), fp, fn, n, len(islands), int(sum(sizes[i] for i in islands))
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", type=Path, help="folder of <case>_seg.nii.gz predictions")
    p.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data/brats"),
        help="folder of case folders with ground truth (default: %(default)s)",
    )
    p.add_argument(
        "--region",
        choices=list(REGION_LABELS),
        default="WT",
        help="region to break down (default: %(default)s)",
    )
    args = p.parse_args(argv)
    files = sorted(args.predictions.glob("*_seg.nii.gz"))
    if not files:
        print(
            f"error: no <case>_seg.nii.gz in {args.predictions}; "
            "expected brats-seg evaluate --save-predictions output",
            file=sys.stderr,
        )
        return 2
    rows = []
    for path in files:
        case = path.name.removesuffix("_seg.nii.gz")
        truth = load_study(args.data / case).truth
        if truth is None:
            print(f"error: {args.data / case} has no ground truth", file=sys.stderr)
            return 2
        predicted = np.asanyarray(nib.load(path).dataobj)
        rows.append(breakdown(case, predicted, np.asarray(truth), region=args.region))
    print(
        f"{args.region}: case | Dice | truth | false positive | false negative | parts | "
        "FP islands | island voxels"
    )
    for r in rows:
        print(
            f"{r.case} | {r.dice:.3f} | {r.truth} | {r.false_positive} | {r.false_negative} | {r.parts} | "
            f"{r.islands} | {r.island_voxels}"
        )
    missing = sum(r.false_negative > r.false_positive for r in rows)
    print(
        f"{missing} of {len(rows)} cases miss more {args.region} voxels than they add; "
        f"in all, {sum(r.false_negative for r in rows)} missed "
        f"and {sum(r.false_positive for r in rows)} added "
        f"({sum(r.island_voxels for r in rows)} of them in islands)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
