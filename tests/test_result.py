"""Tests for ``brats_seg.result``: the one place that turns a segmentation into files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_seg import pipeline, result
from brats_seg.errors import StudyError
from brats_seg.files import load_study, save_labels, save_uncertain
from brats_seg.model import Model, load_model
from brats_seg.result import Segmentation, complete, mime_type
from brats_seg.types import Study


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def segmented(tiny_model: Model, tiny_study_dir: Path) -> tuple[Study, Segmentation]:
    study = load_study(tiny_study_dir)
    return study, pipeline.segment(study, tiny_model)


def test_files_names_order_and_bytes(segmented, tiny_model: Model, tmp_path: Path) -> None:
    study, seg = segmented
    name = study.name
    files = seg.files(study, tiny_model)
    assert list(files) == [f"{name}_seg.nii.gz", f"{name}_report.json", f"{name}_uncertain.nii.gz"]
    # byte for byte what the files writers put in a file of that name (gzip records the name)
    expected = save_labels(seg.labels, tmp_path / f"{name}_seg.nii.gz").read_bytes()
    assert files[f"{name}_seg.nii.gz"] == expected
    uncertain = save_uncertain(seg.uncertain, seg.labels, tmp_path / f"{name}_uncertain.nii.gz").read_bytes()
    assert files[f"{name}_uncertain.nii.gz"] == uncertain
    report = json.loads(files[f"{name}_report.json"])
    assert report == json.loads(json.dumps(seg.study_report(study, tiny_model, scores=report["scores"])))
    assert set(report["scores"]) == {"ET", "TC", "WT"}  # scored against the study's ground truth
    assert "wall" not in report["timings_s"]
    assert [mime_type(f) for f in files] == ["application/gzip", "application/json", "application/gzip"]
    assert mime_type("x_seg.dcm") == "application/dicom" and mime_type("x.bin") == "application/octet-stream"


def test_files_options(segmented, tiny_model: Model) -> None:
    study, seg = segmented
    name = study.name
    files = seg.files(
        study,
        tiny_model,
        uncertain_map=False,
        views={"mode": "prediction"},
        started=time.perf_counter() - 2.0,
    )
    assert list(files) == [f"{name}_seg.nii.gz", f"{name}_report.json", f"{name}_views.png"]
    assert files[f"{name}_views.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files[f"{name}_report.json"])["timings_s"]["wall"] >= 2.0
    assert "wall" not in seg.timings  # the result itself is left as it was
    # a DICOM Segmentation of NIfTI input: left out with the reason, or refused
    problems: list[str] = []
    files = seg.files(study, tiny_model, dicom_seg=True, problems=problems)
    assert f"{name}_seg.dcm" not in files and f"{name}_seg.nii.gz" in files
    assert problems == [f"{name}: NIfTI input, so no DICOM Segmentation (its NIfTI labels were written)"]
    with pytest.raises(StudyError, match="NIfTI input, so no DICOM Segmentation"):
        seg.files(study, tiny_model, dicom_seg=True)


def test_write_puts_the_files_in_a_folder(segmented, tiny_model: Model, tmp_path: Path) -> None:
    study, seg = segmented
    paths = seg.write(tmp_path / "out", study, tiny_model)
    assert [p.name for p in paths] == list(seg.files(study, tiny_model))
    labels = nib.load(tmp_path / "out" / f"{study.name}_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(labels.dataobj), seg.labels.array)
    np.testing.assert_allclose(labels.affine, study.affine)


def test_write_puts_the_report_last_so_that_it_marks_a_complete_output(
    segmented, tiny_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, seg = segmented
    name, out = study.name, tmp_path / "out"
    written: list[str] = []
    real = result.write_atomic

    def recording(path: Path, data: bytes) -> None:
        written.append(path.name)
        real(path, data)

    monkeypatch.setattr(result, "write_atomic", recording)
    paths = seg.write(out, study, tiny_model, uncertain_map=True)
    assert written[-1] == f"{name}_report.json" and sorted(written) == sorted(p.name for p in paths)
    assert len(written) == 3 and complete(out, name) and not list(out.glob(".*"))  # no temporary file left

    def stopping(path: Path, data: bytes) -> None:  # a worker killed after the labels were written
        if not path.name.endswith("_seg.nii.gz"):
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(result, "write_atomic", stopping)
    with pytest.raises(KeyboardInterrupt):
        seg.write(tmp_path / "stopped", study, tiny_model, uncertain_map=True)
    assert (tmp_path / "stopped" / f"{name}_seg.nii.gz").is_file() and not complete(
        tmp_path / "stopped", name
    )
