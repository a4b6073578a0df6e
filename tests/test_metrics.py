"""Tests for brats_seg.metrics: Dice, HD95, per-region scores and summaries."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from brats_seg.metrics import HD95_EMPTY_PENALTY, bootstrap_ci, dice, flatten_scores, hd95, score, summarise
from brats_seg.types import LabelMap


def _labelmap(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> LabelMap:
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape)
    header.set_zooms(spacing)
    return LabelMap(array, np.diag([*spacing, 1.0]), header)


def _cube(shape, start, size) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = True
    return m


def _hd95_reference(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """Brute force: face-connected surface by neighbour checks, all pairwise distances."""

    def surface_points(m):
        padded = np.pad(m, 1)
        inner = np.ones_like(m)
        for axis in range(m.ndim):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    d = cdist(surface_points(pred), surface_points(truth))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


# --- dice ---------------------------------------------------------------------------------------


def test_dice_two_cubes_overlapping_by_half():
    a = _cube((10, 10, 10), (2, 2, 2), (4, 4, 4))
    b = _cube((10, 10, 10), (4, 2, 2), (4, 4, 4))  # shifted by 2 of 4 voxels: 32 shared of 64 each
    assert dice(a, b) == pytest.approx(0.5)


def test_dice_identical_disjoint_and_empty_conventions():
    a = _cube((6, 6, 6), (0, 0, 0), (2, 2, 2))
    b = _cube((6, 6, 6), (3, 3, 3), (2, 2, 2))
    empty = np.zeros((6, 6, 6), dtype=bool)
    assert dice(a, a) == 1.0
    assert dice(a, b) == 0.0
    assert dice(empty, empty) == 1.0
    assert dice(a, empty) == 0.0
    assert dice(empty, a) == 0.0


def test_dice_accepts_label_valued_masks():
    a = _cube((6, 6, 6), (0, 0, 0), (2, 2, 2)).astype(np.uint8) * 4
    assert dice(a, a > 0) == 1.0


def test_dice_shape_mismatch():
    with pytest.raises(ValueError, match=r"same shape, found \(2, 2, 2\) and \(2, 2, 3\)"):
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


# --- hd95 ---------------------------------------------------------------------------------------


def test_hd95_plates_shifted_along_anisotropic_axis():
    # Two one-voxel-thick 10 x 10 plates, 3 voxels apart along z with 2 mm voxels: every surface voxel
    # is 3 x 2 = 6 mm from the other plate.
    a = _cube((20, 20, 20), (5, 5, 5), (10, 10, 1))
    b = _cube((20, 20, 20), (5, 5, 8), (10, 10, 1))
    assert hd95(a, b, spacing=(1.0, 1.0, 2.0)) == pytest.approx(6.0)
    # The same plates 3 voxels apart along z with 1 mm voxels: 3 mm.
    assert hd95(a, b, spacing=(1.0, 1.0, 1.0)) == pytest.approx(3.0)


def test_hd95_cubes_shifted_match_brute_force():
    a = _cube((30, 30, 30), (5, 5, 5), (10, 10, 10))
    b = _cube((30, 30, 30), (5, 5, 8), (10, 10, 10))
    spacing = (1.0, 1.0, 2.0)
    assert hd95(a, b, spacing=spacing) == pytest.approx(_hd95_reference(a, b, spacing))


def test_hd95_identical_masks_is_zero():
    a = _cube((10, 10, 10), (2, 3, 4), (5, 4, 3))
    assert hd95(a, a) == 0.0


def test_hd95_empty_conventions():
    a = _cube((10, 10, 10), (2, 2, 2), (3, 3, 3))
    empty = np.zeros((10, 10, 10), dtype=bool)
    assert hd95(empty, empty) == 0.0
    assert hd95(a, empty) == HD95_EMPTY_PENALTY
    assert hd95(empty, a) == HD95_EMPTY_PENALTY
    assert hd95(a, empty, empty_penalty=99.0) == 99.0
    assert HD95_EMPTY_PENALTY == pytest.approx(math.sqrt(240**2 + 240**2 + 155**2), abs=0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_random_blobs_match_brute_force(seed):
    # Random blobs, some touching the array border, with anisotropic spacing: checks the crop, the
    # face-connected surface, the border handling and the symmetric 95th percentile.
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    def blob():
        return ndimage.gaussian_filter(rng.random((16, 18, 14)), 2) > 0.52

    a, b = blob(), blob()
    assert a.any() and b.any()
    spacing = (0.9, 1.2, 2.5)
    assert hd95(a, b, spacing=spacing) == pytest.approx(_hd95_reference(a, b, spacing))


def test_hd95_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    a = _cube((40, 40, 30), (5, 6, 7), (20, 12, 9))
    b = _cube((40, 40, 30), (9, 4, 10), (14, 18, 8))
    b[20:30, 20:30, 20:25] = True
    spacing = (1.0, 1.5, 2.0)
    expected = monai_metrics.compute_hausdorff_distance(
        torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], percentile=95, spacing=spacing
    ).item()
    assert hd95(a, b, spacing=spacing) == pytest.approx(expected, rel=1e-5)


def test_hd95_full_size_volume_runs():
    shape = (240, 240, 155)
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    sphere_a = (grid[0] - 120) ** 2 + (grid[1] - 110) ** 2 + (grid[2] - 70) ** 2 <= 30**2
    sphere_b = (grid[0] - 124) ** 2 + (grid[1] - 110) ** 2 + (grid[2] - 70) ** 2 <= 28**2
    value = hd95(sphere_a, sphere_b)
    assert 2.0 <= value <= 6.5


def test_hd95_shape_and_spacing_errors():
    with pytest.raises(ValueError, match=r"same shape, found \(2, 2, 2\) and \(3, 2, 2\)"):
        hd95(np.ones((2, 2, 2)), np.ones((3, 2, 2)))
    with pytest.raises(ValueError, match=r"expected 3 positive voxel sizes in mm, found \(1.0, 0.0, 1.0\)"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"expected 3 positive voxel sizes"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1.0, 1.0))


# --- score --------------------------------------------------------------------------------------


def _plates_labels():
    """Truth: ET plate at z=5 inside an ED slab; prediction: ET plate 3 voxels higher, same ED slab."""
    truth = np.zeros((20, 20, 20), dtype=np.uint8)
    truth[5:15, 5:15, 3:12] = 2
    pred = truth.copy()
    truth[5:15, 5:15, 5] = 4
    pred[5:15, 5:15, 8] = 4
    return pred, truth


def test_score_golden_values_with_labelmap_spacing():
    pred, truth = _plates_labels()
    result = score(_labelmap(pred, (1.0, 1.0, 2.0)), _labelmap(truth, (1.0, 1.0, 2.0)))
    assert list(result) == ["ET", "TC", "WT"]
    assert result["ET"] == {"dice": 0.0, "hd95": pytest.approx(6.0)}
    assert result["TC"] == {"dice": 0.0, "hd95": pytest.approx(6.0)}  # TC is the ET plate here
    assert result["WT"] == {"dice": 1.0, "hd95": 0.0}


def test_score_spacing_from_either_labelmap_or_explicit():
    pred, truth = _plates_labels()
    assert score(pred, _labelmap(truth, (1.0, 1.0, 2.0)))["ET"]["hd95"] == pytest.approx(6.0)
    assert score(pred, truth)["ET"]["hd95"] == pytest.approx(3.0)
    explicit = score(_labelmap(pred, (1.0, 1.0, 2.0)), truth, spacing=(1.0, 1.0, 0.5))
    assert explicit["ET"]["hd95"] == pytest.approx(1.5)


def test_score_empty_regions():
    truth = np.zeros((8, 8, 8), dtype=np.uint8)
    truth[2:5, 2:5, 2:5] = 2
    pred = np.zeros_like(truth)
    result = score(pred, truth)
    assert result["ET"] == {"dice": 1.0, "hd95": 0.0}  # no ET in either
    assert result["WT"] == {"dice": 0.0, "hd95": HD95_EMPTY_PENALTY}


def test_score_shape_mismatch_states_both_shapes():
    with pytest.raises(ValueError, match=r"prediction \(4, 4, 4\) and ground truth \(4, 4, 5\)"):
        score(np.zeros((4, 4, 4), np.uint8), _labelmap(np.zeros((4, 4, 5), np.uint8)))


def test_score_spacing_mismatch_between_labelmaps():
    a = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(
        ValueError,
        match=r"same voxel spacing, found prediction \(1.0, 1.0, 1.0\) and ground truth \(1.0, 1.0, 2.0\)",
    ):
        score(_labelmap(a), _labelmap(a, (1.0, 1.0, 2.0)))


def test_score_rejects_invalid_labels():
    a = np.zeros((4, 4, 4), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"ground truth: .*unexpected value\(s\) 3"):
        score(a, b)
    with pytest.raises(ValueError, match=r"prediction: .*unexpected value\(s\) 3"):
        score(b, a)


# --- flatten_scores / summarise -----------------------------------------------------------------


def test_flatten_scores():
    pred, truth = _plates_labels()
    row = flatten_scores(score(pred, truth))
    assert list(row) == ["dice_ET", "hd95_ET", "dice_TC", "hd95_TC", "dice_WT", "hd95_WT"]
    assert row["hd95_ET"] == pytest.approx(3.0)


def test_summarise_population_std_and_order():
    rows = [
        {"case": "a", "dice_ET": 1.0, "hd95_WT": 2.0},
        {"dice_ET": 2.0},
        {"dice_ET": 3.0},
        {"dice_ET": 4.0},
    ]
    s = summarise(rows, confidence=None)
    assert list(s) == ["dice_ET", "hd95_WT"]  # "case" is not numeric: ignored
    assert s["dice_ET"] == {
        "mean": 2.5,
        "median": 2.5,
        "std": pytest.approx(math.sqrt(1.25)),  # ddof=0; ddof=1 would be 1.29
        "min": 1.0,
        "max": 4.0,
        "n": 4,
    }
    assert s["hd95_WT"] == {"mean": 2.0, "median": 2.0, "std": 0.0, "min": 2.0, "max": 2.0, "n": 1}


def test_summarise_adds_the_bootstrap_interval_of_each_mean():
    rows = [{"dice_ET": v} for v in (1.0, 2.0, 3.0, 4.0)] + [{"hd95_WT": 2.0}]
    s = summarise(rows)
    low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert (s["dice_ET"]["ci_low"], s["dice_ET"]["ci_high"]) == (low, high)
    assert 1.0 <= low < 2.5 < high <= 4.0
    assert (s["hd95_WT"]["ci_low"], s["hd95_WT"]["ci_high"]) == (2.0, 2.0)  # one value: a zero-width interval


def test_summarise_gives_no_interval_for_an_infinite_value():
    s = summarise([{"x": float("inf")}, {"x": 1.0}])
    assert s["x"]["mean"] == float("inf") and "ci_low" not in s["x"]


def test_summarise_skips_nan_and_empty():
    s = summarise([{"dice_TC": float("nan")}, {"dice_TC": 0.5, "hd95_TC": float("nan")}])
    assert s == {
        "dice_TC": {
            "mean": 0.5,
            "median": 0.5,
            "std": 0.0,
            "min": 0.5,
            "max": 0.5,
            "n": 1,
            "ci_low": 0.5,
            "ci_high": 0.5,
        }
    }
    assert summarise([]) == {}


# --- bootstrap_ci -----------------------------------------------------------------------------------


def test_bootstrap_ci_matches_the_normal_interval_for_many_values():
    values = np.random.default_rng(1).normal(10.0, 2.0, size=400)
    low, high = bootstrap_ci(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)  # the textbook 95% interval of a mean
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (high + low) / 2 == pytest.approx(values.mean(), abs=0.1 * half)


def test_bootstrap_ci_is_deterministic_and_narrows_with_lower_confidence():
    values = [0.9, 0.85, 0.4, 0.95, 0.7, 0.88]
    assert bootstrap_ci(values) == bootstrap_ci(values)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values)
    wide, narrow = bootstrap_ci(values, confidence=0.95), bootstrap_ci(values, confidence=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    same = 14.07124727947029  # summation rounding must not put the interval outside equal values
    assert bootstrap_ci([same] * 3) == (same, same)


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        ([], {}, "expected at least one value, found none"),
        ([1.0, float("nan")], {}, "expected finite values, found 1 that are not"),
        ([1.0], {"confidence": 1.0}, r"expected a confidence in \(0, 1\), found 1.0"),
        ([1.0], {"n_resamples": 10}, "expected n_resamples >= 100, found 10"),
    ],
)
def test_bootstrap_ci_refuses_bad_input(values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(values, **kwargs)


def test_score_per_label_scores_ncr_and_ed_on_their_own() -> None:
    truth = np.zeros((10, 10, 10), dtype=np.uint8)
    truth[2:8, 2:8, 2:8] = 2
    truth[3:7, 3:7, 3:7] = 1
    truth[4:6, 4:6, 4:6] = 4
    pred = truth.copy()
    pred[3:7, 3:7, 3] = 2  # one slice of NCR called oedema: TC and NCR lose, WT does not
    plain = score(pred, truth)
    assert list(plain) == ["ET", "TC", "WT"]
    full = score(pred, truth, per_label=True)
    assert list(full) == ["ET", "TC", "WT", "NCR", "ED"]
    assert full["WT"]["dice"] == 1.0 and full["ET"] == plain["ET"]
    # 56 and 40 voxels, all of pred inside truth
    ncr_t, ncr_p = int((truth == 1).sum()), int((pred == 1).sum())
    assert full["NCR"]["dice"] == pytest.approx(2 * ncr_p / (ncr_p + ncr_t))
    ed_t, ed_p = int((truth == 2).sum()), int((pred == 2).sum())
    assert full["ED"]["dice"] == pytest.approx(2 * ed_t / (ed_p + ed_t))
    assert full["ED"]["hd95"] >= 0.0 and full["NCR"]["hd95"] > 0.0


def _bootstrap_reference(values, *, confidence=0.95, n_resamples=10_000, seed=0):
    """The hand-written loop ``bootstrap_ci`` used before it called ``scipy.stats.bootstrap``."""
    a = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):
        stop = min(start + 1000, n_resamples)
        means[start:stop] = a[rng.integers(0, a.size, size=(stop - start, a.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(np.clip(low, a.min(), a.max())), float(np.clip(high, a.min(), a.max()))


@pytest.mark.parametrize("seed", [0, 3])
def test_bootstrap_ci_draws_the_same_resamples_as_the_hand_written_loop(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        values = rng.normal(size=int(rng.integers(2, 40))) * 10
        confidence = float(rng.choice([0.5, 0.9, 0.95]))
        n_resamples = int(rng.choice([100, 1234, 10_000]))
        kwargs = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
        expected = _bootstrap_reference(values, **kwargs)
        assert bootstrap_ci(values, **kwargs) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_ci_reproduces_the_intervals_the_model_card_records():
    import csv
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with open(
        root / "docs/model/experiments/cpu-stage6-extra12/cv_scores_tta_no_postprocess.csv", newline=""
    ) as f:
        rows = list(csv.DictReader(f))
    card = json.loads((root / "model/model.json").read_text())
    recorded = card["scores"]["cross_validation_tta"]["metrics"]
    for key in ("dice_ET", "dice_TC", "dice_WT", "hd95_WT", "dice_NCR", "dice_ED"):
        values = [float(row[key]) for row in rows]
        low, high = bootstrap_ci(values)
        assert round(float(np.mean(values)), 6) == recorded[key]["mean"], key
        assert (round(low, 6), round(high, 6)) == (recorded[key]["ci_low"], recorded[key]["ci_high"]), key


def test_dice_matches_a_float64_ratio_to_the_recorded_precision():
    rng = np.random.default_rng(4)
    a = rng.random((60, 50, 40)) > 0.4
    b = rng.random((60, 50, 40)) > 0.5
    expected = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    assert dice(a, b) == pytest.approx(expected, abs=1e-7)


def test_metrics_accept_read_only_arrays():
    a = _cube((10, 10, 10), (2, 2, 2), (4, 4, 4))
    b = _cube((10, 10, 10), (3, 2, 2), (4, 4, 4))
    a.setflags(write=False)
    b.setflags(write=False)
    assert dice(a, b) == pytest.approx(0.75)
    assert hd95(a, b) == pytest.approx(_hd95_reference(a, b, (1.0, 1.0, 1.0)))


def _hd95_scipy_edt(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """The hand-written HD95 this module used before MONAI: face-connected surfaces, scipy's EDT."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, 1)
    edge_p = pred & ~ndimage.binary_erosion(pred, structure=structure, border_value=0)
    edge_t = truth & ~ndimage.binary_erosion(truth, structure=structure, border_value=0)
    to_t = ndimage.distance_transform_edt(~edge_t, sampling=spacing)[edge_p]
    to_p = ndimage.distance_transform_edt(~edge_p, sampling=spacing)[edge_t]
    return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))


@pytest.mark.data
def test_scores_of_a_real_case_match_the_hand_written_metrics(brats_case) -> None:
    # The card's recorded scores were computed with the hand-written Dice and HD95; MONAI's must give
    # the same figures to the 6 decimals the card keeps, on a real tumour's ragged surfaces.
    from scipy import ndimage

    truth = np.asarray(nib.load(next(brats_case.glob("*_seg.nii.gz"))).dataobj).astype(np.uint8)
    pred = np.roll(truth, 3, axis=0)
    pred[~ndimage.binary_erosion(truth > 0, iterations=2)] = 0
    spacing = (1.0, 1.2, 2.5)
    result = score(pred, truth, spacing=spacing, per_label=True)
    masks = {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4), "NCR": (1,), "ED": (2,)}
    for region, values in masks.items():
        p, t = np.isin(pred, values), np.isin(truth, values)
        expected_dice = 2.0 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t))
        assert result[region]["dice"] == pytest.approx(expected_dice, abs=1e-7), region
        assert result[region]["hd95"] == pytest.approx(_hd95_scipy_edt(p, t, spacing), abs=1e-6), region


def test_import_in_background_loads_monai_metrics() -> None:
    import sys

    from brats_seg import metrics

    thread = metrics.import_in_background()
    thread.join(timeout=120)
    assert not thread.is_alive() and "monai.metrics" in sys.modules
