"""Tests for ``brats_seg.quality``: input checks that warn (not refuse), on generated studies and,
marked by the ``shared_data`` fixture, on real BraTS studies; and how the warnings reach the report,
the command line and the dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_affine, tiny_volumes, write_nifti

from brats_seg import files, quality
from brats_seg.cli import main
from brats_seg.types import MODALITIES, Study

#: At 2.8 mm a 64 x 64 x 48 generated study holds a brain of about 1,340 mL, as a real one does.
BRAIN_SHAPE = (64, 64, 48)
BRAIN_SPACING = (2.8, 2.8, 2.8)


def make_study(
    spacing: tuple[float, float, float] = BRAIN_SPACING,
    shape: tuple[int, int, int] = BRAIN_SHAPE,
    *,
    name: str = "Gen_001",
) -> Study:
    """A generated skull-stripped study: an ellipsoid brain (about 31 % of the view) in zeros."""
    images, _ = tiny_volumes(shape)
    affine = brats_affine(shape, spacing)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_zooms(spacing)
    return Study(
        name=name,
        images=images,
        affine=affine,
        header=header,
        sources={m: f"{name}_{m.lower()}.nii.gz" for m in MODALITIES},
    )


def test_a_brain_like_study_has_no_warning() -> None:
    study = make_study()
    assert 1100 < np.count_nonzero(study.images["T1"]) * 2.8**3 / 1000 < 1800  # the premise
    assert quality.check_study(study) == []


def test_a_head_that_was_not_skull_stripped_is_named() -> None:
    study = make_study()
    rng = np.random.default_rng(1)
    for image in study.images.values():  # background noise and scalp around the brain
        outside = image == 0
        image[outside] = rng.integers(1, 60, size=int(outside.sum()))
    warnings = quality.check_study(study)
    assert any(
        w.startswith("Gen_001: 100% of the field of view is non-zero") and "skull-strip" in w
        for w in warnings
    ), warnings


def test_wrong_voxel_sizes_are_named_with_the_volume_they_give() -> None:
    warnings = quality.check_study(make_study((1.0, 1.0, 1.0)))
    assert len(warnings) == 1, warnings
    assert "the non-zero region measures 61 mL with the header's voxel size of 1 x 1 x 1 mm" in warnings[0]
    assert "Check the voxel sizes" in warnings[0]


def test_thick_slices_are_named() -> None:
    study = make_study((2.5, 2.5, 3.6))  # 22.5 mm^3 voxels: still a brain-sized volume
    warnings = quality.check_study(study)
    assert warnings == [
        "Gen_001: voxels of 2.5 x 2.5 x 3.6 mm; "
        "the model was trained on 1 mm isotropic studies (worked at 2 mm), "
        "and slices thicker than 3 mm lose detail it relies on, "
        "so expect coarse borders and missed small regions."
    ]


def test_a_sequence_covering_part_of_the_brain_is_named_by_its_file() -> None:
    study = make_study()
    mask = np.any([im != 0 for im in study.images.values()], axis=0)
    study.images["FLAIR"][:, :, 36:] = 0  # the FLAIR stack stops short of the top of the brain
    expected = mask[:, :, 36:].sum() / mask.sum()
    assert quality.uncovered_fraction(study.images["FLAIR"], mask) == pytest.approx(expected)
    warnings = quality.check_study(study)
    assert len(warnings) == 1, warnings
    last = int(np.flatnonzero(mask.any(axis=(0, 1)))[-1])  # the top slice that holds brain
    assert warnings[0] == (
        "Gen_001_flair.nii.gz: the FLAIR sequence is blank on slices that hold "
        f"{expected:.0%} of the brain the other "
        f"sequences show (axial slices 36-{last} of 48; it covers only part of it); "
        "the labels there are made without FLAIR."
    )


def test_dark_voxels_inside_the_brain_are_not_missing_coverage() -> None:
    study = make_study()
    rng = np.random.default_rng(2)
    study.images["FLAIR"][rng.random(BRAIN_SHAPE) < 0.4] = 0  # dark CSF, here and there
    mask = np.any([im != 0 for im in study.images.values()], axis=0)
    assert quality.uncovered_fraction(study.images["FLAIR"], mask) < 0.001  # only an edge slice or two
    assert quality.check_study(study) == []


def test_warnings_reach_the_report_and_the_command_line(
    tiny_study, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    files = tiny_study(name="Tiny_Q")  # 32 x 32 x 24 voxels of 1 mm: far smaller than a brain
    code = main(
        [
            "predict",
            str(files["T1"].parent),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "Tiny_Q_report.json").read_text())
    assert (
        len(report["warnings"]) == 1 and "Tiny_Q: the non-zero region measures 8 mL" in report["warnings"][0]
    )
    assert f"warning: {report['warnings'][0]}" in err


def test_a_brain_sized_study_predicts_without_warnings(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    study = make_study()
    folder = tmp_path / "Gen_001"
    folder.mkdir()
    for modality in MODALITIES:
        write_nifti(folder / study.sources[modality], study.images[modality], study.affine)
    code = main(
        [
            "predict",
            str(folder),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning" not in err
    assert json.loads((tmp_path / "out" / "Gen_001_report.json").read_text())["warnings"] == []


@pytest.mark.parametrize(
    "case", ["brats/Brats18_CBICA_ABM_1", "brats/Brats18_TCIA01_201_1", "demo/BraTS-GLI-00001-000"]
)
def test_real_studies_give_no_warning(shared_data: Path, case: str) -> None:
    folder = shared_data / case
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    assert quality.check_study(files.load_study(folder, load_truth=False)) == []


def test_a_real_flair_that_misses_part_of_the_brain_is_named(shared_data: Path) -> None:
    folder = shared_data / "brats" / "Brats18_2013_20_1"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    warnings = quality.check_study(files.load_study(folder, load_truth=False))
    # Its FLAIR is blank on 38 coronal slices (array y 179-216) where the other three sequences show brain;
    # the dashboard's coronal slider numbers them 23-60 (the view is reoriented to RAS).
    assert warnings == [
        "Brats18_2013_20_1_flair.nii.gz: the FLAIR sequence is blank on slices "
        "that hold 13% of the brain the other "
        "sequences show (coronal slices 23-60 of 240; it covers only part of it); "
        "the labels there are made without FLAIR."
    ]


def test_files_named_for_two_studies_are_named() -> None:
    study = make_study(name="Brats18")
    study.sources = {
        "T1": "Brats18_2013_20_1_t1.nii.gz",
        "T1CE": "Brats18_2013_20_1_t1ce.nii.gz",
        "T2": "Brats18_CBICA_ABM_1_t2.nii.gz",
        "FLAIR": "Brats18_CBICA_ABM_1_flair.nii.gz",
        "SEG": "Brats18_CBICA_ABM_1_seg.nii.gz",
    }
    assert quality.check_study(study) == [
        "Brats18: the file names point to different studies: "
        "Brats18_2013_20_1 (T1, T1CE); Brats18_CBICA_ABM_1 "
        "(T2, FLAIR, ground truth). Check that all the files are of one study; "
        "sequences of two patients give labels "
        "that look real and mean nothing."
    ]


@pytest.mark.parametrize(
    "names",
    [
        ["sub-01_T1w.nii.gz", "sub-01_ce-gd_T1w.nii.gz", "sub-01_T2w.nii.gz", "sub-01_FLAIR.nii.gz"],  # BIDS
        [
            "patient7_T1.nii.gz",
            "patient7 T1 post contrast.nii.gz",
            "patient7_T2w.nii.gz",
            "patient7.FLAIR.nii.gz",
        ],
        [
            "t1.nii.gz",
            "t1ce.nii.gz",
            "Case_9_t2.nii.gz",
            "Case_9_flair.nii.gz",
        ],  # names without an ID agree with any
        [
            "BraTS-GLI-00001-000-t1n.nii.gz",
            "BraTS-GLI-00001-000-t1c.nii.gz",
            "BraTS-GLI-00001-000-t2w.nii.gz",
            "BraTS-GLI-00001-000-t2f.nii.gz",
        ],
        # scanner exports: the patient's ID between series descriptions (the real raw study's names)
        [
            "T1_AX_OtherEXampleTCIA_TCGA-FG-6692_Si_TCGA-FG-6692_T1_AX_SE_10_se2d1_t1.nii.gz",
            "MRHR_T1_AX_POST_GAD_OtherEXampleTCIA_TCGA-FG-6692_Si_TCGA-FG-6692_MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c.nii.gz",
            "MRHR_T2_AX_OtherEXampleTCIA_TCGA-FG-6692_Si_TCGA-FG-6692_MRHR_T2_AX_SE_2_tse2d1_11_t2.nii.gz",
            "MRHR_FLAIR_AX_OtherEXampleTCIA_TCGA-FG-6692_Si_TCGA-FG-6692_MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla.nii.gz",
        ],
    ],
)
def test_names_of_one_study_agree(names: list[str]) -> None:
    assert quality.file_studies(dict(zip(MODALITIES, names, strict=True))) == {}


def test_an_id_that_only_begins_another_is_another_study() -> None:
    names = ["sub-1_T1w.nii.gz", "sub-1_ce-gd_T1w.nii.gz", "sub-1_T2w.nii.gz", "sub-12_FLAIR.nii.gz"]
    assert quality.file_studies(dict(zip(MODALITIES, names, strict=True))) == {
        "sub-1": ["T1", "T2"],
        "sub-1_ce": ["T1CE"],
        "sub-12": ["FLAIR"],
    }


@pytest.mark.parametrize(
    "names",
    [
        [
            "Brats18_CBICA_ABM_1_t1.nii.gz",
            "Brats18_CBICA_ABM_1_t1ce.nii.gz",
            "Brats18_CBICA_ABM_1_t2.nii.gz",
            "Brats18_CBICA_ABM_2_flair.nii.gz",
        ],  # a shared start is not a shared ID
        [
            "T1_AX_Patient_0012_SE_t1.nii.gz",
            "T1_AX_POST_Patient_0012_SE_t1c.nii.gz",
            "T2_AX_Patient_0012_SE_t2.nii.gz",
            "FLAIR_AX_Patient_0013_SE_fla.nii.gz",
        ],  # scanner exports of two patients
    ],
)
def test_names_of_two_studies_disagree(names: list[str]) -> None:
    assert quality.file_studies(dict(zip(MODALITIES, names, strict=True)))


def test_dicom_studies_are_not_checked_by_file_name() -> None:
    study = make_study()
    study.sources = {"T1": "3 AX T1", "T1CE": "7 AX T1 POST GD", "T2": "4 AX T2", "FLAIR": "5 AX T2 FLAIR"}
    assert quality.file_studies(study.sources)  # as file names these would disagree
    study.dicom = {
        "T1": object()
    }  # read from DICOM: one study by construction (io refuses series of several)
    assert quality.check_study(study) == []


def test_blank_slices_are_numbered_as_the_reoriented_views_show_them() -> None:
    shape = (10, 12, 8)
    mask = np.ones(shape, dtype=bool)
    blank = [np.zeros(10, bool), np.zeros(12, bool), np.zeros(8, bool)]
    blank[1][[0, 1, 2, 7]] = True
    # array y runs posterior (diag -1 on y): RAS index = 11 - array index
    assert quality.describe_blank_slices(blank, mask, brats_affine(shape)) == "coronal slices 4, 9-11 of 12"
    assert quality.describe_blank_slices(blank, mask, np.eye(4)) == "coronal slices 0-2, 7 of 12"
    one = [np.zeros(10, bool), np.zeros(12, bool), np.zeros(8, bool)]
    one[2][5] = True
    assert quality.describe_blank_slices(one, mask, np.eye(4)) == "axial slice 5 of 8"
    edge = np.zeros(shape, dtype=bool)
    edge[:, :, :7] = True
    edge[0, 0, 7] = True  # one voxel of brain on the top slice: under 1 %, not named
    assert quality.describe_blank_slices(one[:2] + [np.eye(8, dtype=bool)[7]], edge, np.eye(4)) == ""


def test_a_sequence_with_one_value_over_the_brain_is_named() -> None:
    study = make_study()
    brain = study.images["T1"] != 0
    study.images["T2"] = np.where(brain, 100, 0).astype(np.int16)  # contrast at the brain's edge only
    warnings = quality.check_study(study)
    assert warnings == [
        "Gen_001_t2.nii.gz: the T2 sequence has one value (100) "
        "over the whole brain the other sequences show: no "
        "contrast, so the network sees nothing in it and labels without T2."
    ]


def test_voxel_size_comes_from_the_affine_and_a_disagreeing_pixdim_is_named(tmp_path: Path) -> None:
    shape = (32, 32, 24)
    images, _ = tiny_volumes(shape)
    affine = brats_affine(shape, (2.0, 2.0, 5.0))  # where the voxels are: 5 mm slices
    folder = tmp_path / "Pix_001"
    folder.mkdir()
    for modality, data in images.items():
        image = nib.Nifti1Image(data, affine)
        image.header.set_zooms((2.0, 2.0, 2.0))  # a stale pixdim, as some converters leave it
        image.header.set_sform(affine, code=1)
        image.header.set_qform(None, code=0)
        nib.save(image, folder / f"Pix_001_{modality.lower()}.nii.gz")
    study = files.load_study(folder)
    assert study.spacing == (2.0, 2.0, 5.0)
    warnings = quality.check_study(study)
    assert warnings[0] == (
        "Pix_001_t1.nii.gz: the header's voxel size (pixdim 2 x 2 x 2 mm) "
        "disagrees with its affine (2 x 2 x 5 mm); "
        "brats-seg uses the affine, as viewers do. "
        "If the affine is wrong, fix the file: sizes and volumes depend on it."
    )
    assert any("voxels of 2 x 2 x 5 mm" in w for w in warnings)  # the thick-slice warning sees the real size
