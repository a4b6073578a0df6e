"""Harmonising raw studies: geometry conversions, the decision, registration, refusals, labels back.

Tiny generated studies only (a textured ellipsoid "head", 48 x 48 x 40 voxels), moved by known rigid
transforms and resampled onto grids of their own; the real raw study is in test_harmonise_real.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import brats_affine, tiny_volumes, write_nifti
from scipy import ndimage

from brats_seg import harmonise, registration
from brats_seg.cli import main
from brats_seg.errors import StudyError
from brats_seg.files import load_native_study, load_study
from brats_seg.harmonise_outputs import checkerboard, harmonised_files
from brats_seg.types import MODALITIES, LabelMap

SHAPE = (48, 48, 40)


def textured_head(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tiny volumes with smooth texture inside the brain, so that mutual information has structure to find."""
    images, labels = tiny_volumes(SHAPE, seed=seed)
    rng = np.random.default_rng(seed + 100)
    texture = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0)
    texture = texture / texture.std()
    brain = images["T1"] > 0
    out = {}
    for n, (modality, image) in enumerate(images.items()):
        sign = 1.0 if n % 2 == 0 else -1.0  # T1CE and FLAIR see the texture inverted: a different contrast
        out[modality] = np.where(
            brain, image.astype(np.float32) + 150.0 * sign * texture + 400.0, 0.0
        ).astype(np.float32)
    return out, labels


def rigid(
    angles_deg: tuple[float, float, float], shift_mm: tuple[float, float, float], centre
) -> sitk.Euler3DTransform:
    t = sitk.Euler3DTransform()
    t.SetCenter([float(c) for c in centre])
    t.SetRotation(*[float(np.radians(a)) for a in angles_deg])
    t.SetTranslation([float(v) for v in shift_mm])
    return t


MOTIONS = {
    "T1": ((3, -2, 4), (2, -1, 1.5)),
    "T1CE": ((0, 0, 0), (0, 0, 0)),
    "T2": ((-4, 3, 0), (-2, 2, 0)),
    "FLAIR": ((2, 2, -3), (1, 0, -2)),
}
SPACINGS = {"T1": (1.0, 1.0, 2.0), "T1CE": (1.0, 1.0, 2.0), "T2": (0.9, 0.9, 2.2), "FLAIR": (1.1, 1.1, 2.0)}


def write_raw_study(
    folder: Path,
    *,
    seed: int = 0,
    replace: dict[str, np.ndarray] | None = None,
    shift_world: dict[str, float] | None = None,
) -> dict:
    """A raw-like tiny study: each sequence moved by MOTIONS and resampled onto its own grid (SPACINGS).

    Returns:
        The true transforms (a point of the sequence's world -> the original world) and the files.
    """
    images, labels = textured_head(seed)
    affine = brats_affine(SHAPE)
    centre = registration.to_sitk(images["T1"], affine).TransformContinuousIndexToPhysicalPoint(
        [n / 2 for n in SHAPE]
    )
    folder.mkdir(parents=True, exist_ok=True)
    made = {"transforms": {}, "files": {}, "labels": labels, "affine": affine}
    names = {"T1": "scan_t1", "T1CE": "scan_T1_POST_GAD", "T2": "scan_T2_AX", "FLAIR": "scan_fla"}
    for modality in MODALITIES:
        spacing = SPACINGS[modality]
        size = [int(round(n / s)) for n, s in zip(SHAPE, spacing, strict=True)]
        grid = sitk.Image(size, sitk.sitkFloat32)
        grid.SetSpacing(spacing)
        grid.SetOrigin(registration.to_sitk(images["T1"], affine).GetOrigin())
        grid.SetDirection(registration.to_sitk(images["T1"], affine).GetDirection())
        moved = rigid(*MOTIONS[modality], centre)
        image = sitk.Resample(
            registration.to_sitk(images[modality], affine), grid, moved, sitk.sitkLinear, 0.0
        )
        array, new_affine = registration.from_sitk(image)
        if replace and modality in replace:
            array = replace[modality](array) if callable(replace[modality]) else replace[modality]
        if shift_world and modality in shift_world:
            new_affine[0, 3] += shift_world[modality]
        made["files"][modality] = write_nifti(
            folder / f"{names[modality]}.nii.gz", array.astype(np.float32), new_affine
        )
        made["transforms"][modality] = moved
    return made


def test_to_sitk_matches_simpleitk_reading_the_same_file(tmp_path: Path) -> None:
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array(
        [[-0.9 * c, -1.1 * s, 0, 12.0], [-0.9 * s, 1.1 * c, 0, -40.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]]
    )
    path = write_nifti(tmp_path / "x.nii.gz", array, affine)
    ours, theirs = registration.to_sitk(array, affine), sitk.ReadImage(str(path))
    np.testing.assert_allclose(ours.GetSpacing(), theirs.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
    back, back_affine = registration.from_sitk(ours)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)


def test_grid_1mm_covers_the_same_field_of_view() -> None:
    affine = brats_affine((256, 224, 26), (0.898, 0.898, 5.5))
    new, shape = harmonise.grid_1mm(affine, (256, 224, 26))
    assert shape == (230, 201, 143)
    np.testing.assert_allclose(np.sqrt((new[:3, :3] ** 2).sum(axis=0)), 1.0)
    # outer edges: old first voxel's edge == new first voxel's edge (half a voxel out from each centre)
    old_edge = affine[:3, :3] @ np.array([-0.5] * 3) + affine[:3, 3]
    new_edge = new[:3, :3] @ np.array([-0.5] * 3) + new[:3, 3]
    np.testing.assert_allclose(old_edge, new_edge, atol=1e-9)


def test_decide(tmp_path: Path, tiny_study_dir: Path) -> None:
    brats_like = load_native_study(tiny_study_dir, load_truth=False)
    assert harmonise.decide(brats_like) == []
    assert harmonise.decide(brats_like, mode="off") == []
    assert harmonise.decide(brats_like, mode="on") == ["asked for (--harmonise on)"]
    write_raw_study(tmp_path / "raw")
    raw = load_native_study(tmp_path / "raw")
    reasons = harmonise.decide(raw)
    assert len(reasons) == 1 and reasons[0].startswith(
        "T2, FLAIR on other grids than T1 (T1 48 x 48 x 20 voxels"
    )
    with pytest.raises(
        StudyError, match=r"^scan_T2_AX.nii.gz: T2 is on another grid than T1 .*--harmonise auto or on"
    ):
        harmonise.decide(raw, mode="off")
    with pytest.raises(StudyError, match=r"harmonise mode 'sometimes'; expected one of auto, on, off"):
        harmonise.decide(raw, mode="sometimes")


def test_load_native_study_keeps_each_grid_and_load_study_still_refuses(tmp_path: Path) -> None:
    made = write_raw_study(tmp_path / "raw")
    raw = load_native_study(tmp_path / "raw")
    assert raw.sources["FLAIR"] == "scan_fla.nii.gz" and raw.sources["T1CE"] == "scan_T1_POST_GAD.nii.gz"
    assert raw.images["T2"].shape == (53, 53, 18)
    np.testing.assert_allclose(raw.affines["T2"], nib.load(made["files"]["T2"]).affine)
    with pytest.raises(
        StudyError,
        match=r"^scan_T2_AX.nii.gz: shape \(53, 53, 18\) differs from scan_t1.nii.gz \(48, 48, 20\)",
    ):
        load_study(tmp_path / "raw")


def test_harmonise_recovers_known_motion(tmp_path: Path) -> None:
    made = write_raw_study(tmp_path / "raw")
    raw = load_native_study(tmp_path / "raw")
    lines: list[str] = []
    result = harmonise.harmonise(raw, skull_strip=False, progress=lines.append)
    assert lines == [
        "Brain mask: where T1CE is non-zero...",
        "Registering T1 onto T1CE (1 of 3)...",
        "Registering T2 onto T1CE (2 of 3)...",
        "Registering FLAIR onto T1CE (3 of 3)...",
    ]
    assert result.study.spacing == (1.0, 1.0, 1.0) and result.study.shape == (48, 48, 40)
    assert set(result.study.images) == set(MODALITIES) and result.native.shape == raw.images["T1CE"].shape
    points = nib.affines.apply_affine(result.study.affine, np.argwhere(result.brain)[::50]) * [-1, -1, 1]
    to_original = made["transforms"]["T1CE"]
    for modality, recovered in result.transforms.items():
        truth = made["transforms"][modality].GetInverse()
        errors = [
            np.linalg.norm(
                np.subtract(recovered.TransformPoint(p), truth.TransformPoint(to_original.TransformPoint(p)))
            )
            for p in map(tuple, points)
        ]
        assert np.mean(errors) < 1.0, (modality, np.mean(errors))
        figures = result.registration[modality]
        assert figures["mutual_information_after"] > figures["mutual_information_before"]
        assert figures["mutual_information_after"] >= registration.MIN_MUTUAL_INFORMATION
    record = result.record()
    assert record["skull_stripped"] is False and set(record["registration"]) == {"T1", "T2", "FLAIR"}
    assert set(record["timings"]) == {
        "grid",
        "skull_strip",
        "register_T1",
        "register_T2",
        "register_FLAIR",
        "total",
    }


def test_noise_sequence_is_refused_naming_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    write_raw_study(
        tmp_path / "raw", replace={"T2": lambda a: rng.uniform(0, 1000, a.shape).astype(np.float32)}
    )
    raw = load_native_study(tmp_path / "raw")
    with pytest.raises(
        StudyError,
        match=r"^scan_T2_AX.nii.gz: registration of T2 onto T1CE did not converge: mutual "
        r"information inside the brain 0\.0\d+ .*expected at least 0.1",
    ):
        harmonise.harmonise(raw, skull_strip=False)


def test_sequence_far_from_the_others_is_refused(tmp_path: Path) -> None:
    write_raw_study(tmp_path / "raw", shift_world={"FLAIR": 500.0})
    raw = load_native_study(tmp_path / "raw")
    with pytest.raises(
        StudyError,
        match=r"^scan_fla.nii.gz: the FLAIR field of view and the T1CE's share 0% .*belongs to this study",
    ):
        harmonise.harmonise(raw, skull_strip=False)


def test_a_reference_too_small_for_a_head_is_refused(tmp_path: Path) -> None:
    """A single slice (once a torch RuntimeError inside deepbet) is no head to register or skull-strip."""
    images, _ = tiny_volumes((64, 64, 1))
    folder = tmp_path / "Slice_1"
    folder.mkdir()
    for m, suffix in (("T1", "t1"), ("T1CE", "t1ce"), ("T2", "t2"), ("FLAIR", "flair")):
        write_nifti(folder / f"Slice_1_{suffix}.nii.gz", images[m], brats_affine((64, 64, 1)))
    raw = load_native_study(folder)
    with pytest.raises(
        StudyError,
        match=r"^Slice_1_t1ce.nii.gz: a field of view of 64 x 64 x 1 mm; expected a head, "
        r"at least 16 mm along each axis",
    ):
        harmonise.harmonise(raw)


def test_skull_stripping_that_finds_no_brain_is_refused() -> None:
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, (64, 64, 48)).astype(np.float32) * (rng.uniform(size=(64, 64, 48)) > 0.999)
    with pytest.raises(StudyError, match=r"^noise.nii.gz: skull stripping found no brain"):
        harmonise._skull_strip(noise, np.eye(4), source="noise.nii.gz")


def test_to_native_puts_labels_back_where_they_were(tmp_path: Path) -> None:
    write_raw_study(tmp_path / "raw")
    raw = load_native_study(tmp_path / "raw")
    result = harmonise.harmonise(raw, skull_strip=False)
    # labels on the 1 mm grid: a block; on the native T1CE grid (1 x 1 x 2 mm, same frame) it is
    # the same block
    labels = np.zeros(result.study.shape, dtype=np.uint8)
    labels[10:30, 12:28, 8:32] = 2
    labels[16:24, 16:24, 14:26] = 4
    native = harmonise.to_native(LabelMap(labels, result.study.affine, result.study.header), result)
    assert native.shape == raw.images["T1CE"].shape and native.array.dtype == np.uint8
    np.testing.assert_allclose(native.affine, raw.affines["T1CE"])
    expected = labels[:, :, ::2]  # native slice k sits at 1 mm slice 2k + 0.5: between two equal slices here
    agree = np.mean(native.array[:, :, 1:-1] == expected[:, :, 1:-1])
    assert agree > 0.97
    assert set(np.unique(native.array)) == {0, 2, 4}


def test_checkerboard() -> None:
    a, b = np.zeros((4, 4)), np.ones((4, 4))
    board = checkerboard(a, b, square=2)
    np.testing.assert_array_equal(board, [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])


def test_harmonised_files(tmp_path: Path) -> None:
    write_raw_study(tmp_path / "raw")
    result = harmonise.harmonise(load_native_study(tmp_path / "raw", name="Raw_1"), skull_strip=False)
    labels = LabelMap(np.zeros(result.study.shape, dtype=np.uint8), result.study.affine, result.study.header)
    files = harmonised_files(result, labels, harmonise.to_native(labels, result), preprocessed=True)
    assert sorted(files) == [
        "Raw_1_native.png",
        "Raw_1_preprocessed/Raw_1_brainmask.nii.gz",
        "Raw_1_preprocessed/Raw_1_flair.nii.gz",
        "Raw_1_preprocessed/Raw_1_t1.nii.gz",
        "Raw_1_preprocessed/Raw_1_t1ce.nii.gz",
        "Raw_1_preprocessed/Raw_1_t2.nii.gz",
        "Raw_1_registration.png",
        "Raw_1_seg_1mm.nii.gz",
    ]
    for name, (mime, data) in files.items():
        assert data[:8] == b"\x89PNG\r\n\x1a\n" if mime == "image/png" else data[:2] == b"\x1f\x8b", name
    # the preprocessed folder is a BraTS-named study that loads as one
    folder = tmp_path / "pre"
    for name, (_mime, data) in files.items():
        if name.startswith("Raw_1_preprocessed/") and "brainmask" not in name:
            (folder / Path(name).name).parent.mkdir(parents=True, exist_ok=True)
            (folder / Path(name).name).write_bytes(data)
    study = load_study(folder)
    assert study.shape == result.study.shape
    np.testing.assert_allclose(study.affine, result.study.affine, atol=1e-5)


def test_cli_predict_and_check_a_raw_study(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    write_raw_study(tmp_path / "Raw_7")
    code = main(["check", str(tmp_path / "Raw_7")])
    out = capsys.readouterr().out
    assert code == 0 and "(raw study, harmonised in " in out and "(T2, FLAIR on other grids than T1" in out, (
        out
    )
    assert out.splitlines()[-1] in (
        "1 study: 1 ok, 0 with warnings, 0 refused",
        "1 study: 0 ok, 1 with warnings, 0 refused",
    )
    code = main(
        [
            "predict",
            str(tmp_path / "Raw_7"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
            "--no-progress",
            "--uncertain-map",
            "--save-preprocessed",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Raw_7: harmonised (T2, FLAIR on other grids than T1" in out
    native = nib.load(tmp_path / "out" / "Raw_7_seg.nii.gz")
    t1ce = nib.load(tmp_path / "Raw_7" / "scan_T1_POST_GAD.nii.gz")
    assert native.shape == t1ce.shape
    np.testing.assert_allclose(native.affine, t1ce.affine, atol=1e-5)
    assert nib.load(tmp_path / "out" / "Raw_7_seg_1mm.nii.gz").shape == SHAPE
    assert nib.load(tmp_path / "out" / "Raw_7_uncertain.nii.gz").shape == t1ce.shape
    assert (tmp_path / "out" / "Raw_7_registration.png").stat().st_size > 1000
    assert len(list((tmp_path / "out" / "Raw_7_preprocessed").glob("*.nii.gz"))) == 5
    report = json.loads((tmp_path / "out" / "Raw_7_report.json").read_text())
    assert report["harmonisation"]["reference"] == "T1CE"
    assert report["harmonisation"]["volumes_on"].startswith("the 1 mm grid the model labelled")
    assert report["shape"] == list(SHAPE)
    # forced off: refused as before harmonising existed, exit 2 with the grid message
    code = main(
        [
            "predict",
            str(tmp_path / "Raw_7"),
            "--output",
            str(tmp_path / "out2"),
            "--model",
            str(tiny_model_dir),
            "--no-progress",
            "--harmonise",
            "off",
        ]
    )
    assert code == 2 and "differs from scan_t1.nii.gz" in capsys.readouterr().err


def test_cli_predict_raw_dicom_series_on_different_grids(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    import pydicom
    from helpers import write_dicom_study

    made = write_raw_study(tmp_path / "nifti")
    arrays = {m: np.asarray(nib.load(made["files"][m]).dataobj) for m in MODALITIES}
    affines = {m: nib.load(made["files"][m]).affine for m in MODALITIES}
    series = write_dicom_study(tmp_path / "Raw_DICOM", arrays, affines["T1"], affines=affines)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(tmp_path / "Raw_DICOM"),
            "--output",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--no-progress",
            "--dicom-seg",
        ]
    )
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "Raw_DICOM: harmonised (T2, FLAIR on other grids than T1" in stdout
    native = nib.load(out / "Raw_DICOM_seg.nii.gz")
    assert native.shape == arrays["T1CE"].shape
    seg = pydicom.dcmread(out / "Raw_DICOM_seg.dcm")
    t1ce = pydicom.dcmread(series["T1CE"][0], stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == t1ce.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == t1ce.FrameOfReferenceUID


def test_deepbet_loads_its_weights_with_no_network() -> None:
    """Nothing is downloaded at run time: deepbet's networks load inside a network namespace without one."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(
            f"cannot make a network namespace here ({probe.stderr.decode(errors='replace').strip()[:80]})"
        )
    code = (
        # this namespace's interfaces: loopback only
        "lines = open('/proc/self/net/dev').read().splitlines()[2:]\n"
        "print(*sorted(line.split(':')[0].strip() for line in lines))\n"
        "from deepbet import BrainExtraction\nBrainExtraction(no_gpu=True)\nprint('loaded')\n"
    )
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["lo", "loaded"], done.stdout
