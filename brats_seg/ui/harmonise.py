"""The dashboard's part for raw studies: the preprocessing choice and what preprocessing did.

:class:`HarmonisePanel` holds a choice (auto / always / never, as ``brats-seg predict --harmonise``)
and a section that shows, once a raw study is harmonised (:mod:`brats_seg.harmonise`), why it was,
the time of each step, the mutual information each registration reached, and the registration check
(:func:`brats_seg.harmonise_outputs.registration_png`); after Predict, the labels over the T1CE on
its native grid (:func:`brats_seg.harmonise_outputs.native_png`). Widgets only.

Stable CSS classes for browser tests: ``brats-harmonise-mode``, ``brats-harmonise``,
``brats-harmonise-summary``, ``brats-registration-check``, ``brats-native-labels``.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..harmonise import Harmonised

__all__ = ["MODE_CHOICES", "HarmonisePanel", "summary_html"]

#: The dropdown's choices: (label, value of :data:`brats_seg.harmonise.MODES`).
MODE_CHOICES: tuple[tuple[str, str], ...] = (
    ("auto: when the study needs it", "auto"),
    ("always", "on"),
    ("never (the study is already BraTS-like)", "off"),
)


def summary_html(harmonised: Harmonised) -> str:
    """Why the study was harmonised, each step's time and each registration's mutual information (HTML)."""
    t = harmonised.timings
    steps = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in t.items() if k != "total")
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td class='num'>{r['mutual_information_before']:.2f}</td>"
        f"<td class='num'>{r['mutual_information_after']:.2f}</td>"
        f"<td class='num'>{r['rotation_deg']:.1f}</td><td class='num'>{r['shift_mm']:.1f}</td></tr>"
        for m, r in harmonised.registration.items()
    )
    ref = harmonised.reference
    mask = "skull stripped by deepbet" if harmonised.skull_stripped else f"where the {ref} is non-zero"
    brain_ml = float(harmonised.brain.sum()) / 1000.0
    return (
        f"<p><b>Raw study, preprocessed</b> in {t['total']:.1f} s ({html.escape(steps)}) because: "
        f"{html.escape('; '.join(harmonised.reasons))}.</p>"
        f"<p>T1, T2 and FLAIR were rigidly registered onto the {ref} (mutual information), all four "
        f"resampled to {html.escape(harmonised.study.grid_text)} in its frame, and masked to the brain "
        f"({mask}, {brain_ml:,.0f} mL). The labels are made on that grid (the volumes count its voxels) "
        f"and mapped back onto the {ref}'s own grid for the downloads. Check the registration below: in "
        "each square the other sequence alternates with the reference, so edges that run on across the "
        "squares mean a good match; the cyan line is the brain mask.</p>"
        "<table class='brats-table'><tr><th>sequence</th><th>mutual information as scanned</th>"
        f"<th>registered</th><th>rotation (deg)</th><th>shift (mm)</th></tr>{rows}</table>"
    )


class HarmonisePanel:
    """The preprocessing choice and the section that shows a harmonisation (see the module's description).

    Attributes:
        mode: The dropdown (values ``auto``, ``on``, ``off``).
        box: The section to place in the page; hidden until a study is harmonised.
    """

    def __init__(self) -> None:
        W = widgets
        self.mode = W.Dropdown(
            options=list(MODE_CHOICES),
            value="auto",
            description="Preprocess",
            tooltip="Raw studies (sequences on different grids, thick slices, the skull on) are "
            "co-registered onto the T1CE, skull-stripped and resampled to 1 mm before the model "
            "reads them",
            layout=W.Layout(width="420px"),
        )
        self.mode.add_class("brats-harmonise-mode")
        self.summary = W.HTML("")
        self.summary.add_class("brats-harmonise-summary")
        self.check = W.Image(format="png", layout=W.Layout(max_width="720px"))
        self.check.add_class("brats-registration-check")
        self.native = W.Image(format="png", layout=W.Layout(max_width="960px", display="none"))
        self.native.add_class("brats-native-labels")
        self.native_title = W.HTML("", layout=W.Layout(display="none"))
        self.box = W.VBox(
            [
                W.HTML("<h3>Preprocessing of a raw study</h3>"),
                self.summary,
                self.check,
                self.native_title,
                self.native,
            ],
            layout=W.Layout(display="none"),
        )
        self.box.add_class("brats-harmonise")

    def show(self, harmonised: Harmonised | None, check_png: bytes = b"") -> None:
        """Show what a harmonisation did (its registration check ``check_png``); None hides the section."""
        self.show_native(b"")
        if harmonised is None:
            self.summary.value, self.check.value = "", b""
            self.box.layout.display = "none"
            return
        self.summary.value = summary_html(harmonised)
        self.check.value = check_png
        self.box.layout.display = "flex"

    def show_native(self, png: bytes, *, reference: str = "T1CE") -> None:
        """Show the labels over the reference on its native grid (empty ``png``: hide them)."""
        self.native.value = png
        self.native_title.value = (
            f"<p><b>The labels on the native {html.escape(reference)} grid</b> (the "
            "<code>_seg.nii.gz</code> download), over the sequence as it was uploaded:</p>"
        )
        shown = "" if png else "none"
        self.native.layout.display = self.native_title.layout.display = shown
