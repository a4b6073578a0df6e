"""Score thresholds, test-time flips and bundle combinations on cached held-out probabilities.

Reads what ``benchmarks/cv_probabilities.py`` wrote (each case's probabilities from the member(s) that
never saw it, per bundle and per flip) and, for each *decoding* (which bundles' members are averaged,
which flips), scores the per-region thresholds the card could hold: all at 0.5, and each region's
threshold moved alone over ``--thresholds`` while the others stay at 0.5. The whole pipeline of
``brats_seg.pipeline.segment`` after the network runs: trilinear resampling back to the brain crop,
nested TC/WT/ET thresholds, background outside the brain, the card's post-processing, Dice and HD95
against the ground truth (on the crop, which holds every tumour voxel, with the reoriented spacing).

Thresholds picked on the cases that then score them flatter themselves, so with ``--splits`` the
choice is cross-validated (nested): each fold's cases get, per region, the threshold that ranks best
on the *other* folds (mean Dice of that region minus a hundredth of its mean HD95; on a tie the one
closest to 0.5), and the pooled scores of those choices are printed next to 0.5.

    python benchmarks/tune_decoding.py artifacts/cv_probs --splits runs/fold0/splits.json \\
        --bundles 0 0,1 --flip-sets none none,x none,x,y,z
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from brats_seg import files, metrics, postprocess, preprocess
from brats_seg.card import ModelCard
from brats_seg.types import brain_mask

REGIONS = ("TC", "WT", "ET")  # the card's channel order
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)

Thresholds = tuple[float, float, float]  # TC, WT, ET
Decoding = tuple[tuple[int, ...], tuple[str, ...]]  # bundle indices, flips


def decoding_name(decoding: Decoding) -> str:
    bundles, flips = decoding
    return f"bundles {'+'.join(map(str, bundles))}, flips {'+'.join(flips)}"


def single_moves(grid: Sequence[float]) -> list[Thresholds]:
    """All thresholds at 0.5, then each region's alone over the grid."""
    out: list[Thresholds] = [(0.5, 0.5, 0.5)]
    for i in range(3):
        for t in grid:
            if t != 0.5:
                moved = [0.5, 0.5, 0.5]
                moved[i] = t
                out.append(tuple(moved))
    return out


def score_case(job: tuple) -> list[dict]:
    """Score one case for each (decoding, thresholds) asked; one process per case."""
    cache, data_dir, card_path, case, wanted, pp = job
    torch.set_num_threads(1)
    card = ModelCard.load(card_path)
    study = files.load_study(Path(data_dir) / case)
    prepared = preprocess.prepare(study, card)
    ornt = prepared.ornt
    spacing = preprocess.oriented_spacing(study, ornt)
    sl = tuple(slice(a, b) for a, b in prepared.box)
    truth = preprocess.reorient(study.truth, ornt)[sl]
    brain = preprocess.reorient(brain_mask(study), ornt)[sl]
    outside = preprocess.reorient(study.truth, ornt).copy()
    outside[sl] = 0
    if outside.any():
        raise SystemExit(f"{case}: ground truth outside the brain crop; the cropped scoring would be wrong")
    maps = np.load(Path(cache) / f"{case}.npz")
    rows = []
    voxel = float(np.prod(study.spacing))
    for decoding, threshold_list in wanted:
        bundles, flips = decoding
        mean = np.mean([maps[f"{b}_{f}"].astype(np.float32) for b in bundles for f in flips], axis=0)
        probs = preprocess.resample(torch.from_numpy(mean), prepared.cropped_shape).numpy()
        for thresholds in threshold_list:
            labels = postprocess.regions_to_labels(probs, order=REGIONS, threshold=thresholds)
            labels[~brain] = 0
            if pp:
                labels = postprocess.apply_postprocess(labels, voxel_volume_mm3=voxel, **pp)
            flat = metrics.flatten_scores(metrics.score(labels, truth, spacing=spacing))
            rows.append(
                {
                    "case": case,
                    "decoding": decoding_name(decoding),
                    "t_tc": thresholds[0],
                    "t_wt": thresholds[1],
                    "t_et": thresholds[2],
                    **flat,
                }
            )
    return rows


def region_value(rows: Sequence[dict], region: str) -> float:
    return float(
        np.mean([r[f"dice_{region}"] for r in rows]) - np.mean([r[f"hd95_{region}"] for r in rows]) / 100
    )


def choose(
    table: dict[Thresholds, dict[str, dict]], names: Sequence[str], grid: Sequence[float]
) -> Thresholds:
    """Per region, the threshold (others at 0.5) that ranks best on ``names``.

    Ties go to the threshold closest to 0.5.
    """
    picked = []
    for i, region in enumerate(REGIONS):
        best, best_value = 0.5, -np.inf
        for t in sorted(grid, key=lambda t: (abs(t - 0.5), t)):
            key = tuple(t if j == i else 0.5 for j in range(3))
            value = region_value([table[key][n] for n in names], region)
            if value > best_value + 1e-12:
                best, best_value = t, value
        picked.append(best)
    return tuple(picked)


def line(label: str, rows: Sequence[dict]) -> str:
    s = metrics.summarise(rows, confidence=None)
    return (
        f"{label:44s} | "
        + " ".join(f"{s[f'dice_{r}']['mean']:.3f}" for r in ("WT", "TC", "ET"))
        + " | "
        + " ".join(f"{s[f'hd95_{r}']['mean']:6.2f}" for r in ("WT", "TC", "ET"))
    )


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line: the parser (for its errors) and the arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path, help="folder written by benchmarks/cv_probabilities.py")
    p.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brats",
        help="folder of the cases with ground truth (default: ../shared/data/brats)",
    )
    p.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="splits.json of the fold models: nested choice (default: off)",
    )
    p.add_argument(
        "--bundles",
        nargs="+",
        default=["0"],
        help="bundle index sets to average, e.g. 0 0,1 (default: %(default)s)",
    )
    p.add_argument(
        "--flip-sets", nargs="+", default=["none"], help="flip sets, e.g. none none,x (default: %(default)s)"
    )
    p.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=list(THRESHOLDS),
        help="grid per region (default: %(default)s)",
    )
    p.add_argument(
        "--no-postprocess", action="store_true", help="skip the card's post-processing (default: apply it)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes, one case each; 1 runs in this process (default: %(default)s)",
    )
    p.add_argument(
        "--csv", type=Path, default=None, help="write every score row here (default: CACHE/decoding.csv)"
    )
    return p, p.parse_args(argv)


def read_cache(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[dict, str, dict]:
    """The cache's index, its card's path and the post-processing to apply; refuses a cache it cannot use."""
    index = json.loads((args.cache / "index.json").read_text())
    missing = [c for c in index["cases"] if not (args.cache / f"{c}.npz").exists()]
    if missing:
        p.error(
            f"{args.cache}: expected <case>.npz for every case in index.json, missing {', '.join(missing)}; "
            "run benchmarks/cv_probabilities.py again to complete it"
        )
    card_path = index["card"]
    card = ModelCard.load(card_path)
    if card.output.get("type") != "regions_sigmoid" or list(card.output.get("regions", [])) != list(REGIONS):
        p.error(f"{card_path}: expected sigmoid regions in the order {list(REGIONS)}, found {card.output}")
    pp = {} if args.no_postprocess else postprocess.postprocess_settings(card)
    pp = {k: v for k, v in pp.items() if v}
    return index, card_path, pp


def parse_decodings(p: argparse.ArgumentParser, args: argparse.Namespace, index: dict) -> list[Decoding]:
    """Every combination of ``--bundles`` and ``--flip-sets``; refuses one the cache does not hold."""
    decodings: list[Decoding] = [
        (tuple(int(b) for b in bs.split(",")), tuple(fs.split(",")))
        for bs in args.bundles
        for fs in args.flip_sets
    ]
    for bundles, flips in decodings:
        if not set(bundles) <= set(range(len(index["models"]))) or not set(flips) <= set(index["flips"]):
            p.error(
                f"--bundles {','.join(map(str, bundles))} --flip-sets {','.join(flips)}: "
                f"expected bundle indices 0..{len(index['models']) - 1} and flips from {index['flips']} "
                f"(what {args.cache} holds)"
            )
    return decodings


def run_jobs(jobs: list[tuple], workers: int) -> list[dict]:
    """The score rows of :func:`score_case` for every job, in ``workers`` processes (1: in this one)."""
    if workers == 1:
        return [row for job in jobs for row in score_case(job)]
    with ProcessPoolExecutor(workers) as pool:
        return [row for rows in pool.map(score_case, jobs) for row in rows]


def read_folds(splits: Path | None, cases: Sequence[str]) -> list[list[str]] | None:
    """The non-empty folds of ``splits`` restricted to ``cases``; None without splits."""
    if splits is None:
        return None
    folds = [[n for n in fold if n in cases] for fold in json.loads(splits.read_text())["folds"]]
    return [f for f in folds if f]


def add_rows(tables: dict[str, dict[Thresholds, dict[str, dict]]], rows: Sequence[dict]) -> None:
    """File score rows by decoding, thresholds and case."""
    for r in rows:
        tables.setdefault(r["decoding"], {}).setdefault((r["t_tc"], r["t_wt"], r["t_et"]), {})[r["case"]] = r


def plan_choices(
    tables: dict[str, dict[Thresholds, dict[str, dict]]],
    decodings: Sequence[Decoding],
    cases: Sequence[str],
    folds: list[list[str]] | None,
    grid: Sequence[float],
) -> tuple[dict[str, tuple[Thresholds, list[Thresholds]]], dict[str, dict[Decoding, set[Thresholds]]]]:
    """Per decoding, the choice on all cases and per fold; and, per case, the choices not yet scored."""
    # Joint choices (per-region picks combined) were not scored in the single-move pass: score them now.
    needed: dict[str, dict[Decoding, set[Thresholds]]] = {}
    plans: dict[str, tuple[Thresholds, list[Thresholds]]] = {}
    for d in decodings:
        table = tables[decoding_name(d)]
        overall = choose(table, cases, grid)
        per_fold = (
            [choose(table, [n for g in folds if g is not f for n in g], grid) for f in folds] if folds else []
        )
        plans[decoding_name(d)] = (overall, per_fold)
        for t, names in [(overall, cases)] + list(zip(per_fold, folds or [], strict=True)):
            if t not in table:
                for n in names:
                    needed.setdefault(n, {}).setdefault(d, set()).add(t)
    return plans, needed


def write_csv(rows: list[dict], out: Path) -> None:
    """Every score row as CSV."""
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} rows in {out}")


def print_results(
    tables: dict[str, dict[Thresholds, dict[str, dict]]],
    plans: dict[str, tuple[Thresholds, list[Thresholds]]],
    decodings: Sequence[Decoding],
    cases: Sequence[str],
    folds: list[list[str]] | None,
) -> None:
    """Per decoding, the scores at 0.5, of the choice on all cases and of the nested choice."""
    print(f"{'':44s} | Dice WT TC ET      | HD95 WT TC ET")
    for d in decodings:
        name = decoding_name(d)
        table = tables[name]
        overall, per_fold = plans[name]
        print(line(f"{name}: 0.5", list(table[(0.5, 0.5, 0.5)].values())))
        print(line(f"{name}: on all {overall}", [table[overall][n] for n in cases]))
        if folds:
            nested = [table[t][n] for t, f in zip(per_fold, folds, strict=True) for n in f]
            print(line(f"{name}: nested", nested))
            print("    per fold (TC, WT, ET): " + "; ".join(str(t) for t in per_fold))


def main(argv: Sequence[str] | None = None) -> int:
    """Score the decodings and thresholds, print the choices, write the rows; 0 when done."""
    p, args = parse_args(argv)
    index, card_path, pp = read_cache(p, args)
    cases = index["cases"]
    decodings = parse_decodings(p, args, index)
    grid = sorted(set(args.thresholds) | {0.5})
    moves = single_moves(grid)
    print(
        f"{len(cases)} cases, post-processing {pp or 'off'}, "
        f"{len(decodings)} decodings x {len(moves)} thresholds",
        flush=True,
    )
    common = (str(args.cache), str(args.data), card_path)
    rows = run_jobs([(*common, c, [(d, moves) for d in decodings], pp) for c in cases], args.workers)
    folds = read_folds(args.splits, cases)
    tables: dict[str, dict[Thresholds, dict[str, dict]]] = {}
    add_rows(tables, rows)
    plans, needed = plan_choices(tables, decodings, cases, folds, grid)
    if needed:
        jobs = [(*common, c, [(d, sorted(ts)) for d, ts in by.items()], pp) for c, by in needed.items()]
        extra = run_jobs(jobs, args.workers)
        rows += extra
        add_rows(tables, extra)
    write_csv(rows, args.csv or args.cache / "decoding.csv")
    print_results(tables, plans, decodings, cases, folds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
