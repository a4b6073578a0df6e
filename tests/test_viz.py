"""Tests for ``brats_seg.viz``: windowing, colours, the radiological display convention, the cached
viewer and the PNG export."""

from __future__ import annotations

import io as _io

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_affine
from PIL import Image

from brats_seg import viz
from brats_seg.types import LabelMap, Study

# --------------------------------------------------------------------------------------------------
# A physical phantom stored in different voxel orientations
# --------------------------------------------------------------------------------------------------

SHAPE_RAS = (20, 24, 16)  # x (towards R), y (towards A), z (towards S)


def phantom_ras() -> tuple[np.ndarray, np.ndarray]:
    """A RAS-ordered phantom: grey brain, label 4 marks the patient's LEFT-ANTERIOR-SUPERIOR corner
    region, label 2 a marker on the patient's RIGHT-POSTERIOR-INFERIOR side."""
    image = np.zeros(SHAPE_RAS, dtype=np.float32)
    image[2:-2, 2:-2, 2:-2] = 100.0
    labels = np.zeros(SHAPE_RAS, dtype=np.uint8)
    labels[3:6, 15:20, 10:13] = 4  # low x = patient left; high y = anterior; high z = superior
    labels[14:17, 4:8, 4:6] = 2  # high x = right; low y = posterior; low z = inferior
    return image, labels


def stored(array: np.ndarray, axcodes: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The RAS phantom re-stored with array axes pointing along ``axcodes``, with its affine."""
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(axcodes)
    )
    data = nib.orientations.apply_orientation(array, ornt)
    affine = np.eye(4) @ nib.orientations.inv_ornt_aff(ornt, array.shape)  # the RAS array's affine is eye(4)
    assert nib.aff2axcodes(affine) == axcodes
    return np.ascontiguousarray(data), affine


def make_study(image: np.ndarray, affine: np.ndarray, labels: np.ndarray | None = None) -> Study:
    header = nib.Nifti1Header()
    header.set_data_shape(image.shape)
    header.set_zooms((1.0, 1.0, 1.0))
    images = {m: image.copy() for m in ("T1", "T1CE", "T2", "FLAIR")}
    return Study(name="phantom", images=images, affine=affine, header=header, truth=labels)


def coloured(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Mask of pixels whose hue is that of ``colour`` blended over grey (dominant channel order)."""
    order = np.argsort(colour)[::-1]
    px = rgb.astype(int)
    return (px[..., order[0]] > px[..., order[2]] + 20) & (px[..., order[1]] >= px[..., order[2]])


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    assert rows.size, "marker not visible"
    return float(rows.mean()), float(cols.mean())


# --------------------------------------------------------------------------------------------------
# Windowing and colours
# --------------------------------------------------------------------------------------------------


def test_window_maps_percentiles_of_the_nonzero_voxels_to_0_255() -> None:
    volume = np.zeros((10, 10, 10), dtype=np.float32)
    volume[2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    out = viz.window(volume, percentiles=(0, 100))
    assert out.dtype == np.uint8 and out.shape == volume.shape
    assert out[2, 2, 2] == 0 and out[7, 7, 7] == 255
    assert out[0, 0, 0] == 0  # background below the window
    lo, hi = viz.window_limits(volume, percentiles=(0, 100))
    assert (lo, hi) == pytest.approx((100.0, 200.0))
    assert viz.window(volume, limits=(150.0, 151.0))[7, 7, 7] == 255


def test_window_of_a_constant_volume_does_not_divide_by_zero() -> None:
    out = viz.window(np.full((4, 4, 4), 7.0))
    assert out.dtype == np.uint8


def test_label_colours_are_stated_and_distinct() -> None:
    colours = viz.label_colours()
    assert list(colours) == ["NCR", "ED", "ET"]
    assert len(set(colours.values())) == 3
    assert set(viz.label_colours(mode="errors")) == {"FP", "FN"}
    assert viz.label_colours(mode="none") == {}
    assert viz.colour_hex((255, 40, 40)) == "#ff2828"
    legend = viz.label_colours(mode="uncertain")
    assert list(legend) == ["NCR", "ED", "ET", "uncertain"] and len(set(legend.values())) == 4
    assert viz.UNCERTAIN_COLOUR not in viz.ERROR_COLOURS.values()


def test_uncertain_mode_draws_the_uncertain_voxels_over_the_prediction() -> None:
    background = np.full((6, 6, 3), 100, dtype=np.uint8)
    labels = np.zeros((6, 6, 3), dtype=np.uint8)
    labels[1:4, 1:4, 1] = 2
    uncertain = np.zeros((6, 6, 3), dtype=bool)
    uncertain[3:5, 3:5, 1] = True  # half on the oedema's edge, half outside it
    plain = viz.slice_rgb(background, labels, 2, 1, opacity=1.0, mode="prediction")
    marked = viz.slice_rgb(background, labels, 2, 1, opacity=1.0, mode="uncertain", uncertain=uncertain)
    shown = viz.display_slice(uncertain, 2, 1)
    assert (marked[shown] == viz.UNCERTAIN_COLOUR).all()
    assert (marked[~shown] == plain[~shown]).all()  # the rest is the prediction as usual
    # without a map of uncertain voxels the mode draws the prediction alone
    assert (viz.slice_rgb(background, labels, 2, 1, opacity=1.0, mode="uncertain") == plain).all()


def test_error_codes_mark_false_positives_and_negatives_of_the_visible_region() -> None:
    pred = np.array([0, 4, 4, 1, 2, 0])
    truth = np.array([0, 4, 0, 4, 0, 2])
    assert viz.error_codes(pred, truth).tolist() == [0, 0, 1, 0, 1, 2]
    # ET only: pred ET at 1, 2; truth ET at 1, 3
    assert viz.error_codes(pred, truth, visible=[4]).tolist() == [0, 0, 1, 2, 0, 0]


def test_largest_tumour_slices() -> None:
    labels = np.zeros((10, 12, 8), dtype=np.uint8)
    labels[2, 1:9, 1:7] = 2  # a big sheet at i=2
    labels[5:8, 4, 3] = 1
    labels[5:8, 4, 7] = 4
    # i: the sheet (48 voxels); j: 4 (6 of the sheet + 3 + 3); k: 3 (8 of the sheet + 3)
    assert viz.largest_tumour_slices(labels) == (2, 4, 3)
    assert viz.largest_tumour_slices(labels, values=[4]) == (5, 4, 7)
    assert viz.largest_tumour_slices(np.zeros((10, 12, 8))) == (5, 6, 4)


# --------------------------------------------------------------------------------------------------
# Radiological convention
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("P", "S", "L"), ("S", "R", "P")])
def test_display_is_radiological_whatever_the_storage_orientation(axcodes: tuple[str, str, str]) -> None:
    image_ras, labels_ras = phantom_ras()
    image, affine = stored(image_ras, axcodes)
    labels, _ = stored(labels_ras, axcodes)
    canon = viz.to_canonical(labels, affine)
    assert canon.shape == SHAPE_RAS
    np.testing.assert_array_equal(canon, labels_ras)
    canon_affine = viz.canonical_affine(affine, labels.shape)
    assert nib.aff2axcodes(canon_affine) == ("R", "A", "S")

    bg = viz.window(viz.to_canonical(image, affine))
    et = viz.LABEL_COLOURS[4]
    x, y, z = 4, 17, 11  # inside the left-anterior-superior ET marker
    # Axial: patient left (ET marker) on screen RIGHT, anterior at the TOP.
    axial = viz.slice_rgb(bg, canon, viz.VIEW_AXIS["axial"], z, opacity=1.0)
    row, col = centroid(coloured(axial, et))
    assert col > axial.shape[1] / 2, "patient left must be on the screen's right in the axial view"
    assert row < axial.shape[0] / 2, "anterior must be at the top of the axial view"
    # Coronal: patient left on screen right, superior at the top.
    coronal = viz.slice_rgb(bg, canon, viz.VIEW_AXIS["coronal"], y, opacity=1.0)
    row, col = centroid(coloured(coronal, et))
    assert col > coronal.shape[1] / 2 and row < coronal.shape[0] / 2
    # Sagittal: anterior on screen left, superior at the top.
    sagittal = viz.slice_rgb(bg, canon, viz.VIEW_AXIS["sagittal"], x, opacity=1.0)
    row, col = centroid(coloured(sagittal, et))
    assert col < sagittal.shape[1] / 2 and row < sagittal.shape[0] / 2

    letters = {view: viz.orientation_letters(canon_affine, viz.VIEW_AXIS[view]) for view in viz.VIEWS}
    assert letters["axial"] == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert letters["coronal"] == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert letters["sagittal"] == {"left": "A", "right": "P", "top": "S", "bottom": "I"}


def test_orientation_letters_come_from_the_affine() -> None:
    affine = brats_affine((20, 24, 16))  # LPS storage, shown without reorientation
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    assert viz.orientation_letters(affine, 2) == {"left": "L", "right": "R", "top": "P", "bottom": "A"}


def test_letters_are_drawn_on_the_edges() -> None:
    bg = np.full((40, 40, 30), 60, dtype=np.uint8)
    letters = {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    plain = viz.slice_rgb(bg, None, 2, 15, min_size=200)
    lettered = viz.slice_rgb(bg, None, 2, 15, min_size=200, letters=letters)
    assert plain.shape == lettered.shape == (200, 200, 3)
    diff = np.any(plain != lettered, axis=2)
    h, w = diff.shape
    assert diff[h // 3 : 2 * h // 3, : w // 8].any()  # left edge: R
    assert diff[h // 3 : 2 * h // 3, -w // 8 :].any()  # right edge: L
    assert diff[: h // 8, w // 3 : 2 * w // 3].any()  # top: A
    assert diff[-h // 8 :, w // 3 : 2 * w // 3].any()  # bottom: P
    assert not diff[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].any()  # the middle is untouched


def test_crosshair_passes_through_the_position() -> None:
    bg = np.zeros((20, 24, 16), dtype=np.uint8)
    pos = (5, 17, 8)
    rgb = viz.slice_rgb(bg, None, viz.VIEW_AXIS["axial"], pos[2], crosshair=pos)
    row, col = viz.display_position(bg.shape, viz.VIEW_AXIS["axial"], pos)
    assert (row, col) == (24 - 1 - 17, 20 - 1 - 5)
    cyan = coloured(rgb, viz.CROSSHAIR_COLOUR)
    assert cyan[row, :].sum() > 5 and cyan[:, col].sum() > 5
    assert not cyan[row, col]  # the gap leaves the voxel itself visible


def test_zoom_gives_square_pixels_and_a_minimum_size() -> None:
    rows, cols = viz.zoom_indices((10, 20), (3.0, 1.0), min_size=0)
    assert (rows.size, cols.size) == (30, 20)
    rows, cols = viz.zoom_indices((32, 32), (1.0, 1.0), min_size=256)
    assert rows.size == cols.size == 256
    assert rows[0] == 0 and rows[-1] == 31


def test_png_bytes_round_trip() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    data = viz.png_bytes(rgb)
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(_io.BytesIO(data))), rgb)


# --------------------------------------------------------------------------------------------------
# The cached viewer
# --------------------------------------------------------------------------------------------------


def make_viewer(*, crosshair: bool = True) -> viz.SliceViewer:
    image_ras, labels_ras = phantom_ras()
    image, affine = stored(image_ras, ("L", "P", "S"))
    labels, _ = stored(labels_ras, ("L", "P", "S"))
    viewer = viz.SliceViewer.from_study(make_study(image, affine, labels))
    viewer.set_labels("prediction", labels)
    viewer.update(mode="prediction", crosshair=crosshair)
    viewer.centre_on(viewer.focus())
    return viewer


def test_viewer_opens_on_the_largest_tumour_slices() -> None:
    viewer = make_viewer()
    _, labels_ras = phantom_ras()
    assert tuple(viewer.position) == viz.largest_tumour_slices(labels_ras)
    assert viewer.letters("axial")["left"] == "R"


def test_viewer_move_recomposes_only_the_moved_view() -> None:
    viewer = make_viewer()
    before = {view: viewer.png(view) for view in viz.VIEWS}
    composed = dict(viewer.composed)
    changed = viewer.move("axial", viewer.position[2] - 2)
    assert changed == ["axial", "coronal", "sagittal"]  # the others' crosshair lines move
    after = {view: viewer.png(view) for view in changed}
    assert viewer.composed == {**composed, "axial": composed["axial"] + 1}
    assert all(after[v] != before[v] for v in viz.VIEWS)
    assert viewer.move("axial", viewer.position[2]) == []  # no move, no redraw


def pixel_of_voxel(viewer: viz.SliceViewer, view: str, voxel: list[int]) -> tuple[int, int]:
    """(x, y) of the middle pixel that shows ``voxel`` in a view's image."""
    _, rows, cols = viewer._composed(view)
    row, col = viz.display_position(viewer.shape, viz.VIEW_AXIS[view], voxel)
    return int(np.flatnonzero(cols == col).mean()), int(np.flatnonzero(rows == row).mean())


@pytest.mark.parametrize("view", viz.VIEWS)
def test_click_moves_the_crosshair_to_the_clicked_voxel(view: str) -> None:
    viewer = make_viewer()
    axis = viz.VIEW_AXIS[view]
    start = list(viewer.position)
    target = [3, 5, 4]
    target[axis] = start[axis]  # a click cannot leave the shown slice
    x, y = pixel_of_voxel(viewer, view, target)
    changed = viewer.click(view, x, y)
    assert viewer.position == target
    moved = [v for v in viz.VIEWS if start[viz.VIEW_AXIS[v]] != target[viz.VIEW_AXIS[v]]]
    assert changed == [*moved, view]
    assert viewer.click(view, x, y) == []  # same voxel again: nothing to redraw


def test_click_follows_the_radiological_display() -> None:
    viewer = make_viewer()
    assert viewer.letters("axial") == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    viewer.click("axial", 0, 0)  # top-left corner: the patient's right and anterior (RAS: high x, high y)
    assert viewer.position[:2] == [SHAPE_RAS[0] - 1, SHAPE_RAS[1] - 1]
    viewer.click("axial", 10_000, 10_000)  # beyond the image: clamped to left and posterior
    assert viewer.position[:2] == [0, 0]
    viewer.click("coronal", 0, 10_000)  # bottom-left: right and inferior
    assert (viewer.position[0], viewer.position[2]) == (SHAPE_RAS[0] - 1, 0)


def test_click_without_crosshair_redraws_only_the_moved_slices() -> None:
    viewer = make_viewer(crosshair=False)
    target = list(viewer.position)
    target[0] = 2  # move x only: only the sagittal slice changes
    x, y = pixel_of_voxel(viewer, "axial", target)
    assert viewer.click("axial", x, y) == ["sagittal"]


def test_viewer_without_crosshair_redraws_one_view_per_move() -> None:
    viewer = make_viewer(crosshair=False)
    before = {view: viewer.png(view) for view in viz.VIEWS}
    encoded = dict(viewer.encoded)
    assert viewer.move("coronal", viewer.position[1] + 1) == ["coronal"]
    viewer.png("coronal")
    assert viewer.encoded == {**encoded, "coronal": encoded["coronal"] + 1}
    assert viewer.png("axial") == before["axial"] and viewer.png("sagittal") == before["sagittal"]


def test_viewer_settings_recompose_every_view() -> None:
    viewer = make_viewer()
    for view in viz.VIEWS:
        viewer.png(view)
    composed = dict(viewer.composed)
    assert viewer.update(opacity=0.9)
    assert not viewer.update(opacity=0.9)
    for view in viz.VIEWS:
        viewer.png(view)
    assert all(viewer.composed[v] == composed[v] + 1 for v in viz.VIEWS)


def test_hidden_labels_and_error_mode() -> None:
    viewer = make_viewer(crosshair=False)
    et = viz.LABEL_COLOURS[4]
    viewer.update(opacity=1.0)
    assert coloured(viewer.rgb("axial"), et).any()
    viewer.update(visible=[1, 2])
    assert not coloured(viewer.rgb("axial"), et).any()
    viewer.update(visible=[1, 2, 4], mode="errors")
    assert not coloured(viewer.rgb("axial"), viz.ERROR_COLOURS["FP"]).any()  # prediction == truth
    truth = viewer.labels["truth"].copy()
    viewer.labels["truth"] = np.zeros_like(truth)
    viewer.update(opacity=0.99)
    assert coloured(viewer.rgb("axial"), viz.ERROR_COLOURS["FP"]).any()
    # at the default label opacity the error marks are still drawn at ERROR_MIN_OPACITY (0.8), not 0.4
    viewer.update(opacity=0.4)
    errors = viewer.rgb("axial").astype(int)
    viewer.update(opacity=viz.ERROR_MIN_OPACITY)
    np.testing.assert_array_equal(errors, viewer.rgb("axial"))
    viewer.update(opacity=0.0)  # the slider still turns them off
    assert not coloured(viewer.rgb("axial"), viz.ERROR_COLOURS["FP"]).any()


def test_small_studies_are_upscaled_for_display() -> None:
    viewer = make_viewer()
    image = Image.open(_io.BytesIO(viewer.png("axial")))
    assert max(image.size) >= 240 and image.size[0] % 20 == 0  # 20 columns (x), integer factor


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


def test_export_png_is_a_figure_with_views_legend_and_volumes() -> None:
    from brats_seg import report

    image_ras, labels_ras = phantom_ras()
    image, affine = stored(image_ras, ("L", "P", "S"))
    labels, _ = stored(labels_ras, ("L", "P", "S"))
    study = make_study(image, affine, labels)
    label_map = LabelMap(labels, affine, study.header)
    scores = {r: {"dice": 1.0, "hd95": 0.0} for r in ("ET", "TC", "WT")}
    data = viz.export_png(study, label_map, report.volumes(label_map), scores=scores, dpi=60)
    figure = Image.open(_io.BytesIO(data))
    assert figure.format == "PNG" and figure.size == (720, 384)
    assert viz.export_png(study, None, None, dpi=40).startswith(b"\x89PNG")
