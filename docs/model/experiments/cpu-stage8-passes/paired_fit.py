"""One grown window against MONAI's overlapping 96^3 windows, paired case by case (stage 8, DECISION.md).

    python docs/model/experiments/cpu-stage8-passes/paired_fit.py \
        docs/model/experiments/cpu-stage8-passes/flipsets.csv \
        docs/model/experiments/cpu-stage8-passes/fit_window.csv
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

REGIONS = ("WT", "TC", "ET")
DECODING = "bundles 0, flips none+x+y+z"


def scores(csv: str) -> pd.DataFrame:
    """Per-case Dice of all four flips at the card's threshold."""
    table = pd.read_csv(csv)
    table = table[
        (table.decoding == DECODING) & (table.t_tc == 0.5) & (table.t_wt == 0.5) & (table.t_et == 0.5)
    ]
    return table.set_index("case")[[f"dice_{r}" for r in REGIONS]]


def interval(diff: np.ndarray) -> str:
    """Mean change and its 95 % percentile bootstrap interval."""
    ci = bootstrap(
        (diff,), np.mean, n_resamples=10000, method="percentile", random_state=0
    ).confidence_interval
    return f"{diff.mean():+.5f} [{ci.low:+.5f}, {ci.high:+.5f}]"


def main(base_csv: str, fit_csv: str) -> None:
    base, fit = scores(base_csv), scores(fit_csv)
    fit = fit.loc[base.index]
    change = fit - base
    print(f"grown window against 96^3 windows, {len(base)} cases, all four flips, threshold 0.5:")
    for r in REGIONS:
        col = f"dice_{r}"
        print(f"  {r}: {fit[col].mean():.4f} vs {base[col].mean():.4f}: {interval(change[col].values)}")
    print(f"  mean of the three: {interval(change.mean(axis=1).values)}")
    print("\ncases whose scores changed (WT/TC/ET, grown minus 96^3):")
    for case, row in change[(change != 0).any(axis=1)].iterrows():
        print(f"  {case}: " + " / ".join(f"{row[f'dice_{r}']:+.4f}" for r in REGIONS))


if __name__ == "__main__":
    main(*sys.argv[1:3])
