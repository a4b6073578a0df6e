"""The real raw clinical study TCGA-FG-6692 (skull on, three grids, 5.5 mm slices, scanner names) through
``brats-seg check`` and ``predict`` with the bundled model and no mapping; refusals of sequences that
cannot be registered. The pictures go to ``artifacts/raw/`` (the registration check, the labels over the
native T1CE). Skipped where ``../shared/data`` is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_seg.cli import main

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "raw"
NAME = "TCGA-FG-6692"


@pytest.fixture(scope="module")
def raw_study(shared_data: Path) -> Path:
    folder = shared_data / "raw" / NAME
    if not folder.is_dir():
        pytest.skip(f"raw study not found at {folder}")
    return folder


def test_check_harmonises_the_raw_study_as_predict_would(raw_study: Path, capsys) -> None:
    assert main(["check", str(raw_study)]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}: ok (raw study, harmonised in " in out and "(T2, FLAIR on other grids than T1" in out, out
    assert "T1CE slices of 5.5 mm" in out and "not skull-stripped" in out
    assert out.splitlines()[-1] == "1 study: 1 ok, 0 with warnings, 0 refused"


def test_predict_raw_study_labels_on_the_native_t1ce_grid(raw_study: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(
        ["predict", str(raw_study), "--output", str(out), "--no-progress", "--no-tta", "--save-preprocessed"]
    )
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert f"{NAME}: harmonised (" in stdout
    t1ce = nib.load(next(raw_study.glob("*_t1c.nii.gz")))
    seg = nib.load(out / f"{NAME}_seg.nii.gz")
    assert seg.shape == t1ce.shape == (256, 224, 26)
    np.testing.assert_allclose(seg.affine, t1ce.affine, atol=1e-4)
    assert nib.load(out / f"{NAME}_seg_1mm.nii.gz").shape == (230, 201, 143)
    report = json.loads((out / f"{NAME}_report.json").read_text())
    harmonised = report["harmonisation"]
    assert harmonised["skull_stripped"] is True and 1000 < harmonised["brain_mL"] < 2000
    for modality in ("T1", "T2", "FLAIR"):
        figures = harmonised["registration"][modality]
        assert figures["mutual_information_after"] > 0.15 > figures["mutual_information_before"], (
            modality,
            figures,
        )
    wt = report["volumes"]["regions"]["WT"]["mL"]
    assert wt > 5.0, wt
    # the volume on the native grid agrees with the 1 mm count within a few percent
    voxel_ml = float(np.prod(seg.header.get_zooms()[:3])) / 1000.0
    native_wt = float(np.count_nonzero(np.asarray(seg.dataobj))) * voxel_ml
    assert abs(native_wt - wt) / wt < 0.1, (native_wt, wt)
    assert not any("different studies" in w for w in report["warnings"]), report["warnings"]
    assert len(list((out / f"{NAME}_preprocessed").glob("*.nii.gz"))) == 5
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for picture in ("registration", "native"):
        shutil.copy(out / f"{NAME}_{picture}.png", ARTIFACTS / f"{NAME}_{picture}.png")


def _copy_with(raw_study: Path, target: Path, suffix: str, data=None, shift_mm: float = 0.0) -> Path:
    """The raw study copied to ``target``, the file ending in ``suffix`` replaced (data) or moved (affine)."""
    shutil.copytree(raw_study, target)
    path = next(target.glob(f"*{suffix}"))
    image = nib.load(path)
    affine = image.affine.copy()
    affine[0, 3] += shift_mm
    array = np.asarray(image.dataobj, dtype=np.float32) if data is None else data(image.shape)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("noise", "registration of FLAIR onto T1CE did not converge: mutual information inside the brain"),
        ("far", "the FLAIR field of view and the T1CE's share 0%"),
    ],
)
def test_a_flair_that_cannot_be_registered_is_refused_naming_it(
    raw_study: Path, tmp_path: Path, capsys, case: str, expected: str
) -> None:
    rng = np.random.default_rng(0)
    if case == "noise":
        path = _copy_with(
            raw_study,
            tmp_path / NAME,
            "_fla.nii.gz",
            data=lambda s: rng.uniform(0, 1000, s).astype(np.float32),
        )
    else:
        path = _copy_with(raw_study, tmp_path / NAME, "_fla.nii.gz", shift_mm=400.0)
    code = main(["check", str(tmp_path / NAME)])
    out = capsys.readouterr().out
    assert code == 2 and f"refused: {path.name}: " in out and expected in out, (
        out
    )  # check refuses what predict would
    code = main(
        ["predict", str(tmp_path / NAME), "--output", str(tmp_path / "out"), "--no-progress", "--no-tta"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"brats-seg predict: error: {path.name}: " in err and expected in err, err
    assert "Traceback" not in err


def test_raw_like_brats_case_keeps_most_of_its_dice(brats_case: Path, tmp_path: Path) -> None:
    """A real BraTS case made raw-like (each sequence moved by a known rigid transform onto a 5-6 mm grid
    of its own) and run through the raw path scores close to the case as BraTS gives it, with
    sub-millimetre registration (``benchmarks/harmonise_accuracy.py`` over six cases: see
    docs/raw-studies.md)."""
    import importlib.util

    from brats_seg.model import load_model

    spec = importlib.util.spec_from_file_location(
        "harmonise_accuracy", ROOT / "benchmarks" / "harmonise_accuracy.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    members = bench.cross_validation_members(load_model(None))
    row = bench.run_case(brats_case, members, np.random.default_rng(0), tmp_path)
    assert max(row["registration_error_mm"].values()) < 1.5, row["registration_error_mm"]
    for region in ("WT", "TC"):
        brats, raw = row["brats_path"][region]["dice"], row["raw_1mm"][region]["dice"]
        assert raw >= 0.85 * brats, (region, raw, brats)
