"""What the subcommands share: exit codes, the help formatter, argument types and small helpers.

The argument types raise :class:`argparse.ArgumentTypeError` with what was expected and what was
found; argparse turns it into exit status 2 with the option's name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import StudyError

#: Exit status: done; an internal error (with a traceback); bad input (a one-line message).
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """States the default of every optional argument whose help text does not already say it.

    Unlike ``argparse.ArgumentDefaultsHelpFormatter`` it neither repeats a default the help text
    explains (``(default: the model card's roi_size)``) nor adds ``(default: None)`` to a required
    option; a flag that takes no value (``store_true``) shows its default as ``off``.
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
        if action.nargs == 0 and isinstance(default, bool):
            shown = "on" if default else "off"
        elif isinstance(default, list | tuple):
            shown = " ".join(str(v) for v in default)
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def one_line(error: BaseException) -> str:
    """An error message on one line (some hold a matrix or a list over several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _float_or_nan(value: str) -> float:
    """``float(value)``, or NaN (which fails every range check) when it is not a number."""
    try:
        return float(value)
    except ValueError:
        return float("nan")


def overlap(value: str) -> float:
    """``--overlap``: a fraction in [0, 1)."""
    x = _float_or_nan(value)
    if not 0.0 <= x < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), found {value!r}")
    return x


def non_negative(value: str) -> float:
    """A number >= 0 (a volume threshold)."""
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {value!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {value}")
    return v


def fraction(value: str) -> float:
    """A fraction in [0, 1]."""
    v = non_negative(value)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], found {value}")
    return v


def positive_float(value: str) -> float:
    """A finite number > 0 (a time budget)."""
    number = _float_or_nan(value)
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, found {value!r}")
    return number


def positive_int(value: str) -> int:
    """A whole number of at least 1 (window sizes, batch sizes)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {value!r}")
    return n


def mapping_item(value: str) -> tuple[str, str]:
    """``--map KEY=SEQUENCE``: a file or series name and the sequence it holds."""
    key, sep, modality = value.rpartition("=")
    if not sep or not key.strip() or not modality.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=SEQUENCE (e.g. 'AX T1 POST GD=T1CE' or 'scan3.nii.gz=FLAIR'), found {value!r}"
        )
    return key.strip(), modality.strip()


def study_name(value: str) -> str:
    """A study name that stays a file-name prefix inside --output (no folders, no '..')."""
    name = value.strip()
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or len(name.encode()) > 200:
        raise argparse.ArgumentTypeError(
            "expected a name for the output files (no '/', '\\' or leading '.', at most 200 bytes), found "
            f"{value!r}"
        )
    return name


def device(value: str) -> str:
    """``--device``: a torch device string that exists on this machine."""
    import torch

    try:
        parsed = torch.device(value)
    except (RuntimeError, ValueError) as e:
        raise argparse.ArgumentTypeError(
            f"expected a torch device such as cpu, cuda or cuda:0, found {value!r}"
        ) from e
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"expected a device this machine has, found {value!r} (no CUDA GPU is available)"
        )
    return value


def add_map_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--map KEY=SEQUENCE``, repeatable (into ``args.mapping``)."""
    p.add_argument(
        "--map",
        action="append",
        type=mapping_item,
        default=None,
        metavar="KEY=SEQUENCE",
        dest="mapping",
        help=help_text,
    )


def add_device_and_backend(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--backend``: where and by what the networks run."""
    from ..runtime import BACKENDS

    p.add_argument(
        "--device", type=device, default=None, help="torch device (default: cuda when available, else cpu)"
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="what runs the networks: torch, openvino (CPU only; converted once from the checked "
        "learners and cached), or auto: openvino on the CPU when installed, else torch (default: "
        "$BRATS_SEG_BACKEND, else auto)",
    )


def make_output_dir(path: Path) -> None:
    """Create ``--output`` (and its parents), or raise :class:`StudyError` saying why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(
            f"{path}: cannot create the output folder ({e}); expected a writable folder path"
        ) from e


def window_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`brats_seg.pipeline.segment` that the window options set."""
    return {
        "roi_size": args.roi_size,
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "tta_flips": args.tta,
        "device": args.device,
        "postprocess": args.postprocess,
    }


def progress_bar(enabled: bool, desc: str) -> tuple[Any, Callable[[float], None]]:
    """A tqdm bar on stderr and the callback that moves it to a fraction done."""
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=desc, unit="%", disable=not enabled, leave=False, file=sys.stderr)

    def update(fraction_done: float) -> None:
        bar.n = round(100 * fraction_done)
        bar.refresh()

    return bar, update


def resolve_inputs(inputs: Sequence[Path]) -> list[Any]:
    """A list of study sources: folders, zips, or one list of files.

    Each folder (a study, or a folder of studies) and each zip is a source of its own; NIfTI files
    given together are one study.
    """
    from ..files import find_studies

    for p in inputs:
        if not p.exists():
            raise StudyError(f"{p}: no such file or folder")
    if len(inputs) > 1 and not all(p.is_dir() or p.suffix.lower() == ".zip" for p in inputs):
        return [list(inputs)]
    sources: list[Any] = []
    for src in inputs:
        if src.is_dir():
            studies = find_studies(src)
            if not studies:
                raise StudyError(f"{src}: expected NIfTI files, DICOM series or study folders, found none")
            sources.extend(studies)
        elif src.suffix.lower() == ".zip":
            sources.append(src)
        else:
            raise StudyError(
                f"{src}: expected a study folder, a .zip or four NIfTI files, found a single file"
            )
    return sources
