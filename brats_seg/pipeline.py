"""One study through the model: prepare, predict, restore, label. The CLI and the dashboard both call
:func:`segment`; neither holds logic the other lacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import inference, postprocess, preprocess, quality
from .inference import ProgressCallback
from .model import Model
from .types import LabelMap, Study, brain_mask


@dataclass
class Segmentation:
    """The result of :func:`segment`.

    Attributes:
        labels: BraTS label map on the study's grid, with the study's affine and header.
        settings: The sliding-window settings used.
        timings: Seconds spent in each step (``prepare``, ``predict``, ``postprocess``, ``total``).
        warnings: Ways in which the study differs from what the model was trained on
            (:func:`brats_seg.quality.check_study`); the labels are made all the same.
    """

    labels: LabelMap
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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
    postprocessing: bool = True,
    progress: ProgressCallback | None = None,
) -> Segmentation:
    """Segment one study; every knob left as None takes the model card's value.

    Args:
        study: The validated study.
        model: Networks and card from :func:`brats_seg.model.load_model`.
        roi_size: Sliding-window size in voxels at the card's spacing.
        sw_batch_size: Windows per forward pass.
        overlap: Sliding-window overlap in [0, 1).
        mode: Blending, ``"gaussian"`` or ``"constant"``.
        tta_flips: Average test-time flips along each axis.
        device: Torch device; default CUDA when available, else CPU.
        postprocessing: Apply the card's ``postprocess`` rules (small islands, tiny ET); see
            :func:`brats_seg.postprocess.clean_labels`.
        progress: Called with the fraction done (0..1).

    Returns:
        The label map on the study's grid (with a copy of its affine and header), the settings used,
        the seconds spent in each step and the input warnings of :func:`brats_seg.quality.check_study`.

    Raises:
        StudyError: when every sequence is zero (no brain to crop to).
    """
    card = model.card
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = {
        "roi_size": list(roi_size or card.roi_size),
        "sw_batch_size": int(sw_batch_size or card.sw_batch_size),
        "overlap": float(card.overlap if overlap is None else overlap),
        "mode": mode or card.mode,
        "tta_flips": bool(card.tta_flips if tta_flips is None else tta_flips),
        "ensemble": len(model.networks),
        "spacing": list(card.spacing),
        "device": str(device),
    }
    t0 = time.perf_counter()
    prepared = preprocess.prepare(study, card)
    t1 = time.perf_counter()
    kind = card.output["type"]
    probs = inference.predict(
        prepared.tensor,
        model.networks,
        roi_size=settings["roi_size"],
        sw_batch_size=settings["sw_batch_size"],
        overlap=settings["overlap"],
        mode=settings["mode"],
        activation="sigmoid" if kind == "regions_sigmoid" else "softmax",
        tta_flips=settings["tta_flips"],
        device=device,
        progress=progress,
    )
    t2 = time.perf_counter()
    background = None
    if kind == "classes_softmax":
        background = np.zeros(probs.shape[0], dtype=np.float32)
        background[list(card.output["classes"]).index(0)] = 1.0
    full = preprocess.restore(probs, prepared, background=background)
    labels = postprocess.to_labels(full, card).astype(np.uint8)
    # No tumour where every sequence is zero (outside the skull-stripped brain).
    labels[~brain_mask(study)] = 0
    if postprocessing:
        settings["postprocess"] = postprocess.postprocess_settings(card)
        labels = postprocess.clean_labels(
            labels, voxel_volume_mm3=float(np.prod(study.spacing)), **settings["postprocess"]
        )
    warnings = quality.check_study(study)
    t3 = time.perf_counter()
    label_map = LabelMap(labels, study.affine.copy(), study.header.copy())
    timings = {
        "prepare": round(t1 - t0, 3),
        "predict": round(t2 - t1, 3),
        "postprocess": round(t3 - t2, 3),
        "total": round(t3 - t0, 3),
    }
    return Segmentation(labels=label_map, settings=settings, timings=timings, warnings=warnings)
