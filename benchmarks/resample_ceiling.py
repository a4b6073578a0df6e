"""How much Dice/HD95 is lost by working at a coarser spacing, before any network is involved.

Each ground truth is converted to TC/WT/ET region masks, resampled to SPACING mm exactly as training
targets are (trilinear on the brain crop), resampled back with the same code that maps predictions
back (``preprocess.restore``), thresholded and scored against the original. This is the ceiling a
perfect network working at that spacing could reach.

    python benchmarks/resample_ceiling.py --spacing 2 2 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from brats_seg import files, metrics, postprocess, preprocess
from brats_seg.training.config import REGION_ORDER, TrainConfig, card_for


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brats"
    )
    parser.add_argument("--spacing", type=float, nargs=3, default=[2.0, 2.0, 2.0])
    args = parser.parse_args()
    card = card_for(TrainConfig(spacing=tuple(args.spacing)), "ceiling")
    rows = []
    t0 = time.time()
    for folder in [f for f in files.find_studies(args.data) if files.has_truth(f)]:
        study = files.load_study(folder)
        prepared = preprocess.prepare(study, card)
        regions = postprocess.labels_to_regions(study.truth, regions=REGION_ORDER).astype(np.float32)
        regions = preprocess.reorient(regions, prepared.ornt)
        sl = tuple(slice(a, b) for a, b in prepared.box)
        import torch

        coarse = preprocess.resample(
            torch.from_numpy(np.ascontiguousarray(regions[(slice(None), *sl)])),
            tuple(prepared.tensor.shape[1:]),
        )
        back = preprocess.restore(coarse, prepared)
        labels = postprocess.to_labels(back, card)
        rows.append(metrics.flatten_scores(metrics.score(labels, study.truth, spacing=study.spacing)))
    summary = metrics.summarise(rows)
    print(f"{len(rows)} cases, spacing {args.spacing} mm, {time.time() - t0:.0f} s")
    for key in ("dice_ET", "dice_TC", "dice_WT", "hd95_ET", "hd95_TC", "hd95_WT"):
        s = summary[key]
        print(f"{key:<8} mean {s['mean']:.4f}  median {s['median']:.4f}  min {s['min']:.4f}")


if __name__ == "__main__":
    main()
