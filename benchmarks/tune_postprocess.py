"""Choose the model card's ``postprocess`` settings on saved predictions of held-out cases.

Scores every combination of a small grid of :func:`brats_seg.postprocess.apply_postprocess` settings
against the ground truth and prints mean Dice and HD95 per region for each, best first (ranked by the
mean of the three Dice means minus a hundredth of the mean of the three HD95 means). The predictions
must be made *without* post-processing by models that did not see those cases, e.g. the
cross-validation predictions of a bundle of fold models:

    brats-seg evaluate ../shared/data/brats --model artifacts/model_cv5 --cross-validation \\
        --no-postprocess --save-predictions --output artifacts/cv5_raw
    python benchmarks/tune_postprocess.py artifacts/cv5_raw --splits runs/fold0/splits.json

Picking the best setting on the same cases that then measure it flatters it. With ``--splits`` the
choice is itself cross-validated (nested): for each fold, the setting that ranks best on the *other*
folds' cases is applied to this fold's cases, and the pooled scores of those choices are printed next
to the scores without post-processing. Only a gain that survives this is worth putting in a card.

With ``--record MODEL_JSON`` (and ``--splits``) those nested scores are written into the card as
``scores.cross_validation_nested`` (``scores.cross_validation_nested_tta`` for predictions made with
test-time flips): the estimate for unseen cases of the model *and* its tuned
post-processing, which the dashboard then states. The card's ``postprocess`` must be the setting that
ranks best on all the cases, i.e. what the nested procedure emulates; anything else is refused. So is
a nested choice that does not rank above no post-processing: then the card should have none.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brats_seg import files, metrics, postprocess
from brats_seg.card import POSTPROCESS_KEYS, ModelCard, record_scores
from brats_seg.evaluation import load_prediction
from brats_seg.types import Study

SIZES_MM3 = (0.0, 1000.0, 5000.0)
FRACTIONS = (0.0, 0.1, 0.2, 0.5, 1.0)  # 1.0: keep only the largest tumour component
ET_MIN_MM3 = (0.0, 300.0)
REGIONS = ("WT", "TC", "ET")

Setting = tuple[float, float, float]  # min_component_mm3, min_component_fraction, et_min_mm3


def grid_scores(
    cases: Sequence[tuple[Study, np.ndarray]], settings: Sequence[Setting]
) -> dict[Setting, dict[str, dict[str, float]]]:
    """Score every post-processing setting on every case.

    Args:
        cases: Each study (with its ground truth) and its raw predicted label map.
        settings: ``(min_component_mm3, min_component_fraction, et_min_mm3)`` triples.

    Returns:
        ``{setting: {case name: flattened Dice/HD95 scores}}``.
    """
    cache: dict[str, dict[str, float]] = {}  # many settings leave a case unchanged: score it once
    table: dict[Setting, dict[str, dict[str, float]]] = {}
    for setting in settings:
        size, fraction, et_min = setting
        rows = {}
        for study, pred in cases:
            cleaned = postprocess.apply_postprocess(
                pred,
                voxel_volume_mm3=float(np.prod(study.spacing)),
                min_component_mm3=size,
                min_component_fraction=fraction,
                et_min_mm3=et_min,
            )
            key = study.name + hashlib.sha1(cleaned.tobytes()).hexdigest()
            if key not in cache:
                cache[key] = metrics.flatten_scores(
                    metrics.score(cleaned, study.truth, spacing=study.spacing)
                )
            rows[study.name] = cache[key]
        table[setting] = rows
    return table


def rank_value(summary: dict[str, dict[str, float]]) -> float:
    """Mean of the three Dice means minus a hundredth of the mean of the three HD95 means."""
    dice = np.mean([summary[f"dice_{r}"]["mean"] for r in REGIONS])
    hd = np.mean([summary[f"hd95_{r}"]["mean"] for r in REGIONS])
    return float(dice - hd / 100)


def nested_verdict(nested: dict[str, dict[str, float]], none: dict[str, dict[str, float]]) -> str | None:
    """The project's rule for post-processing: use it only if the nested choice ranks above none.

    Returns:
        None when the nested choice ranks above no post-processing (:func:`rank_value`); else why not.
    """
    ranked, plain = rank_value(nested), rank_value(none)
    if ranked > plain:
        return None
    return (
        f"the nested choice ranks {ranked:.4f}, not above no post-processing ({plain:.4f}): on cases it was "
        "not tuned on, post-processing does not help; bundle without it"
    )


def best_setting(table: dict[Setting, dict[str, dict[str, float]]], names: Sequence[str]) -> Setting:
    """The setting that ranks best (:func:`rank_value`) on some of the cases.

    Args:
        table: What :func:`grid_scores` returned.
        names: The cases to rank on (at least one).

    Returns:
        The best setting; on a tie the first in the table's order, i.e. the gentlest of the grid.
    """
    values = {
        s: rank_value(metrics.summarise([rows[n] for n in names], confidence=None))
        for s, rows in table.items()
    }
    best = max(values.values())
    return next(s for s, v in values.items() if v >= best - 1e-12)


def nested_choice(
    table: dict[Setting, dict[str, dict[str, float]]], folds: Sequence[Sequence[str]]
) -> tuple[list[dict[str, float]], list[Setting]]:
    """Cross-validate the choice: each fold's cases get the setting that ranks best on the other folds.

    Args:
        table: What :func:`grid_scores` returned.
        folds: Case names per fold, at least two non-empty folds.

    Returns:
        The chosen setting's score row for every case (fold by fold), and each fold's chosen setting.
    """
    if sum(1 for fold in folds if fold) < 2:
        raise ValueError(
            f"nested choice: expected cases in at least 2 folds, found {sum(1 for fold in folds if fold)}"
        )
    rows, chosen = [], []
    for f, fold in enumerate(folds):
        others = [n for g, other in enumerate(folds) if g != f for n in other]
        setting = best_setting(table, others)
        chosen.append(setting)
        rows.extend(table[setting][n] for n in fold)
    return rows, chosen


def _line(label: str, s: dict[str, dict[str, float]]) -> str:
    return (
        f"{label} | "
        + " ".join(f"{s[f'dice_{r}']['mean']:.3f}" for r in REGIONS)
        + " | "
        + " ".join(f"{s[f'hd95_{r}']['mean']:6.2f}" for r in REGIONS)
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line's arguments; ``--record`` needs ``--splits``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "predictions", type=Path, help="folder of <case>_seg.nii.gz written by evaluate --save-predictions"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brats",
        help="folder of the cases with ground truth (default: ../shared/data/brats)",
    )
    parser.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="splits.json of the fold models: cross-validate the choice itself (default: off)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="MODEL_JSON",
        help="write the nested scores into this card as scores.cross_validation_nested "
        "(scores.cross_validation_nested_tta for predictions made with flips) "
        "(needs --splits; default: off)",
    )
    args = parser.parse_args(argv)
    if args.record is not None and args.splits is None:
        raise SystemExit("--record: expected --splits as well (only the nested scores are recorded)")
    return args


def _load_cases(predictions: Path, data: Path) -> list[tuple[Study, np.ndarray]]:
    """Each predicted case's study (with its ground truth) and its predicted label map."""
    cases = []
    for path in sorted(predictions.glob("*_seg.nii.gz")):
        study = files.load_study(data / path.name.removesuffix("_seg.nii.gz"))
        cases.append((study, load_prediction(path, study).array))
    return cases


def _read_folds(splits: Path, names: Sequence[str]) -> tuple[list[list[str]], list[int]]:
    """The folds of ``splits`` restricted to ``names``, and the indices of those that hold some."""
    folds = [[n for n in fold if n in names] for fold in json.loads(splits.read_text())["folds"]]
    missing = sorted(set(names) - {n for fold in folds for n in fold})
    if missing:
        raise SystemExit(
            f"{splits}: no fold holds {', '.join(missing)}; "
            "expected the splits of the models that predicted them"
        )
    present = [f for f, fold in enumerate(folds) if fold]
    if len(present) < 2:
        raise SystemExit(
            f"{splits}: the predictions cover {len(present)} fold(s); a nested choice needs at least 2"
        )
    return folds, present


def _nested(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    table: dict[Setting, dict[str, dict[str, float]]],
    none: dict[str, dict[str, float]],
    names: list[str],
) -> None:
    """Print the nested choice and its verdict; record its scores in ``--record``'s card if asked."""
    folds, present = _read_folds(args.splits, names)
    rows, chosen = nested_choice(table, [folds[f] for f in present])
    print("\nnested choice (each fold gets the setting that ranks best on the other folds):")
    for f, setting in zip(present, chosen, strict=True):
        print(
            f"  fold {f}: min_component_mm3={setting[0]:g} min_component_fraction={setting[1]:g} "
            f"et_min_mm3={setting[2]:g}"
        )
    nested = metrics.summarise(rows)
    print(_line("no post-processing  ", none))
    print(_line("nested choice       ", nested))
    verdict = nested_verdict(nested, none)
    print(f"verdict: {verdict or 'the nested choice ranks above no post-processing: use the overall pick'}")
    if args.record is not None:
        if verdict is not None:
            raise SystemExit(
                f"--record: {verdict}, and record plain cross-validation with brats-seg evaluate "
                "--record-as instead"
            )
        _record_nested(
            args.record,
            args.predictions,
            best_setting(table, names),
            nested,
            names,
            argv if argv is not None else sys.argv[1:],
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Score the grid of settings, print it best first, then the nested choice with ``--splits``."""
    args = _parse_args(argv)
    cases = _load_cases(args.predictions, args.data)
    names = [s.name for s, _ in cases]
    if not cases:
        raise SystemExit(f"{args.predictions}: expected <case>_seg.nii.gz predictions, found none")
    print(f"{len(cases)} cases: {', '.join(names)}")
    settings = list(itertools.product(SIZES_MM3, FRACTIONS, ET_MIN_MM3))
    table = grid_scores(cases, settings)
    summaries = {s: metrics.summarise(list(rows.values()), confidence=None) for s, rows in table.items()}
    print("min_component_mm3 min_component_fraction et_min_mm3 | Dice WT TC ET | HD95 WT TC ET")
    for size, fraction, et_min in sorted(summaries, key=lambda s: -rank_value(summaries[s])):
        print(_line(f"{size:8.0f} {fraction:5.2f} {et_min:6.0f}", summaries[(size, fraction, et_min)]))
    if args.splits is not None:
        _nested(args, argv, table, summaries[settings[0]], names)


def _record_nested(
    card_path: Path,
    predictions: Path,
    best: Setting,
    summary: dict[str, dict[str, float]],
    names: list[str],
    argv: Sequence[str],
) -> None:
    """Write the nested scores into ``card_path`` if the predictions are this card's raw cross-validation
    and its post-processing is the overall pick."""
    card = ModelCard.load(card_path)
    try:
        made = json.loads((predictions / "summary.json").read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(
            f"{predictions / 'summary.json'}: expected the summary brats-seg evaluate writes beside "
            f"its predictions, cannot read it ({type(e).__name__})"
        ) from e
    expected = {"model": card.name, "cross_validation": True, "postprocessing": False}
    found = {k: made.get(k) for k in expected}
    tta = made.get("tta")
    if found != expected or not isinstance(tta, bool):
        raise SystemExit(
            f"{predictions}: --record needs predictions made by {card_path}'s model with "
            f"--cross-validation --no-postprocess ({expected}, tta true or false); they were made with "
            f"{found | {'tta': tta}}"
        )
    picked = dict(zip(POSTPROCESS_KEYS, best, strict=True))  # Setting follows the card's key order
    if postprocess.postprocess_settings(card) != picked:
        raise SystemExit(
            f"{card_path}: its postprocess {card.postprocess} is not the setting picked on all {len(names)} "
            f"cases ({picked}; on a tie the first in the grid); "
            "re-bundle with that setting, or leave out --record"
        )
    command = "python benchmarks/tune_postprocess.py " + " ".join(shlex.quote(str(a)) for a in argv)
    key = "cross_validation_nested" + ("_tta" if tta else "")
    record_scores(card_path, summary, cases=names, command=command, key=key)
    print(f"recorded as scores.{key} in {card_path}")


if __name__ == "__main__":
    main()
