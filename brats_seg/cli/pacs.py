"""``brats-seg pacs run``, ``watch`` and ``send``: the research-PACS node (:mod:`brats_seg.pacs`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import EXIT_BAD_INPUT, EXIT_OK

if TYPE_CHECKING:
    from ..model import Model
    from ..pacs import PacsConfig


def pacs_config(args: argparse.Namespace) -> PacsConfig:
    """The PACS settings of ``--config`` with the options given on top."""
    from ..pacs import PacsConfig

    return PacsConfig.load(
        args.config,
        host=args.host,
        port=args.port,
        called_ae=args.called_ae,
        calling_ae=args.calling_ae,
        timeout=args.timeout,
    )


def cmd_pacs(args: argparse.Namespace) -> int:
    """Run ``pacs run``, ``pacs watch`` or ``pacs send``."""
    config = pacs_config(args)
    if args.pacs_command == "run":
        return _run(config, args)
    if args.pacs_command == "send":
        return _send(config, args)
    return _watch(config, args)


def _send(config: PacsConfig, args: argparse.Namespace) -> int:
    """C-STORE the DICOM files of a folder; one line saying how many went where."""
    from ..errors import StudyError
    from ..files import dicom_files
    from ..pacs import store_files

    paths = dicom_files(args.folder) if args.folder.is_dir() else []
    if not paths:
        raise StudyError(f"{args.folder}: expected a folder of DICOM files, found none")
    store_files(config, paths)
    print(f"{args.folder}: {len(paths)} files stored to {config.name}")
    return EXIT_OK


def _model(args: argparse.Namespace) -> Model:
    from ..model import load_model

    return load_model(args.model, device=args.device, backend=args.backend)


def _run(config: PacsConfig, args: argparse.Namespace) -> int:
    """One study: query, fetch, segment, write, store; prints where its files are."""
    from ..pacs.node import describe, find_mr_series, run_study

    find_mr_series(config, args.study_uid)  # a study the PACS does not hold is refused before the model loads
    summary = run_study(
        config,
        args.study_uid,
        model=_model(args),
        output_dir=args.output,
        mapping=dict(args.mapping or ()),
        harmonise=args.harmonise,
    )
    print(f"{args.study_uid}: {summary['folder']}: {describe(config, summary)}")
    return EXIT_OK


def _watch(config: PacsConfig, args: argparse.Namespace) -> int:
    """Every new MR study once; one line per study on stdout."""
    from ..pacs import watch

    models: list[Model] = []

    def get_model() -> Model:
        if not models:
            models.append(_model(args))
        return models[0]

    failures = watch(
        config,
        interval=args.interval,
        once=args.once,
        max_backoff=args.max_backoff,
        log=lambda line: print(line, flush=True),
        get_model=get_model,
        output_dir=args.output,
        state_path=args.state,
        since=args.since or "",
        max_studies=args.max_studies,
        mapping=dict(args.mapping or ()),
        harmonise=args.harmonise,
    )
    if failures:
        print(f"brats-seg pacs watch: {failures} failed (see the lines above)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
