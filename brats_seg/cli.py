"""The ``brats-seg`` command line: ``predict``, ``check``, ``evaluate``, ``train``, ``pack``, ``bundle``, ``average`` and ``info``.

Exit codes: 0 done, 2 bad input (a one-line message on stderr, no traceback; also when any study of
a folder of studies was skipped), 1 internal error. Every default is stated in ``--help``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelError, StudyError
from .types import RawStudy

if TYPE_CHECKING:
    from .types import LabelMap, Study

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """States the default of every optional argument whose help text does not already say it.

    Unlike ``argparse.ArgumentDefaultsHelpFormatter`` it neither repeats a default the help text
    explains (``(default: the model card's roi_size)``) nor adds ``(default: None)`` to a required
    option.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or not action.option_strings
            or action.default is argparse.SUPPRESS
        ):
            return text
        default = action.default
        if isinstance(action, argparse._StoreTrueAction):
            shown = "off"
        elif isinstance(default, list | tuple):
            shown = " ".join(str(v) for v in default)
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _float_or_nan(value: str) -> float:
    """``float(value)``, or NaN (which fails every range check) when it is not a number."""
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _overlap(value: str) -> float:
    """``--overlap``: a fraction in [0, 1)."""
    x = _float_or_nan(value)
    if not 0.0 <= x < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), found {value!r}")
    return x


def _non_negative(value: str) -> float:
    """A number >= 0 (a volume threshold)."""
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {value!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {value}")
    return v


def _fraction(value: str) -> float:
    """A fraction in [0, 1]."""
    v = _non_negative(value)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], found {value}")
    return v


def _positive_float(value: str) -> float:
    """A finite number > 0 (a time budget)."""
    number = _float_or_nan(value)
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, found {value!r}")
    return number


def _positive_int(value: str) -> int:
    """A whole number of at least 1 (window sizes, batch sizes)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {value!r}")
    return n


def _mapping_item(value: str) -> tuple[str, str]:
    key, sep, modality = value.rpartition("=")
    if not sep or not key.strip() or not modality.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=SEQUENCE (e.g. 'AX T1 POST GD=T1CE' or 'scan3.nii.gz=FLAIR'), found {value!r}"
        )
    return key.strip(), modality.strip()


def _study_name(value: str) -> str:
    """A study name that stays a file-name prefix inside --output (no folders, no '..')."""
    name = value.strip()
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or len(name.encode()) > 200:
        raise argparse.ArgumentTypeError(
            f"expected a name for the output files (no '/', '\\' or leading '.', at most 200 bytes), found {value!r}"
        )
    return name


def _device(value: str) -> str:
    """``--device``: a torch device string that exists on this machine."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:0, found {value!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"expected a device this machine has, found {value!r} (no CUDA GPU is available)")
    return value


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """The inputs of ``predict`` and ``check``: studies, and which file is which sequence."""
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="a study folder (NIfTI or DICOM), a .zip of one, four NIfTI files, or a folder of study folders; "
                   "several folders or zips are a batch")
    p.add_argument("--map", action="append", type=_mapping_item, default=None, metavar="KEY=SEQUENCE", dest="mapping",
                   help="say which file (NIfTI file name) or DICOM series (description, number or UID) is which sequence: "
                   "T1, T1CE, T2, FLAIR, SEG or IGNORE; repeat for several; for a folder of studies, a key applies to "
                   "the studies that have it (default: told from the names)")
    p.add_argument("--harmonise", choices=("auto", "on", "off"), default="auto",
                   help="bring a raw study (sequences on different grids, slices over 3 mm, the skull on) onto the model's "
                   "terms: rigidly register T1, T2, FLAIR onto T1CE, skull-strip (deepbet), resample to 1 mm in the T1CE "
                   "frame; the labels go back onto the native T1CE grid. auto: when the study needs it; on: always; "
                   "off: never (a study on several grids is refused) (default: auto)")


def _add_window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="model folder with model.json and the exported learner(s) "
                   "(default: $BRATS_SEG_MODEL, else the bundled model/)")
    p.add_argument("--roi-size", type=_positive_int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="sliding-window size in voxels (default: the model card's roi_size)")
    p.add_argument("--overlap", type=_overlap, default=None, help="sliding-window overlap (default: the model card's)")
    p.add_argument("--sw-batch-size", type=_positive_int, default=None, help="windows per forward pass (default: the model card's)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average test-time flips along each axis (default: the model card's tta_flips)")
    p.add_argument("--postprocess", action=argparse.BooleanOptionalAction, default=True,
                   help="apply the model card's postprocess rules: drop small tumour islands, tiny ET to NCR (default: on)")
    p.add_argument("--device", type=_device, default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="brats-seg",
        description="Brain-tumour segmentation (BraTS labels 1 NCR, 2 ED, 4 ET) of MRI studies with T1, T1CE, T2 "
        "and FLAIR. For research only, not for clinical use.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", formatter_class=_Formatter,
                       help="segment one study (folder, zip or four files) or a folder of study folders",
                       description="Writes OUT_DIR/<study>_seg.nii.gz (BraTS labels with the input's affine and header) "
                       "and OUT_DIR/<study>_report.json (input files and sha256, model, settings, volumes, timings). "
                       "A folder or zip without NIfTI files is read as DICOM: the four MR series of one study, told "
                       "apart by their series descriptions. A raw study (see --harmonise) is harmonised first: then "
                       "<study>_seg.nii.gz lies on the native T1CE grid, and <study>_seg_1mm.nii.gz, "
                       "<study>_registration.png (a checkerboard of each sequence over T1CE, brain mask outlined) and "
                       "<study>_native.png are written too; the volumes are those of the 1 mm labels.")
    _add_study_args(p)
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--name", type=_study_name, default=None,
                   help="study name for a single study: the output files' prefix (default: folder name or common file prefix)")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write OUT_DIR/<study>_seg.dcm, a DICOM Segmentation on the T1CE series (DICOM input only)")
    p.add_argument("--hesitation-map", action="store_true",
                   help="also write OUT_DIR/<study>_hesitation.nii.gz: 1 where the label would differ at decision thresholds "
                   "0.7 and 0.3 (where the model hesitates; the report's volume_range; with the card's post-processing a "
                   "whole part can count), 0 elsewhere, with the input's geometry (region-sigmoid models)")
    p.add_argument("--save-preprocessed", action="store_true",
                   help="for a harmonised raw study, also write OUT_DIR/<study>_preprocessed/: the four sequences and the "
                   "brain mask on the 1 mm grid the model read, BraTS-named (default: off)")
    _add_window_args(p)

    p = sub.add_parser("check", formatter_class=_Formatter,
                       help="load and check studies without predicting: what would be refused, and warnings",
                       description="For each study: whether it loads (else the reason it would be refused, naming the "
                       "file) and the warnings of brats_seg.quality (not skull-stripped, implausible voxel sizes, thick "
                       "slices, a sequence covering only part of the brain, file names of two studies). A raw study is "
                       "harmonised as predict would (--harmonise; about 10 s), so that a registration or skull "
                       "stripping that fails is refused here too. Loads no model; use it before a long batch. Exit status 0 when every study loads (warnings or not), 2 "
                       "when one is refused.")
    _add_study_args(p)

    p = sub.add_parser("evaluate", formatter_class=_Formatter,
                       help="predict (or read predictions) for every case with a *_seg ground truth and score them",
                       description="Writes OUT_DIR/scores.csv (Dice and HD95 per region and case) and OUT_DIR/summary.json "
                       "(mean, median, std per metric), and prints the summary.")
    p.add_argument("data_dir", type=Path, help="folder of study folders, each with a *_seg.nii.gz ground truth")
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--predictions", type=Path, default=None,
                   help="read <case>_seg.nii.gz predictions from this folder instead of predicting (default: predict)")
    p.add_argument("--cases", default=None,
                   help="comma-separated case names, or @FILE with one per line, or @model.json for its held-out cases "
                   "(default: every case with a ground truth)")
    p.add_argument("--cross-validation", action="store_true",
                   help="score each case with only the ensemble member(s) whose training held it out (the card's "
                   "members[].training.held_out_cases): k-fold cross-validation of a bundle of fold models "
                   "(default: every case with the whole model)")
    p.add_argument("--save-predictions", action="store_true", help="also write each predicted label map to OUT_DIR")
    p.add_argument("--record-as", default=None, metavar="KEY",
                   help="also write the summary into the model card's scores under KEY, with this command "
                   "(default: the card is not changed)")
    _add_window_args(p)

    from .train_config import EXPORT_DTYPES, INTENSITY_AUGMENTS, PRECISIONS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", formatter_class=_Formatter,
                       help="train the fastai + MONAI UNet recipe and export a learner with its model card")
    p.add_argument("data_dir", type=Path, help="folder of BraTS case folders with *_seg ground truth, or a .npz from brats-seg pack")
    p.add_argument("--output", "-o", type=Path, required=True, help="run folder (model.pkl, model.json, splits, logs)")
    p.add_argument("--folds", type=int, default=d.folds, help="number of cross-validation folds")
    p.add_argument("--fold", type=int, default=d.fold, help="fold to hold out (-1: train on every case)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (splits, sampling, augmentation)")
    p.add_argument("--splits", type=Path, default=None,
                   help="reuse the folds of an earlier run's splits.json (default: make seeded folds from --seed)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of fit_flat_cos")
    p.add_argument("--samples-per-epoch", type=int, default=d.samples_per_epoch, help="random patches per epoch")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="patches per batch")
    p.add_argument("--patch-size", type=int, nargs=3, default=list(d.patch_size), metavar=("X", "Y", "Z"), help="training patch size in voxels")
    p.add_argument("--spacing", type=float, nargs=3, default=list(d.spacing), metavar=("X", "Y", "Z"), help="voxel spacing (mm) the network works at")
    p.add_argument("--channels", type=int, nargs="+", default=list(d.channels), help="UNet feature channels per level")
    p.add_argument("--num-res-units", type=int, default=d.num_res_units, help="residual units per UNet block")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: from lr_find)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Ranger weight decay")
    p.add_argument("--pct-start", type=float, default=d.pct_start, help="fraction of fit_flat_cos at the flat learning rate")
    p.add_argument("--intensity-augment", choices=INTENSITY_AUGMENTS, default=d.intensity_augment,
                   help="intensity augmentation: mild = joint scale/shift 10%%; strong = per-channel scale/shift, "
                   "gamma, noise, blur, low resolution; strong-bias = strong plus a smooth coil bias field shared by the channels; none")
    p.add_argument("--val-patches", type=int, default=d.val_patches, help="validation patches per held-out case")
    p.add_argument("--num-workers", type=int, default=d.num_workers, help="data-loader worker processes (0: load in the main process)")
    p.add_argument("--time-budget", type=_positive_float, default=d.time_budget_minutes, metavar="MINUTES",
                   help="fit the epoch length to this many minutes of training, timed during lr_find "
                   "(default: --samples-per-epoch as given)")
    p.add_argument("--export-dtype", choices=EXPORT_DTYPES, default=d.export_dtype,
                   help="how the exported weights are stored (float16 halves the file; inference computes in float32)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="training precision: auto = bf16 mixed precision on a GPU that has it, else fp16 on a GPU, "
                   "fp32 on the CPU; bf16 also runs on a CPU with native bfloat16 (AVX512-BF16 or AMX)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="train in the channels_last_3d memory format (faster 3-D convolutions on the CPU; "
                   "exported weights keep the standard layout) (default: on the CPU, where it is measured; off on a GPU)")
    p.add_argument("--init-from", type=Path, default=d.init_from, metavar="MODEL_DIR",
                   help="start from the weights of a trained run folder, or of a bundle's member of this fold (e.g. model/), "
                   "sha256-checked (it must not have trained on this run's held-out cases), and fine-tune them; ignored when --resume "
                   "finds a checkpoint (default: random initialisation)")
    p.add_argument("--device", type=_device, default=d.device, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--resume", action="store_true", help="resume from the run folder's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="one log line per epoch instead of progress bars")

    p = sub.add_parser("pack", formatter_class=_Formatter,
                       help="preprocess a folder of training cases into one compact .npz (to train elsewhere, e.g. on a GPU)",
                       description="Each case with ground truth is preprocessed as training does (reorient, brain crop, "
                       "z-score, resample to SPACING) and stored with 8-bit intensities and targets; "
                       "brats-seg train PACK.npz then trains from it.")
    p.add_argument("data_dir", type=Path, help="folder of BraTS case folders with *_seg ground truth")
    p.add_argument("--output", "-o", type=Path, required=True, help="the .npz file to write")
    p.add_argument("--spacing", type=float, nargs=3, default=list(d.spacing), metavar=("X", "Y", "Z"), help="voxel spacing (mm) the network works at")

    p = sub.add_parser("bundle", formatter_class=_Formatter,
                       help="gather trained runs into one model folder (several runs = an ensemble)",
                       description="Copies each run's model.pkl as <run>.pkl into OUTPUT and writes one model.json listing "
                       "every file with its sha256; the card's other fields come from the first run.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders written by brats-seg train")
    p.add_argument("--output", "-o", type=Path, required=True, help="model folder to write (e.g. model/)")
    p.add_argument("--name", default=None, help="model name (default: the first run's card name, + -ensemble)")
    p.add_argument("--min-component-mm3", type=_non_negative, default=0.0, metavar="MM3",
                   help="card post-processing: drop tumour islands smaller than this (0 = off)")
    p.add_argument("--min-component-fraction", type=_fraction, default=0.0, metavar="F",
                   help="card post-processing: drop tumour islands smaller than F x the largest (0 = off)")
    p.add_argument("--et-min-mm3", type=_non_negative, default=0.0, metavar="MM3",
                   help="card post-processing: relabel ET as NCR when all ET is smaller than this (0 = off)")
    p.add_argument("--tta-flips", action=argparse.BooleanOptionalAction, default=False,
                   help="card default for test-time flips: predict and evaluate then average the volume flipped "
                   "along each axis (about 4x the network time; --no-tta there turns them off) (default: off)")
    p.add_argument("--weights-dtype", choices=EXPORT_DTYPES, default=None,
                   help="store every learner's weights in this type (loaded sha256-checked, converted, exported "
                   "again); float16 halves the files and predictions still compute in float32 "
                   "(default: copy each run's file unchanged)")

    p = sub.add_parser("average", formatter_class=_Formatter,
                       help="average the weights of several runs of one fold into one learner (a model soup)",
                       description="Loads each learner (sha256-checked), takes the float32 mean of their weights and "
                       "exports it with the first run's card as OUTPUT/model.pkl, a run folder that brats-seg bundle "
                       "takes. Every source must hold out the same cases; a bundle of fold models (e.g. model/) "
                       "contributes its member of that fold. Predicting costs one network, not one per source.")
    p.add_argument("sources", nargs="+", type=Path, metavar="RUN",
                   help="model folders, at least two; the first a run folder written by brats-seg train")
    p.add_argument("--output", "-o", type=Path, required=True, help="run folder to write")
    p.add_argument("--weights-dtype", choices=EXPORT_DTYPES, default=None,
                   help="how the averaged weights are stored (default: as the first run's)")

    p = sub.add_parser("info", formatter_class=_Formatter, help="print the model card")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: $BRATS_SEG_MODEL, else the bundled model/)")
    return parser


# ----------------------------------------------------------------------------------------------------


def _progress_bar(enabled: bool, desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=desc, unit="%", disable=not enabled, leave=False, file=sys.stderr)

    def update(fraction: float) -> None:
        bar.n = round(100 * fraction)
        bar.refresh()

    return bar, update


def _window_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "roi_size": args.roi_size,
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "tta_flips": args.tta,
        "device": args.device,
        "postprocessing": args.postprocess,
    }


def _resolve_inputs(inputs: Sequence[Path]) -> list[Any]:
    """A list of study sources: folders, zips, or one list of files.

    Each folder (a study, or a folder of studies) and each zip is a source of its own; NIfTI files
    given together are one study.
    """
    from . import io

    for p in inputs:
        if not p.exists():
            raise StudyError(f"{p}: no such file or folder")
    if len(inputs) > 1 and not all(p.is_dir() or p.suffix.lower() == ".zip" for p in inputs):
        return [list(inputs)]
    sources: list[Any] = []
    for src in inputs:
        if src.is_dir():
            studies = io.find_studies(src)
            if not studies:
                raise StudyError(f"{src}: expected NIfTI files, DICOM series or study folders, found none")
            sources.extend(studies)
        elif src.suffix.lower() == ".zip":
            sources.append(src)
        else:
            raise StudyError(f"{src}: expected a study folder, a .zip or four NIfTI files, found a single file")
    return sources


def cmd_predict(args: argparse.Namespace) -> int:
    from . import io, report

    sources = _resolve_inputs(args.inputs)
    _make_output_dir(args.output)
    model = None
    failures = 0
    for src in sources:
        t0 = time.perf_counter()
        try:
            study, harmonised = _load_for_predict(src, args, single=len(sources) == 1)
        except StudyError as e:
            if len(sources) == 1:
                raise
            print(f"skipping {src}: {_one_line(e)}", file=sys.stderr)
            failures += 1
            continue
        t_load = time.perf_counter() - t0
        if model is None:  # after the first study passed its checks: bad input is refused without this cost
            from .model import load_model  # torch, MONAI, fastai: seconds and a GB, only for work to do
            from .pipeline import segment

            model = load_model(args.model, device=args.device)
        bar, update = _progress_bar(not args.no_progress, study.name)
        try:
            seg = segment(study, model, progress=update, harmonised=harmonised, **_window_kwargs(args))
        finally:
            bar.close()
        seg.timings["load"] = round(t_load, 3)
        out_seg = io.save_labels(seg.native or seg.labels, args.output / f"{study.name}_seg.nii.gz")
        if harmonised is not None:
            _write_harmonised(harmonised, seg, args)
        vols = report.volumes(seg.labels)
        scores = None
        if study.truth is not None:
            from .metrics import score

            scores = score(seg.labels, study.truth_map)
        seg.timings["wall"] = round(time.perf_counter() - t0, 3)
        rep = report.study_report(study, seg, model, vols, scores)
        (args.output / f"{study.name}_report.json").write_text(json.dumps(rep, indent=2) + "\n")
        print(f"{study.name}: {out_seg} ({_wt_line(vols, seg)}, {seg.timings['wall']:.1f} s)")
        if args.hesitation_map:
            if seg.uncertain is None:
                print(f"no hesitation map for {study.name}: model {model.card.name} does not output region "
                      "sigmoids, so it has no decision threshold to vary", file=sys.stderr)
            else:
                io.save_hesitation(seg.uncertain if seg.native is None else seg.native_uncertain,
                                   seg.native or seg.labels, args.output / f"{study.name}_hesitation.nii.gz")
        for warning in seg.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.dicom_seg:
            failures += not _write_dicom_seg(study, seg.native or seg.labels, model, args.output, single=len(sources) == 1)
    if failures:
        print(f"brats-seg predict: {failures} of {len(sources)} studies skipped (bad input)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _wt_line(vols: dict[str, Any], seg: Any) -> str:
    """``WT 30.7 mL, 25.7–41.5 mL at thresholds 0.7–0.3`` (the range when the model has one)."""
    spread = ""
    if seg.volume_range is not None:
        low, high = min(seg.volume_range["regions"]["WT"]), max(seg.volume_range["regions"]["WT"])
        ts = seg.volume_range["thresholds"]
        spread = f", {low:.1f}\u2013{high:.1f} mL at thresholds {ts[0]:g}\u2013{ts[-1]:g}"
    return f"WT {vols['regions']['WT']['mL']:.1f} mL{spread}"


def _load_for_predict(src: Any, args: argparse.Namespace, *, single: bool) -> tuple[Study, Any]:
    """Load one study, harmonised when ``--harmonise`` says so: the study the model reads and the harmonisation."""
    from . import io
    from .harmonise import harmonise_if_needed

    load = io.load_study if args.harmonise == "off" else io.load_native_study  # off: exactly as before harmonising
    raw = load(src, mapping=dict(args.mapping or ()), name=args.name if single else None, partial_mapping=not single)
    if args.dicom_seg and raw.dicom is None and single:
        raise StudyError(
            f"{raw.name}: --dicom-seg needs DICOM input, found NIfTI files; a DICOM Segmentation refers to "
            "the source DICOM images (leave out --dicom-seg to write the NIfTI labels)"
        )

    def say(text: str) -> None:
        if not args.no_progress:
            print(f"{raw.name}: {text}", file=sys.stderr)

    if not isinstance(raw, RawStudy):
        return raw, None
    study, harmonised = harmonise_if_needed(raw, mode=args.harmonise, progress=say)
    if harmonised is not None:
        t = harmonised.timings
        print(f"{raw.name}: harmonised ({'; '.join(harmonised.reasons)}) in {t['total']:.1f} s: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if k != "total"))
    return study, harmonised


def _write_harmonised(harmonised: Any, seg: Any, args: argparse.Namespace) -> None:
    """The extra files of a harmonised study (1 mm labels, pictures, and the preprocessed sequences if asked)."""
    from .harmonise_outputs import harmonised_files

    for name, (_mime, data) in harmonised_files(harmonised, seg.labels, seg.native,
                                                preprocessed=args.save_preprocessed).items():
        path = args.output / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def cmd_check(args: argparse.Namespace) -> int:
    from . import io, quality
    from .harmonise import decide, harmonise

    sources = _resolve_inputs(args.inputs)
    counts = {"ok": 0, "with warnings": 0, "refused": 0}
    for src in sources:
        note = ""
        try:
            load = io.load_study if args.harmonise == "off" else io.load_native_study
            raw = load(src, mapping=dict(args.mapping or ()), partial_mapping=len(sources) > 1)
            reasons = decide(raw, mode=args.harmonise) if isinstance(raw, RawStudy) else []
            if reasons:  # as predict would: registration and skull stripping can refuse a study too
                harmonised = harmonise(raw, reasons=reasons)
                note = f"raw study, harmonised in {harmonised.timings['total']:.1f} s ({'; '.join(reasons)}); "
                study = harmonised.study
            else:
                study = raw.to_study() if isinstance(raw, RawStudy) else raw
        except StudyError as e:
            counts["refused"] += 1
            where = src if isinstance(src, Path) else ", ".join(str(p) for p in src)
            print(f"{where}: refused: {_one_line(e)}")
            continue
        warnings = quality.check_study(study)
        counts["with warnings" if warnings else "ok"] += 1
        files = ", ".join(f"{m} {study.sources[m]}" for m in study.sources)
        status = f"{len(warnings)} warning{'s' * (len(warnings) != 1)}" if warnings else "ok"
        print(f"{study.name}: {status} ({note}{study.grid_text}; {files})")
        for warning in warnings:
            print(f"  warning: {warning}")
    print(f"{len(sources)} {'study' if len(sources) == 1 else 'studies'}: "
          + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return EXIT_BAD_INPUT if counts["refused"] else EXIT_OK


def _write_dicom_seg(study: Study, labels: LabelMap, model: Any, out_dir: Path, *, single: bool) -> bool:
    """Write OUT_DIR/<study>_seg.dcm for ``--dicom-seg``; in a batch a study that cannot have one is reported."""
    from . import __version__
    from .dicom import write_segmentation

    try:
        if study.dicom is None:
            raise StudyError(f"{study.name}: NIfTI input, so no DICOM Segmentation (its NIfTI labels were written)")
        out = write_segmentation(labels, study, out_dir / f"{study.name}_seg.dcm",
                                 model_name=model.card.name, software_version=f"brats-seg {__version__}")
    except StudyError as e:
        if single:
            raise
        print(f"no DICOM SEG for {study.name}: {e}", file=sys.stderr)
        return False
    print(f"{study.name}: DICOM Segmentation {out}")
    return True


def _select_cases(spec: str | None) -> set[str] | None:
    if spec is None:
        return None
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise StudyError(f"--cases {spec}: no such file")
        if path.suffix == ".json":
            try:
                d = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise StudyError(f"--cases {spec}: {path.name} is not valid JSON ({e}); expected a model card") from e
            training = d.get("training") if isinstance(d, dict) else None
            names = (training or {}).get("held_out_cases") or (d.get("held_out_cases") if isinstance(d, dict) else None)
            if not names:
                members = d.get("members") if isinstance(d, dict) else None
                fold_models = isinstance(members, list) and any(
                    isinstance(m, dict) and isinstance(m.get("training"), dict) and m["training"].get("held_out_cases")
                    for m in members
                )
                hint = "; its members hold out different cases (a bundle of fold models): use --cross-validation" if fold_models else ""
                raise StudyError(
                    f"--cases {spec}: expected a model card listing training.held_out_cases, found no held-out cases{hint}"
                )
            return set(names)
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    return {s.strip() for s in spec.split(",") if s.strip()}




def load_prediction(path: Path, study: Study) -> LabelMap:
    """Read a predicted label map for ``study`` and check it lies on the study's grid.

    Args:
        path: A NIfTI label map (``<case>_seg.nii.gz``).
        study: The study it predicts; its shape and affine must match.

    Returns:
        The labels as a ``LabelMap`` with the study's affine and header.

    Raises:
        StudyError: naming the file, when it is missing or unreadable, not on the study's grid, or
            holds values other than the BraTS labels 0, 1, 2, 4.
    """
    import gzip
    import zlib

    import nibabel as nib
    import numpy as np
    from nibabel.filebasedimages import ImageFileError

    from . import io
    from .postprocess import check_labels
    from .types import LabelMap

    if not path.is_file():
        raise StudyError(f"{path.name}: no prediction for case {study.name} at {path}; expected <case>_seg.nii.gz")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as e:
        raise StudyError(f"{path.name}: cannot be read as a NIfTI label map ({e}); expected a .nii or .nii.gz file") from e
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(study.shape):
        raise StudyError(
            f"{path.name}: expected the shape {tuple(study.shape)} of study {study.name}, found {tuple(data.shape)}"
        )
    diff = float(np.max(np.abs(np.asarray(image.affine) - study.affine)))
    if not diff <= io.AFFINE_ATOL:
        raise StudyError(
            f"{path.name}: affine differs from that of study {study.name} by up to {diff:.4g} mm; expected the "
            f"study's affine within {io.AFFINE_ATOL:g} mm"
        )
    try:
        check_labels(data, name=path.name)
    except ValueError as e:
        raise StudyError(str(e)) from e
    return LabelMap(np.asarray(data).astype(np.uint8), study.affine.copy(), study.header.copy())


def _make_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(f"{path}: cannot create the output folder ({e}); expected a writable folder path") from e


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import io, metrics

    if not args.data_dir.is_dir():
        raise StudyError(f"{args.data_dir}: expected a folder of cases, found no such folder")
    wanted = _select_cases(args.cases)
    folders = [f for f in io.find_studies(args.data_dir) if io.has_truth(f)]
    model = None
    members: dict[str, Any] = {}
    if args.cross_validation:
        if args.predictions is not None:
            raise StudyError("--cross-validation predicts with the model's members; it cannot read --predictions")
        from .model import load_model

        model = load_model(args.model, device=args.device)
        members = cross_validation_members(model)
        if wanted is None:
            wanted = set(members) & {f.name for f in folders}
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
    if wanted is not None:
        unknown = wanted - {f.name for f in folders}
        if unknown:
            raise StudyError(f"--cases: no case with ground truth named {sorted(unknown)} under {args.data_dir}")
        folders = [f for f in folders if f.name in wanted]
    if not folders:
        raise StudyError(f"{args.data_dir}: expected case folders with a *_seg ground truth, found none")
    if args.predictions is not None and not args.predictions.is_dir():
        raise StudyError(f"--predictions {args.predictions}: expected a folder of <case>_seg.nii.gz files, found no such folder")
    _make_output_dir(args.output)
    if args.predictions is None and model is None:
        from .model import load_model

        model = load_model(args.model, device=args.device)
    flips = None if model is None else (bool(model.card.tta_flips) if args.tta is None else args.tta)
    if args.record_as and model is not None:
        if flips != args.record_as.endswith("_tta"):
            expected = f"a key ending in _tta (e.g. {args.record_as}_tta)" if flips else "a key without _tta, or --tta"
            raise StudyError(f"--record-as {args.record_as}: these predictions {'use' if flips else 'skip'} test-time "
                             f"flips ({'the card' if args.tta is None else '--tta/--no-tta'} says so); expected {expected}")
    rows = []
    from tqdm.auto import tqdm

    for folder in tqdm(folders, desc="evaluate", disable=args.no_progress, file=sys.stderr):
        study = io.load_study(folder)
        t0 = time.perf_counter()
        if model is not None:
            from .pipeline import segment

            seg = segment(study, members.get(study.name, model), volume_thresholds=None, **_window_kwargs(args))
            pred = seg.labels
            if args.save_predictions:
                io.save_labels(pred, args.output / f"{study.name}_seg.nii.gz")
        else:
            pred = load_prediction(args.predictions / f"{study.name}_seg.nii.gz", study)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"case": study.name}
        row.update(metrics.flatten_scores(metrics.score(pred, study.truth_map, per_label=True)))
        row["seconds"] = round(seconds, 2)
        rows.append(row)
    keys = list(rows[0])
    with open(args.output / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    summary = metrics.summarise([{k: v for k, v in r.items() if k not in ("case", "seconds")} for r in rows])
    meta = {"cases": [r["case"] for r in rows], "model": None if model is None else model.card.name,
            "cross_validation": bool(args.cross_validation),
            "postprocessing": bool(args.postprocess) if model is not None else None,
            "tta": flips}
    (args.output / "summary.json").write_text(json.dumps({**meta, "summary": summary}, indent=2) + "\n")
    print(format_summary(summary))
    if args.record_as:
        if model is None:
            raise StudyError("--record-as needs predictions made by a model, not read with --predictions")
        from .card import record_scores

        command = "brats-seg " + shlex.join(args.argv)
        record_scores(model.directory / "model.json", summary, cases=meta["cases"], command=command, key=args.record_as)
        print(f"recorded as scores.{args.record_as} in {model.directory / 'model.json'}")
    return EXIT_OK


def cross_validation_members(model: Any) -> dict[str, Any]:
    """For each case some member of the ensemble held out, a ``Model`` of only those members.

    Raises:
        StudyError: when the card lists no members with held-out cases (not a bundle of fold runs).
    """
    import dataclasses

    listed = model.card.extra.get("members") or []
    if len(listed) != len(model.networks):
        raise StudyError(
            f"--cross-validation: model {model.card.name} lists {len(listed)} members in its card for "
            f"{len(model.networks)} networks; expected a bundle of fold runs (brats-seg bundle)"
        )
    by_case: dict[str, list[int]] = {}
    for i, member in enumerate(listed):
        for case in (member.get("training") or {}).get("held_out_cases") or []:
            by_case.setdefault(case, []).append(i)
    if not by_case:
        raise StudyError(f"--cross-validation: no member of {model.card.name} records held-out cases")
    return {
        case: dataclasses.replace(model, networks=[model.networks[i] for i in idx]) for case, idx in by_case.items()
    }


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """A plain-text table of the summary: one row per metric, with the 95% interval of the mean when known."""
    lines = [f"{'metric':<10} {'mean':>8} {'95% CI of the mean':>19} {'median':>8} {'std':>8} {'n':>4}"]
    order = ["ET", "TC", "WT", "NCR", "ED"]  # the regions, then the labels NCR and ED (the label ET is the region)
    for key in sorted(summary, key=lambda k: (k.split("_")[0], order.index(k.split("_")[1]) if k.split("_")[1] in order else 9)):
        s = summary[key]
        ci = f"{s['ci_low']:.3f}\u2013{s['ci_high']:.3f}" if "ci_low" in s and "ci_high" in s and s["n"] >= 2 else "-"
        lines.append(f"{key:<10} {s['mean']:>8.3f} {ci:>19} {s['median']:>8.3f} {s['std']:>8.3f} {int(s['n']):>4}")
    lines.append("95% CI: percentile bootstrap over the cases (10,000 resamples); it shows how far the mean of so few cases can move.")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train
    from .train_config import TrainConfig

    config = TrainConfig(
        folds=args.folds, fold=args.fold, seed=args.seed, epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
        batch_size=args.batch_size, patch_size=tuple(args.patch_size), spacing=tuple(args.spacing),
        channels=tuple(args.channels), num_res_units=args.num_res_units, lr=args.lr, weight_decay=args.weight_decay,
        pct_start=args.pct_start, intensity_augment=args.intensity_augment, val_patches=args.val_patches, device=args.device, resume=args.resume, splits=args.splits, progress=not args.no_progress,
        num_workers=args.num_workers, time_budget_minutes=args.time_budget, export_dtype=args.export_dtype,
        precision=args.precision, channels_last=args.channels_last, init_from=args.init_from,
    )
    train(args.data_dir, args.output, config)  # bad data, pack, split or settings raise StudyError
    return EXIT_OK


def cmd_pack(args: argparse.Namespace) -> int:
    from .train import pack_cases

    if not args.data_dir.is_dir():
        raise StudyError(f"{args.data_dir}: expected a folder of cases, found no such folder")
    out = pack_cases(args.data_dir, args.output, spacing=args.spacing)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from .card import ModelCard
    from .model import default_model_dir

    directory = args.model or default_model_dir()
    card = ModelCard.load(Path(directory) / "model.json")
    print(json.dumps(card.to_dict(), indent=2))
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace) -> int:
    from .train import bundle

    postprocess = {
        "min_component_mm3": args.min_component_mm3,
        "min_component_fraction": args.min_component_fraction,
        "et_min_mm3": args.et_min_mm3,
    }
    card = bundle(args.runs, args.output, name=args.name, postprocess=postprocess, weights_dtype=args.weights_dtype,
                  tta_flips=args.tta_flips)
    print(f"wrote {args.output / 'model.json'} with {len(card.files)} learner(s): {', '.join(card.files)}")
    return EXIT_OK


def cmd_average(args: argparse.Namespace) -> int:
    from .train import average

    card = average(args.sources, args.output, weights_dtype=args.weights_dtype)
    sources = card.extra["training"]["averaged_from"]
    print(f"wrote {args.output / 'model.pkl'}: the mean of {len(sources)} learners ({', '.join(s['file'] for s in sources)})")
    return EXIT_OK


COMMANDS = {
    "predict": cmd_predict, "check": cmd_check, "evaluate": cmd_evaluate, "train": cmd_train, "pack": cmd_pack,
    "bundle": cmd_bundle, "average": cmd_average, "info": cmd_info,
}


def _one_line(error: BaseException) -> str:
    """An error message on one line (some hold a matrix or a list over several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brats-seg`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return COMMANDS[args.command](args)
    except (StudyError, ModelError) as e:
        print(f"brats-seg {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        print(f"brats-seg {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
