"""Overlap and surface-distance metrics of a predicted label map against a ground truth.

The BraTS conventions are used: Dice and the 95th-percentile Hausdorff distance (HD95, in mm) per
evaluated region ET, TC and WT. Functions on numpy arrays; the metrics themselves are MONAI's
(``monai.metrics``) and the bootstrap interval is scipy's (``scipy.stats.bootstrap``). MONAI and torch
are imported when a mask is first scored, so that summarising stored scores stays a light import.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage, stats

from .postprocess import check_labels, labels_to_regions
from .types import REGIONS, LabelMap, bounding_box

__all__ = [
    "HD95_EMPTY_PENALTY",
    "SCORE_LABELS",
    "SCORE_REGIONS",
    "bootstrap_ci",
    "dice",
    "flatten_scores",
    "hd95",
    "score",
    "summarise",
]

#: HD95 (mm) when exactly one of the two masks is empty: the BraTS convention, the diagonal of the
#: 240 x 240 x 155 volume at 1 mm (sqrt(240² + 240² + 155²) ≈ 373.13).
HD95_EMPTY_PENALTY: float = 373.13

#: Region order of :func:`score` results.
SCORE_REGIONS: tuple[str, ...] = tuple(REGIONS)  # ("ET", "TC", "WT")

#: The labels scored on their own with ``score(..., per_label=True)``; the label ET (4) is the region ET.
SCORE_LABELS: dict[str, int] = {"NCR": 1, "ED": 2}


def _mask_pair(pred: np.ndarray, truth: np.ndarray, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).astype(bool, copy=False)
    t = np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(
            f"{what}: prediction and ground truth must have the same shape, found {p.shape} and {t.shape}"
        )
    return p, t


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2 |P ∩ T| / (|P| + |T|)`` of two masks, by MONAI's ``compute_dice``.

    ``compute_dice(..., include_background=True, ignore_empty=False)`` gives the BraTS empty-region
    conventions below; it returns float32, so the value can differ from a float64 ratio in the 8th
    decimal (far below the 6 decimals the model card records).

    Args:
        pred: Predicted mask (nonzero = inside), any shape.
        truth: Ground-truth mask of the same shape.

    Returns:
        Dice in [0, 1]: 1.0 when both masks are empty (nothing to find, nothing found), 0.0 when
        exactly one is empty.

    Raises:
        ValueError: if the shapes differ.
    """
    import torch
    from monai.metrics import compute_dice

    p, t = _mask_pair(pred, truth, what="dice")
    if p.ndim == 3:  # voxels outside both masks add nothing: the same sums from the box around them
        box = bounding_box(p | t) or (slice(0, 1),) * 3
        p, t = p[box], t[box]
    p_t, t_t = (torch.from_numpy(np.array(m[None, None])) for m in (p, t))  # writable copies for torch
    value = compute_dice(p_t, t_t, include_background=True, ignore_empty=False)
    return float(value.item())


def import_in_background() -> threading.Thread:
    """Start importing MONAI's metrics in a daemon thread: the first import takes 5–8 s on 2 cores (all
    of MONAI loads), which a study with a ground truth would otherwise wait for between Predict and its
    scores."""

    def run() -> None:
        import monai.metrics  # noqa: F401

    thread = threading.Thread(target=run, name="brats-metrics-import", daemon=True)
    thread.start()
    return thread


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing: expected {ndim} positive voxel sizes in mm, found {tuple(spacing)}")
    return sp


def hd95(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    empty_penalty: float = HD95_EMPTY_PENALTY,
) -> float:
    """95th-percentile Hausdorff distance between the surfaces of two masks, in mm.

    The surface distances come from MONAI (``monai.metrics.utils.get_edge_surface_distance``, what
    ``compute_hausdorff_distance`` uses): surfaces are the mask voxels with a face neighbour outside
    the mask (voxels on the array border count as surface), and each surface voxel's Euclidean
    distance in mm to the nearest surface voxel of the other mask is taken. The larger of the two
    directed 95th percentiles (linear interpolation) is returned, as
    ``compute_hausdorff_distance(percentile=95, spacing=spacing)`` does; the percentile is taken here
    in float64 because ``compute_hausdorff_distance`` interpolates with ``torch.quantile`` in float32,
    whose rounded index moves HD95 by up to 3e-5 mm on real cases (the model card records 6 decimals).

    Both masks are cropped to their joint bounding box first (``scipy.ndimage.find_objects``), which
    gives the same distances and is fast on a 240 x 240 x 155 volume. The empty-mask conventions are
    the BraTS ones, handled here (MONAI returns NaN or inf for them).

    Args:
        pred: Predicted mask (nonzero = inside), any number of dimensions.
        truth: Ground-truth mask of the same shape.
        spacing: Voxel size in mm along each array axis.
        empty_penalty: Value returned when exactly one mask is empty (BraTS: 373.13 mm).

    Returns:
        HD95 in mm: 0.0 when both masks are empty, ``empty_penalty`` when exactly one is.

    Raises:
        ValueError: if the shapes differ or ``spacing`` is not one positive value per axis.
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    p, t = _mask_pair(pred, truth, what="hd95")
    sp = _check_spacing(spacing, p.ndim)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0
    if not (has_p and has_t):
        return float(empty_penalty)
    box = ndimage.find_objects((p | t).view(np.uint8))[0]
    p_box, t_box = (torch.from_numpy(np.array(m[box])) for m in (p, t))  # writable copies
    _, distances, _ = get_edge_surface_distance(p_box, t_box, spacing=list(sp), symmetric=True)
    return float(max(np.percentile(d.numpy().astype(np.float64), 95) for d in distances))


def _unwrap(x: LabelMap | np.ndarray) -> tuple[np.ndarray, tuple[float, ...] | None]:
    if isinstance(x, LabelMap):
        return np.asarray(x.array), tuple(x.spacing)
    return np.asarray(x), None


def score(
    pred: LabelMap | np.ndarray,
    truth: LabelMap | np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    per_label: bool = False,
) -> dict[str, dict[str, float]]:
    """Dice and HD95 per BraTS region (and, with ``per_label``, per label) of a predicted label map.

    Args:
        pred: Predicted BraTS label map (values 0, 1, 2, 4), a ``LabelMap`` or an array.
        truth: Ground-truth label map on the same grid.
        spacing: Voxel size in mm. When None, taken from whichever argument is a ``LabelMap``
            (they must agree if both are), else 1 mm isotropic.
        per_label: Also score the labels NCR (1) and ED (2) on their own, as the original work's
            table does (the label ET is the region ET).

    Returns:
        ``{"ET": {"dice": .., "hd95": ..}, "TC": {...}, "WT": {...}}``, then ``"NCR"`` and ``"ED"``
        with ``per_label``; see :func:`dice` and :func:`hd95` for the empty-region conventions.

    Raises:
        ValueError: if the shapes differ (both are stated), the two ``LabelMap`` spacings differ
            while ``spacing`` is None, or either map holds values outside {0, 1, 2, 4}.
    """
    p, p_spacing = _unwrap(pred)
    t, t_spacing = _unwrap(truth)
    if p.shape != t.shape:
        raise ValueError(
            f"score: prediction and ground truth must have the same shape, "
            f"found prediction {tuple(p.shape)} and ground truth {tuple(t.shape)}"
        )
    if spacing is None:
        if p_spacing is not None and t_spacing is not None and not np.allclose(p_spacing, t_spacing):
            raise ValueError(
                f"score: prediction and ground truth must have the same voxel spacing, "
                f"found prediction {p_spacing} and ground truth {t_spacing} mm"
            )
        spacing = p_spacing or t_spacing or (1.0,) * p.ndim
    check_labels(p, name="prediction")
    check_labels(t, name="ground truth")
    p_regions = labels_to_regions(p, regions=SCORE_REGIONS)
    t_regions = labels_to_regions(t, regions=SCORE_REGIONS)
    out = {
        region: {"dice": dice(pr, tr), "hd95": hd95(pr, tr, spacing=spacing)}
        for region, pr, tr in zip(SCORE_REGIONS, p_regions, t_regions, strict=True)
    }
    for name, value in SCORE_LABELS.items() if per_label else ():
        p_label, t_label = p == value, t == value
        out[name] = {"dice": dice(p_label, t_label), "hd95": hd95(p_label, t_label, spacing=spacing)}
    return out


def flatten_scores(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Flatten :func:`score` output into one row: ``{"dice_ET": .., "hd95_ET": .., "dice_TC": ..}``.

    Args:
        scores: ``{region: {metric: value}}``.

    Returns:
        ``{f"{metric}_{region}": value}`` in region order, then metric order.
    """
    return {
        f"{metric}_{region}": float(v)
        for region, by_metric in scores.items()
        for metric, v in by_metric.items()
    }


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``, by ``scipy.stats.bootstrap``.

    Resamples the values with replacement ``n_resamples`` times and returns the central
    ``confidence`` range of the resampled means (``method="percentile"``, resampled in batches of
    1000 for bounded memory). Deterministic for a given ``seed``: the generator
    ``numpy.random.default_rng(seed)`` draws the same resamples as the hand-written loop this
    replaced, so the intervals the model card records are reproduced. For paired comparisons (two
    models on the same cases), pass the per-case differences.

    Two details scipy does not give: one value has the interval ``(value, value)`` (scipy needs two),
    and the bounds are clipped to the values' range, since a resampled mean lies within the values
    and summation rounding can put it a hair outside.

    Args:
        values: Finite per-case values (at least one).
        confidence: Coverage of the interval, in (0, 1).
        n_resamples: Number of bootstrap resamples (at least 100).
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``; both equal the value when there is only one.

    Raises:
        ValueError: On no values, a value that is not finite, or a knob out of range.
    """
    a = np.asarray(values, dtype=float).ravel()
    if a.size == 0:
        raise ValueError("bootstrap_ci: expected at least one value, found none")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"bootstrap_ci: expected finite values, found {bad} that are not")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ci: expected a confidence in (0, 1), found {confidence}")
    if n_resamples < 100:
        raise ValueError(f"bootstrap_ci: expected n_resamples >= 100, found {n_resamples}")
    if a.size == 1:
        return float(a[0]), float(a[0])
    result = stats.bootstrap(
        (a,),
        np.mean,
        n_resamples=n_resamples,
        batch=1000,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(np.clip(low, a.min(), a.max())), float(np.clip(high, a.min(), a.max()))


def summarise(
    rows: Sequence[Mapping[str, float]], *, confidence: float | None = 0.95
) -> dict[str, dict[str, float]]:
    """Summary statistics per metric over many cases.

    Args:
        rows: One dict per case, e.g. ``{"dice_ET": 0.8, "hd95_ET": 3.0, ...}`` (see
            :func:`flatten_scores`). Values that are not real numbers (a case name, a bool) are
            ignored, as are NaN values; a row that lacks a key is left out of that key's statistics.
        confidence: Coverage of the bootstrap interval of each mean (:func:`bootstrap_ci`, 10,000
            resamples, seed 0); ``None`` leaves the interval out (for callers that summarise many
            times and only rank means).

    Returns:
        ``{key: {"mean", "median", "std", "min", "max", "n", "ci_low", "ci_high"}}`` in order of first
        appearance, where ``std`` is the population standard deviation (``ddof=0``), ``n`` the
        number of values used and ``ci_low``/``ci_high`` the interval of the mean (absent when
        ``confidence`` is ``None`` or a value is infinite). Keys with no usable value are omitted.
    """
    collected: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                continue
            collected.setdefault(key, [])
            if not math.isnan(float(value)):
                collected[key].append(float(value))
    summary: dict[str, dict[str, float]] = {}
    for key, values in collected.items():
        if not values:
            continue
        a = np.asarray(values, dtype=float)
        summary[key] = {
            "mean": float(a.mean()),
            "median": float(np.median(a)),
            "std": float(a.std(ddof=0)),
            "min": float(a.min()),
            "max": float(a.max()),
            "n": len(values),
        }
        if confidence is not None and np.isfinite(a).all():  # an infinite value has no interval
            summary[key]["ci_low"], summary[key]["ci_high"] = bootstrap_ci(a, confidence=confidence)
    return summary
