"""One study through the model: prepare, predict, restore, label. The CLI and the dashboard both call
:func:`segment`; neither holds logic the other lacks. What it returns, and the files that become of it,
is :class:`brats_seg.result.Segmentation`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import inference, preprocess, quality
from .card import ModelCard
from .inference import ProgressCallback
from .model import Model
from .postprocess import DEFAULT_REGION_ORDER, apply_postprocess, regions_to_labels, to_labels
from .postprocess import postprocess_settings as card_postprocess_settings
from .report import VOLUME_RANGE_THRESHOLDS, volumes
from .result import Segmentation
from .types import LabelMap, Study, bounding_box, brain_mask

if TYPE_CHECKING:
    from .harmonise import Harmonised


def volume_range(
    probs: np.ndarray,
    card: ModelCard,
    *,
    like: LabelMap,
    brain: np.ndarray,
    postprocess_settings: Mapping[str, float] | None = None,
    thresholds: Sequence[float] = VOLUME_RANGE_THRESHOLDS,
) -> dict[str, Any]:
    """The volume of each label and region at other decision thresholds than the card's.

    The labels are decoded at each threshold exactly as :func:`segment` decodes them at the card's
    (nested regions, nothing outside the brain, the same post-processing), so a wide range means
    that many voxels are uncertain (their label changes with the threshold), and a narrow one that the
    boundary is sharp. It is a sensitivity of the volume to the threshold, not a calibrated interval.

    Args:
        probs: Region probabilities on the study's grid, ``(3, X, Y, Z)`` in the card's region order.
        card: The model card (``output.type`` must be ``"regions_sigmoid"``).
        like: The label map whose grid and voxel spacing the volumes use.
        brain: Where any sequence is non-zero; no tumour outside it.
        postprocess_settings: The card's post-processing settings applied to the labels (see
            :func:`brats_seg.postprocess.apply_postprocess`), or ``None``.
        thresholds: Decision thresholds in (0, 1), strictest first.

    Returns:
        ``{"thresholds": [t, ...], "card_threshold": 0.5, "labels": {"NCR": [mL, ...], "ED": [...],
        "ET": [...]}, "regions": {"ET": [...], "TC": [...], "WT": [...]}}``, one volume per threshold,
        in order.

    Raises:
        ValueError: For a card whose output is not region sigmoids, or a threshold outside (0, 1).
    """
    box = _box(brain)
    decoded = _decode_at(
        probs[(slice(None), *box)],
        card,
        brain=np.ascontiguousarray(brain[box]),
        postprocess_settings=postprocess_settings,
        voxel_mm3=like.voxel_volume_mm3,
        thresholds=thresholds,
    )
    return _volumes_at(decoded, card, like=like, thresholds=thresholds)


def _box(brain: np.ndarray) -> tuple[slice, ...]:
    """The brain's bounding box (the whole grid for an empty brain): every label outside it is 0.

    Labels are decided voxel by voxel, then zeroed outside the brain, and the card's post-processing
    only removes or relabels tumour; so the labels (and their volumes) decoded on the box, with zeros
    around it, are those decoded on the whole grid.
    """
    return bounding_box(brain) or tuple(slice(None) for _ in range(brain.ndim))


def _decode_at(
    probs: np.ndarray,
    card: ModelCard,
    *,
    brain: np.ndarray,
    postprocess_settings: Mapping[str, float] | None,
    voxel_mm3: float,
    thresholds: Sequence[float],
) -> list[np.ndarray]:
    """The labels decoded at each threshold as :func:`segment` decodes them at the card's.

    ``probs`` and ``brain`` may be cut to a box holding the brain (:func:`_box`): the labels are then
    those of the box.
    """
    if card.output.get("type") != "regions_sigmoid":
        raise ValueError(
            "volume_range: expected a card with region sigmoids, found output type "
            f"{card.output.get('type')!r}"
        )
    bad = [t for t in thresholds if not 0.0 < float(t) < 1.0]
    if bad or not thresholds:
        raise ValueError(f"volume_range: expected thresholds in (0, 1), found {list(thresholds)}")
    order = card.output.get("regions", DEFAULT_REGION_ORDER)
    return [
        _finish(
            regions_to_labels(probs, order=order, threshold=float(t)),
            brain=brain,
            postprocess_settings=postprocess_settings,
            voxel_mm3=voxel_mm3,
        )
        for t in thresholds
    ]


def _finish(
    labels: np.ndarray,
    *,
    brain: np.ndarray,
    postprocess_settings: Mapping[str, float] | None,
    voxel_mm3: float,
) -> np.ndarray:
    """What :func:`segment` does to decoded labels: no tumour outside the brain, then the card's rules."""
    np.multiply(labels, brain, out=labels)  # every sequence is zero outside the skull-stripped brain
    if postprocess_settings:
        labels = apply_postprocess(labels, voxel_volume_mm3=voxel_mm3, **postprocess_settings)
    return labels


def _volumes_at(
    decoded: Sequence[np.ndarray], card: ModelCard, *, like: LabelMap, thresholds: Sequence[float]
) -> dict[str, Any]:
    """The :func:`volume_range` record of label maps decoded at ``thresholds``."""
    out: dict[str, Any] = {
        "thresholds": [float(t) for t in thresholds],
        "card_threshold": float(card.output.get("threshold", 0.5)),
        "labels": {},
        "regions": {},
    }
    for labels in decoded:
        vols = volumes(LabelMap(labels, like.affine, like.header))
        for section in ("labels", "regions"):
            for name, entry in vols[section].items():
                out[section].setdefault(name, []).append(entry["mL"])  # unrounded, as the labels' volumes
    return out


def window_settings(
    model: Model,
    *,
    roi_size: list[int] | None = None,
    sw_batch_size: int | None = None,
    overlap: float | None = None,
    mode: str | None = None,
    tta_flips: bool | None = None,
    device: str | None = None,
    postprocess: bool = True,
) -> dict[str, Any]:
    """The settings :func:`segment` uses (the report's ``settings``): the card's where a knob is None; the
    device is CUDA when available, else the CPU; the backend that runs the model's networks; with
    ``postprocess``, the card's post-processing rules."""
    card = model.card
    settings = {
        "roi_size": list(roi_size or card.roi_size),
        "sw_batch_size": int(sw_batch_size or card.sw_batch_size),
        "overlap": float(card.overlap if overlap is None else overlap),
        "mode": mode or card.mode,
        "tta_flips": bool(card.tta_flips if tta_flips is None else tta_flips),
        "ensemble": len(model.networks),
        "spacing": list(card.spacing),
        "device": str(device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "backend": model.backend,
    }
    if postprocess:
        settings["postprocess"] = card_postprocess_settings(card)
    return settings


def segment(
    study: Study,
    model: Model,
    *,
    roi_size: list[int] | None = None,
    sw_batch_size: int | None = None,
    overlap: float | None = None,
    mode: str | None = None,
    tta_flips: bool | None = None,
    device: str | None = None,
    postprocess: bool = True,
    volume_thresholds: Sequence[float] | None = VOLUME_RANGE_THRESHOLDS,
    progress: ProgressCallback | None = None,
    harmonised: Harmonised | None = None,
) -> Segmentation:
    """Segment one study; every knob left as None takes the model card's value.

    Args:
        study: The validated study.
        model: Networks and card from :func:`brats_seg.model.load_model`.
        roi_size, sw_batch_size, overlap, mode, tta_flips, device: The sliding window's settings (see
            :func:`window_settings`: window size, windows per pass, overlap, blending, test-time flips).
        postprocess: Apply the card's ``postprocess`` rules (:func:`brats_seg.postprocess.apply_postprocess`).
        volume_thresholds: Decision thresholds at which the volumes are also measured (:func:`volume_range`;
            region-sigmoid cards whose threshold lies strictly between them); ``None`` skips them.
        progress: Called with the fraction done (0..1).
        harmonised: When ``study`` is ``harmonised.study`` (:func:`brats_seg.harmonise.harmonise`), the labels
            are also mapped back onto the raw reference's native grid (``Segmentation.native``).

    Returns:
        The labels on the study's grid, the settings, each step's seconds and the input warnings.

    Raises:
        StudyError: when every sequence is zero (no brain to crop to).
    """
    card = model.card
    settings = window_settings(
        model,
        roi_size=roi_size,
        sw_batch_size=sw_batch_size,
        overlap=overlap,
        mode=mode,
        tta_flips=tta_flips,
        device=device,
        postprocess=postprocess,
    )
    t0 = time.perf_counter()
    prepared = preprocess.prepare(study, card)
    t1 = time.perf_counter()
    probs = _predict(prepared.tensor, model, settings, progress=progress)
    t2 = time.perf_counter()
    result = _decode(probs, prepared, study, card, settings=settings, volume_thresholds=volume_thresholds)
    t3 = time.perf_counter()
    steps = {"prepare": t1 - t0, "predict": t2 - t1, "postprocess": t3 - t2, "total": t3 - t0}
    result.timings = {step: round(seconds, 3) for step, seconds in steps.items()}
    if harmonised is not None:
        _add_native(result, harmonised)
    return result


def _predict(
    tensor: torch.Tensor, model: Model, settings: dict[str, Any], *, progress: ProgressCallback | None
) -> np.ndarray:
    """The networks' outputs with the sliding-window ``settings`` (:func:`brats_seg.inference.predict`)."""
    return inference.predict(
        tensor,
        model.networks,
        roi_size=settings["roi_size"],
        sw_batch_size=settings["sw_batch_size"],
        overlap=settings["overlap"],
        mode=settings["mode"],
        activation="sigmoid" if model.card.output["type"] == "regions_sigmoid" else "softmax",
        tta_flips=settings["tta_flips"],
        device=settings["device"],
        progress=progress,
    )


def _background(card: ModelCard, probs: np.ndarray) -> np.ndarray | None:
    """What :func:`brats_seg.preprocess.restore` fills outside the crop: a softmax's background class."""
    if card.output["type"] != "classes_softmax":
        return None
    background = np.zeros(probs.shape[0], dtype=np.float32)
    background[list(card.output["classes"]).index(0)] = 1.0
    return background


def _decode(
    probs: torch.Tensor,
    prepared: preprocess.Prepared,
    study: Study,
    card: ModelCard,
    *,
    settings: dict[str, Any],
    volume_thresholds: Sequence[float] | None,
) -> Segmentation:
    """Labels (and the volume range and uncertain voxels) from the networks' probabilities, restored onto
    the study's grid (:func:`brats_seg.preprocess.restore`).

    Decoded within the brain's bounding box (:func:`_box`), zeros around it; the brain mask (as
    :func:`brats_seg.preprocess.prepare` found it, else computed here) serves the labels and the input checks.
    """
    full = preprocess.restore(probs, prepared, background=_background(card, probs))
    brain = brain_mask(study) if prepared.brain is None else prepared.brain
    box = _box(brain)
    probs, inside = full[(slice(None), *box)], np.ascontiguousarray(brain[box])
    voxel_mm3 = float(np.prod(study.spacing))
    rules = settings.get("postprocess")
    labels = np.zeros(study.shape, dtype=np.uint8)
    labels[box] = _finish(
        to_labels(probs, card).astype(np.uint8), brain=inside, postprocess_settings=rules, voxel_mm3=voxel_mm3
    )
    label_map = LabelMap(labels, study.affine.copy(), study.header.copy())
    ranges = uncertain = None
    cut = float(card.output.get("threshold", 0.5))
    if (
        volume_thresholds
        and card.output["type"] == "regions_sigmoid"
        and max(volume_thresholds) > cut > min(volume_thresholds)
    ):
        decoded = _decode_at(
            probs,
            card,
            brain=inside,
            postprocess_settings=rules,
            voxel_mm3=voxel_mm3,
            thresholds=volume_thresholds,
        )
        ranges = _volumes_at(decoded, card, like=label_map, thresholds=volume_thresholds)
        uncertain = np.zeros(study.shape, dtype=bool)
        uncertain[box] = decoded[0] != decoded[-1]
    return Segmentation(
        labels=label_map,
        settings=settings,
        warnings=quality.check_study(study, mask=brain),
        volume_range=ranges,
        uncertain=uncertain,
    )


def _add_native(seg: Segmentation, harmonised: Harmonised) -> None:
    """Map a harmonised study's labels (and uncertain voxels) back onto the reference's native grid."""
    from .harmonise import to_native

    t0 = time.perf_counter()
    seg.native = to_native(seg.labels, harmonised)
    if seg.uncertain is not None:
        seg.native_uncertain = to_native(seg.uncertain.astype(np.uint8), harmonised).array.astype(bool)
    seg.harmonisation = harmonised.record()
    seg.harmonised = harmonised
    seg.timings["to_native"] = round(time.perf_counter() - t0, 3)
    seg.timings["total"] = round(seg.timings["total"] + seg.timings["to_native"], 3)
