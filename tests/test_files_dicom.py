"""DICOM input (four MR series of a study) and DICOM Segmentation output
(``brats_seg.files.dicom_read``, ``brats_seg.files.dicom_seg``).

Tiny generated series always run; the end-to-end test on a real BraTS case written as DICOM skips
without ../shared/data.
"""

from __future__ import annotations

import io as pyio
import json
import shutil
import zipfile

import numpy as np
import pydicom
import pytest
from helpers import brats_affine, tiny_volumes, write_dicom_series, write_dicom_study, write_nifti, zip_tree

from brats_seg.cli import main
from brats_seg.errors import StudyError
from brats_seg.files import (
    dicom_read,
    find_studies,
    is_dicom_file,
    load_study,
    load_study_from_bytes,
    save_labels,
    series_modality,
    write_dicom_seg,
)
from brats_seg.types import LabelMap

SHAPE = (12, 10, 8)


def oblique_affine(spacing=(0.9, 1.1, 2.5), degrees: float = 20.0) -> np.ndarray:
    """A right-handed RAS affine rotated about two axes, with anisotropic voxels and an offset."""
    a, b = np.radians(degrees), np.radians(degrees / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = [40.0, -12.5, 7.25]
    return affine


def world(affine: np.ndarray, ijk) -> np.ndarray:
    return (affine @ np.array([*ijk, 1.0]))[:3]


@pytest.fixture
def tiny_dicom(tmp_path):
    images, labels = tiny_volumes(SHAPE, seed=3)
    affine = oblique_affine()
    files = write_dicom_study(tmp_path / "case_a", images, affine)
    return tmp_path / "case_a", images, labels, affine, files


SERIES_NAMES = {
    # plain and BraTS-style names
    "AX T1 SE": "T1",
    "T1 pre contrast": "T1",
    "Sag T1 MPRAGE": "T1",
    "t1_mprage_sag_p2_iso": "T1",
    "T1W_3D_TFE": "T1",
    "Ax T1 BRAVO": "T1",
    "AX T1 POST GD": "T1CE",
    "T1 MPRAGE +C": "T1CE",
    "t1_fl3d_tra_KM": "T1CE",
    "AX T1 BRAVO +C": "T1CE",
    "T1W_3D_TFE +C": "T1CE",
    "t2_tse_tra": "T2",
    "T2W_TSE": "T2",
    "AX T2 FRFSE": "T2",
    "AX T2 FLAIR": "FLAIR",
    "SAG 3D FLAIR": "FLAIR",
    "t2_tirm_tra_dark-fluid": "FLAIR",
    "t2_space_dark_fluid_sag": "FLAIR",
    "t2_spc_da-fl_sag_p2_iso": "FLAIR",
    "AX FLAIR T2": "FLAIR",
    "Brats18_CBICA_ABM_1_t1": "T1",
    "Brats18_CBICA_ABM_1_t1ce": "T1CE",
    "Brats18_CBICA_ABM_1_t2": "T2",
    "Brats18_CBICA_ABM_1_flair": "FLAIR",
    "BraTS-GLI-00001-000-t1n": "T1",
    "BraTS-GLI-00001-000-t1c": "T1CE",
    "BraTS-GLI-00001-000-t2w": "T2",
    "BraTS-GLI-00001-000-t2f": "FLAIR",
    # contrast words anywhere, and negated
    "AX POST T1": "T1CE",
    "+C T1": "T1CE",
    "POST GAD T1": "T1CE",
    "T1W_SE+C": "T1CE",
    "AX T1 C+": "T1CE",
    "AX T1 C-": "T1",
    "T1 without contrast": "T1",
    "T1 NON-CONTRAST": "T1",
    "AX T1 W/O C": "T1",
    # T1-weighted FLAIR is a T1
    "AX T1 FLAIR": "T1",
    "AX T1 FLAIR +C": "T1CE",
    # other kinds of series: better none than a wrong one
    "T2*": None,
    "AX T2* GRE": None,
    "T2 GRE": None,
    "T2W_FFE": None,
    "t2_swi3d1r_tra": None,
    "T2 STAR": None,
    "T2 EPI DWI": None,
    "T2 MAP": None,
    "AX PD/T2 FSE": None,
    "T1 MAP": None,
    "mp2rage_T1_Images": None,
    "t1_fl2d_tra_dyn": None,
    "3-plane localizer": None,
    "DWI b1000": None,
    "ADC": None,
}


@pytest.mark.parametrize(("description", "expected"), list(SERIES_NAMES.items()))
def test_series_modality(description, expected):
    assert series_modality(description) == expected


def test_dicom_study_matches_the_same_data_as_nifti(tiny_dicom, tmp_path):
    folder, images, _, affine, _ = tiny_dicom
    study = load_study(folder)
    nifti_dir = tmp_path / "nifti"
    nifti_dir.mkdir()
    for suffix, modality in (("t1", "T1"), ("t1ce", "T1CE"), ("t2", "T2"), ("flair", "FLAIR")):
        write_nifti(nifti_dir / f"case_a_{suffix}.nii.gz", images[modality], affine)
    reference = load_study(nifti_dir)
    assert study.name == "case_a"
    assert study.shape == SHAPE
    np.testing.assert_allclose(study.affine, reference.affine, atol=1e-4)
    np.testing.assert_allclose(study.spacing, reference.spacing, atol=1e-5)
    for modality in images:
        np.testing.assert_array_equal(study.images[modality], reference.images[modality])
    assert study.sources["T1CE"] == "series 2 'AX T1 POST GD' (8 files)"
    assert set(study.sha256) == {"T1", "T1CE", "T2", "FLAIR"}
    assert all(len(v) == 64 for v in study.sha256.values())


def test_slices_stored_against_the_normal_keep_their_world_positions(tmp_path):
    images, _ = tiny_volumes(SHAPE, seed=1)
    affine = np.diag([-1.0, -1.0, -2.0, 1.0])  # slice step opposite to row x column: read in reverse
    affine[:3, 3] = [5.0, 9.0, 30.0]
    write_dicom_study(tmp_path / "rev", images, affine)
    study = load_study(tmp_path / "rev")
    n = SHAPE[2]
    np.testing.assert_array_equal(study.images["FLAIR"], images["FLAIR"][:, :, ::-1])
    for ijk in [(0, 0, 0), (3, 7, 2), (11, 9, 7)]:
        i, j, k = ijk
        np.testing.assert_allclose(world(study.affine, (i, j, n - 1 - k)), world(affine, ijk), atol=1e-4)


def test_labels_saved_from_a_dicom_study_keep_its_geometry(tiny_dicom, tmp_path):
    import nibabel as nib

    folder, _, labels, affine, _ = tiny_dicom
    study = load_study(folder)
    out = save_labels(LabelMap(labels, study.affine, study.header), tmp_path / "out" / "case_a_seg.nii.gz")
    image = nib.load(out)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)


def test_other_series_are_left_out(tiny_dicom):
    folder, images, _, affine, files = tiny_dicom
    study_uid = pydicom.dcmread(files["T1"][0]).StudyInstanceUID
    frame = pydicom.dcmread(files["T1"][0]).FrameOfReferenceUID
    write_dicom_series(
        folder / "S7",
        images["T2"],
        affine,
        description="3-plane localizer",
        series_number=7,
        study_uid=study_uid,
        frame_uid=frame,
    )
    write_dicom_series(
        folder / "S8",
        images["T2"],
        affine,
        description="DWI b1000",
        series_number=8,
        study_uid=study_uid,
        frame_uid=frame,
    )
    study = load_study(folder)
    assert sorted(study.sources) == ["FLAIR", "T1", "T1CE", "T2"]
    assert "localizer" not in " ".join(study.sources.values())


def test_two_series_for_one_sequence_ask_for_a_mapping(tiny_dicom):
    folder, images, _, affine, files = tiny_dicom
    first = pydicom.dcmread(files["T1"][0])
    write_dicom_series(
        folder / "S9",
        images["T1"] + 1,
        affine,
        description="AX T1 SE repeat",
        series_number=9,
        study_uid=first.StudyInstanceUID,
        frame_uid=first.FrameOfReferenceUID,
    )
    with pytest.raises(
        StudyError,
        match=r"2 series look like T1 \(series 1 'AX T1 SE'.*series 9 'AX T1 SE repeat'.*mapping",
    ):
        load_study(folder)
    by_description = load_study(folder, mapping={"AX T1 SE": "T1", "AX T1 SE repeat": "IGNORE"})
    np.testing.assert_array_equal(by_description.images["T1"], images["T1"])
    by_number = load_study(folder, mapping={"9": "T1", "1": "IGNORE"})
    np.testing.assert_array_equal(by_number.images["T1"], images["T1"] + 1)


def test_unrecognised_descriptions_are_named_and_mapping_fixes_them(tmp_path):
    images, _ = tiny_volumes(SHAPE)
    descriptions = {"FLAIR": "sequence 4"}
    write_dicom_study(tmp_path / "c", images, brats_affine(SHAPE), descriptions=descriptions)
    with pytest.raises(
        StudyError,
        match=r"no series for FLAIR among 4 image series .*series 4 'sequence 4'.*--map",
    ):
        load_study(tmp_path / "c")
    study = load_study(tmp_path / "c", mapping={"sequence 4": "FLAIR"})
    np.testing.assert_array_equal(study.images["FLAIR"], images["FLAIR"])
    with pytest.raises(StudyError, match=r"'nope': named in the mapping but no series has that description"):
        load_study(tmp_path / "c", mapping={"sequence 4": "FLAIR", "nope": "T1"})


def test_missing_slice_is_refused(tiny_dicom):
    folder, *_, files = tiny_dicom
    victim = sorted(files["T2"], key=lambda p: int(pydicom.dcmread(p).InstanceNumber))[3]
    victim.unlink()
    with pytest.raises(
        StudyError,
        match=r"slice gap .* in series 3 'AX T2 FSE' \(7 files\); expected evenly spaced slices",
    ):
        load_study(folder)


def test_two_slices_at_one_position_are_refused(tiny_dicom):
    folder, *_, files = tiny_dicom
    by_number = sorted(files["FLAIR"], key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    ds = pydicom.dcmread(by_number[2])
    ds.ImagePositionPatient = pydicom.dcmread(by_number[1]).ImagePositionPatient
    ds.save_as(by_number[2])
    with pytest.raises(StudyError, match=r"two slices at the same position in series 4 'AX T2 FLAIR'"):
        load_study(folder)


def test_mixed_orientation_in_one_series_is_refused(tiny_dicom):
    folder, *_, files = tiny_dicom
    ds = pydicom.dcmread(files["T1"][4])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(files["T1"][4])
    with pytest.raises(
        StudyError,
        match=rf"{files['T1'][4].name}: orientation .* expected one slice orientation in series 1",
    ):
        load_study(folder)


def test_series_on_different_grids_are_refused(tmp_path):
    images, _ = tiny_volumes(SHAPE)
    affine = brats_affine(SHAPE)
    shifted = affine.copy()
    shifted[0, 3] += 3.0
    write_dicom_study(tmp_path / "c", images, affine, affines={"FLAIR": shifted})
    with pytest.raises(
        StudyError,
        match=r"(?s)series 4 'AX T2 FLAIR' \(8 files\): affine differs .* by up to 3 mm.*co-register them",
    ):
        load_study(tmp_path / "c")


def test_series_of_two_studies_are_refused(tmp_path):
    images, _ = tiny_volumes(SHAPE)
    write_dicom_study(tmp_path / "c", images, brats_affine(SHAPE))
    ds_files = sorted((tmp_path / "c" / "S4").iterdir())
    for p in ds_files:
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID = "1.2.3.4"
        ds.save_as(p)
    with pytest.raises(StudyError, match=r"files from 2 studies .*expected the series of one study"):
        load_study(tmp_path / "c")


def test_multi_frame_image_is_refused(tiny_dicom):
    folder, *_, files = tiny_dicom
    for p in files["T1CE"]:
        ds = pydicom.dcmread(p)
        ds.NumberOfFrames = 2
        ds.save_as(p)
    with pytest.raises(
        StudyError,
        match=r"multi-frame \(enhanced\) DICOM image with 2 frames in series 2 .*dcm2niix",
    ):
        load_study(folder)


def test_truncated_slice_is_named(tiny_dicom):
    folder, *_, files = tiny_dicom
    victim = files["T2"][2]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) - 50])
    with pytest.raises(StudyError, match=rf"{victim.name}: its pixel data cannot be decoded"):
        load_study(folder)
    victim.write_bytes(raw[:400])
    with pytest.raises(StudyError, match=rf"{victim.name}: has no (Series|Study)InstanceUID; .*truncated"):
        load_study(folder)


def test_voxel_budget_is_checked_before_pixels(tiny_dicom):
    folder, *_ = tiny_dicom
    with pytest.raises(StudyError, match=r"12 x 10 x 8 = 960 voxels; expected at most 500"):
        load_study(folder, max_voxels=500)


def test_zip_of_series_folders_loads_from_disk_and_upload(tiny_dicom, tmp_path):
    folder, images, *_ = tiny_dicom
    data = zip_tree(folder)  # every series folder holds IM0001..IM0008: names repeat across folders
    (tmp_path / "export.zip").write_bytes(data)
    for study in (load_study(tmp_path / "export.zip"), load_study_from_bytes({"export.zip": data})):
        assert study.name == "case_a"  # the study folder inside the zip names it
        np.testing.assert_array_equal(study.images["T2"], images["T2"])
    flat = zip_tree(folder, prefix="")  # series folders at the top level
    assert load_study_from_bytes({"export.zip": flat}).name == "export"


def test_find_studies_for_dicom_layouts(tmp_path):
    images, _ = tiny_volumes(SHAPE)
    write_dicom_study(tmp_path / "one", images, brats_affine(SHAPE))
    assert find_studies(tmp_path / "one") == [tmp_path / "one"]
    write_dicom_study(tmp_path / "many" / "b", images, brats_affine(SHAPE))
    write_dicom_study(tmp_path / "many" / "a", images, brats_affine(SHAPE))
    assert find_studies(tmp_path / "many") == [tmp_path / "many" / "a", tmp_path / "many" / "b"]
    assert is_dicom_file(next((tmp_path / "one" / "S1").iterdir()))


def test_segmentation_round_trip(tiny_dicom, tmp_path):
    import highdicom as hd

    folder, _, labels, _, files = tiny_dicom
    study = load_study(folder)
    out = write_dicom_seg(
        LabelMap(labels, study.affine, study.header),
        study,
        tmp_path / "seg.dcm",
        model_name="tiny-model",
        software_version="brats-seg 0.1.0",
    )
    seg = hd.seg.segread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [
        "NCR (necrotic tumour core)",
        "ED (peritumoural edema)",
        "ET (enhancing tumour)",
    ]
    codes = [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence]
    assert codes == ["6574001", "79654002", "C113842"]
    assert all(
        s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName == "tiny-model"
        for s in seg.SegmentSequence
    )
    t1ce = pydicom.dcmread(files["T1CE"][0])
    assert seg.StudyInstanceUID == t1ce.StudyInstanceUID
    assert seg.FrameOfReferenceUID == t1ce.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == t1ce.SeriesInstanceUID
    uids = [h.SOPInstanceUID for h in study.dicom["T1CE"].headers]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])
    rebuilt = np.zeros(SHAPE, dtype=np.uint8)
    for n, value in ((1, 1), (2, 2), (3, 4)):
        rebuilt[masks[..., n - 1].transpose(2, 1, 0) > 0] = value
    np.testing.assert_array_equal(rebuilt, labels)


def test_segmentation_needs_a_dicom_study_on_its_grid(tiny_dicom, tiny_study_dir, tmp_path):
    folder, _, labels, *_ = tiny_dicom
    nifti = load_study(tiny_study_dir)
    with pytest.raises(
        StudyError,
        match=r"read from NIfTI files; a DICOM Segmentation needs DICOM source images",
    ):
        write_dicom_seg(nifti.truth_map, nifti, tmp_path / "x.dcm", model_name="m", software_version="v")
    study = load_study(folder)
    with pytest.raises(StudyError, match=r"not on the grid of series 2 'AX T1 POST GD'"):
        write_dicom_seg(
            LabelMap(labels[:, :, :4], study.affine, study.header),
            study,
            tmp_path / "x.dcm",
            model_name="m",
            software_version="v",
        )


def test_cli_predicts_a_dicom_study_and_writes_a_dicom_seg(tmp_path, tiny_model_dir):
    import highdicom as hd
    import nibabel as nib

    images, _ = tiny_volumes((32, 32, 24), seed=5)
    affine = oblique_affine(spacing=(1.0, 1.0, 1.0), degrees=10)
    write_dicom_study(tmp_path / "in" / "study_x", images, affine)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(tmp_path / "in" / "study_x"),
            "--output",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--dicom-seg",
            "--no-progress",
        ]
    )
    assert code == 0
    labels = nib.load(out / "study_x_seg.nii.gz")
    np.testing.assert_allclose(labels.affine, affine, atol=1e-4)
    seg = hd.seg.segread(out / "study_x_seg.dcm")
    study = load_study(tmp_path / "in" / "study_x")
    uids = [h.SOPInstanceUID for h in study.dicom["T1CE"].headers]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])
    expected = np.asarray(labels.dataobj)
    for n, value in ((1, 1), (2, 2), (3, 4)):
        np.testing.assert_array_equal(masks[..., n - 1].transpose(2, 1, 0) > 0, expected == value)
    report = json.loads((out / "study_x_report.json").read_text())
    assert "series 4 'AX T2 FLAIR'" in json.dumps(report)


def test_cli_refuses_dicom_seg_for_nifti_and_bad_map(tiny_study_dir, tmp_path, capsys):
    code = main(
        ["predict", str(tiny_study_dir), "--output", str(tmp_path / "o"), "--dicom-seg", "--no-progress"]
    )
    assert code == 2
    assert "--dicom-seg needs DICOM input, found NIfTI files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(tiny_study_dir), "--output", str(tmp_path / "o"), "--map", "T1CE"])
    assert exc.value.code == 2
    assert "expected KEY=SEQUENCE" in capsys.readouterr().err


def test_cli_map_option_names_dicom_series(tmp_path, tiny_model_dir):
    images, _ = tiny_volumes((32, 32, 24), seed=6)
    write_dicom_study(tmp_path / "s", images, brats_affine((32, 32, 24)), descriptions={"T2": "series three"})
    args = [
        "predict",
        str(tmp_path / "s"),
        "--output",
        str(tmp_path / "o"),
        "--model",
        str(tiny_model_dir),
        "--no-progress",
    ]
    assert main(args) == 2
    assert main([*args, "--map", "series three=T2"]) == 0
    assert (tmp_path / "o" / "s_seg.nii.gz").is_file()


def test_real_case_as_dicom_end_to_end(brats_case, tmp_path):
    """A real BraTS case written as DICOM series: same volumes and geometry as its NIfTI files, and
    the bundled model's prediction comes back as a DICOM Segmentation that matches the NIfTI output."""
    import highdicom as hd
    import nibabel as nib

    nifti = load_study(brats_case)
    images = {m: nifti.images[m].astype(np.int16) for m in ("T1", "T1CE", "T2", "FLAIR")}
    assert all(np.array_equal(images[m], nifti.images[m]) for m in images)  # BraTS files are integer-valued
    write_dicom_study(tmp_path / brats_case.name, images, nifti.affine)
    study = load_study(tmp_path / brats_case.name)
    np.testing.assert_allclose(study.affine, nifti.affine, atol=1e-4)
    for m in images:
        np.testing.assert_array_equal(study.images[m], nifti.images[m])
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(tmp_path / brats_case.name),
                "--output",
                str(out),
                "--dicom-seg",
                "--no-tta",
                "--no-progress",
            ]
        )
        == 0
    )
    labels = nib.load(out / f"{brats_case.name}_seg.nii.gz")
    t1 = nib.load(next(brats_case.glob("*_t1.nii.gz")))
    np.testing.assert_allclose(labels.affine, t1.affine, atol=1e-4)
    predicted = np.asarray(labels.dataobj)
    from brats_seg.metrics import score

    dice = score(LabelMap(predicted, nifti.affine, nifti.header), nifti.truth_map)
    assert dice["WT"]["dice"] > 0.8
    seg = hd.seg.segread(out / f"{brats_case.name}_seg.dcm")
    uids = [h.SOPInstanceUID for h in study.dicom["T1CE"].headers]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])
    for n, value in ((1, 1), (2, 2), (3, 4)):
        np.testing.assert_array_equal(masks[..., n - 1].transpose(2, 1, 0) > 0, predicted == value)
    shutil.rmtree(tmp_path / brats_case.name)


def _set(files, **values):
    for p in files:
        ds = pydicom.dcmread(p)
        for k, v in values.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)
        ds.save_as(p)


def _patch_value(path, tag: tuple[int, int], vr: bytes, new: bytes):
    """Overwrite an explicit-VR element's value bytes in place (same length), bypassing pydicom's checks."""
    raw = bytearray(path.read_bytes())
    key = tag[0].to_bytes(2, "little") + tag[1].to_bytes(2, "little") + vr
    at = raw.index(key)
    length = int.from_bytes(raw[at + 6 : at + 8], "little")
    assert length == len(new)
    raw[at + 8 : at + 8 + length] = new
    path.write_bytes(bytes(raw))


def test_undecodable_header_values_are_study_errors(tiny_dicom):
    folder, *_, files = tiny_dicom
    victim = files["T2"][1]
    _set([victim], RescaleSlope="7.5")
    _patch_value(victim, (0x0028, 0x1053), b"DS", b"abc ")
    with pytest.raises(
        StudyError,
        match=rf"{victim.name}: RescaleSlope is 'abc'; expected a number|{victim.name}: its RescaleSlope "
        r"cannot be decoded",
    ):
        load_study(folder)
    _set([victim], RescaleSlope="1")
    _set([victim], NumberOfFrames="7")
    _patch_value(victim, (0x0028, 0x0008), b"IS", b"x ")
    with pytest.raises(
        StudyError,
        match=rf"{victim.name}: (NumberOfFrames is 'x'; expected a whole number|its NumberOfFrames cannot be "
        r"decoded)",
    ):
        load_study(folder)


def test_monochrome1_is_refused(tiny_dicom):
    folder, *_, files = tiny_dicom
    _set(files["FLAIR"], PhotometricInterpretation="MONOCHROME1")
    with pytest.raises(
        StudyError,
        match=r"PhotometricInterpretation MONOCHROME1 in series 4 .*expected MONOCHROME2",
    ):
        load_study(folder)


def test_tilted_stack_is_refused(tmp_path):
    images, _ = tiny_volumes(SHAPE)
    affine = brats_affine(SHAPE)
    affine[1, 2] = 0.3  # each slice shifted 0.3 mm along y: a gantry tilt
    write_dicom_study(tmp_path / "c", images, affine)
    with pytest.raises(StudyError, match=r"shifted 0.300 mm sideways .*tilted or sheared stack"):
        load_study(tmp_path / "c")


def test_series_in_different_frames_of_reference_are_refused(tiny_dicom):
    folder, *_, files = tiny_dicom
    _set(files["T2"], FrameOfReferenceUID="1.2.3.4.5")
    with pytest.raises(
        StudyError,
        match=r"different FrameOfReferenceUIDs .*T2 series 3 'AX T2 FSE' \(8 files\): 1.2.3.4.5",
    ):
        load_study(folder)


def test_segmentation_from_de_identified_headers(tiny_dicom, tmp_path):
    import highdicom as hd

    folder, _, labels, _, files = tiny_dicom
    every = [p for series in files.values() for p in series]
    _set(
        every,
        PatientID=None,
        PatientName=None,
        StudyDate=None,
        StudyTime=None,
        ReferringPhysicianName=None,
        AccessionNumber=None,
        StudyID=None,
    )
    study = load_study(folder)
    out = write_dicom_seg(
        LabelMap(labels, study.affine, study.header),
        study,
        tmp_path / "seg.dcm",
        model_name="m",
        software_version="v",
    )
    assert hd.seg.segread(out).PatientID == ""
    _set(every, FrameOfReferenceUID=None)
    study = load_study(folder)
    with pytest.raises(StudyError, match=r"has no FrameOfReferenceUID; a DICOM Segmentation must name"):
        write_dicom_seg(
            LabelMap(labels, study.affine, study.header),
            study,
            tmp_path / "seg2.dcm",
            model_name="m",
            software_version="v",
        )


def test_deep_layouts_and_pacs_media_are_found(tmp_path):
    images, _ = tiny_volumes(SHAPE)
    write_dicom_study(tmp_path / "case01" / "DICOM", images, brats_affine(SHAPE))
    media = tmp_path / "media"
    write_dicom_study(media / "DICOM" / "PA0" / "ST0", images, brats_affine(SHAPE))
    (media / "DICOMDIR").write_bytes(next((media / "DICOM" / "PA0" / "ST0" / "S1").iterdir()).read_bytes())
    for folder in (tmp_path / "case01", media):
        study = load_study(folder)
        np.testing.assert_array_equal(study.images["T1"], images["T1"])
        assert find_studies(folder) == [folder]
    assert find_studies(tmp_path) == [tmp_path / "case01", media]
    assert load_study_from_bytes({"x.zip": zip_tree(tmp_path / "case01")}).name == "case01"


def test_zip_tree_limits(tmp_path, monkeypatch):
    buffer = pyio.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for i in range(12):
            z.writestr(f"study/S1/IM{i}", b"x")
    monkeypatch.setattr(dicom_read, "MAX_DICOM_FILES", 10)
    with pytest.raises(
        StudyError,
        match=r"holds 12 files; expected the series of one study \(at most 10 files",
    ):
        load_study_from_bytes({"many.zip": buffer.getvalue()})
    clash = pyio.BytesIO()
    with zipfile.ZipFile(clash, "w") as z:
        z.writestr("study/a", b"x")
        z.writestr("study/a/b", b"y")
    with pytest.raises(StudyError, match=r"clash.zip: cannot extract 'study/a/b'"):
        load_study_from_bytes({"clash.zip": clash.getvalue()})


def test_cli_batch_with_dicom_seg_keeps_going(tmp_path, tiny_model_dir, capsys):
    from helpers import write_tiny_study

    images, _ = tiny_volumes((32, 32, 24), seed=7)
    write_dicom_study(tmp_path / "in" / "a_dicom", images, brats_affine((32, 32, 24)))
    write_tiny_study(tmp_path / "in" / "b_nifti", "b_nifti", seg=False)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--dicom-seg",
            "--no-progress",
        ]
    )
    assert code == 2
    assert "no DICOM SEG for b_nifti: b_nifti: NIfTI input" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "a_dicom_report.json",
        "a_dicom_seg.dcm",
        "a_dicom_seg.nii.gz",
        "b_nifti_report.json",
        "b_nifti_seg.nii.gz",
    ]


def test_sagittal_series_predict_like_the_axial_study(tmp_path, tiny_model_dir):
    """Series stored sagittally are reoriented like NIfTI: the labels land on the same voxels in space."""
    import nibabel as nib
    from helpers import write_tiny_study

    shape = (32, 32, 24)
    write_tiny_study(tmp_path / "axial", "axial", shape=shape, seed=9, seg=False)
    axial = load_study(tmp_path / "axial")
    # column = y, row = z, slice = x: the sagittal layout of the same voxels
    images = {m: axial.images[m].astype(np.int16).transpose(1, 2, 0) for m in axial.images}
    write_dicom_study(tmp_path / "sagittal", images, axial.affine[:, [1, 2, 0, 3]])
    assert nib.aff2axcodes(load_study(tmp_path / "sagittal").affine) != nib.aff2axcodes(axial.affine)
    for name in ("axial", "sagittal"):
        assert (
            main(
                [
                    "predict",
                    str(tmp_path / name),
                    "--output",
                    str(tmp_path / "out"),
                    "--model",
                    str(tiny_model_dir),
                    "--no-progress",
                ]
            )
            == 0
        )
    a = nib.as_closest_canonical(nib.load(tmp_path / "out" / "axial_seg.nii.gz"))
    b = nib.as_closest_canonical(nib.load(tmp_path / "out" / "sagittal_seg.nii.gz"))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert np.asarray(a.dataobj).any()
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def test_volume_report_is_a_tid1500_sr_of_each_label_and_region(tiny_dicom, tmp_path) -> None:
    """``write_volume_report``: one measurement group per label and region, volumes in mL, in the SEG's
    study, the model as observer device (no Orthanc needed; tests/test_pacs.py stores it on one)."""
    import highdicom as hd

    from brats_seg.files import write_volume_report
    from brats_seg.report import volumes

    folder, _, labels, _, _ = tiny_dicom
    study = load_study(folder)
    label_map = LabelMap(labels, study.affine, study.header)
    seg = pydicom.dcmread(
        write_dicom_seg(label_map, study, tmp_path / "seg.dcm", model_name="tiny-model", software_version="v")
    )
    vols = volumes(label_map)
    sr = write_volume_report(seg, vols, model_name="tiny-model", software_version="brats-seg 0.1.0")
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    report = hd.sr.srread(tmp_path / "sr.dcm")
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert (
        report.StudyInstanceUID == seg.StudyInstanceUID and report.SeriesInstanceUID != seg.SeriesInstanceUID
    )
    values = {
        str(e.value)
        for e in pydicom.dcmread(tmp_path / "sr.dcm").iterall()
        if e.keyword in ("TextValue", "NumericValue")
    }
    for section in ("labels", "regions"):
        for name, entry in vols[section].items():
            assert name in values and any(
                abs(float(v) - entry["mL"]) < 1e-3 for v in values if v[:1].isdigit()
            )
    assert "tiny-model" in values  # the observer device
