"""The parser of the PACS-side subcommands: ``pacs`` (run, watch, send), ``to-dicom`` and ``batch``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    HelpFormatter,
    add_device_and_backend,
    add_map_arg,
    positive_float,
    positive_int,
)

Subparsers = Any  # argparse's _SubParsersAction, which it does not name publicly

__all__ = ["add_batch", "add_pacs", "add_to_dicom"]


def add_pacs(sub: Subparsers) -> None:
    p = sub.add_parser(
        "pacs",
        formatter_class=HelpFormatter,
        help="a research-PACS node: fetch MR studies by C-GET, segment them, store DICOM SEG and SR back",
        description="Talks DICOM to a PACS (C-FIND, C-GET, C-STORE; no listening port needed). The PACS "
        "must know our AE title with this host to allow C-GET and C-STORE. Settings come from options or "
        'a JSON file {"host": ..., "port": ..., "called_ae": ..., "calling_ae": ..., "timeout": ...}; '
        "options override the file.",
    )
    pacs = p.add_subparsers(dest="pacs_command", required=True)
    run = pacs.add_parser(
        "run",
        formatter_class=HelpFormatter,
        help="segment one study of the PACS and store its results back",
        description="Writes OUT_DIR/<study uid>/ (the files of brats-seg predict --dicom-seg, and "
        "<study uid>_sr.dcm, a DICOM SR of the volumes) and stores the SEG and the SR on the PACS.",
    )
    _add_pacs_args(run)
    run.add_argument("--study-uid", required=True, help="StudyInstanceUID of the study to segment")
    watch = pacs.add_parser(
        "watch",
        formatter_class=HelpFormatter,
        help="segment every MR study of the PACS once, and keep watching for new ones",
        description="Queries the PACS for MR studies every --interval seconds and runs each new "
        "StudyInstanceUID once, oldest StudyDate first, as pacs run does (--since and --max-studies "
        "narrow a pass); --state records the done and failed ones. One line "
        "per study: processed, or failed with the reason. A PACS that cannot be reached is retried, "
        "waiting twice as long each time up to --max-backoff.",
    )
    _add_pacs_args(watch)
    _add_watch_args(watch)
    send = pacs.add_parser(
        "send",
        formatter_class=HelpFormatter,
        help="C-STORE every DICOM file of a folder to the PACS (e.g. the output of brats-seg to-dicom)",
    )
    _add_pacs_connection_args(send)
    send.add_argument("folder", type=Path, help="folder of DICOM files (searched recursively)")


def add_batch(sub: Subparsers) -> None:
    p = sub.add_parser(
        "batch",
        formatter_class=HelpFormatter,
        help="segment every study under --input into --output/<study>/, one log file per run in --log",
        description="The container-like contract, for a run that something else triggers: every study "
        "folder (NIfTI or DICOM) or .zip under --input is segmented (harmonised when raw, as predict "
        "does) and its files written to --output/<study>/; --log gets one file per run, "
        "brats-seg_batch_<UTC time>.log, with one line per study: processed, or failed with the reason. "
        "A failed study does not stop the others. Exit status 0 when every study was processed, 2 when "
        "one failed or --input holds none.",
    )
    p.add_argument("--input", type=Path, required=True, help="folder of studies (or one study folder)")
    p.add_argument("--output", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument(
        "--log", type=Path, required=True, help="folder for the run's log file (created if needed)"
    )
    _add_model_args(p, studies="raw studies")


def add_to_dicom(sub: Subparsers) -> None:
    p = sub.add_parser(
        "to-dicom",
        formatter_class=HelpFormatter,
        help="write a study's four sequences as DICOM MR series (to try the PACS path)",
        description="Loads STUDY as predict does (NIfTI or DICOM, without harmonising) and writes its "
        "T1, T1CE, T2 and FLAIR as single-frame MR series in OUT_DIR/S1..S4: int16 pixel data (with a "
        "rescale when the values are not integers), SeriesDescriptions the loader recognises, one "
        "StudyInstanceUID and FrameOfReferenceUID, and the geometry of the study's affine.",
    )
    p.add_argument("study", type=Path, help="a study folder, a .zip of one, or a DICOM folder")
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--patient-id", default=None, help="PatientID and PatientName (default: the study's name)")
    add_map_arg(p, "say which file is which sequence, as predict --map (default: told from the names)")


def _add_watch_args(p: argparse.ArgumentParser) -> None:
    """What ``pacs watch`` adds to ``pacs run``'s options: the state, the timing and which studies."""
    p.add_argument(
        "--state",
        type=Path,
        required=True,
        help="JSON file of done and failed study UIDs (written atomically)",
    )
    p.add_argument("--interval", type=positive_float, default=60.0, help="seconds between queries")
    p.add_argument(
        "--max-backoff", type=positive_float, default=900.0, help="longest wait (s) after failed queries"
    )
    p.add_argument(
        "--since",
        type=study_date,
        default=None,
        metavar="YYYYMMDD",
        help="only studies of this StudyDate or later (default: no limit)",
    )
    p.add_argument(
        "--max-studies",
        type=positive_int,
        default=None,
        metavar="N",
        help="at most N studies per pass, oldest first, so a large archive is taken in slices "
        "(default: no limit)",
    )
    p.add_argument(
        "--once", action="store_true", help="one pass, then exit (status 2 when a study or the query failed)"
    )


def study_date(text: str) -> str:
    """A ``YYYYMMDD`` date (a DICOM DA), checked; argparse's type for ``--since``."""
    from datetime import datetime

    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYYMMDD, found {text!r}") from None
    if len(text) != 8:
        raise argparse.ArgumentTypeError(f"expected a date YYYYMMDD, found {text!r}")
    return text


def _add_pacs_connection_args(p: argparse.ArgumentParser) -> None:
    """How to reach the PACS, for every ``pacs`` subcommand."""
    p.add_argument("--config", type=Path, default=None, help="JSON file of PACS settings (default: none)")
    p.add_argument("--host", default=None, help="the PACS's host (default: from --config)")
    p.add_argument(
        "--port", type=positive_int, default=None, help="the PACS's DICOM port (default: from --config)"
    )
    p.add_argument("--called-ae", default=None, help="the PACS's AE title (default: from --config)")
    p.add_argument("--calling-ae", default=None, help="our AE title (default: from --config, else BRATS_SEG)")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        help="seconds to wait for the PACS (default: from --config, else 30)",
    )


def _add_pacs_args(p: argparse.ArgumentParser) -> None:
    """The PACS, the output folder and the model, for ``pacs run`` and ``pacs watch``."""
    _add_pacs_connection_args(p)
    p.add_argument("--output", "-o", type=Path, required=True, help="output folder (created if needed)")
    add_map_arg(
        p,
        "say which DICOM series (description, number or UID) is which sequence: T1, T1CE, T2, "
        "FLAIR or IGNORE; repeat for several (default: told from the series descriptions)",
    )
    _add_model_args(p, studies="a raw study")


def _add_model_args(p: argparse.ArgumentParser, *, studies: str) -> None:
    """How studies are harmonised and segmented: ``--harmonise``, ``--model``, ``--device``."""
    p.add_argument(
        "--harmonise",
        choices=("auto", "on", "off"),
        default="auto",
        help=f"bring {studies} onto the model's terms, as brats-seg predict --harmonise",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model folder (default: $BRATS_SEG_MODEL, else the bundled model/)",
    )
    add_device_and_backend(p)
