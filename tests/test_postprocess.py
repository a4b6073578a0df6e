"""Tests for brats_seg.postprocess: label <-> region conversion, class argmax, model-card dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from brats_seg.card import ModelCard
from brats_seg.errors import ModelError
from brats_seg.postprocess import (
    apply_postprocess,
    check_labels,
    classes_to_labels,
    labels_to_regions,
    postprocess_settings,
    regions_to_labels,
    to_labels,
)


def _card(output: dict) -> ModelCard:
    return ModelCard(name="t", files=[], sha256={}, channels=["T1", "T1CE", "T2", "FLAIR"], output=output)


def _random_labels(shape=(8, 9, 10), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), size=shape)


# --- check_labels -------------------------------------------------------------------------------


def test_check_labels_accepts_valid_values_and_dtypes():
    check_labels(np.array([0, 1, 2, 4], dtype=np.uint8))
    check_labels(np.array([0.0, 1.0, 2.0, 4.0]))
    check_labels(np.zeros((3, 3, 3), dtype=np.int16))
    check_labels(np.ones((2, 2), dtype=bool))


def test_check_labels_names_unexpected_values_and_counts():
    a = np.array([0, 1, 3, 3, 5, 4], dtype=np.int32)
    with pytest.raises(
        ValueError, match=r"seg\.nii\.gz: expected .*0, 1, 2, 4.*found unexpected value\(s\) 3, 5 in 3 voxel"
    ):
        check_labels(a, name="seg.nii.gz")


@pytest.mark.parametrize("bad", [1.5, -1.0, np.nan])
def test_check_labels_rejects_non_label_floats(bad):
    with pytest.raises(ValueError, match="label map: .*unexpected value"):
        check_labels(np.array([0.0, 1.0, bad]))


def test_check_labels_lists_at_most_ten_values():
    with pytest.raises(ValueError, match=r"and 5 more in 15 voxel"):
        check_labels(np.arange(5, 20))


# --- labels_to_regions --------------------------------------------------------------------------


def test_labels_to_regions_default_order_tc_wt_et():
    labels = np.array([0, 1, 2, 4], dtype=np.uint8).reshape(1, 1, 4)
    regions = labels_to_regions(labels)
    assert regions.shape == (3, 1, 1, 4)
    assert regions.dtype == bool
    tc, wt, et = regions[:, 0, 0]
    np.testing.assert_array_equal(tc, [False, True, False, True])
    np.testing.assert_array_equal(wt, [False, True, True, True])
    np.testing.assert_array_equal(et, [False, False, False, True])


def test_labels_to_regions_custom_order():
    labels = _random_labels()
    default = labels_to_regions(labels)
    custom = labels_to_regions(labels, regions=("ET", "TC", "WT"))
    np.testing.assert_array_equal(custom, default[[2, 0, 1]])


def test_labels_to_regions_rejects_label_3():
    labels = np.array([[[0, 1, 3]]])
    with pytest.raises(ValueError, match=r"unexpected value\(s\) 3 in 1 voxel"):
        labels_to_regions(labels)


def test_labels_to_regions_rejects_bad_region_order():
    with pytest.raises(
        ValueError, match=r"expected an ordering of the regions .*found \['TC', 'WT', 'NCR'\]"
    ):
        labels_to_regions(np.zeros((2, 2, 2)), regions=("TC", "WT", "NCR"))


# --- regions_to_labels --------------------------------------------------------------------------


@pytest.mark.parametrize("order", [("TC", "WT", "ET"), ("ET", "TC", "WT"), ("WT", "ET", "TC")])
def test_round_trip_labels_regions_labels_is_identity(order):
    labels = _random_labels((12, 11, 10), seed=1)
    back = regions_to_labels(labels_to_regions(labels, regions=order), order=order)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


def test_round_trip_regions_labels_regions_for_nested_masks():
    regions = labels_to_regions(_random_labels(seed=2))
    np.testing.assert_array_equal(labels_to_regions(regions_to_labels(regions)), regions)


def test_regions_to_labels_nested_probabilities():
    # Channels TC, WT, ET for six voxels.
    tc = [0.1, 0.2, 0.7, 0.7, 0.1, 0.5]
    wt = [0.1, 0.1, 0.9, 0.3, 0.6, 0.5]
    et = [0.1, 0.9, 0.2, 0.1, 0.1, 0.5]
    probs = np.array([tc, wt, et], dtype=np.float32).reshape(3, 1, 1, 6)
    labels = regions_to_labels(probs)
    # 0: nothing; 1: ET alone still -> 4 (ET implies TC and WT); 2: TC+WT -> 1; 3: TC with low WT -> 1;
    # 4: WT only -> 2; 5: all exactly at the threshold -> on -> 4.
    np.testing.assert_array_equal(labels[0, 0], [0, 4, 1, 1, 2, 4])


def test_regions_to_labels_threshold_and_order():
    probs = np.array([0.35, 0.2, 0.8], dtype=np.float32).reshape(3, 1, 1, 1)  # ET, TC, WT
    assert regions_to_labels(probs, order=("ET", "TC", "WT"))[0, 0, 0] == 2
    assert regions_to_labels(probs, order=("ET", "TC", "WT"), threshold=0.3)[0, 0, 0] == 4
    assert regions_to_labels(probs, order=("ET", "TC", "WT"), threshold=0.9)[0, 0, 0] == 0


def test_regions_to_labels_one_threshold_per_region_follows_the_order():
    probs = np.array([0.35, 0.2, 0.8], dtype=np.float32).reshape(3, 1, 1, 1)  # ET, TC, WT
    order = ("ET", "TC", "WT")
    assert regions_to_labels(probs, order=order, threshold=(0.3, 0.5, 0.5))[0, 0, 0] == 4  # ET on at 0.3
    assert regions_to_labels(probs, order=order, threshold=(0.5, 0.1, 0.5))[0, 0, 0] == 1  # TC on at 0.1
    assert regions_to_labels(probs, order=order, threshold=(0.5, 0.5, 0.9))[0, 0, 0] == 0  # WT off at 0.9
    message = r"expected one threshold or one per region \['ET', 'TC', 'WT'\], found \(0\.5, 0\.5\)"
    with pytest.raises(ValueError, match=message):
        regions_to_labels(probs, order=order, threshold=(0.5, 0.5))


def test_regions_to_labels_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"expected shape \(3, X, Y, Z\).*found shape \(4, 2, 2, 2\)"):
        regions_to_labels(np.zeros((4, 2, 2, 2)))


def test_regions_to_labels_rejects_bad_order():
    with pytest.raises(ValueError, match=r"expected an ordering of the regions"):
        regions_to_labels(np.zeros((3, 2, 2, 2)), order=("TC", "TC", "ET"))


# --- classes_to_labels --------------------------------------------------------------------------


def _one_hot(labels: np.ndarray, classes) -> np.ndarray:
    probs = np.stack([(labels == c) for c in classes]).astype(np.float32)
    return 0.1 + 0.8 * probs  # not exactly one-hot, argmax still picks the class


def test_classes_to_labels_maps_channels_to_label_values():
    labels = _random_labels(seed=3)
    out = classes_to_labels(_one_hot(labels, (0, 1, 2, 4)))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)


def test_classes_to_labels_custom_class_order():
    labels = _random_labels(seed=4)
    classes = (4, 0, 2, 1)
    np.testing.assert_array_equal(classes_to_labels(_one_hot(labels, classes), classes=classes), labels)


def test_classes_to_labels_softmax_argmax_values():
    probs = np.array([[0.1, 0.5], [0.2, 0.1], [0.6, 0.1], [0.1, 0.3]]).reshape(4, 1, 1, 2)
    np.testing.assert_array_equal(classes_to_labels(probs)[0, 0], [2, 0])


def test_classes_to_labels_rejects_channel_mismatch():
    with pytest.raises(ValueError, match=r"expected shape \(4, X, Y, Z\).*found shape \(3, 2, 2, 2\)"):
        classes_to_labels(np.zeros((3, 2, 2, 2)))


def test_classes_to_labels_rejects_unknown_classes():
    with pytest.raises(
        ValueError, match=r"classes: expected distinct BraTS label values .*found \[0, 1, 2, 3\]"
    ):
        classes_to_labels(np.zeros((4, 2, 2, 2)), classes=(0, 1, 2, 3))


# --- to_labels ----------------------------------------------------------------------------------


def test_to_labels_regions_sigmoid_uses_card_order_and_threshold():
    card = _card({"type": "regions_sigmoid", "regions": ["ET", "TC", "WT"], "threshold": 0.3})
    probs = np.array([[0.35, 0.1], [0.0, 0.1], [0.0, 0.4]]).reshape(3, 1, 1, 2)  # ET, TC, WT
    np.testing.assert_array_equal(to_labels(probs, card)[0, 0], [4, 2])


def test_to_labels_regions_sigmoid_default_threshold():
    card = _card({"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"]})
    labels = _random_labels(seed=5)
    probs = labels_to_regions(labels).astype(np.float32) * 0.6
    np.testing.assert_array_equal(to_labels(probs, card), labels)


def test_to_labels_classes_softmax():
    card = _card({"type": "classes_softmax", "classes": [0, 1, 2, 4]})
    labels = _random_labels(seed=6)
    np.testing.assert_array_equal(to_labels(_one_hot(labels, (0, 1, 2, 4)), card), labels)


def test_to_labels_shape_mismatch_is_reported():
    card = _card({"type": "classes_softmax", "classes": [0, 1, 2, 4]})
    with pytest.raises(ValueError, match=r"expected shape \(4, X, Y, Z\)"):
        to_labels(np.zeros((3, 2, 2, 2)), card)


# --- apply_postprocess ------------------------------------------------------------------------------


def _two_islands() -> np.ndarray:
    """A 10x10x10 tumour (ED shell, NCR inside, ET core) and a 2x2x2 ED island far from it."""
    a = np.zeros((30, 30, 30), dtype=np.uint8)
    a[2:12, 2:12, 2:12] = 2
    a[4:10, 4:10, 4:10] = 1
    a[6:8, 6:8, 6:8] = 4
    a[25:27, 25:27, 25:27] = 2
    return a


def test_apply_postprocess_defaults_change_nothing_and_copy():
    a = _two_islands()
    out = apply_postprocess(a, voxel_volume_mm3=1.0)
    np.testing.assert_array_equal(out, a)
    out[0, 0, 0] = 4
    assert a[0, 0, 0] == 0, "the input must not be modified"


def test_apply_postprocess_drops_islands_below_an_absolute_size():
    a = _two_islands()
    out = apply_postprocess(a, voxel_volume_mm3=1.0, min_component_mm3=9.0)  # island is 8 mm³
    assert out[25:27, 25:27, 25:27].max() == 0
    np.testing.assert_array_equal(out[:20, :20, :20], a[:20, :20, :20])
    # The same island at 2 mm voxels is 64 mm³: kept.
    kept = apply_postprocess(a, voxel_volume_mm3=8.0, min_component_mm3=9.0)
    np.testing.assert_array_equal(kept, a)


def test_apply_postprocess_drops_islands_below_a_fraction_of_the_largest():
    a = _two_islands()  # sizes 1000 and 8 voxels
    np.testing.assert_array_equal(apply_postprocess(a, voxel_volume_mm3=1.0, min_component_fraction=0.008), a)
    out = apply_postprocess(a, voxel_volume_mm3=1.0, min_component_fraction=0.01)
    assert np.count_nonzero(out) == 1000


def test_apply_postprocess_keeps_the_largest_component_even_below_the_size():
    a = _two_islands()
    out = apply_postprocess(a, voxel_volume_mm3=1.0, min_component_mm3=1e9)
    assert np.count_nonzero(out) == 1000
    np.testing.assert_array_equal(out[:20, :20, :20], a[:20, :20, :20])


def test_apply_postprocess_counts_corner_neighbours_as_connected():
    a = np.zeros((6, 6, 6), dtype=np.uint8)
    a[1, 1, 1] = 2
    a[2, 2, 2] = 2  # touches the first only at a corner
    a[5, 5, 5] = 1
    out = apply_postprocess(a, voxel_volume_mm3=1.0, min_component_mm3=2.0)
    assert out[1, 1, 1] == 2 and out[2, 2, 2] == 2
    assert out[5, 5, 5] == 0


def test_apply_postprocess_turns_tiny_et_into_ncr():
    a = _two_islands()  # 8 ET voxels
    out = apply_postprocess(a, voxel_volume_mm3=1.0, et_min_mm3=9.0)
    assert not np.any(out == 4)
    assert np.count_nonzero(out == 1) == np.count_nonzero((a == 1) | (a == 4))
    np.testing.assert_array_equal(out > 0, a > 0)
    np.testing.assert_array_equal(apply_postprocess(a, voxel_volume_mm3=1.0, et_min_mm3=8.0), a)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"voxel_volume_mm3": 0.0}, "expected a positive voxel volume, found 0.0"),
        ({"voxel_volume_mm3": 1.0, "min_component_mm3": -1.0}, "expected min_component_mm3 >= 0, found -1.0"),
        ({"voxel_volume_mm3": 1.0, "et_min_mm3": -5}, "expected et_min_mm3 >= 0, found -5"),
        (
            {"voxel_volume_mm3": 1.0, "min_component_fraction": 1.5},
            r"min_component_fraction in \[0, 1\], found 1.5",
        ),
    ],
)
def test_apply_postprocess_refuses_bad_settings(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        apply_postprocess(_two_islands(), **kwargs)


def test_apply_postprocess_refuses_non_brats_labels():
    a = _two_islands()
    a[0, 0, 0] = 3
    with pytest.raises(ValueError, match="found unexpected value"):
        apply_postprocess(a, voxel_volume_mm3=1.0)


def test_card_postprocess_settings_are_filled_and_checked():
    output = {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"]}
    card = _card(output)
    off = {"min_component_mm3": 0.0, "min_component_fraction": 0.0, "et_min_mm3": 0.0}
    assert postprocess_settings(card) == off
    card = ModelCard(
        name="t",
        files=[],
        sha256={},
        channels=["T1", "T1CE", "T2", "FLAIR"],
        output=output,
        postprocess={"et_min_mm3": 200},
    )
    assert postprocess_settings(card)["et_min_mm3"] == 200.0
    with pytest.raises(ModelError, match=r"postprocess expects keys from .*found \['largest_only'\]"):
        ModelCard.from_dict({**card.to_dict(), "postprocess": {"largest_only": 1}})
    with pytest.raises(ModelError, match="postprocess et_min_mm3 must be a finite number >= 0, found -1"):
        ModelCard.from_dict({**card.to_dict(), "postprocess": {"et_min_mm3": -1}})
    with pytest.raises(ModelError, match="postprocess et_min_mm3 must be a finite number >= 0, found True"):
        ModelCard.from_dict({**card.to_dict(), "postprocess": {"et_min_mm3": True}})
    message = "postprocess min_component_mm3 must be a finite number >= 0, found inf"
    with pytest.raises(ModelError, match=message):
        ModelCard.from_dict({**card.to_dict(), "postprocess": {"min_component_mm3": float("inf")}})
    with pytest.raises(ModelError, match="postprocess min_component_fraction must be at most 1, found 2"):
        ModelCard.from_dict({**card.to_dict(), "postprocess": {"min_component_fraction": 2}})
    with pytest.raises(ModelError, match=r"postprocess must be an object of settings, found \[\]"):
        ModelCard.from_dict({**card.to_dict(), "postprocess": []})
