"""Save each held-out case's probabilities, per member bundle and per test-time flip, for offline tuning.

For every case with a ground truth under ``DATA_DIR`` and for every ``--model`` (a bundle of fold
models, ``brats-seg bundle``), the member(s) that never saw the case predict it once per flip in
``--flips`` (``none``, ``x``, ``y``, ``z``: the spatial axes of the network's LPS grid). The
probabilities on the network's grid (the card's spacing over the brain crop) are written as float16
to ``OUTPUT/<case>.npz`` under the keys ``<bundle index>_<flip>``, so that thresholds, flip subsets
and combinations of bundles can then be scored without running a network again
(``benchmarks/tune_decoding.py``). Every bundle must share the card's preprocessing (channels,
orientation, spacing, crop margin, normalisation); the first bundle's card is used for all.

    python benchmarks/cv_probabilities.py ../shared/data/brats --model model artifacts/model_cv5 \\
        --output artifacts/cv_probs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brats_seg import files, inference, preprocess
from brats_seg.card import ModelCard
from brats_seg.cli.common import overlap, positive_int
from brats_seg.evaluation import cross_validation_members
from brats_seg.model import Model, load_model

FLIP_DIMS = dict(zip(("none", "x", "y", "z"), inference.FLIPS, strict=True))  # as --tta flips them
PREPROCESSING_KEYS = ("channels", "orientation", "spacing", "crop_margin", "normalisation", "output")


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line: the parser (for its errors) and the arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path, help="folder of BraTS case folders with ground truth")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="bundles of fold models")
    p.add_argument("--output", type=Path, required=True, help="folder for <case>.npz and index.json")
    p.add_argument(
        "--flips",
        nargs="+",
        default=list(FLIP_DIMS),
        choices=list(FLIP_DIMS),
        help="flips to predict (default: %(default)s)",
    )
    p.add_argument("--cases", nargs="*", help="only these case names (default: every case a member held out)")
    p.add_argument(
        "--overlap", type=overlap, default=None, help="sliding-window overlap (default: the card's)"
    )
    p.add_argument(
        "--roi-size",
        type=positive_int,
        nargs=3,
        default=None,
        help="sliding-window size (default: the card's)",
    )
    return p, p.parse_args(argv)


def check_preprocessing(p: argparse.ArgumentParser, models: list[Model]) -> None:
    """Refuse bundles whose cards do not share the first card's preprocessing."""
    card = models[0].card
    for m in models[1:]:
        for key in PREPROCESSING_KEYS:
            if getattr(m.card, key) != getattr(card, key):
                p.error(
                    f"{m.card.name}: {key} {getattr(m.card, key)!r} differs from "
                    f"{card.name}'s {getattr(card, key)!r}"
                )


def write_index(p: argparse.ArgumentParser, args: argparse.Namespace, index: dict) -> None:
    """Write ``index.json``, merged with the one a previous run left if its settings are the same."""
    old_index = args.output / "index.json"
    if old_index.exists():  # a rerun completes a cache; it must not mix settings
        old = json.loads(old_index.read_text())
        changed = {k: (old.get(k), v) for k, v in index.items() if k != "cases" and old.get(k) != v}
        if changed:
            p.error(
                f"{args.output} holds probabilities made with other settings "
                + "; ".join(f"{k}: found {a!r}, expected {b!r}" for k, (a, b) in changed.items())
                + "; use a new --output folder"
            )
        index["cases"] = sorted(set(old.get("cases", [])) | set(index["cases"]))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "index.json").write_text(json.dumps(index, indent=2) + "\n")


def case_maps(
    args: argparse.Namespace, card: ModelCard, members: list[dict[str, Model]], case: str
) -> dict[str, np.ndarray]:
    """One case's probabilities (float16), per member bundle and per flip, keyed ``<bundle>_<flip>``."""
    study = files.load_study(args.data_dir / case)
    prepared = preprocess.prepare(study, card)
    arrays = {}
    for b, by_case in enumerate(members):
        member = by_case[case]
        for flip in args.flips:
            dims = FLIP_DIMS[flip]
            x = prepared.tensor[None]
            x = torch.flip(x, dims) if dims else x
            probs = inference.predict(
                x,
                member.networks,
                roi_size=args.roi_size or card.roi_size,
                sw_batch_size=card.sw_batch_size,
                overlap=card.overlap if args.overlap is None else args.overlap,
                mode=card.mode,
                device="cpu",
            )
            if dims:
                probs = torch.flip(probs, tuple(d - 1 for d in dims))
            arrays[f"{b}_{flip}"] = probs.numpy().astype(np.float16)
    return arrays


def main(argv: list[str] | None = None) -> int:
    """Save the probabilities of every held-out case not yet in ``--output``; 0 when done."""
    p, args = parse_args(argv)
    models = [load_model(m) for m in args.model]
    card = models[0].card
    check_preprocessing(p, models)
    members = [cross_validation_members(m) for m in models]
    cases = sorted(set.intersection(*(set(m) for m in members)))
    if args.cases:
        cases = [c for c in cases if c in set(args.cases)]
    index = {
        "models": [str(m) for m in args.model],
        "names": [m.card.name for m in models],
        "flips": args.flips,
        "overlap": card.overlap if args.overlap is None else args.overlap,
        "roi_size": args.roi_size or card.roi_size,
        "card": str(args.model[0] / "model.json"),
        "cases": cases,
    }
    write_index(p, args, index)
    for n, case in enumerate(cases, 1):
        out = args.output / f"{case}.npz"
        if out.exists():
            continue
        t0 = time.perf_counter()
        arrays = case_maps(args, card, members, case)
        tmp = out.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.rename(out)
        print(
            f"[{n}/{len(cases)}] {case}: {len(arrays)} maps in {time.perf_counter() - t0:.1f} s", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
