"""``brats-seg to-dicom``: a study (NIfTI or DICOM) written as DICOM MR series, to try the PACS path."""

from __future__ import annotations

import argparse

from .common import EXIT_OK


def cmd_to_dicom(args: argparse.Namespace) -> int:
    """Load the study, write its four sequences as DICOM series under ``--output``; print what was written."""
    from ..files import load_study, write_dicom_study

    study = load_study(args.study, mapping=dict(args.mapping or ()))
    written = write_dicom_study(study, args.output, patient_id=args.patient_id)
    uid = next(iter(written.values()))[0]
    from pydicom import dcmread

    study_uid = dcmread(uid, stop_before_pixels=True).StudyInstanceUID
    series = ", ".join(f"{m} {paths[0].parent.name} ({len(paths)} files)" for m, paths in written.items())
    print(f"{study.name}: DICOM study {study_uid} in {args.output}: {series}")
    return EXIT_OK
