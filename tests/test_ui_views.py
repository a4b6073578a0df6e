"""Tests for :mod:`brats_seg.ui.views`: the three linked planes, their controls and overlays."""

from __future__ import annotations

from pathlib import Path

from test_ui_support import predict_ok, upload_value

from brats_seg import viz
from brats_seg.ui import App

#: The shared fixtures (``app``, ``tiny_paths``, and no test reaching the public example address).
pytest_plugins = ["test_ui_support"]


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
    assert (
        app.views.images["axial"].value == before["axial"]
        and app.views.images["coronal"].value == before["coronal"]
    )
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
    assert (
        app.views.view_titles["axial"].value
        == f"<b>Axial</b> <small>slices 0-{shape[2] - 1}, 1 mm apart</small>"
    )
    assert app.views.sliders["coronal"].value == shape[1] - 1
    assert app.views.sliders["axial"].value == start[2]
    assert all(app.views.images[v].value != before[v] for v in viz.VIEWS)
    assert app.state.message_kind != "error"
    assert set(app.views.click_events) == set(viz.VIEWS)
    assert all(
        e.source is app.views.images[v] and "click" in e.watched_events
        for v, e in app.views.click_events.items()
    )


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
    assert (
        app.views.error_legend.layout.display == "block"
        and app.views.uncertain_legend.layout.display == "none"
    )
    # the uncertain voxels: drawn over the prediction, with its own legend
    app.views.overlay.value = "prediction"
    shown = app.views.images["axial"].value
    app.views.overlay.value = "uncertain"
    assert (
        app.views.uncertain_legend.layout.display == "block"
        and app.views.error_legend.layout.display == "none"
    )
    assert "decision threshold of 0.7 or 0.3" in app.views.uncertain_legend.value
    uncertain = app.state.result.segmentation.uncertain
    axial = viz.display_slice(
        viz.to_canonical(uncertain, app.state.study.affine), 2, app.views.viewer.position[2]
    )
    assert axial.any(), "the view opens on the largest tumour area, where the tiny model is uncertain"
    assert app.views.images["axial"].value != shown  # the uncertain voxels recolour the slice
    app.views.overlay.value = "prediction"
    assert (
        app.views.error_legend.layout.display == "none"
        and app.views.uncertain_legend.layout.display == "none"
    )
    before = app.downloads()[f"{app.state.study.name}_views.png"]
    # the figure link still holds the view of the prediction time, and the button says so
    assert app.page.refresh_png_button.description == "Update the figure (PNG) to the current view"
    assert app.page.refresh_png_button.button_style == "warning"
    app.page.refresh_png_button.click()
    assert app.downloads()[f"{app.state.study.name}_views.png"] != before
    assert app.page.refresh_png_button.description == "Figure (PNG) shows the current view"
    app.views.sliders["axial"].value = app.views.sliders["axial"].value - 1
    assert app.page.refresh_png_button.description == "Update the figure (PNG) to the current view"
