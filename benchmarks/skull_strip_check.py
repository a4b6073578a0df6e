"""How deepbet's brain mask (the raw path's skull stripping) treats brains whose extent is known.

    python benchmarks/skull_strip_check.py                 # every 4th case of ../shared/data/brats
    python benchmarks/skull_strip_check.py --cases 23

On a BraTS case (already skull-stripped, so the brain is where the sequences are non-zero) deepbet
runs on the T1CE as the raw path runs it (``harmonise._skull_strip``). Prints per case the Dice of
its mask against the BraTS brain, the share of tumour voxels (ground truth WT) it leaves out, and its
time. A skull stripper that cuts tumour away would make the model miss it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from brats_seg import files, harmonise
from brats_seg.types import brain_mask

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=SHARED / "brats", help="folder of BraTS cases (default: %(default)s)"
    )
    parser.add_argument(
        "--cases", type=int, default=6, help="how many: every len/N-th case in name order (default: 6)"
    )
    args = parser.parse_args(argv)
    cases = sorted(p for p in args.data.iterdir() if p.is_dir())
    dices, lost, times = [], [], []
    for case in cases[:: max(1, len(cases) // args.cases)][: args.cases]:
        study = files.load_study(case)
        brain = brain_mask(study)
        t0 = time.perf_counter()
        mask = harmonise._skull_strip(study.images["T1CE"], study.affine, source=case.name)
        times.append(time.perf_counter() - t0)
        dices.append(2 * np.count_nonzero(mask & brain) / (mask.sum() + brain.sum()))
        tumour = study.truth > 0
        lost.append(np.count_nonzero(tumour & ~mask) / max(1, np.count_nonzero(tumour)))
        print(
            f"{case.name}: Dice with the brain {dices[-1]:.3f}, tumour left out {lost[-1]:.2%}, "
            f"{times[-1]:.1f} s",
            flush=True,
        )
    print(
        f"{len(dices)} cases: Dice {np.mean(dices):.3f} (min {np.min(dices):.3f}), tumour left out mean "
        f"{np.mean(lost):.2%} (max {np.max(lost):.2%}), {np.median(times):.1f} s median"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
