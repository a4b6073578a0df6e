"""Paired comparison of the nested region thresholds against 0.5, from tune_decoding's CSV.

Each case gets the thresholds its fold's nested choice picked (as printed by
``benchmarks/tune_decoding.py --splits``); its scores are read from the CSV and paired with the
same case's scores at 0.5. Prints the mean change per region and of the per-case mean of the three
Dice, each with its 95 % percentile-bootstrap interval (10,000 resamples, seeded), and cases up/down.

    python docs/model/experiments/cpu-stage7-remedies/paired_thresholds.py runs/logs/decoding6.csv \
        docs/model/experiments/gpu-cv5-2mm/splits.json \
        "0.35,0.35,0.35;0.35,0.35,0.35;0.35,0.35,0.35;0.3,0.35,0.35;0.35,0.35,0.5"
"""

import csv
import json
import sys

import numpy as np

from brats_seg.metrics import bootstrap_ci

table, splits, choice = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {(r["case"], r["t_tc"], r["t_wt"], r["t_et"]): r for r in csv.DictReader(open(table))}
folds = json.load(open(splits))["folds"]
picked = [tuple(str(float(x)) for x in f.split(",")) for f in choice.split(";")]
base, new = [], []
for cases, (tc, wt, et) in zip(folds, picked, strict=True):
    for case in cases:
        base.append(rows[(case, "0.5", "0.5", "0.5")])
        new.append(rows[(case, *(f"{float(v):g}" for v in (tc, wt, et)))])
print(f"{len(base)} cases")
for col in ("dice_WT", "dice_TC", "dice_ET", "hd95_WT", "mean3"):
    if col == "mean3":
        a = np.array([np.mean([float(r[f"dice_{g}"]) for g in ("WT", "TC", "ET")]) for r in base])
        b = np.array([np.mean([float(r[f"dice_{g}"]) for g in ("WT", "TC", "ET")]) for r in new])
    else:
        a = np.array([float(r[col]) for r in base])
        b = np.array([float(r[col]) for r in new])
    d = b - a
    lo, hi = bootstrap_ci(d)
    print(
        f"{col:8s} base {a.mean():.4f} nested {b.mean():.4f} change {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"
        f" up {int((d > 1e-9).sum())} down {int((d < -1e-9).sum())}"
    )
