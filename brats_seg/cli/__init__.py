"""The ``brats-seg`` command line: ``predict``, ``check``, ``evaluate``, ``train``, ``pack``, ``bundle``,
``average``, ``info``, ``pacs`` (``run``, ``watch``, ``send``),
``to-dicom`` and ``batch``.

A thin face of the package: each subcommand parses its options (:mod:`.parser`), calls the library
and prints. Exit codes: 0 done, 2 bad input (a one-line message on stderr, no traceback; also when any
study of a folder of studies was skipped), 1 internal error. Every default is stated in ``--help``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from ..errors import ClusterError, ModelError, PacsError, StudyError
from .batch import cmd_batch
from .check import cmd_check
from .common import EXIT_BAD_INPUT, EXIT_INTERNAL, one_line
from .convert import cmd_to_dicom
from .evaluate import cmd_evaluate
from .pacs import cmd_pacs
from .parser import build_parser
from .predict import cmd_predict
from .training import cmd_average, cmd_bundle, cmd_info, cmd_pack, cmd_train

__all__ = ["COMMANDS", "build_parser", "main"]

#: The function that runs each subcommand; it returns the exit status.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "predict": cmd_predict,
    "check": cmd_check,
    "evaluate": cmd_evaluate,
    "train": cmd_train,
    "pack": cmd_pack,
    "bundle": cmd_bundle,
    "average": cmd_average,
    "info": cmd_info,
    "pacs": cmd_pacs,
    "to-dicom": cmd_to_dicom,
    "batch": cmd_batch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brats-seg`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return COMMANDS[args.command](args)
    except (StudyError, ModelError, PacsError, ClusterError) as e:
        print(f"brats-seg {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        print(f"brats-seg {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INTERNAL
