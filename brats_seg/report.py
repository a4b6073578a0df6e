"""Tumour volumes of a label map, in physical units.

Volumes always come from the voxel spacing of the ``LabelMap`` (voxel count × voxel volume), never
from voxel counts alone. Pure functions; no I/O. The report of a prediction, which lists them, is
:meth:`brats_seg.result.Segmentation.study_report`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .postprocess import VALID_LABELS, check_labels
from .types import LABEL_NAMES, REGIONS, LabelMap

__all__ = ["DESCRIPTIONS", "TABLE_ROWS", "VOLUME_RANGE_THRESHOLDS", "volumes", "volumes_table"]

#: Decision thresholds of the volume range (:func:`brats_seg.pipeline.volume_range`): each volume as
#: if every voxel needed 70 % of the networks' confidence, and as if 30 % sufficed (the labels use
#: the card's threshold, 0.5 by default).
VOLUME_RANGE_THRESHOLDS: tuple[float, float] = (0.7, 0.3)

#: What each label and region name means, for display.
DESCRIPTIONS: dict[str, str] = {
    "NCR": "necrotic / non-enhancing core",
    "ED": "peritumoral edema",
    "ET": "enhancing tumour",
    "TC": "tumour core",
    "WT": "whole tumour",
}

#: Rows of :func:`volumes_table` as (section, name): the three labels, then the regions that add to
#: them (the ET region is the ET label, so it is not repeated).
TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("labels", "NCR"),
    ("labels", "ED"),
    ("labels", "ET"),
    ("regions", "TC"),
    ("regions", "WT"),
)


def _entry(voxels: int, voxel_mm3: float) -> dict[str, float]:
    mm3 = voxels * voxel_mm3
    return {"voxels": int(voxels), "mm3": float(mm3), "mL": float(mm3 / 1000.0)}


def volumes(labels: LabelMap) -> dict[str, dict[str, dict[str, float]]]:
    """Volume of each BraTS label and region of a label map.

    Args:
        labels: A ``LabelMap`` (values 0, 1, 2, 4); its header's voxel spacing gives the voxel volume.

    Returns:
        ``{"labels": {"NCR": e, "ED": e, "ET": e}, "regions": {"ET": e, "TC": e, "WT": e}}`` where each
        entry ``e`` is ``{"voxels": int, "mm3": float, "mL": float}`` and
        ``mm3 = voxels × product of the spacing``, ``mL = mm3 / 1000``.

    Raises:
        ValueError: if the map holds values outside {0, 1, 2, 4} (they are named).
    """
    a = np.asarray(labels.array)
    check_labels(a, name="label map")
    voxel_mm3 = labels.voxel_volume_mm3
    counts = {v: int(np.count_nonzero(a == v)) for v in VALID_LABELS if v != 0}
    return {
        "labels": {name: _entry(counts[value], voxel_mm3) for value, name in LABEL_NAMES.items()},
        "regions": {
            region: _entry(sum(counts[v] for v in values), voxel_mm3) for region, values in REGIONS.items()
        },
    }


def volumes_table(vols: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[tuple[str, str, float]]:
    """Rows for display: NCR, ED, ET, TC, WT with their description and volume in mL.

    Args:
        vols: Output of :func:`volumes`.

    Returns:
        ``[(name, description, mL), ...]``, e.g. ``("WT", "whole tumour", 12.3)``.
    """
    return [(name, DESCRIPTIONS[name], float(vols[section][name]["mL"])) for section, name in TABLE_ROWS]
