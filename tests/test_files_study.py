"""Tests for ``brats_seg.files.study`` and ``folders``: loading one study from a folder, files, a zip or
bytes, finding studies, and the errors about which files a study holds."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_affine, err, write_nifti, write_tiny_study

from brats_seg.errors import StudyError
from brats_seg.files import find_studies, load_study, load_study_from_bytes, sha256_file
from brats_seg.types import MODALITIES

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
