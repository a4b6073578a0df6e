"""Rendering of a study and its label maps: slices as PNG for the dashboard, a figure for export.

Interactive views are composed with numpy and encoded with PIL (a few milliseconds per slice); only
:func:`export_png` uses matplotlib (Agg, no pyplot), for the downloadable figure.

Modules: :mod:`.colours` (colours and display constants), :mod:`.orientation` (canonical RAS and
the display convention), :mod:`.slices` (one composed slice), :mod:`.viewer` (the dashboard's
:class:`SliceViewer`), :mod:`.export` (the figure). The public names are importable from
``brats_seg.viz``.

Display convention
------------------
Arrays stay on the study's voxel grid everywhere else in the package. For display only, a volume is
reoriented once to the closest canonical orientation RAS (nibabel's ``io_orientation``: array axis
0 runs towards the patient's Right, axis 1 towards Anterior, axis 2 towards Superior), and every
2-D slice of it is shown as ``slice.T[::-1, ::-1]`` (see :func:`display_slice`). This gives the
radiological convention:

========  ==========  ===============  ===============
view      slice axis  screen left      screen top
========  ==========  ===============  ===============
axial     2 (S)       patient right R  anterior A
coronal   1 (A)       patient right R  superior S
sagittal  0 (R)       anterior A       superior S
========  ==========  ===============  ===============

so the patient's left is on the screen's right in the axial and coronal views. The letters drawn on
the image edges come from the affine of the displayed array (:func:`orientation_letters`, through
``nibabel.aff2axcodes``), not from this table.

Colours (RGB)
-------------
Labels (Okabe-Ito palette, readable with the common colour-vision deficiencies): NCR (1) yellow
``(240, 228, 66)``, ED (2) bluish green ``(0, 158, 115)``, ET (4) vermillion red ``(213, 94, 0)``.
Error view: false positive (predicted, not in the ground truth) red ``(255, 40, 40)``, false
negative (in the ground truth, missed) blue ``(40, 120, 255)``. Crosshair: cyan ``(0, 220, 255)``.
"""

from .colours import (
    CROSSHAIR_COLOUR,
    ERROR_COLOURS,
    ERROR_MIN_OPACITY,
    LABEL_COLOURS,
    OVERLAY_MODES,
    UNCERTAIN_CODE,
    UNCERTAIN_COLOUR,
    VIEW_AXIS,
    VIEWS,
    colour_hex,
    label_colours,
)
from .export import export_png
from .orientation import (
    canonical_affine,
    canonical_ornt,
    canonical_spacing,
    display_position,
    display_slice,
    from_canonical,
    in_plane_axes,
    largest_tumour_slices,
    orientation_letters,
    to_canonical,
)
from .slices import (
    draw_crosshair,
    draw_letters,
    error_codes,
    png_bytes,
    slice_rgb,
    window,
    window_limits,
    zoom_indices,
)
from .viewer import SliceViewer, ViewSettings

__all__ = [
    "CROSSHAIR_COLOUR",
    "ERROR_COLOURS",
    "ERROR_MIN_OPACITY",
    "UNCERTAIN_CODE",
    "UNCERTAIN_COLOUR",
    "LABEL_COLOURS",
    "OVERLAY_MODES",
    "VIEWS",
    "VIEW_AXIS",
    "SliceViewer",
    "ViewSettings",
    "canonical_affine",
    "canonical_ornt",
    "canonical_spacing",
    "colour_hex",
    "display_position",
    "display_slice",
    "draw_crosshair",
    "draw_letters",
    "error_codes",
    "export_png",
    "label_colours",
    "largest_tumour_slices",
    "orientation_letters",
    "png_bytes",
    "slice_rgb",
    "to_canonical",
    "from_canonical",
    "in_plane_axes",
    "window",
    "window_limits",
    "zoom_indices",
]
