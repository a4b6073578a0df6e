"""Choose the model card's ``postprocess`` settings on saved predictions of held-out cases.

Scores every combination of a small grid of :func:`brats_seg.postprocess.clean_labels` settings
against the ground truth and prints mean Dice and HD95 per region for each, best first (ranked by the
mean of the three Dice means minus a hundredth of the mean of the three HD95 means). The predictions
must be made *without* post-processing and, to keep the choice honest, by a model that did not see
those cases and on cases that are not the ones the card's scores are reported on:

    brats-seg evaluate ../shared/data/brats --model runs/fold1 --cases @runs/fold1/model.json \\
        --no-postprocess --save-predictions --output artifacts/pp_fold1
    python benchmarks/tune_postprocess.py artifacts/pp_fold1
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
from pathlib import Path

import numpy as np

from brats_seg import io, metrics, postprocess
from brats_seg.cli import load_prediction

SIZES_MM3 = (0.0, 1000.0, 5000.0)
FRACTIONS = (0.0, 0.1, 0.2)
ET_MIN_MM3 = (0.0, 300.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="folder of <case>_seg.nii.gz written by evaluate --save-predictions")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brats")
    args = parser.parse_args()
    cases = []
    for path in sorted(args.predictions.glob("*_seg.nii.gz")):
        study = io.load_study(args.data / path.name.removesuffix("_seg.nii.gz"))
        cases.append((study, load_prediction(path, study).array))
    print(f"{len(cases)} cases: {', '.join(s.name for s, _ in cases)}")
    cache: dict[str, dict[str, float]] = {}  # many settings leave a case unchanged: score it once
    results = []
    for size, fraction, et_min in itertools.product(SIZES_MM3, FRACTIONS, ET_MIN_MM3):
        rows = []
        for study, pred in cases:
            cleaned = postprocess.clean_labels(pred, voxel_volume_mm3=float(np.prod(study.spacing)),
                                               min_component_mm3=size, min_component_fraction=fraction,
                                               et_min_mm3=et_min)
            key = study.name + hashlib.sha1(cleaned.tobytes()).hexdigest()
            if key not in cache:
                cache[key] = metrics.flatten_scores(metrics.score(cleaned, study.truth, spacing=study.spacing))
            rows.append(cache[key])
        summary = metrics.summarise(rows)
        dice = np.mean([summary[f"dice_{r}"]["mean"] for r in ("WT", "TC", "ET")])
        hd = np.mean([summary[f"hd95_{r}"]["mean"] for r in ("WT", "TC", "ET")])
        results.append((dice - hd / 100, size, fraction, et_min, summary))
    results.sort(key=lambda r: -r[0])
    print("min_component_mm3 min_component_fraction et_min_mm3 | Dice WT TC ET | HD95 WT TC ET")
    for _, size, fraction, et_min, s in results:
        print(f"{size:8.0f} {fraction:5.2f} {et_min:6.0f} | "
              + " ".join(f"{s[f'dice_{r}']['mean']:.3f}" for r in ("WT", "TC", "ET")) + " | "
              + " ".join(f"{s[f'hd95_{r}']['mean']:6.2f}" for r in ("WT", "TC", "ET")))


if __name__ == "__main__":
    main()
