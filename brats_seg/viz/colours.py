"""Colours and display constants of the views: label colours (Okabe-Ito), error colours, overlay modes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..types import LABEL_NAMES

#: The three views, in display order.
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Array axis of the canonical (RAS) display volume that each view slices.
VIEW_AXIS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}

#: Colour of each BraTS label value (RGB, 0-255).
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (240, 228, 66),  # NCR: yellow
    2: (0, 158, 115),  # ED: bluish green
    4: (213, 94, 0),  # ET: vermillion red
}

#: Colours of the error view: false positives and false negatives against the ground truth.
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {"FP": (255, 40, 40), "FN": (40, 120, 255)}

#: The error view is drawn at least this opaque: its marks are one or two voxels thick.
ERROR_MIN_OPACITY = 0.8

#: Colour of the crosshair lines.
CROSSHAIR_COLOUR: tuple[int, int, int] = (0, 220, 255)

#: What an overlay shows: nothing, the prediction, the ground truth, the errors (FP / FN), or the
#: prediction with the voxels whose label depends on the decision threshold (``"uncertain"``).
OVERLAY_MODES: tuple[str, ...] = ("none", "prediction", "truth", "errors", "uncertain")

#: Colour of the voxels whose label depends on the decision threshold (mode ``"uncertain"``), and the
#: display code they take over the prediction's labels (3 is not a BraTS label).
UNCERTAIN_COLOUR: tuple[int, int, int] = (230, 40, 230)
UNCERTAIN_CODE = 3

#: Codes of :func:`error_codes`.
FP_CODE, FN_CODE = 1, 2


def label_colours(*, mode: str = "prediction") -> dict[str, tuple[int, int, int]]:
    """Legend entries of an overlay mode: name -> RGB.

    Args:
        mode: One of :data:`OVERLAY_MODES`; ``"errors"`` gives ``{"FP": .., "FN": ..}``, ``"none"``
            an empty dict, ``"uncertain"`` the labels and ``"uncertain"``, the others
            ``{"NCR": .., "ED": .., "ET": ..}``.

    Returns:
        Colours keyed by display name, in legend order.
    """
    if mode == "errors":
        return dict(ERROR_COLOURS)
    if mode == "none":
        return {}
    colours = {LABEL_NAMES[v]: LABEL_COLOURS[v] for v in LABEL_NAMES}
    if mode == "uncertain":
        colours["uncertain"] = UNCERTAIN_COLOUR
    return colours


def colour_hex(rgb: Sequence[int]) -> str:
    """``(255, 40, 40)`` -> ``"#ff2828"``."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def colour_lookup(
    colours: Mapping[int, Sequence[int]], visible: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """A 256-entry colour lookup (uint16 RGB) and visibility mask (bool) for code values."""
    rgb = np.zeros((256, 3), dtype=np.uint16)
    shown = np.zeros(256, dtype=bool)
    keep = {int(v) for v in visible}
    for value, colour in colours.items():
        rgb[int(value)] = colour[:3]
        shown[int(value)] = int(value) in keep
    return rgb, shown
