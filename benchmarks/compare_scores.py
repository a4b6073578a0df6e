"""Print Markdown tables comparing several ``brats-seg evaluate`` output folders.

    python benchmarks/compare_scores.py artifacts/eval_shipped artifacts/eval_candidate

Each row of the first table is one folder: mean Dice and mean HD95 per region, and the median Dice,
over its cases. The second compares every later folder with the first, case by case (paired):
the mean change of each region's Dice and of the whole tumour's HD95 over the cases both scored,
with a 95% percentile-bootstrap interval of that mean change and how many cases went up and down.
An interval that straddles 0 says that these cases cannot tell the two apart. The last table lists
each case's WT / TC / ET Dice per folder.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from brats_seg.metrics import bootstrap_ci  # noqa: E402

REGIONS = ("WT", "TC", "ET")
#: The paired comparison's columns: each region's Dice, then the whole tumour's HD95.
PAIRED = tuple(f"dice_{r}" for r in REGIONS) + ("hd95_WT",)
#: Per label (``evaluate`` scores NCR and ED on their own since the per-label scores landed; ET is a region).
PAIRED_LABELS = ("dice_NCR", "dice_ED", "hd95_NCR", "hd95_ED")


def read_scores(folder: Path) -> dict[str, dict[str, float]]:
    """``{case: {column: value}}`` from ``folder/scores.csv``."""
    with open(folder / "scores.csv", newline="") as f:
        return {
            row["case"]: {k: float(v) for k, v in row.items() if k != "case"} for row in csv.DictReader(f)
        }


def paired_change(
    base: dict[str, dict[str, float]], other: dict[str, dict[str, float]], column: str
) -> dict[str, float]:
    """The mean per-case change ``other - base`` of one column over the cases both scored.

    Returns:
        ``{"n", "mean", "ci_low", "ci_high", "up", "down"}``: the number of shared cases with a finite
        change (a NaN or infinite score is left out), the mean
        change, its 95% bootstrap interval, and how many cases rose and fell.

    Raises:
        ValueError: When the two folders share no case.
    """
    cases = sorted(set(base) & set(other))
    if not cases:
        raise ValueError(f"no case in common between the two evaluations, so no paired change of {column}")
    changes = [d for d in (other[c][column] - base[c][column] for c in cases) if math.isfinite(d)]
    if not changes:
        raise ValueError(f"no finite paired change of {column} between the two evaluations")
    low, high = bootstrap_ci(changes)
    return {
        "n": len(changes),
        "mean": mean(changes),
        "ci_low": low,
        "ci_high": high,
        "up": sum(d > 0 for d in changes),
        "down": sum(d < 0 for d in changes),
    }


def print_paired(
    base: dict[str, dict[str, float]], tables: dict[Path, dict[str, dict[str, float]]], columns: Sequence[str]
) -> None:
    """Print one Markdown row per later folder: the paired change of each column against ``base``."""
    print("| evaluation | n | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for folder, rows in list(tables.items())[1:]:
        changes = [paired_change(base, rows, c) for c in columns]
        print(
            f"| {folder.name} | {min(d['n'] for d in changes)} | "
            + " | ".join(
                f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]; {d['up']}/{d['down']}"
                for d in changes
            )
            + " |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folders",
        nargs="+",
        type=Path,
        help="evaluate --output folders (each with scores.csv); the first is the base",
    )
    args = parser.parse_args(argv)
    tables = {f: read_scores(f) for f in args.folders}
    print(
        "| evaluation | n | "
        + " | ".join(f"Dice {r} mean (median)" for r in REGIONS)
        + " | "
        + " | ".join(f"HD95 {r} mean" for r in REGIONS)
        + " |"
    )
    print("|---|---|" + "---|" * (2 * len(REGIONS)))
    for folder, rows in tables.items():
        dice = {r: [row[f"dice_{r}"] for row in rows.values()] for r in REGIONS}
        hd = {r: [row[f"hd95_{r}"] for row in rows.values()] for r in REGIONS}
        print(
            f"| {folder.name} | {len(rows)} | "
            + " | ".join(f"{mean(dice[r]):.3f} ({median(dice[r]):.3f})" for r in REGIONS)
            + " | "
            + " | ".join(f"{mean(hd[r]):.1f}" for r in REGIONS)
            + " |"
        )
    base_folder, base = next(iter(tables.items()))
    if len(tables) > 1:
        print()
        print(
            f"Paired change against {base_folder.name} "
            "(mean over shared cases [95% bootstrap interval]; cases up/down; "
            "a higher Dice is better, a higher HD95 worse):"
        )
        print()
        with_labels = all(PAIRED_LABELS[0] in row for rows in tables.values() for row in rows.values())
        print_paired(base, tables, PAIRED)
        if with_labels:
            print()
            print_paired(base, tables, PAIRED_LABELS)
    print()
    cases = sorted({case for rows in tables.values() for case in rows})
    print("| case | " + " | ".join(f"{f.name} WT/TC/ET" for f in tables) + " |")
    print("|---|" + "---|" * len(tables))
    for case in cases:
        cells = []
        for rows in tables.values():
            row = rows.get(case)
            cells.append("–" if row is None else "/".join(f"{row[f'dice_{r}']:.2f}" for r in REGIONS))
        print(f"| {case} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
