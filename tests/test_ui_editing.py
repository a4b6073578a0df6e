"""Correcting the labels in the dashboard (no browser).

Strokes, undo/redo, erase, volumes, downloads, saving.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_ui_support import check_numbers, make_app, parse_links, predict_ok, study_files, upload_value

from brats_seg import report, viz
from brats_seg.editing import brush_mask
from brats_seg.files import load_study
from brats_seg.ui import App

pytest_plugins = ["test_ui_support"]


def _nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


@pytest.fixture
def predicted(app: App, tiny_paths: dict[str, Path]) -> App:
    app.page.upload.value = upload_value(study_files(tiny_paths, seg=False))
    predict_ok(app)
    return app


def _centre_pixel(app: App, view: str) -> tuple[float, float]:
    rgb = app.views.viewer.rgb(view)
    return rgb.shape[1] / 2, rgb.shape[0] / 2


def _expected_stroke(app: App, view: str, xy: tuple[float, float], radius_mm: float) -> np.ndarray:
    """The voxels (canonical grid) a one-point brush stroke at pixel ``xy`` covers, computed independently."""
    viewer = app.views.viewer
    voxel = viewer.voxel_at(view, *xy)
    axis = viz.VIEW_AXIS[view]
    u, v = (voxel[a] for a in range(3) if a != axis)
    return brush_mask(
        viewer.shape,
        spacing=viewer.spacing,
        axis=axis,
        index=voxel[axis],
        points=[(u, v)],
        radius_mm=radius_mm,
    )


def test_the_panel_appears_with_a_prediction_and_says_the_labels_are_the_models(predicted: App) -> None:
    panel = predicted.edit_panel
    assert panel.box.layout.display == "flex" and panel.editor is not None
    assert "the model's labels" in panel.controls["status"].value
    assert panel.controls["undo"].disabled and panel.controls["reset"].disabled
    assert np.array_equal(panel.labels(), predicted.state.result.segmentation.labels.array)


def test_a_stroke_of_known_radius_changes_exactly_the_expected_voxels(predicted: App) -> None:
    app, panel = predicted, predicted.edit_panel
    before = panel.labels().copy()
    panel.controls["tool"].value, panel.controls["label"].value, panel.controls["radius"].value = (
        "brush",
        1,
        6.0,
    )
    xy = _centre_pixel(app, "axial")
    expected = viz.from_canonical(_expected_stroke(app, "axial", xy, 6.0), app.state.study.affine)
    seconds = panel.stroke("axial", [xy])
    after = panel.labels()
    assert np.array_equal(after != before, expected & (before != 1))
    assert (after[expected] == 1).all() and np.array_equal(after[~expected], before[~expected])
    spacing = app.views.viewer.spacing
    axis = viz.VIEW_AXIS["axial"]
    area = np.prod([s for a, s in enumerate(spacing) if a != axis])
    assert abs(expected.sum() - math.pi * 36 / area) / (math.pi * 36 / area) < 0.15
    print(f"\ntiny study: mouse-up to three redrawn views {seconds * 1000:.1f} ms")


def test_undo_redo_and_reset_restore_the_labels_byte_for_byte(predicted: App) -> None:
    panel = predicted.edit_panel
    model = panel.labels().tobytes()
    panel.controls["tool"].value = "brush"
    panel.stroke("axial", [_centre_pixel(predicted, "axial"), (5.0, 5.0)])
    edited = panel.labels().tobytes()
    assert edited != model and not panel.controls["undo"].disabled
    panel.undo()
    assert panel.labels().tobytes() == model and not panel.controls["redo"].disabled
    panel.redo()
    assert panel.labels().tobytes() == edited
    panel.reset()
    assert panel.labels().tobytes() == model
    panel.undo()
    assert panel.labels().tobytes() == edited


def test_erasing_one_label_leaves_the_others(predicted: App) -> None:
    app, panel = predicted, predicted.edit_panel
    labels = panel.labels().copy()
    present = [v for v in (1, 2, 4) if (labels == v).any()]
    assert len(present) >= 2, "the tiny model should predict two labels"
    target = present[0]
    c = panel.controls
    c["tool"].value, c["label"].value, c["only"].value, c["radius"].value = "erase", target, True, 50.0
    axis = viz.VIEW_AXIS["axial"]
    canonical = viz.to_canonical(labels, app.state.study.affine)
    app.views.move(
        "axial", int(np.argmax((canonical == target).sum(axis=tuple(a for a in range(3) if a != axis))))
    )
    panel.stroke("axial", [_centre_pixel(app, "axial")])
    after = panel.labels()
    changed = after != labels
    assert changed.any() and (labels[changed] == target).all() and (after[changed] == 0).all()


def test_volumes_report_and_downloads_follow_the_correction(predicted: App) -> None:
    app, panel = predicted, predicted.edit_panel
    ed_before = app.volumes_shown()["ED"]["prediction"]
    panel.controls["tool"].value, panel.controls["label"].value, panel.controls["radius"].value = (
        "brush",
        2,
        8.0,
    )
    panel.stroke("axial", [_centre_pixel(app, "axial"), (10.0, 10.0)])
    corrected = panel.labels()
    changed = int((corrected != app.state.result.model_segmentation.labels.array).sum())
    seg = app.state.result.segmentation
    assert np.array_equal(seg.labels.array, corrected)
    check_numbers(app)  # the tables show report.volumes / metrics.score of the corrected labels
    assert app.volumes_shown()["ED"]["prediction"] > ed_before
    assert f"corrected ({changed} voxels changed)" in app.page.volumes_table.value
    assert f"corrected ({changed} voxels changed)" in panel.controls["status"].value
    files = app.downloads()
    assert parse_links(app.page.downloads_html.value) == files
    name = app.state.study.name
    img = _nifti(files[f"{name}_seg.nii.gz"])
    assert np.array_equal(np.asanyarray(img.dataobj), corrected)
    assert np.allclose(img.affine, app.state.study.affine)
    rep = json.loads(files[f"{name}_report.json"])
    assert rep["correction"]["changed_voxels"] == changed and rep["correction"]["model"]
    assert sum(v for k, v in rep["correction"]["changed_voxels_by_label"].items() if k != "total") == changed
    assert "person" in rep["correction"]["corrected_by"]
    assert rep["volumes"] == json.loads(json.dumps(report.volumes(seg.labels)))
    panel.reset()  # back to the model's labels: no correction in the report
    rep = json.loads(app.downloads()[f"{name}_report.json"])
    assert "correction" not in rep and "corrected (" not in app.page.volumes_table.value


def test_with_the_view_tool_clicks_move_the_crosshair_and_with_a_brush_they_paint(predicted: App) -> None:
    app, panel = predicted, predicted.edit_panel
    viewer = app.views.viewer
    start = list(viewer.position)
    app.views.on_click("axial", {"type": "click", "dataX": 3.0, "dataY": 3.0})
    assert viewer.position != start
    moved = list(viewer.position)
    panel.controls["tool"].value = "brush"
    panel._on_press("axial", {"type": "mousedown", "dataX": 40.0, "dataY": 40.0, "buttons": 1})
    panel._on_move("axial", {"type": "mousemove", "dataX": 60.0, "dataY": 45.0, "buttons": 1})
    panel._on_press("axial", {"type": "mouseup", "dataX": 60.0, "dataY": 45.0})
    app.views.on_click("axial", {"type": "click", "dataX": 60.0, "dataY": 45.0})
    assert viewer.position == moved and panel.editor.changed_voxels() > 0
    panel.controls["tool"].value = "view"
    assert panel.stroke("axial", [(20.0, 20.0)]) == 0.0  # the view tool never paints


def test_next_uncertain_slice_steps_through_the_most_uncertain_slices(predicted: App) -> None:
    app, panel = predicted, predicted.edit_panel
    uncertain = app.views.viewer.labels.get("uncertain")
    if uncertain is None or not uncertain.any():
        assert panel.next_uncertain() is None
        return
    axis = viz.VIEW_AXIS["axial"]
    counts = uncertain.sum(axis=tuple(a for a in range(3) if a != axis))
    first = panel.next_uncertain()
    assert first == int(np.argmax(counts)) and app.views.viewer.position[axis] == first
    assert app.views.sliders["axial"].value == first


def test_save_for_training_writes_the_study_and_its_corrections(
    predicted: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, panel = predicted, predicted.edit_panel
    monkeypatch.setenv("BRATS_SEG_CORRECTIONS_DIR", str(tmp_path / "corrections"))
    panel.controls["tool"].value, panel.controls["label"].value = "brush", 4
    panel.stroke("axial", [_centre_pixel(app, "axial")])
    panel.controls["save"].click()
    assert app.state.message_kind == "info" and "corrections/" in app.state.message_text
    case = next((tmp_path / "corrections").iterdir())
    saved = load_study(case)
    assert np.array_equal(saved.truth, panel.labels()) and np.allclose(saved.affine, app.state.study.affine)


def test_a_new_prediction_starts_from_the_models_labels_again(predicted: App) -> None:
    panel = predicted.edit_panel
    panel.controls["tool"].value = "brush"
    panel.stroke("axial", [_centre_pixel(predicted, "axial")])
    predicted.page.predict_button.click()
    assert panel.editor.changed_voxels() == 0 and predicted.state.result.segmentation.correction is None


@pytest.mark.data
def test_real_case_stroke_latency(brats_case: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Mouse-up to three redrawn views, and to updated tables and downloads, on a 240x240x155 study."""
    import torch

    app = make_app(tiny_model_dir, tmp_path)
    app.page.upload.value = upload_value(sorted(brats_case.iterdir()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict_ok(app)
    finally:
        torch.set_num_threads(threads)
    panel = app.edit_panel
    panel.controls["tool"].value, panel.controls["radius"].value = "brush", 5.0
    timings = []
    for i in range(3):
        start = time.perf_counter()
        redraw = panel.stroke("axial", [(100.0 + 20 * i, 120.0), (140.0 + 20 * i, 160.0)])
        timings.append((redraw, time.perf_counter() - start))
    assert panel.editor.changed_voxels() > 0
    name = app.state.study.name
    img = _nifti(app.downloads()[f"{name}_seg.nii.gz"])
    assert np.array_equal(np.asanyarray(img.dataobj), panel.labels())
    print(
        "\nreal case, per stroke: mouse-up to redrawn views "
        + ", ".join(f"{r * 1000:.0f} ms" for r, _ in timings)
        + "; whole stroke with tables and downloads "
        + ", ".join(f"{t:.2f} s" for _, t in timings)
    )


def test_the_pointer_shows_the_brush_at_its_size_on_the_screen(predicted: App) -> None:
    panel, viewer = predicted.edit_panel, predicted.views.viewer
    width = 300.0  # the axial image's width on the page, as the browser reports it
    panel._on_press("axial", {"type": "mouseenter", "boundingRectWidth": width})
    assert panel.controls["cursor"].value == ""  # the View tool keeps the usual pointer
    panel.controls["tool"].value, panel.controls["radius"].value = "brush", 4.0
    col_axis, _ = viz.in_plane_axes(viz.VIEW_AXIS["axial"])
    radius_px = 4.0 * width / (viewer.shape[col_axis] * viewer.spacing[col_axis])
    style = panel.controls["cursor"].value
    assert (
        style.startswith("<style>") and ".brats-view-axial {cursor: url(data:image/svg+xml;base64," in style
    )
    import base64

    svg = base64.b64decode(style.split("base64,", 1)[1].split(")", 1)[0]).decode()
    assert f"r='{radius_px:.1f}'" in svg
    panel.controls["radius"].value = 20.0 * 50  # larger than a cursor can be: a plain crosshair
    assert "cursor: crosshair" in panel.controls["cursor"].value


def test_a_dicom_study_downloads_its_corrections_as_a_dicom_seg(app: App, tmp_path: Path) -> None:
    import io

    import highdicom as hd
    from helpers import tiny_volumes, write_dicom_study, zip_tree

    images, _ = tiny_volumes((32, 32, 24), seed=4)
    write_dicom_study(tmp_path / "Dicom_01", images, np.diag([-1.0, -1.0, 1.0, 1.0]))
    app.page.upload.value = upload_value({"Dicom_01.zip": zip_tree(tmp_path / "Dicom_01")})
    predict_ok(app)
    panel = app.edit_panel
    panel.controls["tool"].value, panel.controls["label"].value, panel.controls["radius"].value = (
        "brush",
        4,
        5.0,
    )
    panel.stroke("axial", [_centre_pixel(app, "axial")])
    corrected = panel.labels()
    seg = hd.seg.segread(io.BytesIO(app.downloads()["Dicom_01_seg.dcm"]))
    numbers = {s.SegmentNumber: s.SegmentLabel for s in seg.SegmentSequence}
    et = next(n for n, label in numbers.items() if "enhancing" in label.lower() or "ET" in label)
    volume = seg.get_volume(segment_numbers=[et], combine_segments=False).array
    assert int(np.count_nonzero(volume)) == int((corrected == 4).sum()) > 0
