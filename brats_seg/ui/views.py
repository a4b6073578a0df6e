"""The review section: three linked planes of the study with overlays (:class:`brats_seg.viz.SliceViewer`).

Stable CSS classes: ``brats-review``, ``brats-background``, ``brats-overlay-mode``, ``brats-opacity``,
``brats-contrast``, ``brats-window``, ``brats-crosshair``, ``brats-toggle-ncr`` / ``-ed`` / ``-et``,
``brats-legend-errors``, ``brats-legend-uncertain``, ``brats-view-axial`` / ``-coronal`` /
``-sagittal``, ``brats-slider-axial`` / ``-coronal`` / ``-sagittal``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipyevents
import ipywidgets as W

from .. import report, viz
from ..types import LABEL_NAMES, MODALITIES, Study

__all__ = ["DIRECTIONS", "OVERLAY_CHOICES", "Views"]

#: Overlay mode -> the dropdown's text.
OVERLAY_CHOICES: dict[str, str] = {
    "prediction": "prediction",
    "truth": "ground truth",
    "errors": "errors (FP red, FN blue)",
    "uncertain": "uncertain voxels",
    "none": "none",
}

#: View -> what its slider counts along.
DIRECTIONS: dict[str, str] = {"axial": "I \u2192 S", "coronal": "P \u2192 A", "sagittal": "L \u2192 R"}


def _swatch(colour: Any) -> str:
    return f'<span class="brats-swatch" style="background:{viz.colour_hex(colour)}"></span>'


def _display_controls() -> dict[str, W.Widget]:
    """The background, overlay, opacity, contrast, window and crosshair controls, by name."""
    controls = {
        "background": W.Dropdown(
            options=[(m, m) for m in MODALITIES], value="T1CE", description="Background"
        ),
        "overlay": W.Dropdown(options=[("none", "none")], value="none", description="Overlay"),
        "opacity": W.FloatSlider(
            value=0.4,
            min=0.0,
            max=1.0,
            step=0.05,
            description="Opacity",
            continuous_update=True,
            readout_format=".2f",
        ),
        "contrast": W.FloatRangeSlider(
            value=(1.0, 99.0),
            min=0.0,
            max=100.0,
            step=0.5,
            description="Contrast %",
            continuous_update=False,
            readout_format=".1f",
            tooltip="Percentiles of the brain's intensities shown black and white",
        ),
        "window": W.HTML("", tooltip="Intensities of the background sequence shown black and white"),
        "crosshair": W.Checkbox(value=True, description="Crosshair", indent=False),
    }
    for name, control in controls.items():
        control.add_class(f"brats-{'overlay-mode' if name == 'overlay' else name}")
    return controls


def _legends() -> tuple[W.HTML, W.HTML]:
    """The errors legend and the uncertain voxels' legend (hidden until their overlay is chosen)."""
    fp, fn = viz.ERROR_COLOURS["FP"], viz.ERROR_COLOURS["FN"]
    errors = W.HTML(
        f"{_swatch(fp)}FP: predicted, not in the ground truth &nbsp; "
        f"{_swatch(fn)}FN: in the ground truth, missed "
        "&nbsp; (errors of the region the ticked labels make: all three ticked is the whole tumour, ET alone "
        "the enhancing tumour)",
        layout=W.Layout(display="none"),
    )
    errors.add_class("brats-legend-errors")
    low, high = report.VOLUME_RANGE_THRESHOLDS[0], report.VOLUME_RANGE_THRESHOLDS[-1]
    uncertain = W.HTML(
        f"{_swatch(viz.UNCERTAIN_COLOUR)}uncertain voxels: the label would differ at a decision threshold of "
        f"{low:g} or {high:g} (the volume table's range); the other colours are the prediction",
        layout=W.Layout(display="none"),
    )
    uncertain.add_class("brats-legend-uncertain")
    return errors, uncertain


def _label_toggles() -> tuple[dict[int, W.Checkbox], list[W.HBox]]:
    """A ticked box per label (0/1/2/4 value -> box) and the legend items holding them with their colours."""
    toggles: dict[int, W.Checkbox] = {}
    items = []
    for value, name in LABEL_NAMES.items():
        box = W.Checkbox(
            value=True,
            description=f"{name} ({value}): {report.DESCRIPTIONS[name]}",
            indent=False,
            layout=W.Layout(width="auto"),
        )
        box.add_class(f"brats-toggle-{name.lower()}")
        toggles[value] = box
        items.append(
            W.HBox([W.HTML(_swatch(viz.LABEL_COLOURS[value])), box], layout=W.Layout(margin="0 12px 0 0"))
        )
    return toggles, items


class Views:
    """The review section's widgets and the viewer they show.

    Args:
        guard: Wraps each widget callback so that its errors become a message in the page.
        on_redraw: Called after the views were redrawn (the figure download may be stale then).

    Attributes:
        box: The section to place in the page (hidden until a study is loaded).
        viewer: The :class:`~brats_seg.viz.SliceViewer` of the study, or None.
        images, sliders, view_titles, click_events: Per view (``axial``, ``coronal``, ``sagittal``).
        last_redraw_s: Seconds the last slider move took to redraw.
    """

    def __init__(
        self, guard: Callable[[Callable[..., Any]], Callable[..., Any]], on_redraw: Callable[[], None]
    ) -> None:
        self.on_redraw = on_redraw
        self.viewer: viz.SliceViewer | None = None
        self.last_redraw_s = 0.0
        self.syncing = False
        self.clicks_move_crosshair = True  # off while a brush or eraser is chosen (editing)
        self.lock = threading.RLock()
        controls = _display_controls()
        self.background, self.overlay, self.opacity = (
            controls["background"],
            controls["overlay"],
            controls["opacity"],
        )
        self.contrast, self.window_label, self.crosshair = (
            controls["contrast"],
            controls["window"],
            controls["crosshair"],
        )
        self.toggles, legend_items = _label_toggles()
        self.error_legend, self.uncertain_legend = _legends()
        self.images: dict[str, W.Image] = {}
        self.sliders: dict[str, W.IntSlider] = {}
        self.view_titles: dict[str, W.HTML] = {}
        self.click_events: dict[str, Any] = {}
        planes = [self._plane(view, guard) for view in viz.VIEWS]
        self.box = W.VBox(
            [
                W.HTML("<h3>3. Review</h3>"),
                W.HBox(list(controls.values()), layout=W.Layout(flex_flow="row wrap")),
                W.HBox(legend_items, layout=W.Layout(flex_flow="row wrap")),
                self.error_legend,
                self.uncertain_legend,
                W.HBox(planes),
            ],
            layout=W.Layout(display="none"),
        )
        self.box.add_class("brats-review")
        for control in (
            self.background,
            self.overlay,
            self.opacity,
            self.contrast,
            self.crosshair,
            *self.toggles.values(),
        ):
            control.observe(guard(self._on_display_setting), "value")

    def _plane(self, view: str, guard: Callable[[Callable[..., Any]], Callable[..., Any]]) -> W.VBox:
        """One view's title, image (clicks move the crosshair) and slider."""
        image = W.Image(format="png", layout=W.Layout(width="100%"))
        image.add_class(f"brats-view-{view}")
        slider = W.IntSlider(
            value=0,
            min=0,
            max=1,
            description=DIRECTIONS[view],
            continuous_update=True,
            layout=W.Layout(width="100%"),
        )
        slider.add_class(f"brats-slider-{view}")
        slider.observe(guard(lambda change: self._on_slider(view, change)), "value")
        clicks = ipyevents.Event(source=image, watched_events=["click"], prevent_default_action=True)
        clicks.on_dom_event(guard(lambda event: self.on_click(view, event)))
        self.images[view], self.sliders[view], self.click_events[view] = image, slider, clicks
        self.view_titles[view] = W.HTML(f"<b>{view.capitalize()}</b>")
        return W.VBox([self.view_titles[view], image, slider], layout=W.Layout(width="33%", padding="0 4px"))

    def visible(self) -> list[int]:
        """The label values ticked in the legend."""
        return [value for value, box in self.toggles.items() if box.value]

    def show_study(self, study: Study) -> None:
        """Show a newly loaded study (with its ground truth, if any) and open the section."""
        with self.lock:
            viewer = viz.SliceViewer.from_study(study, background=self.background.value)
            viewer.update(
                opacity=float(self.opacity.value),
                percentiles=tuple(self.contrast.value),
                visible=self.visible(),
                crosshair=bool(self.crosshair.value),
            )
            viewer.centre_on(viewer.focus())
            self.viewer = viewer
            self._show_window()
        modes = ["truth", "none"] if study.truth is not None else ["none"]
        self.set_overlay_options(modes, modes[0])
        self.sync_sliders()
        self.render(viz.VIEWS)
        self.box.layout.display = "flex"

    def hide(self) -> None:
        """Forget the study and hide the section."""
        self.viewer = None
        self.box.layout.display = "none"

    def set_labels(self, labels: Any, uncertain: Any, *, truth: bool) -> None:
        """Show a prediction (None: remove it) and its uncertain voxels, centred on the largest tumour."""
        viewer = self.viewer
        if viewer is None:
            return
        with self.lock:
            viewer.set_labels("prediction", labels)
            viewer.set_labels("uncertain", uncertain)
            if labels is None:
                return
            viewer.centre_on(viewer.focus())
        modes = [
            "prediction",
            *(["uncertain"] if uncertain is not None else []),
            *(["truth", "errors"] if truth else []),
            "none",
        ]
        self.set_overlay_options(modes, "prediction")
        self.sync_sliders()
        self.render(viz.VIEWS)

    def _show_legend(self, mode: str) -> None:
        """The errors and uncertain legends show with their overlay modes only."""
        self.error_legend.layout.display = "block" if mode == "errors" else "none"
        self.uncertain_legend.layout.display = "block" if mode == "uncertain" else "none"

    def set_overlay_options(self, modes: list[str], value: str) -> None:
        """Offer the overlay ``modes`` (keys of :data:`OVERLAY_CHOICES`) and choose ``value``."""
        self.syncing = True
        try:
            self.overlay.options = [(OVERLAY_CHOICES[m], m) for m in modes]
            self.overlay.value = value
        finally:
            self.syncing = False
        if self.viewer is not None:
            with self.lock:
                self.viewer.update(mode=value)
        self._show_legend(value)

    def sync_sliders(self) -> None:
        """Set the sliders and the views' titles to the viewer's shape and position."""
        viewer = self.viewer
        if viewer is None:
            return
        self.syncing = True
        try:
            for view, slider in self.sliders.items():
                axis = viz.VIEW_AXIS[view]
                slider.max = max(viewer.shape[axis] - 1, 1)
                slider.value = int(viewer.position[axis])
                self.view_titles[view].value = (  # what the slider's bare number counts
                    f"<b>{view.capitalize()}</b> <small>slices 0-{viewer.shape[axis] - 1}, "
                    f"{viewer.spacing[axis]:g} mm apart</small>"
                )
        finally:
            self.syncing = False

    def render(self, views: Sequence[str]) -> None:
        """Redraw the given views."""
        viewer = self.viewer
        if viewer is None:
            return
        with self.lock:
            for view in views:
                self.images[view].value = viewer.png(view)
        if views:
            self.on_redraw()

    def _on_slider(self, view: str, change: Mapping[str, Any]) -> None:
        if self.syncing or self.viewer is None:
            return
        start = time.perf_counter()
        with self.lock:
            self.render(self.viewer.move(view, int(change["new"])))
        self.last_redraw_s = time.perf_counter() - start

    def on_click(self, view: str, event: Mapping[str, Any]) -> None:
        """A browser click event on a view's image (events without image coordinates are ignored)."""
        if "dataX" not in event or "dataY" not in event or not self.clicks_move_crosshair:
            return
        self.click(view, float(event["dataX"]), float(event["dataY"]))

    def click(self, view: str, x: float, y: float) -> list[str]:
        """Move the crosshair to the voxel under pixel ``(x, y)`` of a view, as a click does.

        The other two views jump to the clicked voxel's slices and the sliders follow.

        Returns:
            The views that were redrawn.
        """
        if self.viewer is None:
            return []
        with self.lock:
            changed = self.viewer.click(view, x, y)
            self.sync_sliders()
            self.render(changed)
        return changed

    def move(self, view: str, index: int) -> float:
        """Move a view's slider as a user would; returns the seconds the redraw took."""
        self.sliders[view].value = int(index)
        return self.last_redraw_s

    def _on_display_setting(self, _change: Mapping[str, Any]) -> None:
        if self.syncing or self.viewer is None:
            return
        mode = self.overlay.value
        self._show_legend(mode)
        with self.lock:
            changed = self.viewer.update(
                background=self.background.value,
                mode=mode,
                opacity=float(self.opacity.value),
                percentiles=tuple(self.contrast.value),
                visible=self.visible(),
                crosshair=bool(self.crosshair.value),
            )
            self._show_window()
            if changed:
                self.render(viz.VIEWS)

    def _show_window(self) -> None:
        """Show the intensity window that the contrast percentiles give, in the file's units."""
        if self.viewer is None:
            return
        low, high = self.viewer.window_limits()
        self.window_label.value = f"window <b>{low:.4g}</b> – <b>{high:.4g}</b>"
