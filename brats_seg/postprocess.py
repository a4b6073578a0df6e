"""Turn network outputs into BraTS label maps, and label maps into evaluated regions.

BraTS label values: 0 background, 1 necrotic / non-enhancing tumour core (NCR), 2 peritumoral edema
(ED), 4 GD-enhancing tumour (ET). The evaluated regions are nested:
ET = {4} ⊆ TC (tumour core) = {1, 4} ⊆ WT (whole tumour) = {1, 2, 4}.

Pure functions on numpy arrays; the caller wraps a result in a ``LabelMap`` with its study's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from .card import POSTPROCESS_KEYS
from .types import LABEL_NAMES, REGIONS

if TYPE_CHECKING:
    from .card import ModelCard

__all__ = [
    "DEFAULT_REGION_ORDER",
    "VALID_LABELS",
    "apply_postprocess",
    "check_labels",
    "classes_to_labels",
    "labels_to_regions",
    "postprocess_settings",
    "regions_to_labels",
    "to_labels",
]

#: Every value a BraTS label map may hold.
VALID_LABELS: tuple[int, ...] = (0, *sorted(LABEL_NAMES))

#: Channel order of region outputs unless told otherwise (that of the MONAI BraTS tutorial).
DEFAULT_REGION_ORDER: tuple[str, ...] = ("TC", "WT", "ET")

_MAX_LISTED = 10


def check_labels(labels: np.ndarray, *, name: str = "label map") -> None:
    """Check that an array holds only BraTS label values (0, 1, 2, 4).

    Integer-valued floats (``1.0``) are accepted; any other value (``3``, ``1.5``, NaN, ``-1``) is not.

    Args:
        labels: Array of any shape and numeric dtype.
        name: What the array is, for the error message (e.g. ``"prediction"``, a file name).

    Raises:
        ValueError: if any value is outside {0, 1, 2, 4}; the message lists the unexpected values
            (up to ten) and how many voxels hold them.
    """
    a = np.asarray(labels)
    if a.dtype == bool:
        return
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(
            f"{name}: expected a numeric array of BraTS labels {set(VALID_LABELS)}, found dtype {a.dtype}"
        )
    if _only_valid_integers(a):
        return
    bad = ~np.isin(a, VALID_LABELS)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return
    values = np.unique(a[bad])
    listed = ", ".join(f"{v:g}" for v in values[:_MAX_LISTED].tolist())
    more = f" and {values.size - _MAX_LISTED} more" if values.size > _MAX_LISTED else ""
    raise ValueError(
        f"{name}: expected only BraTS label values {{0, 1, 2, 4}}, "
        f"found unexpected value(s) {listed}{more} in {n_bad} voxel(s)"
    )


def _only_valid_integers(a: np.ndarray) -> bool:
    """Whether an integer array holds only 0, 1, 2 and 4, in two or three passes at memory speed.

    False for any other dtype and for any doubt: :func:`check_labels` then looks voxel by voxel.
    """
    if a.dtype.kind not in "iu":
        return False
    if a.size == 0:
        return True
    if a.dtype.kind == "i" and a.min() < 0:
        return False
    high = int(a.max())
    return high <= 2 or (high == 4 and not np.any(a == 3))


def _check_region_order(order: Sequence[str], *, what: str) -> tuple[str, ...]:
    order = tuple(order)
    if sorted(order) != sorted(REGIONS):
        raise ValueError(
            f"{what}: expected an ordering of the regions {sorted(REGIONS)}, found {list(order)}"
        )
    return order


def labels_to_regions(labels: np.ndarray, *, regions: Sequence[str] = DEFAULT_REGION_ORDER) -> np.ndarray:
    """Convert a BraTS label map into stacked boolean region masks.

    TC = labels {1, 4}, WT = labels {1, 2, 4}, ET = label {4}.

    Args:
        labels: Label map of shape ``(X, Y, Z)`` (any number of dimensions works) with values 0, 1, 2, 4.
        regions: Channel order of the output, a permutation of ``("TC", "WT", "ET")``.

    Returns:
        Boolean array of shape ``(3, X, Y, Z)``, one channel per region in ``regions`` order.

    Raises:
        ValueError: if ``labels`` holds values outside {0, 1, 2, 4} (they are named) or ``regions`` is
            not a permutation of TC, WT, ET.
    """
    order = _check_region_order(regions, what="labels_to_regions(regions=...)")
    a = np.asarray(labels)
    check_labels(a)
    return np.stack([np.isin(a, REGIONS[r]) for r in order])


def regions_to_labels(
    regions: np.ndarray,
    *,
    order: Sequence[str] = DEFAULT_REGION_ORDER,
    threshold: float | Sequence[float] = 0.5,
) -> np.ndarray:
    """Convert region probabilities (or masks) into a BraTS label map.

    Each channel is binarised with ``value >= threshold`` (as MONAI's ``AsDiscrete(threshold=...)``
    does; boolean masks pass through unchanged for any threshold in (0, 1]). The regions are then
    applied hierarchically, following the nested-region convention ET ⊆ TC ⊆ WT:

    - label 4 (ET) where ET is on;
    - else label 1 (NCR) where TC is on;
    - else label 2 (ED) where WT is on;
    - else 0.

    So an ET voxel is tumour core and whole tumour even where the TC or WT channel is below the
    threshold, and a TC voxel is whole tumour even where WT is below it: a network's inconsistent
    channels never drop a voxel that an inner region claims.

    Args:
        regions: Array of shape ``(3, X, Y, Z)``: probabilities in [0, 1] or boolean masks.
        order: Which region each channel holds, a permutation of ``("TC", "WT", "ET")``.
        threshold: Probability at or above which a region is on: one for all, or one per channel (in
            ``order``).

    Returns:
        ``uint8`` label map of shape ``(X, Y, Z)`` with values 0, 1, 2, 4.

    Raises:
        ValueError: if the first axis is not of length 3, ``order`` is not a permutation of TC, WT, ET,
            or ``threshold`` is a sequence whose length is not 3.
    """
    order = _check_region_order(order, what="regions_to_labels(order=...)")
    thresholds = [threshold] * len(order) if np.ndim(threshold) == 0 else list(threshold)
    if len(thresholds) != len(order):
        raise ValueError(
            f"regions_to_labels: expected one threshold or one per region {list(order)}, found {threshold!r}"
        )
    cut = dict(zip(order, thresholds, strict=True))
    r = np.asarray(regions)
    if r.ndim < 2 or r.shape[0] != len(order):
        raise ValueError(
            f"regions: expected shape (3, X, Y, Z) with channels {list(order)}, found shape {tuple(r.shape)}"
        )
    channel = {name: r[i] for i, name in enumerate(order)}
    et = channel["ET"] >= cut["ET"]
    tc = (channel["TC"] >= cut["TC"]) | et
    wt = (channel["WT"] >= cut["WT"]) | tc
    out = np.zeros(r.shape[1:], dtype=np.uint8)
    out[wt] = 2
    out[tc] = 1
    out[et] = 4
    return out


def classes_to_labels(probs: np.ndarray, *, classes: Sequence[int] = VALID_LABELS) -> np.ndarray:
    """Convert per-class scores (softmax probabilities or logits) into a BraTS label map.

    Each voxel takes the label of its highest-scoring channel; ties go to the first such channel.

    Args:
        probs: Array of shape ``(C, X, Y, Z)``.
        classes: The BraTS label value of each channel, e.g. ``(0, 1, 2, 4)``; distinct values from
            {0, 1, 2, 4}, one per channel.

    Returns:
        ``uint8`` label map of shape ``(X, Y, Z)``.

    Raises:
        ValueError: if ``classes`` holds values outside {0, 1, 2, 4} or repeats one, or if the number
            of channels differs from the number of classes.
    """
    classes = tuple(int(c) for c in classes)
    unknown = [c for c in classes if c not in VALID_LABELS]
    if unknown or len(set(classes)) != len(classes):
        raise ValueError(
            f"classes: expected distinct BraTS label values from {list(VALID_LABELS)}, found {list(classes)}"
        )
    p = np.asarray(probs)
    if p.ndim < 2 or p.shape[0] != len(classes):
        raise ValueError(
            f"probs: expected shape ({len(classes)}, X, Y, Z), one channel per class {list(classes)}, "
            f"found shape {tuple(p.shape)}"
        )
    lut = np.asarray(classes, dtype=np.uint8)
    return lut[np.argmax(p, axis=0)]


def to_labels(probs: np.ndarray, card: ModelCard) -> np.ndarray:
    """Convert a network output into a BraTS label map as the model card says.

    - ``card.output["type"] == "regions_sigmoid"``: channels in ``card.output["regions"]`` order,
      thresholded at ``card.output.get("threshold", 0.5)``; see :func:`regions_to_labels`.
    - ``card.output["type"] == "classes_softmax"``: channel ``i`` is label ``card.output["classes"][i]``;
      see :func:`classes_to_labels`.

    Args:
        probs: Network output of shape ``(C, X, Y, Z)`` (after sigmoid or softmax).
        card: The model's card.

    Returns:
        ``uint8`` label map of shape ``(X, Y, Z)`` with values 0, 1, 2, 4.

    Raises:
        ValueError: for an unknown output type or an output whose shape does not match the card.
    """
    output = card.output
    kind = output.get("type")
    if kind == "regions_sigmoid":
        return regions_to_labels(
            probs,
            order=output.get("regions", DEFAULT_REGION_ORDER),
            threshold=float(output.get("threshold", 0.5)),
        )
    if kind == "classes_softmax":
        return classes_to_labels(probs, classes=output.get("classes", VALID_LABELS))
    raise ValueError(
        f"model card {card.name!r}: expected output type 'regions_sigmoid' or 'classes_softmax', "
        f"found {kind!r}"
    )


def apply_postprocess(
    labels: np.ndarray,
    *,
    voxel_volume_mm3: float,
    min_component_mm3: float = 0.0,
    min_component_fraction: float = 0.0,
    et_min_mm3: float = 0.0,
) -> np.ndarray:
    """Remove small, isolated tumour islands and implausibly small enhancing tumour.

    Two rules, each off at its default of 0:

    1. Connected components of the whole tumour (labels 1, 2, 4; 26-connectivity) are removed when
       smaller than ``min_component_mm3`` or smaller than ``min_component_fraction`` times the largest
       component. The largest component is always kept, so a prediction never becomes empty here.
    2. When the total enhancing tumour (label 4) is below ``et_min_mm3``, it is relabelled as NCR
       (label 1): in BraTS an empty ET is scored as perfect only if the prediction is empty too, and
       a few scattered ET voxels are more often noise than a real enhancing rim.

    Args:
        labels: BraTS label map (0, 1, 2, 4).
        voxel_volume_mm3: Volume of one voxel in mm³ (from the study's header), so that the
            thresholds mean the same at any resolution.
        min_component_mm3: Absolute size below which a tumour component is removed.
        min_component_fraction: Size, relative to the largest component, below which a component is
            removed (0 to 1).
        et_min_mm3: Total ET volume below which ET becomes NCR.

    Returns:
        A new ``uint8`` label map of the same shape.

    Raises:
        ValueError: for labels outside {0, 1, 2, 4}, a non-positive voxel volume, or negative
            thresholds or a fraction above 1.
    """
    a = np.asarray(labels)
    check_labels(a, name="apply_postprocess(labels)")
    if not voxel_volume_mm3 > 0:
        raise ValueError(f"apply_postprocess: expected a positive voxel volume, found {voxel_volume_mm3}")
    for key, value in (("min_component_mm3", min_component_mm3), ("et_min_mm3", et_min_mm3)):
        if value < 0:
            raise ValueError(f"apply_postprocess: expected {key} >= 0, found {value}")
    if not 0.0 <= min_component_fraction <= 1.0:
        raise ValueError(
            f"apply_postprocess: expected min_component_fraction in [0, 1], found {min_component_fraction}"
        )
    out = a.astype(np.uint8, copy=True)
    if min_component_mm3 > 0 or min_component_fraction > 0:
        components, n = ndimage.label(out > 0, structure=np.ones((3, 3, 3), dtype=bool))
        if n > 1:
            sizes = np.bincount(components.ravel())[1:] * voxel_volume_mm3
            keep = (sizes >= min_component_mm3) & (sizes >= min_component_fraction * sizes.max())
            keep[np.argmax(sizes)] = True
            lut = np.concatenate([[False], ~keep])
            out[lut[components]] = 0
    if et_min_mm3 > 0:
        et = out == 4
        if 0 < np.count_nonzero(et) * voxel_volume_mm3 < et_min_mm3:
            out[et] = 1
    return out


def postprocess_settings(card: ModelCard) -> dict[str, float]:
    """The card's ``postprocess`` settings with every known key filled in (0 = off)."""
    return {key: float(card.postprocess.get(key, 0.0)) for key in POSTPROCESS_KEYS}
