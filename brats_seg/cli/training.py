"""``brats-seg train | pack | bundle | average | info``: faces of :mod:`brats_seg.training` and the card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import StudyError
from .common import EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run (:func:`brats_seg.training.recipe.train`); bad data, packs or settings: StudyError."""
    from ..training.config import TrainConfig
    from ..training.recipe import train

    config = TrainConfig(
        folds=args.folds,
        fold=args.fold,
        seed=args.seed,
        epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch,
        batch_size=args.batch_size,
        patch_size=tuple(args.patch_size),
        spacing=tuple(args.spacing),
        channels=tuple(args.channels),
        num_res_units=args.num_res_units,
        lr=args.lr,
        weight_decay=args.weight_decay,
        pct_start=args.pct_start,
        intensity_augment=args.intensity_augment,
        val_patches=args.val_patches,
        device=args.device,
        resume=args.resume,
        splits=args.splits,
        progress=not args.no_progress,
        num_workers=args.num_workers,
        time_budget_minutes=args.time_budget,
        export_dtype=args.export_dtype,
        precision=args.precision,
        channels_last=args.channels_last,
        init_from=args.init_from,
    )
    train(args.data_dir, args.output, config)
    return EXIT_OK


def cmd_pack(args: argparse.Namespace) -> int:
    """Pack a folder of training cases into one .npz (:func:`brats_seg.training.pack.pack_cases`)."""
    from ..training.pack import pack_cases

    if not args.data_dir.is_dir():
        raise StudyError(f"{args.data_dir}: expected a folder of cases, found no such folder")
    out = pack_cases(args.data_dir, args.output, spacing=args.spacing)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Print the model card as JSON."""
    from ..card import ModelCard
    from ..model import default_model_dir

    directory = args.model or default_model_dir()
    card = ModelCard.load(Path(directory) / "model.json")
    print(json.dumps(card.to_dict(), indent=2))
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace) -> int:
    """Gather trained runs into one model folder (:func:`brats_seg.training.bundle.bundle`)."""
    from ..training.bundle import bundle

    postprocess = {
        "min_component_mm3": args.min_component_mm3,
        "min_component_fraction": args.min_component_fraction,
        "et_min_mm3": args.et_min_mm3,
    }
    card = bundle(
        args.runs,
        args.output,
        name=args.name,
        postprocess=postprocess,
        weights_dtype=args.weights_dtype,
        tta_flips=args.tta_flips,
    )
    print(f"wrote {args.output / 'model.json'} with {len(card.files)} learner(s): {', '.join(card.files)}")
    return EXIT_OK


def cmd_average(args: argparse.Namespace) -> int:
    """Average the weights of runs of one fold (:func:`brats_seg.training.bundle.average`)."""
    from ..training.bundle import average

    card = average(args.sources, args.output, weights_dtype=args.weights_dtype)
    sources = card.extra["training"]["averaged_from"]
    print(
        f"wrote {args.output / 'model.pkl'}: the mean of {len(sources)} learners "
        f"({', '.join(s['file'] for s in sources)})"
    )
    return EXIT_OK
