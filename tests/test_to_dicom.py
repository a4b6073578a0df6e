"""``brats_seg.files.write_dicom_study`` and ``brats-seg to-dicom``: a study as DICOM MR series that
loads back as the same arrays and affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import brats_affine, tiny_volumes, write_nifti, write_tiny_study

from brats_seg import files
from brats_seg.cli import main
from brats_seg.errors import StudyError

SHAPE = (16, 20, 12)


def test_to_dicom_gives_back_the_same_arrays_and_affine(tmp_path: Path, capsys) -> None:
    write_tiny_study(tmp_path / "Tiny_001", shape=SHAPE, seg=False)
    assert main(["to-dicom", str(tmp_path / "Tiny_001"), "--output", str(tmp_path / "dcm")]) == 0
    assert "Tiny_001: DICOM study" in capsys.readouterr().out
    before, after = files.load_study(tmp_path / "Tiny_001"), files.load_study(tmp_path / "dcm")
    assert after.dicom is not None and sorted(after.images) == sorted(before.images)
    for m in before.images:
        np.testing.assert_array_equal(after.images[m], before.images[m])  # integers: no rounding
    np.testing.assert_allclose(after.affine, before.affine, atol=1e-5)
    import pydicom

    first = pydicom.dcmread(min((tmp_path / "dcm" / "S1").iterdir()), stop_before_pixels=True)
    assert first.PatientID == "Tiny_001" and first.Modality == "MR"


def test_float_values_are_rescaled_within_rounding(tmp_path: Path) -> None:
    images, _ = tiny_volumes(SHAPE, seed=3)
    affine = brats_affine(SHAPE, spacing=(1.2, 0.9, 2.0))
    folder = tmp_path / "Float_001"
    folder.mkdir()
    for m, suffix in (("T1", "t1"), ("T1CE", "t1ce"), ("T2", "t2"), ("FLAIR", "flair")):
        write_nifti(folder / f"Float_001_{suffix}.nii.gz", images[m] / 7.3 - 20.5, affine, dtype=np.float32)
    study = files.load_study(folder)
    written = files.write_dicom_study(study, tmp_path / "dcm", patient_id="P1")
    assert sorted(written) == ["FLAIR", "T1", "T1CE", "T2"]
    back = files.load_study(tmp_path / "dcm")
    for m, data in study.images.items():
        step = (data.max() - data.min()) / 65534
        assert np.max(np.abs(back.images[m] - data)) <= step, m
    np.testing.assert_allclose(back.affine, study.affine, atol=1e-5)
    import pydicom

    heads = [pydicom.dcmread(paths[0], stop_before_pixels=True) for paths in written.values()]
    assert len({h.StudyInstanceUID for h in heads}) == 1 and len({h.FrameOfReferenceUID for h in heads}) == 1
    assert {h.SeriesDescription for h in heads} == set(files.DICOM_DESCRIPTIONS.values())


def test_to_dicom_of_a_missing_study_says_so(tmp_path: Path, capsys) -> None:
    assert main(["to-dicom", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]) == 2
    assert "brats-seg to-dicom: error:" in capsys.readouterr().err
    study = files.load_study(write_tiny_study(tmp_path / "T", shape=SHAPE)["T1"].parent)
    study.images["T1"][0, 0, 0] = np.nan
    with pytest.raises(StudyError, match="expected finite voxel values.*found 1 NaN"):
        files.write_dicom_study(study, tmp_path / "nan")


def test_to_dicom_help_states_every_default(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from test_cli import option_blocks

    from brats_seg import cli

    monkeypatch.setenv("COLUMNS", "100")
    top = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = top.choices["to-dicom"]
    with pytest.raises(SystemExit):
        main(["to-dicom", "--help"])
    blocks = option_blocks(capsys.readouterr().out, parser)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert ("default" in blocks[action.option_strings[0]]) != action.required
