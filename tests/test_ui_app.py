"""Tests for the dashboard (:class:`brats_seg.ui.App`) without a browser: real uploaded bytes, real
clicks, the tiny exported model (``tiny_model_dir``) and, marked ``data``, the real BraTS case."""

from __future__ import annotations

import gzip
import io as _io
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import brats_affine, tiny_volumes, write_dicom_series, write_dicom_study, write_nifti, zip_tree
from PIL import Image
from test_ui_support import (
    ROOT,
    all_widgets,
    check_downloads,
    check_numbers,
    make_app,
    predict_ok,
    study_files,
    upload_value,
)

from brats_seg import viz
from brats_seg.ui import App, render
from brats_seg.ui.entries import list_entries

#: The shared fixtures (``app``, ``tiny_paths``, and no test reaching the public example address).
pytest_plugins = ["test_ui_support"]


def test_importing_the_app_does_not_import_torch() -> None:
    code = "import sys, brats_seg.ui; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_stable_css_classes_and_no_icons(tmp_path: Path) -> None:
    app = App(model_dir=tmp_path, synchronous=True)
    classes = {c for w in all_widgets(app.widget) for c in getattr(w, "_dom_classes", ())}
    expected = {
        "brats-app",
        "brats-model-status",
        "brats-upload",
        "brats-example",
        "brats-files",
        "brats-predict",
        "brats-keep-parts",
        "brats-quick",
        "brats-progress",
        "brats-progress-label",
        "brats-message",
        "brats-review",
        "brats-background",
        "brats-overlay-mode",
        "brats-opacity",
        "brats-contrast",
        "brats-window",
        "brats-crosshair",
        "brats-toggle-ncr",
        "brats-toggle-ed",
        "brats-toggle-et",
        "brats-legend-errors",
        "brats-volumes",
        "brats-metrics",
        "brats-downloads",
        "brats-refresh-png",
        *(f"brats-view-{v}" for v in viz.VIEWS),
        *(f"brats-slider-{v}" for v in viz.VIEWS),
        *(f"brats-edit-{n}" for n in ("tool", "label", "radius", "only", "ball", "undo", "redo", "reset")),
        *(f"brats-edit-{n}" for n in ("uncertain", "save", "status", "cursor")),
        "brats-edit",
    }
    assert expected <= classes, expected - classes
    for w in all_widgets(app.widget):
        assert getattr(w, "icon", "") == "", f"{type(w).__name__} uses an icon (icon fonts need a CDN)"
    assert app.page.predict_button.disabled


def test_notebook_only_wires_the_app_and_has_no_outputs() -> None:
    nb = json.loads((ROOT / "app.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert 1 <= len(code) <= 3
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    source = "".join("".join(c["source"]) for c in code)
    assert "from brats_seg.ui import App" in source and "App()" in source


def test_voila_configuration() -> None:
    config = json.loads((ROOT / "voila.json").read_text())
    assert config["VoilaConfiguration"] == {
        "preheat_kernel": True,
        "default_pool_size": 1,
        "multi_kernel_manager_class": "brats_seg.kernel_cap.CappedKernelManager",
    }
    assert config["Voila"]["tornado_settings"]["websocket_max_message_size"] >= 200 * 1024**2
    assert config["MappingKernelManager"] == {"cull_idle_timeout": 1800, "cull_interval": 300}
    procfile = (ROOT / "Procfile").read_text().strip()
    assert procfile == "web: voila --port=$PORT --no-browser --Voila.ip=0.0.0.0 app.ipynb"
    assert "requirements.txt" in (ROOT / "binder" / "requirements.txt").read_text()


def test_input_warnings_are_shown_on_upload_kept_after_predict_and_cleared_by_the_next_study(
    app: App, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    app.set_files(study_files(tiny_paths))  # 32 x 32 x 24 voxels of 1 mm: 8 mL, far smaller than a brain
    assert app.state.message_kind == "info", app.state.message_text
    assert len(app.state.warnings) == 1 and app.state.warnings[0].startswith(
        "Tiny_001: the non-zero region measures 8 mL"
    )
    assert (
        "brats-msg-warning" in app.page.warnings_html.value
        and "Warning: Tiny_001" in app.page.warnings_html.value
    )
    predict_ok(app)
    assert app.state.warnings == app.state.result.segmentation.warnings == app.state.result.report["warnings"]
    assert "Warning: Tiny_001" in app.page.warnings_html.value
    # a brain-sized study (64 x 64 x 48 voxels of 2.8 mm, about 1,340 mL) has none
    shape, spacing = (64, 64, 48), (2.8, 2.8, 2.8)
    images, _ = tiny_volumes(shape)
    files = {
        f"Big_001_{m.lower()}.nii.gz": write_nifti(
            tmp_path / f"Big_001_{m.lower()}.nii.gz", images[m], brats_affine(shape, spacing)
        ).read_bytes()
        for m in images
    }
    app.set_files(files)
    assert app.state.study is not None and app.state.study.name == "Big_001", app.state.message_text
    assert app.state.warnings == [] and app.page.warnings_html.value == ""


def test_upload_predict_review_and_download(app: App, tiny_paths: dict[str, Path]) -> None:
    assert app.page.predict_button.disabled
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    assert app.state.message_kind == "info", app.state.message_text
    assert "Loaded Tiny_001" in app.state.message_text and "ground truth" in app.state.message_text
    rows = {row.children[0].value for row in app.page.files_box.children}
    assert len(rows) == 5
    assert {d.value for d in app.modality_dropdowns.values()} == {"T1", "T1CE", "T2", "FLAIR", "SEG"}
    # the scan is shown (with the ground truth) before any prediction
    assert app.views.box.layout.display == "flex"
    assert all(bytes(app.views.images[v].value).startswith(b"\x89PNG") for v in viz.VIEWS)

    progress: list[int] = []
    app.page.progress.observe(lambda change: progress.append(change["new"]), "value")
    predict_ok(app)
    assert progress and progress[-1] == 100 and progress == sorted(progress)
    assert "ready" in app.page.model_status.value
    check_numbers(app)
    shape = app.state.study.shape
    check_downloads(app, shape, app.state.study.affine)
    assert [o[1] for o in app.views.overlay.options] == ["prediction", "uncertain", "truth", "errors", "none"]
    assert app.views.overlay.value == "prediction"


def test_zip_upload(app: App, tiny_paths: dict[str, Path]) -> None:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for m, p in tiny_paths.items():
            if m != "SEG":
                z.write(p, f"Tiny_001/{p.name}")
    app.page.upload.value = upload_value({"Tiny_001.zip": buffer.getvalue()})
    assert (
        app.state.study is not None and app.state.study.name == "Tiny_001" and app.state.study.truth is None
    )
    predict_ok(app)
    check_numbers(app)
    assert [o[1] for o in app.views.overlay.options] == ["prediction", "uncertain", "none"]


def test_two_studies_in_one_upload_are_named_with_what_to_do(app: App, tiny_study) -> None:
    files = {
        **study_files(tiny_study(name="Case_A"), seg=False),
        **study_files(tiny_study(name="Case_B"), seg=False),
    }
    app.page.upload.value = upload_value(files)
    assert app.state.study is None and app.state.message_kind == "error"
    assert app.state.message_text.endswith(
        "The files name 2 studies (Case_A, Case_B): upload one study at a time, "
        'or choose "ignore" in the list next '
        "to each file of the others."
    ), app.state.message_text
    for name, dropdown in app.modality_dropdowns.items():
        if name.startswith("Case_B"):
            dropdown.value = "IGNORE"
    assert app.state.study is not None and app.state.study.name == "Case_A", app.state.message_text


def test_predict_is_disabled_until_four_sequences_are_assigned(app: App, tiny_paths: dict[str, Path]) -> None:
    three = {p.name: p.read_bytes() for m, p in tiny_paths.items() if m in ("T1", "T1CE", "T2")}
    app.page.upload.value = upload_value(three)
    assert app.page.predict_button.disabled and app.state.study is None
    assert app.state.message_kind == "error" and "missing FLAIR" in app.state.message_text
    # uploading the missing file alone would replace the three: the message says to upload them together
    assert "Each upload replaces the files before it: select the four sequences" in app.state.message_text
    app.page.predict_button.click()
    assert app.state.result is None and app.state.run_count == 0
    app.page.upload.value = upload_value(study_files(tiny_paths, seg=False))
    assert not app.page.predict_button.disabled
    predict_ok(app)


def test_dropdown_corrects_an_unrecognised_name(app: App, tiny_paths: dict[str, Path]) -> None:
    files = study_files(tiny_paths, seg=False)
    files["scan_003.nii.gz"] = files.pop(tiny_paths["T2"].name)
    app.page.upload.value = upload_value(files)
    assert app.page.predict_button.disabled
    assert "scan_003.nii.gz" in app.state.message_text and "choose" in app.state.message_text
    assert app.modality_dropdowns["scan_003.nii.gz"].value == ""
    app.modality_dropdowns["scan_003.nii.gz"].value = "T2"
    assert app.state.study is not None and app.state.study.sources["T2"] == "scan_003.nii.gz"
    predict_ok(app)


def test_dropdown_corrects_swapped_names(app: App, tiny_paths: dict[str, Path]) -> None:
    files = study_files(tiny_paths, seg=False)
    t1, t1ce = tiny_paths["T1"].name, tiny_paths["T1CE"].name
    files[t1], files[t1ce] = files[t1ce], files[t1]  # T1 content behind the T1CE name and vice versa
    app.page.upload.value = upload_value(files)
    wrong = app.state.study.images["T1"].copy()
    app.modality_dropdowns[t1].value = "T1CE"  # intermediate state: two files for T1CE
    assert app.page.predict_button.disabled and "T1CE" in app.state.message_text
    app.modality_dropdowns[t1ce].value = "T1"
    assert not app.page.predict_button.disabled
    truth_t1 = np.asarray(nib.load(tiny_paths["T1"]).dataobj, dtype=np.float32)
    np.testing.assert_array_equal(app.state.study.images["T1"], truth_t1)
    assert not np.array_equal(app.state.study.images["T1"], wrong)


def _corrupt_gzip(paths: dict[str, Path], tmp: Path) -> dict[str, bytes]:
    files = study_files(paths, seg=False)
    name = paths["T1"].name
    files[name] = files[name][: len(files[name]) // 2]
    return files


def _three_files(paths: dict[str, Path], tmp: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for m, p in paths.items() if m in ("T1", "T2", "FLAIR")}


def _mismatched_shapes(paths: dict[str, Path], tmp: Path) -> dict[str, bytes]:
    files = study_files(paths, seg=False)
    images, _ = tiny_volumes((30, 32, 24), seed=5)
    other = write_nifti(tmp / paths["FLAIR"].name, images["FLAIR"], brats_affine((30, 32, 24)))
    files[other.name] = other.read_bytes()
    return files


def _not_nifti_content(paths: dict[str, Path], tmp: Path) -> dict[str, bytes]:
    files = study_files(paths, seg=False)
    png = _io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    files[paths["T2"].name] = gzip.compress(png.getvalue())
    return files


def _not_nifti_name(paths: dict[str, Path], tmp: Path) -> dict[str, bytes]:
    return {**study_files(paths, seg=False), "notes.txt": b"some notes"}


def _seg_label_3(paths: dict[str, Path], tmp: Path) -> dict[str, bytes]:
    files = study_files(paths, seg=False)
    seg = np.asarray(nib.load(paths["SEG"]).dataobj).copy()
    seg[seg == 4] = 3
    bad = write_nifti(tmp / paths["SEG"].name, seg.astype(np.uint8), brats_affine(seg.shape))
    files[bad.name] = bad.read_bytes()
    return files


def _zip_escaping(paths: dict[str, Path], tmp: Path) -> dict[str, bytes]:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for m, p in paths.items():
            z.write(p, f"Tiny_001/{p.name}" if m != "T1" else f"../{p.name}")
    return {"Tiny_001.zip": buffer.getvalue()}


BAD_UPLOADS = {
    "corrupt_gzip": (_corrupt_gzip, "corrupt or truncated gzip"),
    "three_files": (_three_files, "missing T1CE"),
    "not_nifti_content": (_not_nifti_content, "not a NIfTI file"),
    "not_nifti_name": (_not_nifti_name, "notes.txt: not a NIfTI file name"),
    "seg_label_3": (_seg_label_3, "unexpected label values 3"),
    "zip_escaping": (_zip_escaping, "outside the archive folder"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_upload_shows_a_message_and_the_app_stays_usable(
    kind: str, app: App, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    make, expected = BAD_UPLOADS[kind]
    bad = tmp_path / "bad"
    bad.mkdir()
    app.page.upload.value = upload_value(make(tiny_paths, bad))
    assert app.state.message_kind == "error"
    assert re.search(expected, app.state.message_text), app.state.message_text
    assert "Traceback" not in app.state.message_text and "Unexpected" not in app.state.message_text
    assert app.page.predict_button.disabled and app.state.study is None
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)


def test_sequences_on_different_grids_are_harmonised_or_refused_as_chosen(
    app: App, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    """auto (the default): preprocessed, and the section says so; never: refused as before harmonising
    existed."""
    bad = tmp_path / "bad"
    bad.mkdir()
    files = _mismatched_shapes(tiny_paths, bad)
    app.harmonise_panel.mode.value = "off"
    app.page.upload.value = upload_value(files)
    assert app.state.message_kind == "error"
    assert re.search(r"shape \(30, 32, 24\) differs", app.state.message_text), app.state.message_text
    assert (
        app.page.predict_button.disabled
        and app.state.study is None
        and app.harmonise_panel.box.layout.display == "none"
    )
    app.harmonise_panel.mode.value = "auto"  # the choice reloads the files
    assert app.state.message_kind == "info" and "Raw study: preprocessed" in app.state.message_text, (
        app.state.message_text
    )
    assert (
        app.harmonise_panel.box.layout.display == "flex" and app.harmonise_panel.check.value[:4] == b"\x89PNG"
    )
    assert "FLAIR on other grids than T1" in app.harmonise_panel.summary.value
    assert app.page.progress_label.value.startswith("Preprocessed in ")
    predict_ok(app)
    assert f"{app.state.study.name}_seg_1mm.nii.gz" in app.state.result.downloads
    native = app.state.result.segmentation.native
    assert native is not None and native.shape == (32, 32, 24)  # the T1CE's own grid
    assert app.harmonise_panel.native.layout.display == ""


def test_unexpected_error_is_a_short_message_and_the_app_recovers(
    app: App, tiny_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import brats_seg.pipeline

    app.page.upload.value = upload_value(list(tiny_paths.values()))
    real = brats_seg.pipeline.segment

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)\nwith a second line")

    monkeypatch.setattr(brats_seg.pipeline, "segment", broken)
    app.page.predict_button.click()
    assert app.state.message_kind == "error"
    assert app.state.message_text.startswith(
        "Internal error of brats-seg, not a problem found in your files "
        "(RuntimeError: CUDA out of memory (simulated))"
    )
    assert "second line" not in app.state.message_text and "Traceback" not in app.state.message_text
    assert app.page.progress.bar_style == "danger" and not app.busy
    monkeypatch.setattr(brats_seg.pipeline, "segment", real)
    predict_ok(app)


def test_the_page_scrolls_to_the_review_once_after_a_studys_first_prediction(
    app: App, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    """The review section is below the fold: the first Predict of a study brings it into view (by a
    JavaScript output in a hidden Output widget, which Voilà runs); slider moves and a second Predict
    leave the page where the user scrolled it."""
    assert app.page.scroller.layout.display == "none" and app.page.scroller in all_widgets(app.widget)
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    assert app.page.scroller.outputs == () and app.state.scroll_count == 0  # loading a study does not scroll
    predict_ok(app)
    assert app.state.scroll_count == 1
    (output,) = app.page.scroller.outputs
    assert output["output_type"] == "display_data"
    code = output["data"]["application/javascript"]
    assert render.SCROLL_TO_REVIEW_JS in code and "brats-seg scroll 1" in code
    assert ".brats-review" in code and "scrollIntoView" in code
    app.views.move("axial", 1)
    predict_ok(app)
    assert app.state.scroll_count == 1 and app.page.scroller.outputs == (output,)
    # a new study: its first prediction scrolls again, with an output the widget sends anew
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)
    assert (
        app.state.scroll_count == 2
        and "brats-seg scroll 2" in app.page.scroller.outputs[0]["data"]["application/javascript"]
    )
    # a prediction that fails does not scroll
    broken = make_app(tmp_path / "no_model", tmp_path / "broken")
    broken.page.upload.value = upload_value(list(tiny_paths.values()))
    broken.page.predict_button.click()
    assert (
        broken.state.message_kind == "error"
        and broken.state.scroll_count == 0
        and broken.page.scroller.outputs == ()
    )


def test_a_second_click_while_running_starts_nothing(app: App, tiny_paths: dict[str, Path]) -> None:
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    states: list[bool] = []

    def click_again(change) -> None:
        states.append(app.page.predict_button.disabled)
        app.page.predict_button.click()

    app.page.progress.observe(click_again, "value")
    predict_ok(app)
    assert app.state.run_count == 1
    assert states and all(states)  # disabled while running
    assert not app.page.predict_button.disabled


def test_background_thread_run_updates_progress_and_runs_once(
    tiny_model_dir: Path, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    app = App(model_dir=tiny_model_dir, cache_dir=tmp_path, synchronous=False)
    assert app._model_thread is not None
    app._model_thread.join(60)
    assert "ready" in app.page.model_status.value
    assert f"{torch.get_num_threads()} CPU thread(s)" in app.page.model_status.value
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    app.page.predict_button.click()
    app.page.predict_button.click()
    assert app.page.predict_button.disabled or app.state.result is not None
    app.wait(60)
    assert app.state.run_count == 1
    assert app.state.result is not None and app.page.progress.value == 100 and not app.busy
    assert not app.page.predict_button.disabled


@pytest.fixture(scope="module")
def real_app(brats_case: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> App:
    app = make_app(tiny_model_dir, tmp_path_factory.mktemp("real_app"))
    app.page.upload.value = upload_value(sorted(brats_case.iterdir()))
    assert app.state.message_kind == "info", app.state.message_text
    start = time.perf_counter()
    # One torch thread: with another process busy on this 2-core machine, two OpenMP threads on the
    # tiny model's 16^3 windows thrash (about 90 s instead of 1 s). The app's behaviour is the same.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict_ok(app)
    finally:
        torch.set_num_threads(threads)
    print(
        f"\nreal case: predict + volumes + scores + downloads {time.perf_counter() - start:.1f} s "
        f"(segment timings {app.state.result.segmentation.timings})"
    )
    return app


@pytest.mark.data
def test_real_case_labels_numbers_and_downloads(real_app: App) -> None:
    assert real_app.state.study.shape == (240, 240, 155)
    assert real_app.state.result.segmentation.labels.shape == (240, 240, 155)
    check_numbers(real_app, rescore=False)
    assert set(real_app.scores_shown()) == {"ET", "TC", "WT"}
    check_downloads(real_app, (240, 240, 155), real_app.state.study.affine)


@pytest.mark.data
def test_real_case_slider_redraw_time(real_app: App) -> None:
    viewer = real_app.views.viewer
    real_app.views.crosshair.value = True
    for view in viz.VIEWS:
        composed = dict(viewer.composed)
        start = real_app.views.sliders[view].value
        times = []
        for step in range(1, 21):
            index = (start + (step if step % 2 else -step)) % viewer.shape[viz.VIEW_AXIS[view]]
            times.append(real_app.views.move(view, index))
        assert viewer.composed[view] == composed[view] + 20
        assert all(viewer.composed[v] == composed[v] for v in viz.VIEWS if v != view)
        ms = np.array(times) * 1000
        print(
            f"\nredraw per {view} slider move (240x240x155, crosshair on, 3 PNGs): "
            f"mean {ms.mean():.1f} ms, median {np.median(ms):.1f} ms, max {ms.max():.1f} ms"
        )


def test_dicom_zip_upload_lists_series_and_offers_a_dicom_seg(app: App, tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    images, _ = tiny_volumes((32, 32, 24), seed=4)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    files = write_dicom_study(tmp_path / "Dicom_01", images, affine, descriptions={"T2": "sequence three"})
    first = pydicom.dcmread(files["T1"][0])
    write_dicom_series(
        tmp_path / "Dicom_01" / "S5",
        images["T1"],
        affine,
        description="3-plane localizer",
        series_number=5,
        study_uid=first.StudyInstanceUID,
        frame_uid=first.FrameOfReferenceUID,
    )
    app.page.upload.value = upload_value({"Dicom_01.zip": zip_tree(tmp_path / "Dicom_01")})
    labels = [e.label for e in app.state.entries]
    assert labels == [
        "series 1 'AX T1 SE' (24 files)",
        "series 2 'AX T1 POST GD' (24 files)",
        "series 3 'sequence three' (24 files)",
        "series 4 'AX T2 FLAIR' (24 files)",
        "series 5 '3-plane localizer' (24 files)",
    ]
    dropdowns = [app.modality_dropdowns[e.name].value for e in app.state.entries]
    assert dropdowns == ["T1", "T1CE", "IGNORE", "FLAIR", "IGNORE"]
    assert app.state.study is None and app.page.predict_button.disabled
    assert (
        "no series for T2" in app.state.message_text and "series 3 'sequence three'" in app.state.message_text
    )
    app.modality_dropdowns[app.state.entries[2].name].value = "T2"
    assert app.state.study is not None and app.state.study.name == "Dicom_01"
    assert app.state.study.sources["T2"] == "series 3 'sequence three' (24 files)"
    predict_ok(app)
    downloads = app.downloads()
    assert set(downloads) == {
        "Dicom_01_seg.nii.gz",
        "Dicom_01_uncertain.nii.gz",
        "Dicom_01_report.json",
        "Dicom_01_views.png",
        "Dicom_01_seg.dcm",
    }
    seg = hd.seg.segread(_io.BytesIO(downloads["Dicom_01_seg.dcm"]))
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == first.StudyInstanceUID
    assert "Segmentation (DICOM SEG)" in app.page.downloads_html.value


def test_dicom_zip_with_an_unreadable_member_and_no_frame_of_reference(app: App, tmp_path: Path) -> None:
    """A member the zip module cannot open is left out of the list (loading names it); a study whose
    headers cannot make a DICOM SEG still predicts, with the NIfTI download and a note."""
    import pydicom

    images, _ = tiny_volumes((32, 32, 24), seed=8)
    files = write_dicom_study(tmp_path / "Dicom_02", images, np.diag([-1.0, -1.0, 1.0, 1.0]))
    for series in files.values():
        for p in series:
            ds = pydicom.dcmread(p)
            del ds.FrameOfReferenceUID
            ds.save_as(p)
    data = bytearray(zip_tree(tmp_path / "Dicom_02"))
    odd = bytearray(data)
    odd[8:10] = (9).to_bytes(2, "little")  # first member's local header: deflate64, which zipfile cannot read
    central = odd.find(b"PK\x01\x02")
    odd[central + 10 : central + 12] = (9).to_bytes(2, "little")
    entries = list_entries({"odd.zip": bytes(odd)})
    assert len(entries) == 4 and entries[0].label == "series 1 'AX T1 SE' (23 files)"
    app.page.upload.value = upload_value({"Dicom_02.zip": bytes(data)})
    assert app.state.study is not None
    predict_ok(app)
    assert set(app.downloads()) == {
        "Dicom_02_seg.nii.gz",
        "Dicom_02_uncertain.nii.gz",
        "Dicom_02_report.json",
        "Dicom_02_views.png",
    }
    assert (
        "No DICOM SEG download" in app.state.message_text and "FrameOfReferenceUID" in app.state.message_text
    )


def test_predict_waits_its_turn_behind_another_sessions_job(
    app: App, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    """Another kernel's job (a ticket of a live process) runs first; this session shows its place, then
    predicts."""
    import os
    import threading

    from brats_seg.turns import Turns

    app.turns = Turns(tmp_path / "turns", poll_s=0.05)
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    (tmp_path / "turns").mkdir()
    other = tmp_path / "turns" / f"{0:020d}-{os.getpid()}-othersession.ticket"
    other.touch()
    labels: list[str] = []
    app.page.progress_label.observe(lambda change: labels.append(change["new"]), "value")
    threading.Timer(0.6, other.unlink).start()
    predict_ok(app)
    assert any(
        v.startswith("Waiting for 1 other job on this server to finish (place 1 in the queue") for v in labels
    ), labels
    assert (
        "waited " in app.page.progress_label.value and "for other sessions" in app.page.progress_label.value
    )
