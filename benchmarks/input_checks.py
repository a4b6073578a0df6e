"""The figures behind ``brats_seg.quality``'s limits, measured on real studies.

For every study under the given folders: the fraction of the field of view that is non-zero (the
brain, in a skull-stripped study), its volume in mL, the voxel size, each sequence's uncovered
fraction, and the warnings :func:`brats_seg.quality.check_study` gives.

    python benchmarks/input_checks.py ../shared/data/brats ../shared/data/demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from brats_seg import files, quality
from brats_seg.types import brain_mask


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", type=Path, nargs="+", help="folders of study folders")
    args = parser.parse_args()
    fractions, volumes, n_warned = [], [], 0
    for folder in args.folders:
        for path in files.find_studies(folder):
            study = files.load_study(path)
            mask = brain_mask(study)
            fraction = float(mask.mean())
            ml = float(mask.sum()) * float(np.prod(study.spacing)) / 1000
            uncovered = {m: round(quality.uncovered_fraction(im, mask), 3) for m, im in study.images.items()}
            warnings = quality.check_study(study)
            fractions.append(fraction)
            volumes.append(ml)
            n_warned += bool(warnings)
            print(
                f"{study.name}: non-zero {fraction:.3f} of the view, {ml:.0f} mL, spacing {study.spacing}, "
                f"uncovered {uncovered}, {len(warnings)} warnings"
            )
            for w in warnings:
                print(f"  warning: {w}")
    print(
        f"{len(fractions)} studies: non-zero fraction {min(fractions):.3f}-{max(fractions):.3f}, "
        f"brain {min(volumes):.0f}-{max(volumes):.0f} mL, {n_warned} with warnings"
    )


if __name__ == "__main__":
    main()
