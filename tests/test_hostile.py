"""Regression tests for the hostile inputs that once crashed, hung or misled (issue 18,
``../shared/reliability/hostile-inputs-b98aeab.md``): each is refused by ``check``, ``predict`` (before the
model is loaded) and the dashboard with the same one-line message naming the file.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_affine, tiny_volumes, write_nifti, write_tiny_study

from brats_seg.cli import main
from brats_seg.errors import StudyError
from brats_seg.files import load_study_from_bytes

SHAPE = (32, 32, 24)


def study_with(
    folder: Path, *, affine: np.ndarray | None = None, shape: tuple[int, int, int] = SHAPE
) -> dict[str, Path]:
    """A tiny study whose four files share ``affine`` and ``shape`` (default: BraTS-like 1 mm)."""
    return write_tiny_study(folder, folder.name, shape=shape, affine=affine, seg=False)


def refused_everywhere(capsys, folder: Path, tmp_path: Path, monkeypatch, *expected: str) -> None:
    """``check`` and ``predict`` exit 2 with a message holding ``expected``; predict never loads the model."""
    import brats_seg.model

    def no_model(*args, **kwargs):
        raise AssertionError("predict loaded the model before refusing the input")

    monkeypatch.setattr(brats_seg.model, "load_model", no_model)
    assert main(["check", str(folder)]) == 2
    out = capsys.readouterr().out
    assert all(e in out for e in expected), out
    assert main(["predict", str(folder), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert all(e in err for e in expected) and "Traceback" not in err, err
    with pytest.raises(StudyError) as info:
        load_study_from_bytes({p.name: p.read_bytes() for p in folder.iterdir()})
    assert all(e in str(info.value) for e in expected), str(info.value)


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        (
            (99.0, 99.0, 99.0),
            "voxels of 99 x 99 x 99 mm according to its affine; expected each edge within 0.1-10 mm",
        ),
        ((0.001, 0.001, 0.001), "voxels of 0.001 x 0.001 x 0.001 mm according to its affine"),
    ],
)
def test_implausible_voxel_sizes_are_refused(tmp_path: Path, capsys, monkeypatch, spacing, expected) -> None:
    folder = tmp_path / "Huge_001"
    study_with(folder, affine=brats_affine(SHAPE, spacing))
    refused_everywhere(capsys, folder, tmp_path, monkeypatch, "Huge_001_t1.nii.gz: ", expected)


def test_an_affine_that_disagrees_with_pixdim_by_1000_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    """pixdim says 1 mm, the sform 1000 mm: the affine places the voxels, so it is what is checked."""
    folder = tmp_path / "Sform_001"
    paths = study_with(folder)
    for path in paths.values():
        image = nib.load(path)
        affine = image.affine.copy()
        affine[:3, :3] *= 1000.0
        image.header.set_sform(affine, code=1)
        image.header.set_qform(None, code=0)
        image.header.set_zooms((1.0, 1.0, 1.0))
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, image.header), path)
    refused_everywhere(
        capsys, folder, tmp_path, monkeypatch, "Sform_001_t1.nii.gz: voxels of 1000 x 1000 x 1000 mm"
    )


@pytest.mark.parametrize("shape_spacing", [((100, 100, 60), 4.0), ((400, 8, 8), 1.0)])
def test_a_field_of_view_larger_than_a_head_is_refused(
    tmp_path: Path, capsys, monkeypatch, shape_spacing
) -> None:
    """4 mm voxels over a BraTS-sized grid (once 142 s and 3.8 GB), or 400 mm of 1 mm voxels (a repeating
    pattern that once took 153 s and 5.2 GB): the field of view bounds the grid the model works on."""
    shape, mm = shape_spacing
    folder = tmp_path / "Wide_001"
    study_with(folder, affine=brats_affine(shape, (mm, mm, mm)), shape=shape)
    fov = " x ".join(f"{n * mm:.0f}" for n in shape)
    refused_everywhere(
        capsys,
        folder,
        tmp_path,
        monkeypatch,
        f"Wide_001_t1.nii.gz: a field of view of {fov} mm",
        "expected at most 320 mm along each axis",
    )


def uncompressed_study(folder: Path) -> dict[str, Path]:
    """A tiny study as uncompressed ``.nii`` files, whose header bytes a test can patch."""
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = tiny_volumes(SHAPE)
    return {
        m: write_nifti(folder / f"{folder.name}_{suffix}.nii", images[m], brats_affine(SHAPE))
        for m, suffix in (("T1", "t1"), ("T1CE", "t1ce"), ("T2", "t2"), ("FLAIR", "flair"))
    }


def patch(path: Path, offset: int, value: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(value)] = value
    path.write_bytes(bytes(raw))


def test_a_singular_affine_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    """An all-zero sform (qform code 0) was "ok with 2 warnings" in check, then a ValueError in predict."""
    folder = tmp_path / "Zero_001"
    for path in uncompressed_study(folder).values():
        patch(path, 252, np.array([0, 1], dtype="<i2").tobytes())  # qform_code 0, sform_code 1
        patch(path, 280, np.zeros(12, dtype="<f4").tobytes())  # srow_x, srow_y, srow_z
    refused_everywhere(
        capsys,
        folder,
        tmp_path,
        monkeypatch,
        "Zero_001_t1.nii: the affine (voxel-to-world matrix) is singular",
    )


def test_vox_offset_zero_is_refused_not_misread(tmp_path: Path, capsys, monkeypatch) -> None:
    """vox_offset 0 with the data at byte 352: nibabel read from byte 0 and shifted the T1 by 176 voxels."""
    folder = tmp_path / "Offset_001"
    t1 = uncompressed_study(folder)["T1"]
    patch(t1, 108, np.float32(0.0).tobytes())  # vox_offset
    refused_everywhere(
        capsys,
        folder,
        tmp_path,
        monkeypatch,
        "Offset_001_t1.nii: the header's vox_offset is 0; the NIfTI standard requires at least 352",
    )


def test_an_upload_name_too_long_for_a_file_system_is_refused() -> None:
    images, _ = tiny_volumes(SHAPE)
    files = {}
    for modality, suffix in (("T1", "t1"), ("T1CE", "t1ce"), ("T2", "t2"), ("FLAIR", "flair")):
        image = nib.Nifti1Image(images[modality], brats_affine(SHAPE))
        files[("x" * 300) + f"_{suffix}.nii"] = image.to_bytes()
    with pytest.raises(StudyError, match=r"a file name of 30\d bytes; expected at most 255") as info:
        load_study_from_bytes(files)
    assert "/tmp" not in str(info.value)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "x" * 201])
def test_predict_name_cannot_leave_the_output_folder(
    tmp_path: Path, tiny_study_dir: Path, capsys, name: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", str(tiny_study_dir), "--output", str(tmp_path / "out"), "--name", name])
    assert info.value.code == 2
    assert "expected a name for the output files" in capsys.readouterr().err
    assert not (tmp_path / "x_seg.nii.gz").exists() and not list(tmp_path.glob("**/*_seg.nii.gz"))
