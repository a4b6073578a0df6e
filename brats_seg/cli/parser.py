"""The parser of ``brats-seg``: one small function per subcommand; ``--help`` states every default."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    HelpFormatter,
    add_device_and_backend,
    add_map_arg,
    device,
    fraction,
    non_negative,
    overlap,
    positive_float,
    positive_int,
    study_name,
)
from .parser_cluster import add_cluster_args
from .parser_pacs import add_batch, add_pacs, add_to_dicom

Subparsers = Any  # argparse's _SubParsersAction, which it does not name publicly


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="brats-seg",
        description="Brain-tumour segmentation (BraTS labels 1 NCR, 2 ED, 4 ET) of MRI studies with T1, "
        "T1CE, T2 and FLAIR. For research only, not for clinical use.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_predict,
        _add_check,
        _add_evaluate,
        _add_train,
        _add_pack,
        _add_bundle,
        _add_average,
        _add_info,
        add_pacs,
        add_to_dicom,
        add_batch,
    ):
        add(sub)
    return parser


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """The inputs of ``predict`` and ``check``: studies, and which file is which sequence."""
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="a study folder (NIfTI or DICOM), a .zip of one, four NIfTI files, or a folder of "
        "study folders; several folders or zips are a batch",
    )
    add_map_arg(
        p,
        "say which file (NIfTI file name) or DICOM series (description, number or UID) is "
        "which sequence: T1, T1CE, T2, FLAIR, SEG or IGNORE; repeat for several; for a folder of "
        "studies, a key applies to the studies that have it (default: told from the names)",
    )
    p.add_argument(
        "--harmonise",
        choices=("auto", "on", "off"),
        default="auto",
        help="bring a raw study (sequences on different grids, slices over 3 mm, the skull on) "
        "onto the model's terms: rigidly register T1, T2, FLAIR onto T1CE, skull-strip (deepbet), "
        "resample to 1 mm in the T1CE frame; the labels go back onto the native T1CE grid. auto: "
        "when the study needs it; on: always; off: never (a study on several grids is refused) "
        "(default: auto)",
    )


def _add_window_args(p: argparse.ArgumentParser) -> None:
    """The model and its sliding-window settings, for ``predict`` and ``evaluate``."""
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model folder with model.json and the exported "
        "learner(s) (default: $BRATS_SEG_MODEL, else the bundled model/)",
    )
    p.add_argument(
        "--roi-size",
        type=positive_int,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="sliding-window size in voxels (default: the model card's roi_size)",
    )
    p.add_argument(
        "--overlap", type=overlap, default=None, help="sliding-window overlap (default: the model card's)"
    )
    p.add_argument(
        "--sw-batch-size",
        type=positive_int,
        default=None,
        help="windows per forward pass (default: the model card's)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average test-time flips along each axis (default: the model card's tta_flips)",
    )
    p.add_argument(
        "--postprocess",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="apply the model card's postprocess rules: drop small tumour islands, tiny ET to NCR "
        "(default: on)",
    )
    add_device_and_backend(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_predict(sub: Subparsers) -> None:
    p = sub.add_parser(
        "predict",
        formatter_class=HelpFormatter,
        help="segment one study (folder, zip or four files) or a folder of study folders",
        description="Writes OUT_DIR/<study>_seg.nii.gz (BraTS labels with the input's affine and header) "
        "and OUT_DIR/<study>_report.json (input files and sha256, model, settings, volumes, timings). "
        "A folder or zip without NIfTI files is read as DICOM: the four MR series of one study, told "
        "apart by their series descriptions. A raw study (see --harmonise) is harmonised first: then "
        "<study>_seg.nii.gz lies on the native T1CE grid, and <study>_seg_1mm.nii.gz, "
        "<study>_registration.png (a checkerboard of each sequence over T1CE, brain mask outlined) and "
        "<study>_native.png are written too; the volumes are those of the 1 mm labels.",
    )
    _add_study_args(p)
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument(
        "--name",
        type=study_name,
        default=None,
        help="study name for a single study: the output files' prefix (default: folder name or "
        "common file prefix)",
    )
    p.add_argument(
        "--dicom-seg",
        action="store_true",
        help="also write OUT_DIR/<study>_seg.dcm, a DICOM Segmentation on the T1CE series (DICOM input only)",
    )
    p.add_argument(
        "--uncertain-map",
        action="store_true",
        help="also write OUT_DIR/<study>_uncertain.nii.gz: 1 where the label would differ at "
        "decision thresholds 0.7 and 0.3 (the uncertain voxels, whose volume is the report's "
        "volume_range; with the card's post-processing a whole part can count), 0 elsewhere, with "
        "the input's geometry (region-sigmoid models)",
    )
    p.add_argument(
        "--save-preprocessed",
        action="store_true",
        help="for a harmonised raw study, also write OUT_DIR/<study>_preprocessed/: the four "
        "sequences and the brain mask on the 1 mm grid the model read, BraTS-named (default: off)",
    )
    _add_window_args(p)
    add_cluster_args(p)


def _add_check(sub: Subparsers) -> None:
    p = sub.add_parser(
        "check",
        formatter_class=HelpFormatter,
        help="load and check studies without predicting: what would be refused, and warnings",
        description="For each study: whether it loads (else the reason it would be refused, naming the "
        "file) and the warnings of brats_seg.quality (not skull-stripped, implausible voxel sizes, thick "
        "slices, a sequence covering only part of the brain, file names of two studies). A raw study is "
        "harmonised as predict would (--harmonise; about 10 s), so that a registration or skull "
        "stripping that fails is refused here too. Loads no model; use it before a long batch. Exit status 0 "
        "when every study loads (warnings or not), 2 when one is refused.",
    )
    _add_study_args(p)
    add_cluster_args(p)


def _add_evaluate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "evaluate",
        formatter_class=HelpFormatter,
        help="predict (or read predictions) for every case with a *_seg ground truth and score them",
        description="Writes OUT_DIR/scores.csv (Dice and HD95 per region and case) and OUT_DIR/summary.json "
        "(mean, median, std per metric), and prints the summary.",
    )
    p.add_argument(
        "data_dir", type=Path, help="folder of study folders, each with a *_seg.nii.gz ground truth"
    )
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="read <case>_seg.nii.gz predictions from this folder instead of predicting (default: predict)",
    )
    p.add_argument(
        "--cases",
        default=None,
        help="comma-separated case names, or @FILE with one per line, or @model.json for its "
        "held-out cases (default: every case with a ground truth)",
    )
    p.add_argument(
        "--cross-validation",
        action="store_true",
        help="score each case with only the ensemble member(s) whose training held it out (the "
        "card's members[].training.held_out_cases): k-fold cross-validation of a bundle of fold "
        "models (default: every case with the whole model)",
    )
    p.add_argument(
        "--save-predictions", action="store_true", help="also write each predicted label map to OUT_DIR"
    )
    p.add_argument(
        "--record-as",
        default=None,
        metavar="KEY",
        help="also write the summary into the model card's scores under KEY, with this command "
        "(default: the card is not changed)",
    )
    _add_window_args(p)
    add_cluster_args(p)


def _add_train(sub: Subparsers) -> None:
    from ..training.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train the fastai + MONAI UNet recipe and export a learner with its model card",
    )
    p.add_argument(
        "data_dir",
        type=Path,
        help="folder of BraTS case folders with *_seg ground truth, or a .npz from brats-seg pack",
    )
    p.add_argument(
        "--output", "-o", type=Path, required=True, help="run folder (model.pkl, model.json, splits, logs)"
    )
    p.add_argument("--folds", type=int, default=d.folds, help="number of cross-validation folds")
    p.add_argument("--fold", type=int, default=d.fold, help="fold to hold out (-1: train on every case)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (splits, sampling, augmentation)")
    p.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="reuse the folds of an earlier run's splits.json (default: make seeded folds from --seed)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of fit_flat_cos")
    p.add_argument(
        "--samples-per-epoch", type=int, default=d.samples_per_epoch, help="random patches per epoch"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="patches per batch")
    p.add_argument(
        "--patch-size",
        type=int,
        nargs=3,
        default=list(d.patch_size),
        metavar=("X", "Y", "Z"),
        help="training patch size in voxels",
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=list(d.spacing),
        metavar=("X", "Y", "Z"),
        help="voxel spacing (mm) the network works at",
    )
    p.add_argument(
        "--channels", type=int, nargs="+", default=list(d.channels), help="UNet feature channels per level"
    )
    p.add_argument("--num-res-units", type=int, default=d.num_res_units, help="residual units per UNet block")
    _add_train_optimiser_args(p, d)
    _add_train_run_args(p, d)


def _add_train_optimiser_args(p: argparse.ArgumentParser, d: Any) -> None:
    """``train``: learning rate, augmentation and validation (defaults from ``TrainConfig`` ``d``)."""
    from ..training.config import INTENSITY_AUGMENTS

    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: from lr_find)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Ranger weight decay")
    p.add_argument(
        "--pct-start",
        type=float,
        default=d.pct_start,
        help="fraction of fit_flat_cos at the flat learning rate",
    )
    p.add_argument(
        "--intensity-augment",
        choices=INTENSITY_AUGMENTS,
        default=d.intensity_augment,
        help="intensity augmentation: mild = joint scale/shift 10%%; strong = per-channel "
        "scale/shift, gamma, noise, blur, low resolution; strong-bias = strong plus a smooth coil "
        "bias field shared by the channels; none",
    )
    p.add_argument(
        "--val-patches", type=int, default=d.val_patches, help="validation patches per held-out case"
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=d.num_workers,
        help="data-loader worker processes (0: load in the main process)",
    )
    p.add_argument(
        "--time-budget",
        type=positive_float,
        default=d.time_budget_minutes,
        metavar="MINUTES",
        help="fit the epoch length to this many minutes of training, timed during lr_find "
        "(default: --samples-per-epoch as given)",
    )


def _add_train_run_args(p: argparse.ArgumentParser, d: Any) -> None:
    """``train``: precision, export, start weights, device, resuming (defaults from ``TrainConfig`` ``d``)."""
    from ..training.config import EXPORT_DTYPES, PRECISIONS

    p.add_argument(
        "--export-dtype",
        choices=EXPORT_DTYPES,
        default=d.export_dtype,
        help="how the exported weights are stored (float16 halves the file; inference computes in float32)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="training precision: auto = bf16 mixed precision on a GPU that has it, else fp16 on "
        "a GPU, fp32 on the CPU; bf16 also runs on a CPU with native bfloat16 (AVX512-BF16 or "
        "AMX)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=d.channels_last,
        help="train in the channels_last_3d memory format (faster 3-D convolutions on the CPU; "
        "exported weights keep the standard layout) (default: on the CPU, where it is measured; "
        "off on a GPU)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=d.init_from,
        metavar="MODEL_DIR",
        help="start from the weights of a trained run folder, or of a bundle's member of this "
        "fold (e.g. model/), sha256-checked (it must not have trained on this run's held-out "
        "cases), and fine-tune them; ignored when --resume finds a checkpoint (default: random "
        "initialisation)",
    )
    p.add_argument(
        "--device",
        type=device,
        default=d.device,
        help="torch device (default: cuda when available, else cpu)",
    )
    p.add_argument("--resume", action="store_true", help="resume from the run folder's last checkpoint")
    p.add_argument(
        "--no-progress", action="store_true", help="one log line per epoch instead of progress bars"
    )


def _add_pack(sub: Subparsers) -> None:
    from ..training.config import TrainConfig

    p = sub.add_parser(
        "pack",
        formatter_class=HelpFormatter,
        help="preprocess a folder of training cases into one compact .npz (to train elsewhere, e.g. on a "
        "GPU)",
        description="Each case with ground truth is preprocessed as training does (reorient, brain crop, "
        "z-score, resample to SPACING) and stored with 8-bit intensities and targets; "
        "brats-seg train PACK.npz then trains from it.",
    )
    p.add_argument("data_dir", type=Path, help="folder of BraTS case folders with *_seg ground truth")
    p.add_argument("--output", "-o", type=Path, required=True, help="the .npz file to write")
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=list(TrainConfig().spacing),
        metavar=("X", "Y", "Z"),
        help="voxel spacing (mm) the network works at",
    )


def _add_bundle(sub: Subparsers) -> None:
    from ..training.config import EXPORT_DTYPES

    p = sub.add_parser(
        "bundle",
        formatter_class=HelpFormatter,
        help="gather trained runs into one model folder (several runs = an ensemble)",
        description="Copies each run's model.pkl as <run>.pkl into OUTPUT and writes one model.json listing "
        "every file with its sha256; the card's other fields come from the first run.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders written by brats-seg train")
    p.add_argument("--output", "-o", type=Path, required=True, help="model folder to write (e.g. model/)")
    p.add_argument(
        "--name", default=None, help="model name (default: the first run's card name, + -ensemble)"
    )
    p.add_argument(
        "--min-component-mm3",
        type=non_negative,
        default=0.0,
        metavar="MM3",
        help="card post-processing: drop tumour islands smaller than this (0 = off)",
    )
    p.add_argument(
        "--min-component-fraction",
        type=fraction,
        default=0.0,
        metavar="F",
        help="card post-processing: drop tumour islands smaller than F x the largest (0 = off)",
    )
    p.add_argument(
        "--et-min-mm3",
        type=non_negative,
        default=0.0,
        metavar="MM3",
        help="card post-processing: relabel ET as NCR when all ET is smaller than this (0 = off)",
    )
    p.add_argument(
        "--tta-flips",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="card default for test-time flips: predict and evaluate then average the volume "
        "flipped along each axis (about 4x the network time; --no-tta there turns them off) "
        "(default: off)",
    )
    p.add_argument(
        "--weights-dtype",
        choices=EXPORT_DTYPES,
        default=None,
        help="store every learner's weights in this type (loaded sha256-checked, converted, "
        "exported again); float16 halves the files and predictions still compute in float32 "
        "(default: copy each run's file unchanged)",
    )


def _add_average(sub: Subparsers) -> None:
    from ..training.config import EXPORT_DTYPES

    p = sub.add_parser(
        "average",
        formatter_class=HelpFormatter,
        help="average the weights of several runs of one fold into one learner (a model soup)",
        description="Loads each learner (sha256-checked), takes the float32 mean of their weights and "
        "exports it with the first run's card as OUTPUT/model.pkl, a run folder that brats-seg bundle "
        "takes. Every source must hold out the same cases; a bundle of fold models (e.g. model/) "
        "contributes its member of that fold. Predicting costs one network, not one per source.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="model folders, at least two; the first a run folder written by brats-seg train",
    )
    p.add_argument("--output", "-o", type=Path, required=True, help="run folder to write")
    p.add_argument(
        "--weights-dtype",
        choices=EXPORT_DTYPES,
        default=None,
        help="how the averaged weights are stored (default: as the first run's)",
    )


def _add_info(sub: Subparsers) -> None:
    p = sub.add_parser("info", formatter_class=HelpFormatter, help="print the model card")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model folder (default: $BRATS_SEG_MODEL, else the bundled model/)",
    )
