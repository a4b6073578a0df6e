"""Tests for ``brats_seg.files.nifti`` and ``checks``: reading NIfTI headers before data, the checks on
geometry and content, and writing label maps."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_affine, err, write_nifti, write_tiny_study

from brats_seg.errors import StudyError
from brats_seg.files import load_study, nifti, save_labels, sha256_file
from brats_seg.types import LabelMap


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
    with pytest.raises(
        StudyError,
        match=err(
            paths["T2"].name,
            r"every voxel is 100 \(an image without contrast\); "
            r"expected an MRI T2 sequence",
        ),
    ):
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
