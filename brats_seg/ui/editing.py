"""Correcting the labels on the three views: brush, erase, undo, redo, reset, save for training.

The arithmetic is :class:`brats_seg.editing.LabelEditor`'s; this module turns pointer events on the views'
images into its strokes. The editor works on the views' canonical grid (what is drawn), so a pixel maps
to a voxel exactly as a click does (:meth:`brats_seg.viz.SliceViewer.voxel_at`); :meth:`EditPanel.labels`
gives the labels back on the study's grid. While dragging only the painted view is redrawn; on release
all three are, and the page is told (``on_change``) so the volumes and downloads follow.

Stable CSS classes: ``brats-edit``, ``brats-edit-tool``, ``brats-edit-label``, ``brats-edit-radius``,
``brats-edit-only``, ``brats-edit-ball``, ``brats-edit-undo`` / ``-redo`` / ``-reset``,
``brats-edit-uncertain``, ``brats-edit-save``, ``brats-edit-status``, ``brats-edit-cursor`` (the
``<style>`` that draws the brush as the pointer: a circle of the brush's size on the screen).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipyevents
import ipywidgets as W
import numpy as np

from .. import viz
from ..editing import LabelEditor, uncertain_slices
from .views import Views

__all__ = ["TOOL_CHOICES", "EditPanel"]

#: The tool buttons: text -> tool (``view`` moves the crosshair, as before editing existed).
TOOL_CHOICES = (("View", "view"), ("Brush", "brush"), ("Erase", "erase"))
#: The label buttons: text -> BraTS label.
LABEL_CHOICES = (("NCR (1)", 1), ("ED (2)", 2), ("ET (4)", 4))
#: Milliseconds between the pointer moves the browser sends while dragging.
MOVE_EVERY_MS = 25

#: The largest cursor image browsers show (px); a larger brush shows as a plain crosshair.
MAX_CURSOR_PX = 126

Guard = Callable[[Callable[..., Any]], Callable[..., Any]]


def brush_cursor_css(view: str, radius_px: float) -> str:
    """CSS that shows the brush as a circle of ``radius_px`` screen pixels as the pointer over a view."""
    size = int(round(2 * radius_px)) + 4
    if size > MAX_CURSOR_PX or radius_px <= 0:
        return f".brats-view-{view} {{cursor: crosshair;}}"
    c = size / 2
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}'>"
        f"<circle cx='{c}' cy='{c}' r='{radius_px:.1f}' fill='none' stroke='white' stroke-width='2'/>"
        f"<circle cx='{c}' cy='{c}' r='{radius_px:.1f}' fill='none' stroke='black' stroke-width='1'/></svg>"
    )
    url = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
    return f".brats-view-{view} {{cursor: url({url}) {int(c)} {int(c)}, crosshair;}}"


def _controls() -> dict[str, W.Widget]:
    """The panel's widgets by name (each with its CSS class ``brats-edit-<name>``)."""
    controls: dict[str, W.Widget] = {
        "tool": W.ToggleButtons(options=TOOL_CHOICES, value="view", description="Tool"),
        "label": W.ToggleButtons(options=LABEL_CHOICES, value=2, description="Label"),
        "radius": W.FloatSlider(value=3.0, min=0.5, max=20.0, step=0.5, description="Radius mm"),
        "only": W.Checkbox(value=False, description="erase only this label", indent=False),
        "ball": W.Checkbox(value=False, description="3-D ball", indent=False),
        "undo": W.Button(description="Undo", disabled=True),
        "redo": W.Button(description="Redo", disabled=True),
        "reset": W.Button(
            description="Reset to the model's labels", disabled=True, layout=W.Layout(width="auto")
        ),
        "uncertain": W.Button(
            description="Next uncertain slice",
            tooltip="Axial slices, most uncertain first",
            layout=W.Layout(width="auto"),
        ),
        "save": W.Button(description="Save for training"),
        "status": W.HTML(""),
        "cursor": W.HTML(""),
    }
    for name, control in controls.items():
        control.add_class(f"brats-edit-{name}")
    return controls


class EditPanel:
    """The editing controls under the views, and the strokes they make on the views' labels.

    Args:
        views: The review section whose images are painted on.
        guard: Wraps widget callbacks so an error becomes a message, never a dead kernel.
        on_change: Called after each stroke, undo, redo or reset (the labels changed).
        on_save: Called when "Save for training" is pressed.

    Attributes:
        box: The panel (hidden until a prediction is shown).
        editor: The labels being corrected (canonical grid), or None before a prediction.
        last_stroke_s: Seconds from the release of the last drag to its three redrawn views.
    """

    def __init__(
        self, views: Views, guard: Guard, *, on_change: Callable[[], None], on_save: Callable[[], None]
    ) -> None:
        self.views, self.on_change, self.on_save = views, on_change, on_save
        self.editor: LabelEditor | None = None
        self.affine: np.ndarray | None = None
        self.last_stroke_s = 0.0
        self._drag: tuple[str, int, list[int]] | None = None  # view, begin_drag mark, last voxel
        self._uncertain_at = -1
        self._px_per_mm: dict[str, float] = {}  # screen pixels per mm along each view's columns
        c = _controls()
        self.controls = c
        c["tool"].observe(guard(self._on_tool), "value")
        c["radius"].observe(guard(lambda _change: self._show_cursor()), "value")
        c["undo"].on_click(guard(lambda _b: self.undo()))
        c["redo"].on_click(guard(lambda _b: self.redo()))
        c["reset"].on_click(guard(lambda _b: self.reset()))
        c["uncertain"].on_click(guard(lambda _b: self.next_uncertain()))
        c["save"].on_click(guard(lambda _b: self.on_save()))
        self.events = {view: self._listen(view, guard) for view in viz.VIEWS}
        rows = [
            W.HBox([c["tool"], c["label"]], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([c["radius"], c["only"], c["ball"]], layout=W.Layout(flex_flow="row wrap")),
            W.HBox(
                [c["undo"], c["redo"], c["reset"], c["uncertain"], c["save"]],
                layout=W.Layout(flex_flow="row wrap"),
            ),
            c["status"],
            c["cursor"],
        ]
        self.box = W.VBox([W.HTML("<b>Correct the labels</b>"), *rows], layout=W.Layout(display="none"))
        self.box.add_class("brats-edit")

    def _listen(self, view: str, guard: Guard) -> tuple[Any, Any]:
        """Pointer events on a view's image: presses and releases as they come, moves throttled."""
        image = self.views.images[view]
        press = ipyevents.Event(
            source=image,
            watched_events=["mousedown", "mouseup", "mouseleave", "mouseenter"],
            prevent_default_action=True,
        )
        press.on_dom_event(guard(lambda event: self._on_press(view, event)))
        move = ipyevents.Event(
            source=image,
            watched_events=["mousemove"],
            prevent_default_action=True,
            throttle_or_debounce="throttle",
            wait=MOVE_EVERY_MS,
        )
        move.on_dom_event(guard(lambda event: self._on_move(view, event)))
        return press, move

    @property
    def tool(self) -> str:
        """The chosen tool: ``view``, ``brush`` or ``erase``."""
        return str(self.controls["tool"].value)

    def start(self, labels: np.ndarray, affine: np.ndarray) -> None:
        """Begin correcting a prediction: ``labels`` on the study's grid of ``affine``."""
        viewer = self.views.viewer
        if viewer is None:
            return
        self.affine = np.asarray(affine)
        self.editor = LabelEditor(viz.to_canonical(labels, self.affine), spacing=viewer.spacing)
        self._drag, self._uncertain_at = None, -1
        self._show_state()
        self.box.layout.display = "flex"

    def stop(self) -> None:
        """Forget the labels (a new study or prediction) and hide the panel."""
        self.editor, self._drag = None, None
        self.controls["tool"].value = "view"
        self.box.layout.display = "none"

    def labels(self) -> np.ndarray | None:
        """The corrected labels on the study's grid, or None before a prediction."""
        if self.editor is None or self.affine is None:
            return None
        return np.ascontiguousarray(viz.from_canonical(self.editor.labels, self.affine))

    def _on_tool(self, _change: Mapping[str, Any]) -> None:
        self.views.clicks_move_crosshair = self.tool == "view"
        self._show_cursor()

    def _learn_scale(self, view: str, event: Mapping[str, Any]) -> None:
        """Screen pixels per mm of a view, from an event's bounding box (the image's width on the page)."""
        viewer, width = self.views.viewer, event.get("boundingRectWidth")
        if viewer is None or not width:
            return
        col_axis, _row_axis = viz.in_plane_axes(viz.VIEW_AXIS[view])
        scale = float(width) / (viewer.shape[col_axis] * viewer.spacing[col_axis])
        if abs(scale - self._px_per_mm.get(view, 0.0)) > 1e-3:
            self._px_per_mm[view] = scale
            self._show_cursor()

    def _show_cursor(self) -> None:
        """The brush as the pointer over each view whose size on the screen is known (none with View)."""
        radius = float(self.controls["radius"].value)
        rules = [brush_cursor_css(view, radius * scale) for view, scale in self._px_per_mm.items()]
        style = "<style>" + "\n".join(rules) + "</style>" if rules and self.tool != "view" else ""
        if self.controls["cursor"].value != style:
            self.controls["cursor"].value = style

    def _on_press(self, view: str, event: Mapping[str, Any]) -> None:
        self._learn_scale(view, event)
        if event.get("type") == "mousedown" and "dataX" in event and "dataY" in event:
            self.press(view, float(event["dataX"]), float(event["dataY"]))
        elif event.get("type") in ("mouseup", "mouseleave"):
            self.release()

    def _on_move(self, view: str, event: Mapping[str, Any]) -> None:
        if self._drag is not None and int(event.get("buttons", 1)) & 1 and "dataX" in event:
            self.drag(view, float(event["dataX"]), float(event["dataY"]))

    def press(self, view: str, x: float, y: float) -> None:
        """Start a stroke at pixel ``(x, y)`` of a view (nothing with the View tool or no prediction)."""
        viewer, editor = self.views.viewer, self.editor
        if self.tool == "view" or viewer is None or editor is None:
            return
        voxel = viewer.voxel_at(view, x, y)
        self._drag = (view, editor.begin_drag(), voxel)
        self._paint(view, [voxel, voxel])

    def drag(self, view: str, x: float, y: float) -> None:
        """Continue the stroke to pixel ``(x, y)``: the path from the last point is painted."""
        if self._drag is None or self._drag[0] != view or self.views.viewer is None:
            return
        voxel = self.views.viewer.voxel_at(view, x, y)
        self._paint(view, [self._drag[2], voxel])
        self._drag = (view, self._drag[1], voxel)

    def release(self) -> float:
        """End the stroke (one undo step); redraw the three views. Returns the seconds that took."""
        if self._drag is None or self.editor is None:
            return 0.0
        start = time.perf_counter()
        _view, mark, _voxel = self._drag
        self._drag = None
        stroke = self.editor.end_drag(mark)
        self._redraw(viz.VIEWS)
        self.last_stroke_s = time.perf_counter() - start
        if stroke is not None:
            self._changed()
        return self.last_stroke_s

    def stroke(self, view: str, points: Sequence[tuple[float, float]]) -> float:
        """One drag through the pixels ``points`` of a view, as a mouse makes it; returns release time (s)."""
        first, *rest = points
        self.press(view, *first)
        for point in rest:
            self.drag(view, *point)
        return self.release()

    def _paint(self, view: str, voxels: list[list[int]]) -> None:
        viewer, editor = self.views.viewer, self.editor
        assert viewer is not None and editor is not None
        axis = viz.VIEW_AXIS[view]
        u_axis, v_axis = (a for a in range(3) if a != axis)
        c = self.controls
        editor.paint(
            axis=axis,
            index=int(viewer.position[axis]),
            points=[(v[u_axis], v[v_axis]) for v in voxels],
            radius_mm=float(c["radius"].value),
            tool=self.tool,
            label=int(c["label"].value),
            ball=bool(c["ball"].value),
            only_label=int(c["label"].value) if self.tool == "erase" and c["only"].value else None,
        )
        viewer.replace_labels("prediction", editor.labels)
        self.views.render([view])

    def _redraw(self, views: Sequence[str]) -> None:
        viewer, editor = self.views.viewer, self.editor
        if viewer is not None and editor is not None:
            viewer.replace_labels("prediction", editor.labels)
            self.views.render(views)

    def undo(self) -> None:
        """Take back the last stroke (or reset)."""
        if self.editor is not None and self.editor.undo() is not None:
            self._redraw(viz.VIEWS)
            self._changed()

    def redo(self) -> None:
        """Apply again the last stroke taken back."""
        if self.editor is not None and self.editor.redo() is not None:
            self._redraw(viz.VIEWS)
            self._changed()

    def reset(self) -> None:
        """Go back to the model's labels (itself a step that Undo takes back)."""
        if self.editor is not None and self.editor.reset().size:
            self._redraw(viz.VIEWS)
            self._changed()

    def next_uncertain(self) -> int | None:
        """Move the axial view to the next slice with the most uncertain voxels; returns its index."""
        viewer = self.views.viewer
        uncertain = None if viewer is None else viewer.labels.get("uncertain")
        if uncertain is None:
            self.controls["status"].value = "No uncertain voxels to step through for this model."
            return None
        slices = uncertain_slices(uncertain, axis=viz.VIEW_AXIS["axial"])
        if not slices:
            self.controls["status"].value = "The model is certain of every voxel's label here."
            return None
        self._uncertain_at = (self._uncertain_at + 1) % len(slices)
        self.views.move("axial", slices[self._uncertain_at])
        return slices[self._uncertain_at]

    def _changed(self) -> None:
        self._show_state()
        self.on_change()

    def _show_state(self) -> None:
        editor, c = self.editor, self.controls
        if editor is None:
            return
        c["undo"].disabled, c["redo"].disabled = not editor.can_undo, not editor.can_redo
        changed = editor.changed_voxels()
        c["reset"].disabled = changed == 0
        c["status"].value = (
            f"corrected ({changed} voxels changed)"
            if changed
            else "the model's labels (drag with Brush or Erase on a view to correct them)"
        )
