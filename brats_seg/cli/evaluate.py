"""``brats-seg evaluate``: predict (or read predictions of) every case with a ground truth and score them.

Writes ``scores.csv`` (one row per case) and ``summary.json`` (mean, median, std and the bootstrap
interval of each metric), prints the summary, and with ``--record-as`` records it in the model card.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StudyError
from .common import EXIT_BAD_INPUT, EXIT_OK, make_output_dir, window_kwargs
from .outcome import Outcome

if TYPE_CHECKING:
    from ..model import Model


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score every selected case; see the module's description."""
    from .. import metrics

    folders, model, members = _cases_and_model(args)
    make_output_dir(args.output)
    if args.predictions is None and model is None:
        from ..model import load_model

        model = load_model(args.model, device=args.device, backend=args.backend)
    flips = None if model is None else (bool(model.card.tta_flips) if args.tta is None else args.tta)
    _check_record_key(args, model, flips)
    if getattr(args, "workers", None) or getattr(args, "scheduler", None):
        rows, failed = _score_on_cluster(folders, args)
    else:
        rows, failed = _score_cases(folders, model, members, args), 0
    with open(args.output / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = metrics.summarise([{k: v for k, v in r.items() if k not in ("case", "seconds")} for r in rows])
    meta = {
        "cases": [r["case"] for r in rows],
        "model": None if model is None else model.card.name,
        "cross_validation": bool(args.cross_validation),
        "postprocessing": bool(args.postprocess) if model is not None else None,
        "tta": flips,
    }
    (args.output / "summary.json").write_text(json.dumps({**meta, "summary": summary}, indent=2) + "\n")
    print(format_summary(summary))
    if args.record_as:
        if model is None:
            raise StudyError("--record-as needs predictions made by a model, not read with --predictions")
        if failed:
            raise StudyError(
                f"--record-as {args.record_as}: {failed} case(s) failed, so the summary is not of every case "
                "asked for; expected all scored (scores.csv and summary.json hold the others)"
            )
        from ..card import record_scores

        command = "brats-seg " + shlex.join(args.argv)
        record_scores(
            model.directory / "model.json", summary, cases=meta["cases"], command=command, key=args.record_as
        )
        print(f"recorded as scores.{args.record_as} in {model.directory / 'model.json'}")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _cases_and_model(args: argparse.Namespace) -> tuple[list[Path], Model | None, dict[str, Model]]:
    """The case folders to score, the model if ``--cross-validation`` needs it now, its members by case."""
    from ..files import find_studies, has_truth

    if not args.data_dir.is_dir():
        raise StudyError(f"{args.data_dir}: expected a folder of cases, found no such folder")
    wanted = select_cases(args.cases)
    folders = [f for f in find_studies(args.data_dir) if has_truth(f)]
    model = None
    members: dict[str, Model] = {}
    if args.cross_validation:
        model, members, wanted = _cross_validation(args, {f.name for f in folders}, wanted)
    if wanted is not None:
        unknown = wanted - {f.name for f in folders}
        if unknown:
            raise StudyError(
                f"--cases: no case with ground truth named {sorted(unknown)} under {args.data_dir}"
            )
        folders = [f for f in folders if f.name in wanted]
    if not folders:
        raise StudyError(f"{args.data_dir}: expected case folders with a *_seg ground truth, found none")
    if args.predictions is not None and not args.predictions.is_dir():
        raise StudyError(
            f"--predictions {args.predictions}: expected a folder of <case>_seg.nii.gz files, "
            "found no such folder"
        )
    return folders, model, members


def _cross_validation(
    args: argparse.Namespace, available: set[str], wanted: set[str] | None
) -> tuple[Model, dict[str, Model], set[str]]:
    """``--cross-validation``: the model, its members by held-out case, and the cases to score."""
    from ..evaluation import cross_validation_members
    from ..model import load_model

    if args.predictions is not None:
        raise StudyError("--cross-validation predicts with the model's members; it cannot read --predictions")
    model = load_model(args.model, device=args.device, backend=args.backend)
    members = cross_validation_members(model)
    if wanted is None:
        wanted = set(members) & available
        if not wanted:
            raise StudyError(
                f"--cross-validation: none of the cases {model.card.name}'s members held out "
                f"({', '.join(sorted(members))}) has a ground truth under {args.data_dir}"
            )
    unseen = sorted(wanted - set(members))
    if unseen:
        raise StudyError(
            f"--cross-validation: no member of {model.card.name} held out {unseen}; "
            f"expected cases among {sorted(members)}"
        )
    return model, members, wanted


def _check_record_key(args: argparse.Namespace, model: Model | None, flips: bool | None) -> None:
    """``--record-as KEY`` ends in ``_tta`` exactly when the predictions use test-time flips."""
    if not args.record_as or model is None or flips == args.record_as.endswith("_tta"):
        return
    expected = (
        f"a key ending in _tta (e.g. {args.record_as}_tta)" if flips else "a key without _tta, or --tta"
    )
    says = "the card" if args.tta is None else "--tta/--no-tta"
    verb = "use" if flips else "skip"
    raise StudyError(
        f"--record-as {args.record_as}: these predictions {verb} test-time "
        f"flips ({says} says so); expected {expected}"
    )


def _score_cases(
    folders: list[Path], model: Model | None, members: dict[str, Model], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One row per case: its name, Dice and HD95 per region and label, and the seconds it took."""
    from tqdm.auto import tqdm

    bar = tqdm(folders, desc="evaluate", disable=args.no_progress, file=sys.stderr)
    return [score_case(folder, args, model, members) for folder in bar]


def score_case(
    folder: Path, args: argparse.Namespace, model: Model | None, members: dict[str, Model]
) -> dict[str, Any]:
    """Predict (or read the prediction of) one case and score it: its row of ``scores.csv``.

    Args:
        folder: The case folder, with a ground truth.
        args: The ``evaluate`` options.
        model: The model; None: read the prediction from ``--predictions``.
        members: For ``--cross-validation``, the members that held each case out.
    """
    from .. import metrics
    from ..evaluation import load_prediction
    from ..files import load_study, save_labels

    study = load_study(folder)
    t0 = time.perf_counter()
    if model is not None:
        from ..pipeline import segment

        pred = segment(
            study, members.get(study.name, model), volume_thresholds=None, **window_kwargs(args)
        ).labels
        if args.save_predictions:
            save_labels(pred, args.output / f"{study.name}_seg.nii.gz")
    else:
        pred = load_prediction(args.predictions / f"{study.name}_seg.nii.gz", study)
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"case": study.name}
    row.update(metrics.flatten_scores(metrics.score(pred, study.truth_map, per_label=True)))
    row["seconds"] = round(seconds, 2)
    return row


def evaluate_case(folder: Path, args: argparse.Namespace) -> Outcome:
    """:func:`score_case` on a cluster's worker, with the model that worker loaded once (and its
    cross-validation members); the row comes back as the outcome's ``data``."""
    model, members = None, {}
    if args.predictions is None:
        from ..evaluation import cross_validation_members
        from ..model import load_model

        model = load_model(args.model, device=args.device, backend=args.backend)  # once per process: cached
        members = cross_validation_members(model) if args.cross_validation else {}
    row = score_case(folder, args, model, members)
    line = f"scored: Dice WT {row['dice_WT']:.3f}, TC {row['dice_TC']:.3f}, ET {row['dice_ET']:.3f}"
    outcome = Outcome(name=row["case"], status="scored", line=line, seconds=row["seconds"], data=row)
    outcome.model_id = None if model is None else id(model)
    return outcome


def _score_on_cluster(folders: list[Path], args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """``evaluate --workers N`` or ``--scheduler ADDRESS``: each case a task; its rows, in the cases'
    order, and how many cases failed (reported, left out of the scores).

    Raises:
        StudyError: when no case could be scored.
    """
    from .on_cluster import run_on_cluster

    options = argparse.Namespace(**{**vars(args), "no_progress": True, "argv": None})
    task = partial(evaluate_case, args=options)
    progress = run_on_cluster(task, folders, args, statuses=("scored", "failed"))
    rows = {o.data["case"]: o.data for o in progress.outcomes if o.data is not None}
    if not rows:
        raise StudyError(f"{args.data_dir}: no case could be scored ({progress.counts['failed']} failed)")
    order = {folder.name: i for i, folder in enumerate(folders)}
    ordered = sorted(rows, key=lambda name: order.get(name, len(order)))
    return [rows[name] for name in ordered], progress.counts["failed"]


def select_cases(spec: str | None) -> set[str] | None:
    """``--cases``: names separated by commas, ``@FILE`` with one per line, or ``@model.json``'s held-out."""
    if spec is None:
        return None
    if not spec.startswith("@"):
        return {s.strip() for s in spec.split(",") if s.strip()}
    path = Path(spec[1:])
    if not path.is_file():
        raise StudyError(f"--cases {spec}: no such file")
    if path.suffix == ".json":
        return _held_out_cases(path, spec)
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _held_out_cases(path: Path, spec: str) -> set[str]:
    """The held-out cases a model card lists (``training.held_out_cases``), for ``--cases @model.json``."""
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StudyError(f"--cases {spec}: {path.name} is not valid JSON ({e}); expected a model card") from e
    if not isinstance(d, dict):
        d = {}
    names = (d.get("training") or {}).get("held_out_cases") or d.get("held_out_cases")
    if names:
        return set(names)
    members = d.get("members")
    fold_models = isinstance(members, list) and any(
        isinstance(m, dict) and isinstance(m.get("training"), dict) and m["training"].get("held_out_cases")
        for m in members
    )
    hint = (
        "; its members hold out different cases (a bundle of fold models): use --cross-validation"
        if fold_models
        else ""
    )
    raise StudyError(
        f"--cases {spec}: expected a model card listing training.held_out_cases, found no held-out "
        f"cases{hint}"
    )


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """A plain-text table of the summary: one row per metric, with the 95% interval of the mean when known."""
    lines = [f"{'metric':<10} {'mean':>8} {'95% CI of the mean':>19} {'median':>8} {'std':>8} {'n':>4}"]
    order = ["ET", "TC", "WT", "NCR", "ED"]  # the regions, then the labels NCR and ED (label ET = region ET)

    def rank(key: str) -> tuple[str, int]:
        metric, _, name = key.partition("_")
        return metric, order.index(name) if name in order else 9

    for key in sorted(summary, key=rank):
        s = summary[key]
        known = "ci_low" in s and "ci_high" in s and s["n"] >= 2
        ci = f"{s['ci_low']:.3f}\u2013{s['ci_high']:.3f}" if known else "-"
        lines.append(
            f"{key:<10} {s['mean']:>8.3f} {ci:>19} {s['median']:>8.3f} {s['std']:>8.3f} {int(s['n']):>4}"
        )
    lines.append(
        "95% CI: percentile bootstrap over the cases (10,000 resamples); it shows how far the mean "
        "of so few cases can move."
    )
    return "\n".join(lines)
