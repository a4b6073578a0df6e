"""Tests for ``brats_seg.files`` (NIfTI side): modality detection, loading, validation errors and saving."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_affine, write_nifti, write_tiny_study

from brats_seg.errors import StudyError
from brats_seg.files import (
    archives,
    detect_modality,
    find_studies,
    load_study,
    load_study_from_bytes,
    nifti,
    save_labels,
    sha256_file,
)
from brats_seg.types import MODALITIES, LabelMap


def err(filename: str, fragment: str) -> str:
    """Regex for a message that names ``filename`` and then says ``fragment`` (a regex)."""
    return rf"(?s){re.escape(filename)}.*{fragment}"


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


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def test_load_folder(tiny_study) -> None:
    paths = tiny_study()
    study = load_study(paths["T1"].parent)
    assert study.name == "Tiny_001"
    assert list(study.images) == list(MODALITIES)
    assert study.shape == (32, 32, 24)
    assert study.spacing == (1.0, 1.0, 1.0)
    for modality in MODALITIES:
        image = study.images[modality]
        assert image.dtype == np.float32
        np.testing.assert_array_equal(image, nib.load(paths[modality]).get_fdata())
    np.testing.assert_allclose(study.affine, brats_affine((32, 32, 24)))
    assert study.sources == {m: p.name for m, p in paths.items()}
    assert study.sha256 == {m: sha256_file(p) for m, p in paths.items()}
    assert study.truth is not None and study.truth.dtype == np.uint8
    assert set(np.unique(study.truth)) == {0, 1, 2, 4}
    assert study.truth_map is not None and study.truth_map.shape == study.shape


def test_header_is_a_copy(tiny_study) -> None:
    folder = tiny_study()["T1"].parent
    first, second = load_study(folder), load_study(folder)
    first.header["descrip"] = b"changed"
    assert second.header["descrip"] != first.header["descrip"]


def test_load_2023_naming_infers_name_from_files(tiny_study) -> None:
    paths = tiny_study(name="BraTS-GLI-00001-000", naming="2023", seg=False)
    study = load_study([paths[m] for m in ("FLAIR", "T2", "T1CE", "T1")])
    assert study.name == "BraTS-GLI-00001-000"
    assert study.sources["T1"] == "BraTS-GLI-00001-000-t1n.nii.gz"
    assert study.sources["FLAIR"] == "BraTS-GLI-00001-000-t2f.nii.gz"
    assert study.truth is None and "SEG" not in study.sources


def test_load_four_paths_and_explicit_name(tiny_study) -> None:
    paths = tiny_study(name="Brats18_CBICA_ABM_1")
    four = [paths[m] for m in MODALITIES]
    assert load_study(four).name == "Brats18_CBICA_ABM_1"
    assert load_study([str(p) for p in four], name="mine").name == "mine"


def test_load_truth_false_skips_seg(tiny_study) -> None:
    paths = tiny_study()
    study = load_study(list(paths.values()), load_truth=False)
    assert study.truth is None
    assert "SEG" not in study.sources and "SEG" not in study.sha256


def test_parent_folder_with_one_study(tiny_study) -> None:
    folder = tiny_study()["T1"].parent
    study = load_study(folder.parent)
    assert study.name == "Tiny_001"


def test_squeezes_trailing_singleton_dimension(tiny_study) -> None:
    paths = tiny_study()
    image = nib.load(paths["T2"])
    data = np.asarray(image.dataobj)[..., None]
    write_nifti(paths["T2"], data, image.affine)
    study = load_study(paths["T1"].parent)
    assert study.images["T2"].shape == (32, 32, 24)


def test_affine_within_tolerance_is_accepted(tiny_study) -> None:
    paths = tiny_study()
    image = nib.load(paths["T2"])
    affine = image.affine.copy()
    affine[0, 3] += 1e-4
    write_nifti(paths["T2"], np.asarray(image.dataobj), affine)
    load_study(paths["T1"].parent)


def test_oblique_affine_kept(tiny_study) -> None:
    angle = np.deg2rad(10)
    affine = np.eye(4)
    affine[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.5]]
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    paths = tiny_study(affine=affine)
    study = load_study(paths["T1"].parent)
    np.testing.assert_allclose(study.affine, affine, atol=1e-6)
    np.testing.assert_allclose(study.spacing, (1.0, 1.0, 1.5), atol=1e-6)


def test_load_nifti2_big_endian_and_scaled(tiny_study) -> None:
    paths = tiny_study()
    t2, flair, t1ce = (nib.load(paths[m]) for m in ("T2", "FLAIR", "T1CE"))
    t2_data, flair_data, t1ce_data = (np.asarray(img.dataobj) for img in (t2, flair, t1ce))
    header2 = nib.Nifti2Header()
    header2.set_data_dtype(np.int16)
    nib.save(nib.Nifti2Image(t2_data, t2.affine, header2), paths["T2"])
    big_endian = flair.header.as_byteswapped(">")
    nib.save(nib.Nifti1Image(flair_data.astype(">i2"), flair.affine, big_endian), paths["FLAIR"])
    scaled = nib.Nifti1Image(t1ce_data, t1ce.affine, t1ce.header.copy())
    scaled.header.set_slope_inter(2.0, 10.0)
    nib.save(scaled, paths["T1CE"])
    study = load_study(paths["T1"].parent)
    assert nib.load(paths["T2"]).header.sizeof_hdr == 540
    np.testing.assert_array_equal(study.images["T2"], t2_data)
    np.testing.assert_array_equal(study.images["FLAIR"], flair_data)
    np.testing.assert_array_equal(study.images["T1CE"], t1ce_data * 2.0 + 10.0)


def test_load_zip_of_folder(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths.values():
            zf.write(path, f"Tiny_001/{path.name}")
            zf.writestr(f"__MACOSX/Tiny_001/._{path.name}", b"apple double")
        zf.writestr("Tiny_001/.DS_Store", b"finder")
        zf.writestr("Tiny_001/README.txt", b"notes")
    study = load_study(archive)
    assert study.name == "Tiny_001"  # the folder inside the zip
    assert study.truth is not None
    assert study.sha256["T1"] == sha256_file(paths["T1"])


def test_load_zip_of_files_uses_zip_stem(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    archive = tmp_path / "case42.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in paths.values():
            zf.write(path, path.name)
    assert load_study(archive).name == "case42"


def test_load_from_bytes_sanitises_names(tiny_study) -> None:
    paths = tiny_study()
    files = {f"../../evil/{p.name}": memoryview(p.read_bytes()) for p in paths.values()}
    files[".DS_Store"] = b"ignored"
    study = load_study_from_bytes(files)
    assert study.name == "Tiny_001"
    assert study.sources == {m: p.name for m, p in paths.items()}
    assert study.sha256["FLAIR"] == hashlib.sha256(paths["FLAIR"].read_bytes()).hexdigest()


def test_load_from_bytes_zip(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths.values():
            zf.write(path, path.name)
    study = load_study_from_bytes({"C:\\Users\\me\\Tiny_upload.zip": archive.read_bytes()}, name="given")
    assert study.name == "given"
    study = load_study_from_bytes({"Tiny_upload.zip": archive.read_bytes()})
    assert study.name == "Tiny_upload"


def test_mapping_overrides_detection(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    folder = tmp_path / "renamed"
    folder.mkdir()
    mapping = {}
    for i, (modality, path) in enumerate(paths.items()):
        target = folder / f"scan_{i}.nii.gz"
        shutil.copy(path, target)
        mapping[target.name] = modality
    study = load_study(folder, mapping=mapping)
    assert study.sources == {m: f"scan_{i}.nii.gz" for i, m in enumerate(paths)}
    np.testing.assert_array_equal(study.images["T2"], nib.load(paths["T2"]).get_fdata())
    # values may be spelled like file-name tokens, keys may be paths
    aliases = {str(folder / "scan_1.nii.gz"): "t1ce", "scan_3.nii.gz": "flair", "scan_4.nii.gz": "label"}
    study = load_study(folder, mapping={**mapping, **aliases})
    assert study.sources["T1CE"] == "scan_1.nii.gz"


def test_mapping_swaps_and_ignores(tiny_study) -> None:
    paths = tiny_study()
    folder = paths["T1"].parent
    extra = folder / "Tiny_001_brain_mask.nii.gz"
    shutil.copy(paths["SEG"], extra)
    swap = {paths["T2"].name: "FLAIR", paths["FLAIR"].name: "T2", extra.name: "IGNORE"}
    study = load_study(folder, mapping=swap)
    assert study.sources["FLAIR"] == paths["T2"].name
    assert study.sources["T2"] == paths["FLAIR"].name


def test_find_studies(tmp_path: Path) -> None:
    write_tiny_study(tmp_path / "B_002", "B_002", seg=False)
    write_tiny_study(tmp_path / "A_001", "A_001", seg=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    shutil.copy(tmp_path / "A_001" / "A_001_t1.nii.gz", tmp_path / ".hidden")
    assert find_studies(tmp_path) == [tmp_path / "A_001", tmp_path / "B_002"]
    assert find_studies(tmp_path / "A_001") == [tmp_path / "A_001"]
    assert find_studies(tmp_path / "empty") == []
    with pytest.raises(StudyError, match=err("nowhere", "expected a folder")):
        find_studies(tmp_path / "nowhere")


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"brats" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"brats" * 1000).hexdigest()


# --------------------------------------------------------------------------------------------------
# save_labels
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("oblique", [False, True])
def test_save_labels_keeps_geometry(tiny_study, tmp_path: Path, oblique: bool) -> None:
    affine = None
    if oblique:
        affine = np.array(
            [[0.9, -0.2, 0.0, -5.0], [0.2, 0.9, 0.1, 12.0], [0.0, -0.1, 1.2, 3.0], [0, 0, 0, 1]]
        )
    paths = tiny_study(affine=affine)
    study = load_study(paths["T1"].parent)
    labels = study.truth_map
    assert labels is not None
    out = save_labels(labels, tmp_path / "out" / "pred")
    assert out == tmp_path / "out" / "pred.nii.gz" and out.is_file()
    saved, source = nib.load(out), nib.load(paths["T1"])
    assert saved.shape == source.shape
    assert saved.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(saved.dataobj), study.truth)
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-6)
    for form in ("sform", "qform"):
        matrix, code = getattr(saved.header, f"get_{form}")(coded=True)
        source_matrix, source_code = getattr(source.header, f"get_{form}")(coded=True)
        assert code == source_code
        np.testing.assert_allclose(matrix, source_matrix, atol=1e-6)
    slope, inter = saved.header.get_slope_inter()
    assert slope in (None, 1.0) and inter in (None, 0.0)
    assert not list(out.parent.glob(".*"))  # no temporary file left behind


def test_save_labels_uses_labelmap_affine(tiny_study, tmp_path: Path) -> None:
    study = load_study(tiny_study()["T1"].parent)
    shifted = study.affine.copy()
    shifted[:3, 3] += [1.0, 2.0, 3.0]
    out = save_labels(LabelMap(study.truth, shifted, study.header), tmp_path / "shifted.nii")
    saved = nib.load(out)
    np.testing.assert_allclose(saved.affine, shifted)
    assert int(saved.header["sform_code"]) == int(study.header["sform_code"])


def test_save_labels_refuses_bad_arrays(tiny_study, tmp_path: Path) -> None:
    study = load_study(tiny_study()["T1"].parent)
    with pytest.raises(ValueError, match="3-D"):
        save_labels(LabelMap(np.zeros((2, 2)), study.affine, study.header), tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="0-255"):
        save_labels(LabelMap(np.full(study.shape, 300), study.affine, study.header), tmp_path / "b.nii.gz")


# --------------------------------------------------------------------------------------------------
# Errors: 1. wrong file counts
# --------------------------------------------------------------------------------------------------


def test_error_missing_modality(tiny_study) -> None:
    paths = tiny_study()
    paths["FLAIR"].unlink()
    with pytest.raises(StudyError, match=r"missing FLAIR.*expected the 4 sequences") as info:
        load_study(paths["T1"].parent)
    assert paths["T1"].name in str(info.value) and "Tiny_001" in str(info.value)


def test_error_duplicate_modality(tiny_study) -> None:
    paths = tiny_study()
    shutil.copy(paths["T1"], paths["T1"].parent / "Tiny_001_T1w.nii.gz")
    with pytest.raises(StudyError, match=r"Tiny_001_T1w.nii.gz and Tiny_001_t1.nii.gz: 2 files for T1"):
        load_study(paths["T1"].parent)


def test_error_unrecognised_file(tiny_study) -> None:
    paths = tiny_study()
    shutil.copy(paths["T1"], paths["T1"].parent / "scan_003.nii.gz")
    with pytest.raises(StudyError, match=err("scan_003.nii.gz", "cannot tell which sequence.*mapping")):
        load_study(paths["T1"].parent)


def test_error_two_segmentations(tiny_study) -> None:
    paths = tiny_study()
    shutil.copy(paths["SEG"], paths["T1"].parent / "Tiny_001_label.nii.gz")
    with pytest.raises(StudyError, match=err("Tiny_001_label.nii.gz", "more than one segmentation")):
        load_study(paths["T1"].parent)


def test_error_no_files(tmp_path: Path) -> None:
    folder = tmp_path / "EmptyCase"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images")
    with pytest.raises(StudyError, match=err("EmptyCase", r"no NIfTI files.*notes.txt.*expected 4")):
        load_study(folder)
    with pytest.raises(StudyError, match="no NIfTI files"):
        load_study([])
    with pytest.raises(StudyError, match="no files"):
        load_study_from_bytes({})


def test_error_folder_of_several_studies(tmp_path: Path) -> None:
    write_tiny_study(tmp_path / "A_001", "A_001", seg=False)
    write_tiny_study(tmp_path / "B_002", "B_002", seg=False)
    with pytest.raises(StudyError, match=err(tmp_path.name, r"2 study folders \(A_001, B_002\)")):
        load_study(tmp_path)


def test_error_bad_sources(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    with pytest.raises(StudyError, match=err("nothing_here", "not found")):
        load_study(tmp_path / "nothing_here")
    with pytest.raises(StudyError, match=err(paths["T1"].name, "a single file; expected a study folder")):
        load_study(paths["T1"])
    text = tmp_path / "list.txt"
    text.write_text("x")
    with pytest.raises(StudyError, match=err("list.txt", r"expected a NIfTI file name")):
        load_study([paths["T1"], text])


def test_error_mapping_problems(tiny_study) -> None:
    paths = tiny_study()
    folder = paths["T1"].parent
    with pytest.raises(StudyError, match=err("other.nii.gz", "not among the study's files")):
        load_study(folder, mapping={"other.nii.gz": "T1"})
    with pytest.raises(StudyError, match=err(paths["T1"].name, "unknown modality 'PD'")):
        load_study(folder, mapping={paths["T1"].name: "PD"})


def test_error_bytes_upload_mixing_zip_and_files(tiny_study) -> None:
    paths = tiny_study()
    files = {p.name: p.read_bytes() for p in paths.values()}
    with pytest.raises(StudyError, match=err("study.zip", "either one .zip or the NIfTI files")):
        load_study_from_bytes({**files, "study.zip": b"PK"})
    with pytest.raises(StudyError, match=err("photo.png", "not a NIfTI file name")):
        load_study_from_bytes({**files, "photo.png": b"\x89PNG"})
    with pytest.raises(StudyError, match="not a usable file name"):
        load_study_from_bytes({"../": b""})
    with pytest.raises(StudyError, match="not a usable file name"):
        load_study_from_bytes({"x\x00_t1.nii.gz": b""})


# --------------------------------------------------------------------------------------------------
# Errors: 2. not 3-D; 3. grids differ
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "found"),
    [((32, 32, 24, 2), r"4-D shape \(32, 32, 24, 2\)"), ((32, 32), r"2-D shape \(32, 32\)")],
)
def test_error_not_3d(tiny_study, shape: tuple[int, ...], found: str) -> None:
    paths = tiny_study()
    write_nifti(paths["T1CE"], np.ones(shape, dtype=np.int16), brats_affine((32, 32, 24)))
    with pytest.raises(StudyError, match=err(paths["T1CE"].name, f"expected a 3-D volume, found {found}")):
        load_study(paths["T1"].parent)


def test_error_shapes_differ(tiny_study) -> None:
    paths = tiny_study()
    write_tiny_study(paths["T1"].parent / "other", "Tiny_001", shape=(32, 32, 20))
    shutil.copy(paths["T1"].parent / "other" / "Tiny_001_t2.nii.gz", paths["T2"])
    pattern = err(paths["T2"].name, r"shape \(32, 32, 20\) differs from Tiny_001_t1.nii.gz \(32, 32, 24\)")
    with pytest.raises(StudyError, match=pattern):
        load_study(paths["T1"].parent)


def test_error_affines_differ(tiny_study) -> None:
    paths = tiny_study()
    image = nib.load(paths["FLAIR"])
    affine = image.affine.copy()
    affine[2, 3] += 0.5
    write_nifti(paths["FLAIR"], np.asarray(image.dataobj), affine)
    with pytest.raises(StudyError, match=err(paths["FLAIR"].name, r"by up to 0.5 mm.*affine_atol=0.001")):
        load_study(paths["T1"].parent)
    assert load_study(paths["T1"].parent, affine_atol=0.6).shape == (32, 32, 24)


def test_error_seg_on_another_grid(tiny_study) -> None:
    paths = tiny_study()
    write_nifti(paths["SEG"], np.zeros((30, 32, 24), dtype=np.uint8), brats_affine((30, 32, 24)))
    with pytest.raises(StudyError, match=err(paths["SEG"].name, r"shape \(30, 32, 24\) differs")):
        load_study(paths["T1"].parent)
    assert load_study(paths["T1"].parent, load_truth=False).truth is None


# --------------------------------------------------------------------------------------------------
# Errors: 4. non-finite; 9. labels; 10. empty image
# --------------------------------------------------------------------------------------------------


def test_error_non_finite(tiny_study) -> None:
    paths = tiny_study()
    image = nib.load(paths["T1"])
    data = image.get_fdata(dtype=np.float32)
    data[1, 2, 3], data[4, 5, 6], data[7, 8, 9] = np.nan, np.inf, -np.inf
    write_nifti(paths["T1"], data, image.affine)
    with pytest.raises(StudyError, match=err(paths["T1"].name, r"3 of 24,576 voxels are not finite")):
        load_study(paths["T1"].parent)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (3, r"unexpected label values 3 in the segmentation; expected BraTS labels 0, 1, 2, 4.*BraTS 2023"),
        (7, r"unexpected label values 7 in the segmentation; expected BraTS labels 0, 1, 2, 4"),
        (0.5, r"unexpected label values 0.5 in the segmentation; expected BraTS labels 0, 1, 2, 4"),
    ],
)
def test_error_unexpected_labels(tiny_study, value: float, found: str) -> None:
    paths = tiny_study()
    image = nib.load(paths["SEG"])
    data = np.asarray(image.dataobj).astype(np.float32)
    data[data == 4] = value
    write_nifti(paths["SEG"], data, image.affine)
    with pytest.raises(StudyError, match=err(paths["SEG"].name, found)):
        load_study(paths["T1"].parent)


def test_error_empty_image(tiny_study) -> None:
    paths = tiny_study()
    write_nifti(paths["T1CE"], np.zeros((32, 32, 24), dtype=np.int16), brats_affine((32, 32, 24)))
    with pytest.raises(StudyError, match=err(paths["T1CE"].name, r"every voxel is 0.*expected an MRI T1CE")):
        load_study(paths["T1"].parent)


def test_error_image_without_contrast(tiny_study) -> None:
    paths = tiny_study()
    write_nifti(paths["T2"], np.full((32, 32, 24), 100, dtype=np.int16), brats_affine((32, 32, 24)))
    with pytest.raises(StudyError, match=err(paths["T2"].name, r"every voxel is 100 \(an image without contrast\); "
                                                              r"expected an MRI T2 sequence")):
        load_study(paths["T1"].parent)


def test_empty_segmentation_is_fine(tiny_study) -> None:
    paths = tiny_study()
    write_nifti(paths["SEG"], np.zeros((32, 32, 24), dtype=np.uint8), brats_affine((32, 32, 24)))
    assert not load_study(paths["T1"].parent).truth.any()


# --------------------------------------------------------------------------------------------------
# Errors: 5. header checks before reading data
# --------------------------------------------------------------------------------------------------


def write_header_only(
    path: Path, dims: tuple[int, ...], *, pixdim: tuple[float, ...] = (1.0, 1.0, 1.0), nifti2: bool = False
) -> Path:
    """A gzipped header (with the 4 extension bytes) and no image data."""
    header = nib.Nifti2Header() if nifti2 else nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header["dim"][0] = len(dims)
    header["dim"][1 : 1 + len(dims)] = dims
    header["pixdim"][1 : 1 + len(pixdim)] = pixdim
    header["vox_offset"] = 544 if nifti2 else 352
    header.set_sform(brats_affine((240, 240, 155)), code=1)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0\0\0\0"))
    return path


def _no_data_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("image data were read")

    monkeypatch.setattr(nifti, "read_data", fail)


@pytest.mark.parametrize("nifti2", [True, False])
def test_error_huge_header_refused_before_reading(tiny_study, monkeypatch, nifti2: bool) -> None:
    paths = tiny_study()
    dims = (100_000, 100_000, 100_000) if nifti2 else (30_000, 30_000, 30_000)
    write_header_only(paths["T2"], dims, nifti2=nifti2)
    _no_data_reads(monkeypatch)
    with pytest.raises(
        StudyError, match=err(paths["T2"].name, r"voxels\); expected at most max_voxels=134,217,728")
    ):
        load_study(paths["T1"].parent)


def test_error_max_voxels_budget(tiny_study, monkeypatch) -> None:
    paths = tiny_study()
    _no_data_reads(monkeypatch)
    with pytest.raises(StudyError, match=err(paths["T1"].name, r"24,576 voxels.*max_voxels=1,000")):
        load_study(paths["T1"].parent, max_voxels=1000)


@pytest.mark.parametrize("dims", [(0, 32, 24), (32, -5, 24)])
def test_error_non_positive_dims(tiny_study, dims: tuple[int, ...]) -> None:
    paths = tiny_study()
    write_header_only(paths["FLAIR"], dims)
    with pytest.raises(StudyError, match=err(paths["FLAIR"].name, "expected every dimension to be positive")):
        load_study(paths["T1"].parent)


@pytest.mark.parametrize("spacing", [0.0, -1.0, 500.0, float("nan")])
def test_error_absurd_pixdim(tiny_study, spacing: float) -> None:
    paths = tiny_study()
    raw = bytearray(gzip.decompress(paths["T1CE"].read_bytes()))
    struct.pack_into("<f", raw, 84, spacing)  # pixdim[2] (nibabel would "fix" it on save)
    paths["T1CE"].write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(StudyError, match=err(paths["T1CE"].name, r"implausible voxel size.*\(0, 100\] mm")):
        load_study(paths["T1"].parent)


def test_error_truncated_uncompressed_nii(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    folder = tmp_path / "plain"
    folder.mkdir()
    for path in paths.values():
        nib.save(nib.load(path), folder / path.name.replace(".nii.gz", ".nii"))
    t1 = folder / "Tiny_001_t1.nii"
    t1.write_bytes(t1.read_bytes()[:20_000])
    with pytest.raises(StudyError, match=err("Tiny_001_t1.nii", "truncated file")):
        load_study(folder)


# --------------------------------------------------------------------------------------------------
# Errors: 6. corrupt gzip; 7. not NIfTI
# --------------------------------------------------------------------------------------------------


def test_error_truncated_gzip(tiny_study) -> None:
    paths = tiny_study()
    raw = paths["T2"].read_bytes()
    paths["T2"].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StudyError, match=err(paths["T2"].name, "corrupt or truncated gzip")):
        load_study(paths["T1"].parent)


def test_error_corrupt_gzip(tiny_study) -> None:
    paths = tiny_study()
    raw = bytearray(paths["FLAIR"].read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)
    paths["FLAIR"].write_bytes(bytes(raw))
    with pytest.raises(StudyError, match=err(paths["FLAIR"].name, "corrupt or truncated gzip")):
        load_study(paths["T1"].parent)


def test_error_gzip_header_garbage(tiny_study) -> None:
    paths = tiny_study()
    paths["T1CE"].write_bytes(b"\x1f\x8b" + b"\xff" * 100)
    with pytest.raises(StudyError, match=err(paths["T1CE"].name, "corrupt or truncated gzip")):
        load_study(paths["T1"].parent)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(400), "found a PNG image"),
        (b"patient,age\n1,42\n" * 40, "found text"),
        (gzip.compress(b"just some text\n" * 50), "found text"),
        (b"", "the file is empty"),
    ],
)
def test_error_not_nifti(tiny_study, content: bytes, found: str) -> None:
    paths = tiny_study()
    paths["T2"].write_bytes(content)
    with pytest.raises(StudyError, match=err(paths["T2"].name, found)):
        load_study(paths["T1"].parent)


def test_error_analyze_renamed_nii(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    header = nib.load(paths["T1"]).header
    block = bytearray(header.binaryblock)
    block[344:348] = b"\0\0\0\0"  # no NIfTI magic: an Analyze 7.5 header
    target = tmp_path / "Tiny_001_t1.nii"
    target.write_bytes(bytes(block) + bytes(4) + bytes(32 * 32 * 24 * 2))
    with pytest.raises(StudyError, match=err("Tiny_001_t1.nii", r"no NIfTI magic.*Analyze")):
        load_study([target, paths["T1CE"], paths["T2"], paths["FLAIR"]])


def test_error_nifti_pair_header(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    pair = nib.Nifti1Pair(np.ones((32, 32, 24), dtype=np.int16), brats_affine((32, 32, 24)))
    nib.save(pair, tmp_path / "pair.img")
    target = tmp_path / "Tiny_001_t1.nii"
    shutil.copy(tmp_path / "pair.hdr", target)
    with pytest.raises(StudyError, match=err("Tiny_001_t1.nii", r"\.hdr/\.img pair")):
        load_study([target, paths["T1CE"], paths["T2"], paths["FLAIR"]])


# --------------------------------------------------------------------------------------------------
# Errors: 8. zips
# --------------------------------------------------------------------------------------------------


def _zip_study(paths: dict[str, Path], archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths.values():
            zf.write(path, path.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


@pytest.mark.parametrize(
    "member", ["../evil_t1.nii.gz", "/etc/evil_t1.nii.gz", "a/../../x.txt", "C:/evil.txt"]
)
def test_error_zip_member_escapes(tiny_study, tmp_path: Path, member: str) -> None:
    archive = _zip_study(tiny_study(), tmp_path / "bad.zip", {member: b"x"})
    with pytest.raises(StudyError, match=err("bad.zip", f"{re.escape(member)}.*outside the archive folder")):
        load_study(archive)


def test_error_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"this is not a zip file at all")
    with pytest.raises(StudyError, match=err("broken.zip", "not a valid zip file")):
        load_study(archive)
    with pytest.raises(StudyError, match=err("broken.zip", "not a valid zip file")):
        load_study_from_bytes({"broken.zip": b"PK\x03\x04 truncated"})


def test_error_zip_bomb_budget(tiny_study, tmp_path: Path, monkeypatch) -> None:
    archive = _zip_study(tiny_study(), tmp_path / "big.zip")
    monkeypatch.setattr(archives, "MAX_ZIP_BYTES", 10_000)
    with pytest.raises(StudyError, match=err("big.zip", r"expected at most 10,000 bytes.*zip bomb")):
        load_study(archive)


def test_error_zip_several_folders(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths.values():
            zf.write(path, f"A/{path.name}")
            zf.write(path, f"B/{path.name}")
    with pytest.raises(StudyError, match=err("two.zip", r"NIfTI files in 2 folders \(A/, B/\)")):
        load_study(archive)


def test_error_zip_without_nifti(tmp_path: Path) -> None:
    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", b"hello")
    with pytest.raises(StudyError, match=err("docs.zip", "no NIfTI files")):
        load_study(archive)


def test_error_zip_corrupt_member(tiny_study, tmp_path: Path) -> None:
    paths = tiny_study()
    archive = _zip_study(paths, tmp_path / "crc.zip")
    raw = bytearray(archive.read_bytes())
    offset = raw.find(paths["T1"].read_bytes()[100:140])
    raw[offset : offset + 8] = b"XXXXXXXX"  # stored member: corrupt its bytes, CRC no longer matches
    archive.write_bytes(bytes(raw))
    with pytest.raises(StudyError, match=err("crc.zip", "cannot extract.*Bad CRC")):
        load_study(archive)


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_cases(brats_case: Path, demo_case: Path) -> None:
    study = load_study(brats_case)
    assert study.name == "Brats18_CBICA_ABM_1"
    assert study.shape == (240, 240, 155)
    assert study.spacing == (1.0, 1.0, 1.0)
    assert study.sources == {
        "T1": "Brats18_CBICA_ABM_1_t1.nii.gz",
        "T1CE": "Brats18_CBICA_ABM_1_t1ce.nii.gz",
        "T2": "Brats18_CBICA_ABM_1_t2.nii.gz",
        "FLAIR": "Brats18_CBICA_ABM_1_flair.nii.gz",
        "SEG": "Brats18_CBICA_ABM_1_seg.nii.gz",
    }
    assert study.truth is not None and set(np.unique(study.truth)) <= {0, 1, 2, 4}
    np.testing.assert_allclose(study.affine, brats_affine((240, 240, 155)))

    demo = load_study(sorted(demo_case.glob("*.nii.gz")))
    assert demo.name == "BraTS-GLI-00001-000"
    assert demo.shape == (240, 240, 155) and demo.spacing == (1.0, 1.0, 1.0)
    assert demo.sources == {
        "T1": "BraTS-GLI-00001-000-t1n.nii.gz",
        "T1CE": "BraTS-GLI-00001-000-t1c.nii.gz",
        "T2": "BraTS-GLI-00001-000-t2w.nii.gz",
        "FLAIR": "BraTS-GLI-00001-000-t2f.nii.gz",
    }
    assert demo.truth is None
    assert all(image.dtype == np.float32 and image.any() for image in demo.images.values())
