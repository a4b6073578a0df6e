"""Tests for ``brats_seg.files.names``: which sequence a file name means."""

from __future__ import annotations

import pytest

from brats_seg.files import detect_modality
from brats_seg.types import MODALITIES

# --------------------------------------------------------------------------------------------------
# detect_modality
# --------------------------------------------------------------------------------------------------

DETECTION_CASES = [
    # BraTS 2018-2021
    ("Brats18_CBICA_ABM_1_t1.nii.gz", "T1"),
    ("Brats18_CBICA_ABM_1_t1ce.nii.gz", "T1CE"),
    ("Brats18_CBICA_ABM_1_t2.nii.gz", "T2"),
    ("Brats18_CBICA_ABM_1_flair.nii.gz", "FLAIR"),
    ("Brats18_CBICA_ABM_1_seg.nii.gz", "SEG"),
    ("Brats18_TCIA10_628_1_t2.nii.gz", "T2"),
    ("Brats18_2013_11_1_t1.nii", "T1"),
    ("BraTS2021_00000_t1ce.nii.gz", "T1CE"),
    ("BraTS20_Training_001_flair.nii", "FLAIR"),
    # BraTS 2023+
    ("BraTS-GLI-00001-000-t1n.nii.gz", "T1"),
    ("BraTS-GLI-00001-000-t1c.nii.gz", "T1CE"),
    ("BraTS-GLI-00001-000-t2w.nii.gz", "T2"),
    ("BraTS-GLI-00001-000-t2f.nii.gz", "FLAIR"),
    ("BraTS-GLI-00001-000-seg.nii.gz", "SEG"),
    ("BraTS-MET-00002-000-t1c.nii", "T1CE"),
    # common variants
    ("patient7_T1Gd.nii.gz", "T1CE"),
    ("patient7_T1-Gd.nii.gz", "T1CE"),
    ("patient7_T1c.nii.gz", "T1CE"),
    ("patient7_T1ce.nii", "T1CE"),
    ("patient7_T1_ce.nii", "T1CE"),
    ("patient7_T1post.nii.gz", "T1CE"),
    ("patient7 T1 post contrast.nii.gz", "T1CE"),
    ("sub-01_ce-gd_T1w.nii.gz", "T1CE"),
    ("sub-01_T1w.nii.gz", "T1"),
    ("patient7_T1.nii.gz", "T1"),
    ("patient7_T2w.nii.gz", "T2"),
    ("patient7 T2.nii", "T2"),
    ("patient7.FLAIR.nii.gz", "FLAIR"),
    ("patient7_t2flair.nii.gz", "FLAIR"),
    ("patient7_T2-FLAIR.nii.gz", "FLAIR"),
    ("patient7_label.nii.gz", "SEG"),
    ("patient7_labels.nii.gz", "SEG"),
    ("patient7_mask.nii.gz", "SEG"),
    ("patient7_truth.nii.gz", "SEG"),
    ("patient7_GT.nii.gz", "SEG"),
    ("patient7_T1_brain.nii.gz", "T1"),
    ("CASE_T1CE.NII.GZ", "T1CE"),
    ("/data/Brats18_T1_study/Brats18_T1_study_flair.nii.gz", "FLAIR"),
    ("C:\\data\\case_t2.nii.gz", "T2"),
    ("t1.nii.gz", "T1"),
    # scanner exports (raw clinical studies)
    ("T1_AX_SE_10_se2d1_t1.nii.gz", "T1"),
    ("MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c.nii.gz", "T1CE"),
    ("MRHR_T2_AX_SE_2_tse2d1_11_t2.nii.gz", "T2"),
    ("MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla.nii.gz", "FLAIR"),
    ("case12_T1_POST_GAD.nii.gz", "T1CE"),
    ("case12_t1_post_gd.nii.gz", "T1CE"),
    ("case12_T1wCE.nii.gz", "T1CE"),
    ("case12_FLAIR_AX.nii.gz", "FLAIR"),
    ("case12_flair_ax_3d.nii.gz", "FLAIR"),
    ("case12_T2_AX.nii.gz", "T2"),
    ("case12_t1_tse_tra.nii.gz", "T1"),
    ("case12_tse.nii.gz", "T2"),
    ("case12_TIRM.nii.gz", "FLAIR"),
    ("case12_t2_tirm_tra_dark-fluid.nii.gz", "FLAIR"),
    ("case12_fla.nii.gz", "FLAIR"),
    # not recognised
    ("case12_ax.nii.gz", None),
    ("scan_AX_3D.nii.gz", None),
    ("scan_003.nii.gz", None),
    ("Brats18_T1_case.nii.gz", None),
    ("t1ce_0001.nii.gz", None),
    ("patient7_brain_mask.nii.gz", None),
    ("README.txt", None),
]


@pytest.mark.parametrize(("filename", "expected"), DETECTION_CASES)
def test_detect_modality(filename: str, expected: str | None) -> None:
    assert detect_modality(filename) == expected


def test_detect_modality_never_confuses_look_alikes() -> None:
    assert detect_modality("x_t1ce.nii.gz") != "T1"
    assert detect_modality("x-t2f.nii.gz") != "T2"
    assert detect_modality("x_t2flair.nii.gz") != "T2"
    assert detect_modality("x_seg.nii.gz") not in MODALITIES
