"""Print a Markdown table comparing several ``brats-seg evaluate`` output folders.

    python benchmarks/compare_scores.py artifacts/raw_s0 artifacts/raw_s1 artifacts/raw_ens01

Each row is one folder: mean Dice and mean HD95 per region, and the median Dice, over its cases;
then a per-case WT / TC / ET Dice table.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from statistics import mean, median

REGIONS = ("WT", "TC", "ET")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate --output folders (each with scores.csv)")
    args = parser.parse_args()
    tables = {f: list(csv.DictReader(open(f / "scores.csv"))) for f in args.folders}
    print("| evaluation | n | " + " | ".join(f"Dice {r} mean (median)" for r in REGIONS)
          + " | " + " | ".join(f"HD95 {r} mean" for r in REGIONS) + " |")
    print("|---|---|" + "---|" * (2 * len(REGIONS)))
    for folder, rows in tables.items():
        dice = {r: [float(row[f"dice_{r}"]) for row in rows] for r in REGIONS}
        hd = {r: [float(row[f"hd95_{r}"]) for row in rows] for r in REGIONS}
        print(f"| {folder.name} | {len(rows)} | "
              + " | ".join(f"{mean(dice[r]):.3f} ({median(dice[r]):.3f})" for r in REGIONS) + " | "
              + " | ".join(f"{mean(hd[r]):.1f}" for r in REGIONS) + " |")
    print()
    cases = sorted({row["case"] for rows in tables.values() for row in rows})
    print("| case | " + " | ".join(f"{f.name} WT/TC/ET" for f in tables) + " |")
    print("|---|" + "---|" * len(tables))
    for case in cases:
        cells = []
        for rows in tables.values():
            row = next((r for r in rows if r["case"] == case), None)
            cells.append("–" if row is None else "/".join(f"{float(row[f'dice_{r}']):.2f}" for r in REGIONS))
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
