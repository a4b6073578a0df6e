"""Nested choice of a three-flip subset, paired against all four flips (stage 8's rule, DECISION.md).

    python docs/model/experiments/cpu-stage8-passes/nested_flips.py \
        docs/model/experiments/cpu-stage8-passes/flipsets.csv docs/model/experiments/gpu-cv5-2mm/splits.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

REGIONS = ("WT", "TC", "ET")
FULL = "bundles 0, flips none+x+y+z"
THREE = ["bundles 0, flips none+x+y", "bundles 0, flips none+x+z", "bundles 0, flips none+y+z"]


def interval(diff: np.ndarray) -> str:
    """Mean change and its 95 % percentile bootstrap interval."""
    ci = bootstrap(
        (diff,), np.mean, n_resamples=10000, method="percentile", random_state=0
    ).confidence_interval
    return f"{diff.mean():+.5f} [{ci.low:+.5f}, {ci.high:+.5f}]"


def main(csv: str, splits: str) -> None:
    scores = pd.read_csv(csv)
    scores = scores[(scores.t_tc == 0.5) & (scores.t_wt == 0.5) & (scores.t_et == 0.5)]
    table = {
        dec: g.set_index("case")[[f"dice_{r}" for r in REGIONS]] for dec, g in scores.groupby("decoding")
    }
    base = table[FULL]
    gain = {dec: (table[dec] - base.loc[table[dec].index]).mean(axis=1) for dec in THREE}  # mean of 3 regions
    folds = json.loads(open(splits).read())["folds"]
    chosen = {}
    for i, fold in enumerate(folds):
        others = [c for j, f in enumerate(folds) if j != i for c in f]
        best = max(THREE, key=lambda dec: gain[dec].loc[others].mean())
        change = gain[best].loc[others].mean()
        print(f"fold {i}: {best.split('flips ')[1]} (mean change on the other folds {change:+.4f})")
        chosen.update({case: best for case in fold})
    nested = pd.DataFrame([table[chosen[c]].loc[c] for c in base.index], index=base.index)
    print(f"\nnested three flips against four, {len(base)} cases (mean change [95% interval]):")
    for r in REGIONS:
        col = f"dice_{r}"
        change = interval((nested[col] - base[col]).values)
        print(f"  {r}: {nested[col].mean():.4f} vs {base[col].mean():.4f}: {change}")
    print(f"  mean of the three: {interval((nested - base).mean(axis=1).values)}")
    overall = max(THREE, key=lambda dec: gain[dec].mean())
    print(f"\nchosen on all {len(base)} cases: {overall.split('flips ')[1]} ({gain[overall].mean():+.4f})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
