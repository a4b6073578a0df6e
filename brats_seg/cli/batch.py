"""``brats-seg batch``: the container-like contract. Every study under ``--input`` is segmented into
``--output/<study>/``, with one log file per run in ``--log`` (one line per study); the exit status says
whether some failed."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ModelError, StudyError
from .common import EXIT_BAD_INPUT, EXIT_OK, one_line

if TYPE_CHECKING:
    from ..model import Model


def batch_sources(folder: Path) -> list[Path]:
    """The studies under ``folder``: study folders (or the folder itself when it is one) and ``.zip`` files.

    Raises:
        StudyError: When ``folder`` is not a folder, or holds no study.
    """
    from ..files import find_studies

    studies = find_studies(folder)
    zips = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".zip" and not p.name.startswith("."))
    if not studies and not zips:
        raise StudyError(f"{folder}: expected study folders, .zip files or one study, found none")
    return [*studies, *zips]


def cmd_batch(args: argparse.Namespace) -> int:
    """Segment every study of ``--input``; log one line per study to stdout and to the run's log file."""
    sources = batch_sources(args.input)
    args.output.mkdir(parents=True, exist_ok=True)
    args.log.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    log_path = args.log / f"brats-seg_batch_{stamp}.log"
    models: list[Model] = []
    failed = 0
    with open(log_path, "w", encoding="utf-8") as log:
        _line(log, f"batch started: {len(sources)} studies in {args.input}, output to {args.output}")
        for src in sources:
            failed += not _one(src, args, models, log)
        _line(log, f"batch done: {len(sources) - failed} processed, {failed} failed")
    print(f"log: {log_path}")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _line(log: TextIO, text: str) -> None:
    """One line, timestamped in the log file and printed as is."""
    print(text, flush=True)
    log.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}\n")
    log.flush()


def _one(src: Path, args: argparse.Namespace, models: list[Any], log: TextIO) -> bool:
    """Segment one study into ``--output/<study>/``; log processed or failed with the reason."""
    from .. import pipeline
    from ..harmonise import load_for_model
    from .predict import wt_line

    name = src.stem if src.suffix.lower() == ".zip" else src.name
    started = time.perf_counter()
    try:
        study, harmonised = load_for_model(src, mapping={}, name=None, mode=args.harmonise)
        if not models:  # after the first study loads: a batch of bad input never loads the model
            from ..model import load_model

            models.append(load_model(args.model, device=args.device, backend=args.backend))
        seg = pipeline.segment(study, models[0], harmonised=harmonised)
        seg.write(args.output / name, study, models[0], started=started)
    except (StudyError, ModelError) as e:
        _line(log, f"{name}: failed: {one_line(e)}")
        return False
    except Exception as e:  # noqa: BLE001 - one study's internal error must not stop the batch
        _line(log, f"{name}: failed: internal error: {type(e).__name__}: {one_line(e)}")
        return False
    _line(
        log,
        f"{name}: processed in {time.perf_counter() - started:.1f} s ({wt_line(seg)}): {args.output / name}",
    )
    return True
