"""Tests for the dashboard (``brats_seg.ui``) without a browser: real uploaded bytes, real clicks,
the tiny exported model (``tiny_model_dir``) and, marked ``data``, the real BraTS case."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import html
import io as _io
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path

import ipywidgets as widgets
import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import brats_affine, tiny_volumes, write_dicom_series, write_dicom_study, write_nifti, zip_tree
from PIL import Image

from brats_seg import metrics, report, viz
from brats_seg.ui import App, example, render
from brats_seg.ui.entries import list_entries, upload_files
from brats_seg.ui.example import ExampleError, ExampleUnreachable, fetch_example

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def parse_table(text: str) -> dict[str, dict[str, float]]:
    """Read back a table of ``render.volumes_html`` or ``render.scores_html``: row -> column -> value."""
    out: dict[str, dict[str, float]] = {}
    for row, body in re.findall(r'<tr data-row="([^"]+)">(.*?)</tr>', text, flags=re.S):
        out[row] = {c: float(v) for c, v in re.findall(r'data-col="([^"]+)" data-value="([^"]+)"', body)}
    return out


def parse_links(text: str) -> dict[str, bytes]:
    """Decode the ``data:`` links of an HTML fragment: download name -> bytes."""
    links = re.findall(r'download="([^"]+)" href="data:[^;"]+;base64,([^"]+)"', text)
    return {html.unescape(name): base64.b64decode(payload) for name, payload in links}


def upload_value(files: Mapping[str, bytes | Path] | list[Path]) -> tuple[dict, ...]:
    """A ``FileUpload.value`` as ipywidgets 8 makes it from the browser's files."""
    if not isinstance(files, Mapping):
        files = {Path(p).name: Path(p) for p in files}
    now = dt.datetime.now(dt.UTC)
    value = []
    for name, data in files.items():
        content = data.read_bytes() if isinstance(data, Path) else bytes(data)
        value.append(
            {
                "name": name,
                "type": "application/octet-stream",
                "size": len(content),
                "content": memoryview(content),
                "last_modified": now,
            }
        )
    return tuple(value)


def study_files(paths: Mapping[str, Path], *, seg: bool = True) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for m, p in paths.items() if seg or m != "SEG"}


def make_app(model_dir: Path, tmp_path: Path, **kwargs) -> App:
    return App(model_dir=model_dir, cache_dir=tmp_path / "cache", synchronous=True, **kwargs)


def check_downloads(app: App, study_shape: tuple[int, ...], affine: np.ndarray) -> dict[str, bytes]:
    """The download links decode to NIfTI label and uncertain maps with the study's geometry, a JSON report and a PNG."""
    files = app.downloads()
    assert parse_links(app.page.downloads_html.value) == files  # the page's links hold the files the app keeps
    name = app.state.study.name
    assert set(files) == {f"{name}_seg.nii.gz", f"{name}_uncertain.nii.gz", f"{name}_report.json", f"{name}_views.png"}
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, expected in [("seg", app.state.result.segmentation.labels.array), ("uncertain", app.state.result.segmentation.uncertain)]:
            path = Path(tmp) / f"{name}_{suffix}.nii.gz"
            path.write_bytes(files[path.name])
            image = nib.load(path)
            assert image.shape == study_shape
            np.testing.assert_allclose(image.affine, affine, atol=1e-5)
            data = np.asarray(image.dataobj)
            np.testing.assert_array_equal(data, expected)
            assert set(np.unique(data).tolist()) <= ({0, 1, 2, 4} if suffix == "seg" else {0, 1})
        assert data.any(), "the tiny model is uncertain somewhere"
        assert b"hesitation 0/1" in image.header["descrip"].tobytes() and image.header["cal_max"] == 1
    assert "Uncertain voxels (NIfTI)" in app.page.downloads_html.value
    rep = json.loads(files[f"{name}_report.json"])
    assert rep["study"] == name and rep["shape"] == list(study_shape)
    assert rep["volumes"] == json.loads(json.dumps(app.state.result.volumes))
    png = Image.open(_io.BytesIO(files[f"{name}_views.png"]))
    assert png.format == "PNG" and png.size[0] > 600
    return files


def check_numbers(app: App, *, rescore: bool = True) -> None:
    """The tables show exactly report.volumes / metrics.score of the label map (``rescore=False``:
    compare the scores with those the app computed, to save an HD95 on a big volume)."""
    labels = app.state.result.segmentation.labels
    vols = report.volumes(labels)
    shown = app.volumes_shown()
    assert parse_table(app.page.volumes_table.value) == shown  # the page shows the numbers the app keeps
    assert parse_table(app.page.metrics_table.value) == app.scores_shown()
    assert list(shown) == ["NCR", "ED", "ET", "TC", "WT"]
    for name, _, ml in report.volumes_table(vols):
        assert shown[name]["prediction"] == ml
    volume_range = app.state.result.segmentation.volume_range
    if volume_range is not None:  # the range column shows the pipeline's volumes at the other thresholds
        for (section, name), row in zip(report.TABLE_ROWS, shown.values(), strict=True):
            assert (row["range_low"], row["range_high"]) == (min(volume_range[section][name]), max(volume_range[section][name]))
        assert "it is not a confidence interval" in app.page.volumes_table.value
    if app.state.study.truth is not None:
        truth_vols = report.volumes(app.state.study.truth_map)
        for name, _, ml in report.volumes_table(truth_vols):
            assert shown[name]["truth"] == ml
        scores = metrics.score(labels, app.state.study.truth_map) if rescore else app.state.result.scores
        assert app.scores_shown() == {r: {"dice": s["dice"], "hd95": s["hd95"]} for r, s in scores.items()}
    else:
        assert app.scores_shown() == {}


def predict_ok(app: App) -> None:
    """Predict is enabled, a click runs it, and the result has the input's shape."""
    assert not app.page.predict_button.disabled, app.state.message_text
    app.page.predict_button.click()
    assert app.state.message_kind == "info", app.state.message_text
    assert app.state.result is not None
    assert app.state.result.segmentation.labels.shape == app.state.study.shape
    assert app.page.progress.value == 100 and app.page.progress_label.value.startswith("Done")


def all_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    out, stack = [], [root]
    while stack:
        w = stack.pop()
        out.append(w)
        stack.extend(getattr(w, "children", ()))
    return out


@pytest.fixture
def tiny_paths(tiny_study) -> dict[str, Path]:
    return tiny_study()


@pytest.fixture
def app(tiny_model_dir: Path, tmp_path: Path) -> App:
    return make_app(tiny_model_dir, tmp_path)


# --------------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------------


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
    assert config["VoilaConfiguration"] == {"preheat_kernel": True, "default_pool_size": 1,
                                            "multi_kernel_manager_class": "brats_seg.kernel_cap.CappedKernelManager"}
    assert config["Voila"]["tornado_settings"]["websocket_max_message_size"] >= 200 * 1024**2
    assert config["MappingKernelManager"] == {"cull_idle_timeout": 1800, "cull_interval": 300}
    procfile = (ROOT / "Procfile").read_text().strip()
    assert procfile == "web: voila --port=$PORT --no-browser --Voila.ip=0.0.0.0 app.ipynb"
    assert "requirements.txt" in (ROOT / "binder" / "requirements.txt").read_text()


def test_upload_files_accepts_both_ipywidgets_formats() -> None:
    assert upload_files(upload_value({"a_t1.nii.gz": b"x"})) == {"a_t1.nii.gz": memoryview(b"x")}
    assert upload_files({"a.nii": {"content": b"y"}}) == {"a.nii": b"y"}
    assert upload_files(()) == {}


def test_list_entries_reads_zip_members_like_io(tiny_paths: dict[str, Path]) -> None:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for p in tiny_paths.values():
            z.write(p, f"Tiny_001/{p.name}")
        z.writestr("__MACOSX/Tiny_001/._Tiny_001_t1.nii.gz", b"junk")
        z.writestr("Tiny_001/.DS_Store", b"junk")
        z.writestr("Tiny_001/notes.txt", b"hello")
    entries = list_entries({"study.zip": buffer.getvalue()})
    assert sorted((e.name, e.detected) for e in entries) == sorted((p.name, m) for m, p in tiny_paths.items())
    assert all(e.source == "study.zip" and e.nifti for e in entries)
    assert list_entries({"broken.zip": b"PK nonsense"})[0].nifti is False


# --------------------------------------------------------------------------------------------------
# Upload, predict, numbers, downloads (tiny study)
# --------------------------------------------------------------------------------------------------


def test_input_warnings_are_shown_on_upload_kept_after_predict_and_cleared_by_the_next_study(
    app: App, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    app.set_files(study_files(tiny_paths))  # 32 x 32 x 24 voxels of 1 mm: 8 mL, far smaller than a brain
    assert app.state.message_kind == "info", app.state.message_text
    assert len(app.state.warnings) == 1 and app.state.warnings[0].startswith("Tiny_001: the non-zero region measures 8 mL")
    assert "brats-msg-warning" in app.page.warnings_html.value and "Warning: Tiny_001" in app.page.warnings_html.value
    predict_ok(app)
    assert app.state.warnings == app.state.result.segmentation.warnings == app.state.result.report["warnings"]
    assert "Warning: Tiny_001" in app.page.warnings_html.value
    # a brain-sized study (64 x 64 x 48 voxels of 2.8 mm, about 1,340 mL) has none
    shape, spacing = (64, 64, 48), (2.8, 2.8, 2.8)
    images, _ = tiny_volumes(shape)
    files = {f"Big_001_{m.lower()}.nii.gz": write_nifti(tmp_path / f"Big_001_{m.lower()}.nii.gz", images[m],
                                                        brats_affine(shape, spacing)).read_bytes() for m in images}
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


def test_views_open_on_the_largest_tumour_and_sliders_redraw_only_the_moved_view(
    app: App, tiny_paths: dict[str, Path]
) -> None:
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)
    viewer = app.views.viewer
    canon = viz.to_canonical(app.state.result.segmentation.labels.array, app.state.study.affine)
    expected = (
        viz.largest_tumour_slices(canon)
        if canon.any()
        else viz.largest_tumour_slices(viz.to_canonical(app.state.study.truth, app.state.study.affine))
    )
    assert tuple(viewer.position) == expected
    assert [app.views.sliders[v].value for v in viz.VIEWS] == [expected[viz.VIEW_AXIS[v]] for v in viz.VIEWS]

    before = {v: app.views.images[v].value for v in viz.VIEWS}
    composed = dict(viewer.composed)
    app.views.move("axial", app.views.sliders["axial"].value - 1)
    assert viewer.composed == {**composed, "axial": composed["axial"] + 1}
    assert all(app.views.images[v].value != before[v] for v in viz.VIEWS)  # crosshair lines moved

    app.views.crosshair.value = False
    before = {v: app.views.images[v].value for v in viz.VIEWS}
    encoded = dict(viewer.encoded)
    app.views.move("sagittal", app.views.sliders["sagittal"].value + 1)
    assert viewer.encoded == {**encoded, "sagittal": encoded["sagittal"] + 1}
    assert app.views.images["axial"].value == before["axial"] and app.views.images["coronal"].value == before["coronal"]
    assert app.views.images["sagittal"].value != before["sagittal"]


def test_window_label_gives_the_contrast_in_the_files_units(app: App, tiny_paths: dict[str, Path]) -> None:
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)

    def expected() -> str:
        volume = app.state.study.images[app.views.background.value]
        low, high = viz.window_limits(volume, percentiles=app.views.contrast.value)
        return f"window <b>{low:.4g}</b> – <b>{high:.4g}</b>"

    assert app.views.window_label.value == expected()
    first = app.views.window_label.value
    app.views.contrast.value = (20.0, 80.0)
    assert app.views.window_label.value == expected() != first
    app.views.background.value = "FLAIR"
    assert app.views.window_label.value == expected()


def test_clicking_a_view_moves_the_other_views_and_the_sliders(app: App, tiny_paths: dict[str, Path]) -> None:
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)
    viewer = app.views.viewer
    start = list(viewer.position)
    before = {v: app.views.images[v].value for v in viz.VIEWS}
    app.views.on_click("axial", {"type": "click"})  # an event without image coordinates is ignored
    assert viewer.position == start
    # Click the axial image's top-left pixel, as the browser event reports it (dataX/dataY are
    # pixels of the PNG): the patient's right-anterior corner of this axial slice.
    app.views.on_click("axial", {"type": "click", "dataX": 0, "dataY": 0, "relativeX": 0, "relativeY": 0})
    shape = viewer.shape
    assert viewer.position == [shape[0] - 1, shape[1] - 1, start[2]]
    assert app.views.sliders["sagittal"].value == shape[0] - 1
    assert app.views.view_titles["axial"].value == f"<b>Axial</b> <small>slices 0-{shape[2] - 1}, 1 mm apart</small>"
    assert app.views.sliders["coronal"].value == shape[1] - 1
    assert app.views.sliders["axial"].value == start[2]
    assert all(app.views.images[v].value != before[v] for v in viz.VIEWS)
    assert app.state.message_kind != "error"
    assert set(app.views.click_events) == set(viz.VIEWS)
    assert all(e.source is app.views.images[v] and "click" in e.watched_events for v, e in app.views.click_events.items())


def test_display_controls_redraw(app: App, tiny_paths: dict[str, Path]) -> None:
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)
    for control, value in [
        (app.views.opacity, 0.9),
        (app.views.contrast, (5.0, 95.0)),
        (app.views.background, "FLAIR"),
        (app.views.toggles[2], False),
        (app.views.overlay, "truth"),
    ]:
        before = app.views.images["axial"].value
        control.value = value
        assert app.views.images["axial"].value != before, control.description
    app.views.overlay.value = "errors"
    assert app.views.error_legend.layout.display == "block" and app.views.uncertain_legend.layout.display == "none"
    # the uncertain voxels: drawn over the prediction, with its own legend
    app.views.overlay.value = "prediction"
    shown = app.views.images["axial"].value
    app.views.overlay.value = "uncertain"
    assert app.views.uncertain_legend.layout.display == "block" and app.views.error_legend.layout.display == "none"
    assert "decision threshold of 0.7 or 0.3" in app.views.uncertain_legend.value
    uncertain = app.state.result.segmentation.uncertain
    axial = viz.display_slice(viz.to_canonical(uncertain, app.state.study.affine), 2, app.views.viewer.position[2])
    assert axial.any(), "the view opens on the largest tumour area, where the tiny model is uncertain"
    assert app.views.images["axial"].value != shown  # the uncertain voxels recolour the slice
    app.views.overlay.value = "prediction"
    assert app.views.error_legend.layout.display == "none" and app.views.uncertain_legend.layout.display == "none"
    before = app.downloads()[f"{app.state.study.name}_views.png"]
    # the figure link still holds the view of the prediction time, and the button says so
    assert app.page.refresh_png_button.description == "Update the figure (PNG) to the current view"
    assert app.page.refresh_png_button.button_style == "warning"
    app.page.refresh_png_button.click()
    assert app.downloads()[f"{app.state.study.name}_views.png"] != before
    assert app.page.refresh_png_button.description == "Figure (PNG) shows the current view"
    app.views.sliders["axial"].value = app.views.sliders["axial"].value - 1
    assert app.page.refresh_png_button.description == "Update the figure (PNG) to the current view"


def test_zip_upload(app: App, tiny_paths: dict[str, Path]) -> None:
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for m, p in tiny_paths.items():
            if m != "SEG":
                z.write(p, f"Tiny_001/{p.name}")
    app.page.upload.value = upload_value({"Tiny_001.zip": buffer.getvalue()})
    assert app.state.study is not None and app.state.study.name == "Tiny_001" and app.state.study.truth is None
    predict_ok(app)
    check_numbers(app)
    assert [o[1] for o in app.views.overlay.options] == ["prediction", "uncertain", "none"]


def test_two_studies_in_one_upload_are_named_with_what_to_do(app: App, tiny_study) -> None:
    files = {**study_files(tiny_study(name="Case_A"), seg=False), **study_files(tiny_study(name="Case_B"), seg=False)}
    app.page.upload.value = upload_value(files)
    assert app.state.study is None and app.state.message_kind == "error"
    assert app.state.message_text.endswith(
        'The files name 2 studies (Case_A, Case_B): upload one study at a time, or choose "ignore" in the list next '
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


# --------------------------------------------------------------------------------------------------
# Bad uploads: a readable message, and the app stays usable
# --------------------------------------------------------------------------------------------------


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
    """auto (the default): preprocessed, and the section says so; never: refused as before harmonising existed."""
    bad = tmp_path / "bad"
    bad.mkdir()
    files = _mismatched_shapes(tiny_paths, bad)
    app.harmonise_panel.mode.value = "off"
    app.page.upload.value = upload_value(files)
    assert app.state.message_kind == "error"
    assert re.search(r"shape \(30, 32, 24\) differs", app.state.message_text), app.state.message_text
    assert app.page.predict_button.disabled and app.state.study is None and app.harmonise_panel.box.layout.display == "none"
    app.harmonise_panel.mode.value = "auto"  # the choice reloads the files
    assert app.state.message_kind == "info" and "Raw study: preprocessed" in app.state.message_text, app.state.message_text
    assert app.harmonise_panel.box.layout.display == "flex" and app.harmonise_panel.check.value[:4] == b"\x89PNG"
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
        "Internal error of brats-seg, not a problem found in your files (RuntimeError: CUDA out of memory (simulated))")
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
    assert app.state.scroll_count == 2 and "brats-seg scroll 2" in app.page.scroller.outputs[0]["data"]["application/javascript"]
    # a prediction that fails does not scroll
    broken = make_app(tmp_path / "no_model", tmp_path / "broken")
    broken.page.upload.value = upload_value(list(tiny_paths.values()))
    broken.page.predict_button.click()
    assert broken.state.message_kind == "error" and broken.state.scroll_count == 0 and broken.page.scroller.outputs == ()


def test_model_error_is_shown_and_the_app_stays_usable(
    tiny_model_dir: Path, tiny_paths: dict[str, Path], tmp_path: Path
) -> None:
    app = make_app(tmp_path / "no_model", tmp_path)
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    app.page.predict_button.click()
    assert app.state.message_kind == "error" and "model.json" in app.state.message_text
    assert "Model not available" in app.page.model_status.value
    assert not app.page.predict_button.disabled
    app.model_dir = tiny_model_dir  # the folder is fixed: the next click works
    predict_ok(app)


# --------------------------------------------------------------------------------------------------
# One run at a time
# --------------------------------------------------------------------------------------------------


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


def test_model_status_states_the_cards_unseen_case_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A researcher sees how well the model did on cases it never saw, next to its name."""
    import shutil

    from brats_seg.card import record_scores

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    summary = {"dice_WT": {"mean": 0.9}, "dice_TC": {"mean": 0.8}, "dice_ET": {"mean": 0.7}, "hd95_WT": {"mean": 4.25}}
    record_scores(model_dir / "model.json", summary, cases=["a", "b", "c"], command="brats-seg evaluate --cross-validation",
                  key="cross_validation")
    app = App(model_dir=model_dir, cache_dir=tmp_path / "cache", synchronous=True)
    app.model()
    assert "Measured: mean Dice WT 0.900, TC 0.800, ET 0.700; WT HD95 4.2 mm over 3 cases, each scored by a member that never saw it (cross-validation)" in app.page.model_status.value
    assert "for research only; mean Dice WT 0.900 on 3 unseen cases<details" in app.page.model_status.value

    assert "Post-processing:" not in app.page.model_status.value  # the tiny card has none

    bare = App(model_dir=tiny_model_dir, cache_dir=tmp_path / "cache2", synchronous=True)
    bare.model()
    assert "ready" in bare.page.model_status.value and "Measured:" not in bare.page.model_status.value


def _model_removing_small_parts(tiny_model_dir: Path, model_dir: Path) -> Path:
    """A copy of the tiny model whose card removes tumour parts under half the largest."""
    import shutil

    from brats_seg.card import ModelCard

    shutil.copytree(tiny_model_dir, model_dir)
    card = ModelCard.load(model_dir / "model.json")
    card.postprocess = {"min_component_fraction": 0.5}
    card.save(model_dir / "model.json")
    return model_dir


def test_model_line_is_a_short_summary_with_the_details_folded(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The page shows one calm line; networks, spacing, threads, folder and scores are one click away."""
    from brats_seg.card import ModelCard, record_scores

    model_dir = _model_removing_small_parts(tiny_model_dir, tmp_path / "model")
    summary = {"dice_WT": {"mean": 0.9, "ci_low": 0.85, "ci_high": 0.95}, "dice_TC": {"mean": 0.8}, "dice_ET": {"mean": 0.7}}
    record_scores(model_dir / "model.json", summary, cases=["a", "b"], command="brats-seg evaluate", key="held_out")
    app = make_app(model_dir, tmp_path / "app")
    app.model()
    value = app.page.model_status.value
    match = re.fullmatch(
        r"Model: <b>(?P<name>[^<]+)</b> ready \u2014 for research only(?P<figure>[^<]*)"
        r'<details class="brats-model-details"><summary>Details</summary>(?P<details>.*)</details>',
        value,
        flags=re.S,
    )
    assert match, f"expected a short line and a <details> element, found {value!r}"
    assert match["name"] == ModelCard.load(model_dir / "model.json").name and match["figure"] == "; mean Dice WT 0.900 on 2 unseen cases"
    details = match["details"].split("<br>")
    assert details[0].startswith(f"{len(app.model().networks)} network(s), ") and "CPU thread(s)" in details[0]
    assert details[0].count(" mm, window ") == 1
    assert details[1] == f"From {model_dir}"
    assert details[2].startswith("Post-processing: tumour parts smaller than 50%")
    assert details[3].startswith("Measured: mean Dice WT 0.900, TC 0.800, ET 0.700 over 2 cases")
    assert details[4] == ("95% intervals of these means (bootstrap over the 2 cases): Dice WT 0.85\u20130.95: "
                          "how far the mean of so few cases can move.")
    assert len(details) == 5
    # a card without scores: the short line has no figure, the details no "Measured"
    bare = make_app(tiny_model_dir, tmp_path / "bare")
    bare.model()
    assert bare.page.model_status.value.startswith("Model: <b>") and "unseen cases" not in bare.page.model_status.value
    assert "ready \u2014 for research only<details" in bare.page.model_status.value


def test_keep_every_part_skips_the_cards_post_processing(tiny_model_dir: Path, tmp_path: Path,
                                                         tiny_paths: dict[str, Path]) -> None:
    """The researcher can see the network's own output, separate tumour parts included."""
    import shutil

    from brats_seg.card import ModelCard

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    card = ModelCard.load(model_dir / "model.json")
    card.postprocess = {"et_min_mm3": 1e9}  # every enhancing tumour becomes necrotic core
    card.save(model_dir / "model.json")
    app = make_app(model_dir, tmp_path / "app")
    assert app.page.keep_parts.layout.display == ""  # offered: this card's post-processing changes labels
    assert make_app(tiny_model_dir, tmp_path / "plain").page.keep_parts.layout.display == "none"  # nothing to skip
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    assert app.page.keep_parts.value is False
    predict_ok(app)
    cleaned = app.state.result.segmentation.labels.array.copy()
    assert app.state.result.report["settings"]["postprocess"]["et_min_mm3"] == 1e9
    app.page.keep_parts.value = True
    predict_ok(app)
    raw = app.state.result.segmentation.labels.array
    assert "postprocess" not in app.state.result.report["settings"]
    assert (cleaned == 4).sum() == 0 < (raw == 4).sum()  # the network's own ET is back
    assert np.array_equal(raw > 0, cleaned > 0)  # the rule relabels, it removes no tumour here


def test_quick_prediction_skips_the_cards_test_time_flips(tiny_model_dir: Path, tmp_path: Path,
                                                         tiny_paths: dict[str, Path]) -> None:
    """A card that flips by default offers a quicker run without them; a card that does not, hides the box."""
    import shutil

    from brats_seg.card import ModelCard

    plain = make_app(tiny_model_dir, tmp_path / "plain")
    assert plain.page.quick.layout.display == "none"
    plain.model()
    assert plain.page.quick.layout.display == "none" and "test-time flips" not in plain.page.model_status.value

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    card = ModelCard.load(model_dir / "model.json")
    card.tta_flips = True
    card.save(model_dir / "model.json")
    app = make_app(model_dir, tmp_path / "app")
    assert app.page.quick.layout.display == "" and app._model is None  # offered before the networks load
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)
    assert app.page.quick.layout.display == "" and "test-time flips, " in app.page.model_status.value
    assert app.state.result.report["settings"]["tta_flips"] is True
    assert "Quick prediction" not in app.page.progress_label.value
    flipped = app.state.result.segmentation.labels.array.copy()
    app.page.quick.value = True
    # the labels shown were made with the flips: the page says so until Predict runs again
    assert app.page.progress_label.value == "Settings changed: press Predict to apply them to the labels shown."
    predict_ok(app)
    assert app.page.progress_label.value.endswith("). Quick prediction: no test-time flips.")
    assert app.state.result.report["settings"]["tta_flips"] is False
    app.page.keep_parts.value = True
    assert app.page.progress_label.value.startswith("Settings changed")
    assert not np.array_equal(app.state.result.segmentation.labels.array, flipped)  # a different prediction


def test_model_status_says_what_post_processing_removes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A tuned card removes small tumour parts; the researcher is told, not left to wonder."""
    model_dir = _model_removing_small_parts(tiny_model_dir, tmp_path / "model")
    app = App(model_dir=model_dir, cache_dir=tmp_path / "cache", synchronous=True)
    app.model()
    assert ('<br>Post-processing: tumour parts smaller than 50% of the largest part are removed (tick "Keep every '
            'tumour part" to skip it).') in app.page.model_status.value


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


# --------------------------------------------------------------------------------------------------
# The example study
# --------------------------------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_example_downloads_checks_and_caches(tiny_paths: dict[str, Path], tmp_path: Path) -> None:
    folder = tiny_paths["T1"].parent
    pinned = {p.name: _sha(p) for p in tiny_paths.values()}
    got = fetch_example(folder.as_uri(), files=pinned, cache_dir=tmp_path, timeout=5)
    assert {n: _sha(p) for n, p in got.items()} == pinned
    assert all(p.parent == tmp_path / "examples" for p in got.values())
    # cached: a broken address is not even asked
    again = fetch_example("file:///nonexistent/folder", files=pinned, cache_dir=tmp_path)
    assert again == got


def test_fetch_example_failures(tiny_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tiny_paths["T1"].parent
    name = tiny_paths["T1"].name
    with pytest.raises(ExampleUnreachable, match="could not download the example file") as missing:
        fetch_example((tmp_path / "missing").as_uri(), files={name: "0" * 64}, cache_dir=tmp_path)
    assert missing.value.url == f"{(tmp_path / 'missing').as_uri()}/{name}" and missing.value.reason
    with pytest.raises(ExampleUnreachable, match="could not download"):
        fetch_example("http://127.0.0.1:9/nothing", files={name: "0" * 64}, cache_dir=tmp_path, timeout=2)
    # the server answered: not "unreachable", so the dashboard keeps its button
    with pytest.raises(
        ExampleError, match=f"{name}: the file downloaded from .* has sha256 .*expected 0+; it was discarded"
    ) as mismatch:
        fetch_example(folder.as_uri(), files={name: "0" * 64}, cache_dir=tmp_path)
    assert not isinstance(mismatch.value, ExampleUnreachable)
    monkeypatch.setattr(example, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(ExampleError, match="exceeds 100 bytes; refused") as large:
        fetch_example(folder.as_uri(), files={name: "0" * 64}, cache_dir=tmp_path)
    assert not isinstance(large.value, ExampleUnreachable)
    with pytest.raises(ExampleError, match="cannot be opened .*expected an https://, http:// or file:// address") as bad:
        fetch_example("no-scheme/folder", files={name: "0" * 64}, cache_dir=tmp_path)
    assert not isinstance(bad.value, ExampleUnreachable)
    assert not list((tmp_path / "examples").iterdir())  # nothing half-written or unverified is kept


def test_example_button_failures_leave_the_app_usable(
    tiny_model_dir: Path, tiny_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    # a server that sends other bytes than the pinned ones: the next try may work, the button stays
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in example.EXAMPLE_FILES:
        (wrong / name).write_bytes(b"not the example")
    app = make_app(tiny_model_dir, tmp_path, example_url=wrong.as_uri())
    app.page.example_button.click()
    assert app.state.message_kind == "error" and "sha256" in app.state.message_text and "discarded" in app.state.message_text
    assert app.page.example_button.layout.display != "none" and app.page.example_note.layout.display == "none"
    assert not app.page.example_button.disabled and not app.busy
    # a configured example folder that is not there
    app.example_dir = tmp_path / "no_such_study"
    app.page.example_button.click()
    assert app.state.message_kind == "error" and "example folder" in app.state.message_text
    assert app.page.example_button.layout.display != "none"
    app.page.upload.value = upload_value(list(tiny_paths.values()))
    predict_ok(app)


def test_unreachable_example_hides_the_button_and_says_what_to_do(
    tiny_model_dir: Path, tiny_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline (here: a file:// address of a folder that does not exist), "Load example" would fail
    on every click: it is hidden, and the page says how to get a study in instead."""
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    nowhere = tmp_path / "nowhere"
    app = make_app(tiny_model_dir, tmp_path, example_url=nowhere.as_uri())
    assert app.page.example_button.layout.display != "none" and app.page.example_note.layout.display == "none"
    app.page.example_button.click()
    text = app.state.message_text
    assert app.state.message_kind == "error", text
    assert "The example study cannot be downloaded from this server" in text and nowhere.as_uri() in text
    assert '"Upload files"' in text and example.EXAMPLE_DIR_ENV in text
    assert app.page.example_button.layout.display == "none"
    assert app.page.example_note.layout.display != "none"
    assert "upload the files" in app.page.example_note.value and example.EXAMPLE_DIR_ENV in app.page.example_note.value
    assert not app.busy and app.state.study is None
    app.page.upload.value = upload_value(list(tiny_paths.values()))  # the upload still works
    predict_ok(app)
    assert app.page.example_button.layout.display == "none"  # and the button stays hidden


def test_example_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    monkeypatch.setenv(example.EXAMPLE_URL_ENV, "file:///somewhere")
    assert App(model_dir=tmp_path, synchronous=True).example_url == "file:///somewhere"
    monkeypatch.delenv(example.EXAMPLE_URL_ENV)
    assert App(model_dir=tmp_path, synchronous=True).example_url == example.EXAMPLE_URL


@pytest.mark.data
def test_load_example_from_a_local_folder(
    demo_case: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(example.EXAMPLE_DIR_ENV, str(demo_case))
    app = make_app(tiny_model_dir, tmp_path)
    assert app.example_dir == demo_case
    app.page.example_button.click()
    assert app.state.message_kind == "info", app.state.message_text
    assert app.state.study.name == "BraTS-GLI-00001-000" and app.state.study.truth is None
    assert {d.value for d in app.modality_dropdowns.values()} == {"T1", "T1CE", "T2", "FLAIR"}
    assert not app.page.predict_button.disabled


@pytest.mark.data
def test_load_example_from_a_file_url(
    brats_case: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(example.EXAMPLE_DIR_ENV, raising=False)
    app = make_app(tiny_model_dir, tmp_path, example_url=brats_case.as_uri())
    app.page.example_button.click()
    assert app.state.message_kind == "info", app.state.message_text
    assert app.state.study.name == "Brats18_CBICA_ABM_1" and app.state.study.truth is not None
    cached = sorted(p.name for p in (tmp_path / "cache" / "examples").iterdir())
    assert cached == sorted(example.EXAMPLE_FILES)
    assert not app.page.predict_button.disabled


# --------------------------------------------------------------------------------------------------
# The real case, end to end (one prediction shared by the tests below)
# --------------------------------------------------------------------------------------------------


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


def test_parse_table_round_trip() -> None:
    table = render.volumes_html(
        {
            "labels": {n: {"mL": 1.0 / 3} for n in ("NCR", "ED", "ET")},
            "regions": {n: {"mL": 2.5} for n in ("ET", "TC", "WT")},
        }
    )
    assert parse_table(table)["NCR"]["prediction"] == 1.0 / 3
    assert parse_table(table) == render.volume_rows(
        {"labels": {n: {"mL": 1.0 / 3} for n in ("NCR", "ED", "ET")}, "regions": {n: {"mL": 2.5} for n in ("ET", "TC", "WT")}})
    assert ">0.33<" in table


def test_volumes_table_shows_the_range_over_the_other_thresholds() -> None:
    vols = {"labels": {n: {"mL": 1.0} for n in ("NCR", "ED", "ET")}, "regions": {n: {"mL": 3.0} for n in ("ET", "TC", "WT")}}
    volume_range = {"thresholds": [0.7, 0.3], "card_threshold": 0.5,
              "labels": {"NCR": [0.5, 1.5], "ED": [1.2, 0.9], "ET": [0.25, 1.0]},  # a label need not grow as the cut falls
              "regions": {"ET": [0.25, 1.0], "TC": [2.0, 4.0], "WT": [2.5, 3.75]}}
    table = render.volumes_html(vols, None, volume_range)
    shown = parse_table(table)
    assert shown["ED"] == {"prediction": 1.0, "range_low": 0.9, "range_high": 1.2}
    assert shown == render.volume_rows(vols, None, volume_range)  # the page shows the numbers the app keeps
    assert shown["WT"]["range_low"] == 2.5 and shown["WT"]["range_high"] == 3.75
    assert "range at 0.7\u20130.3 (mL)" in table and ">2.50</span>\u2013<span" in table
    assert "instead of 0.5 to count" in table and "not a confidence interval" in table
    # without a range (a softmax model, or none measured): no column, no note
    plain = render.volumes_html(vols)
    assert "range at" not in plain and "brats-range-note" not in plain


@pytest.fixture(autouse=True)
def _no_network_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the public example address."""
    real = example.CappedDownloader.__call__

    def guarded(self, url, *args, **kwargs):
        assert not str(url).startswith("https://raw.githubusercontent.com"), "tests must not download"
        return real(self, url, *args, **kwargs)

    monkeypatch.setattr(example.CappedDownloader, "__call__", guarded)


def test_bad_thread_setting_is_reported_and_the_model_still_loads(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brats_seg.inference import THREADS_ENV

    monkeypatch.setenv(THREADS_ENV, "lots")
    before = torch.get_num_threads()
    app = App(model_dir=tiny_model_dir, cache_dir=tmp_path, synchronous=True)
    app.model()
    assert "ready" in app.page.model_status.value
    assert "BRATS_SEG_TORCH_THREADS: expected a positive integer, found &#x27;lots&#x27;" in app.page.model_status.value
    assert torch.get_num_threads() == before


def test_dicom_zip_upload_lists_series_and_offers_a_dicom_seg(app: App, tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    images, _ = tiny_volumes((32, 32, 24), seed=4)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    files = write_dicom_study(tmp_path / "Dicom_01", images, affine, descriptions={"T2": "sequence three"})
    first = pydicom.dcmread(files["T1"][0])
    write_dicom_series(tmp_path / "Dicom_01" / "S5", images["T1"], affine, description="3-plane localizer",
                       series_number=5, study_uid=first.StudyInstanceUID, frame_uid=first.FrameOfReferenceUID)
    app.page.upload.value = upload_value({"Dicom_01.zip": zip_tree(tmp_path / "Dicom_01")})
    labels = [e.label for e in app.state.entries]
    assert labels == ["series 1 'AX T1 SE' (24 files)", "series 2 'AX T1 POST GD' (24 files)",
                      "series 3 'sequence three' (24 files)", "series 4 'AX T2 FLAIR' (24 files)",
                      "series 5 '3-plane localizer' (24 files)"]
    dropdowns = [app.modality_dropdowns[e.name].value for e in app.state.entries]
    assert dropdowns == ["T1", "T1CE", "IGNORE", "FLAIR", "IGNORE"]
    assert app.state.study is None and app.page.predict_button.disabled
    assert "no series for T2" in app.state.message_text and "series 3 'sequence three'" in app.state.message_text
    app.modality_dropdowns[app.state.entries[2].name].value = "T2"
    assert app.state.study is not None and app.state.study.name == "Dicom_01"
    assert app.state.study.sources["T2"] == "series 3 'sequence three' (24 files)"
    predict_ok(app)
    downloads = app.downloads()
    assert set(downloads) == {"Dicom_01_seg.nii.gz", "Dicom_01_uncertain.nii.gz", "Dicom_01_report.json", "Dicom_01_views.png", "Dicom_01_seg.dcm"}
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
    assert set(app.downloads()) == {"Dicom_02_seg.nii.gz", "Dicom_02_uncertain.nii.gz", "Dicom_02_report.json", "Dicom_02_views.png"}
    assert "No DICOM SEG download" in app.state.message_text and "FrameOfReferenceUID" in app.state.message_text


def test_predict_waits_its_turn_behind_another_sessions_job(app: App, tiny_paths: dict[str, Path], tmp_path: Path) -> None:
    """Another kernel's job (a ticket of a live process) runs first; this session shows its place, then predicts."""
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
    assert any(v.startswith("Waiting for 1 other job on this server to finish (place 1 in the queue") for v in labels), labels
    assert "waited " in app.page.progress_label.value and "for other sessions" in app.page.progress_label.value
