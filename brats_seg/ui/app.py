"""The Voilà dashboard: upload one study, predict, review the labels over the scan, download.

``app.ipynb`` holds only ``App().widget``; everything is testable without a browser::

    app = App(model_dir="model/", synchronous=True)
    app.page.upload.value = (...)       # as the browser sends files (ipywidgets 8 format)
    app.page.predict_button.click()     # runs the prediction (in a thread unless synchronous)
    app.volumes_shown()["WT"]           # {"prediction": mL, ...} as displayed

:class:`App` wires the page (:mod:`~brats_seg.ui.layout`), the review (:mod:`~brats_seg.ui.views`) and
the raw-study section (:mod:`~brats_seg.ui.harmonise`) to the work (:mod:`~brats_seg.ui.jobs`, the
example :mod:`~brats_seg.ui.example`, the files :mod:`~brats_seg.ui.downloads`); the session's state is
:class:`~brats_seg.ui.state.Session`. Torch is imported only when the model is loaded (in the
background), so the page opens fast.

Configuration (keyword arguments win over environment variables):

* ``BRATS_SEG_MODEL``: model folder (``model.json`` + exported learner); default the bundled ``model/``.
* ``BRATS_SEG_EXAMPLE_DIR``: a local study folder loaded by "Load example" (no download).
* ``BRATS_SEG_EXAMPLE_URL``: base address of the example's files (default: the DeepBrainSeg
  repository's copy of ``Brats18_CBICA_ABM_1``); each file is checked against its pinned sha256.
* ``BRATS_SEG_CACHE``: where downloaded examples are kept (default ``~/.cache/brats_seg``).
* ``BRATS_SEG_TORCH_THREADS``: CPU threads torch uses in this kernel (default: one per core).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics, quality, report
from ..card import postprocess_line
from ..editing import corrected_segmentation, correction_record, corrections_dir, save_for_training
from ..errors import ModelError, StudyError
from ..server import session_temp_dir
from ..turns import Turns
from ..types import LabelMap, Study
from . import jobs, render, results
from .editing import EditPanel
from .entries import list_entries, upload_files
from .example import (
    EXAMPLE_CASE,
    EXAMPLE_DIR_ENV,
    EXAMPLE_URL,
    EXAMPLE_URL_ENV,
    ExampleUnreachable,
    fetch_example,
    read_study_folder,
)
from .harmonise import HarmonisePanel
from .layout import build_page, file_rows
from .messages import Messages
from .model_line import failed_html, load_model, log, model_error, read_card, wait_for_page_request
from .state import Result, Session
from .views import Views

__all__ = ["App"]

#: Seconds after the last correction before its scores, report and downloads are made again.
CORRECTION_DELAY_S = 0.4


def _setup_logging() -> None:
    """Send the dashboard's log (details of unexpected errors) to the server's terminal."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class App:
    """The dashboard (see the module's description).

    Args:
        model_dir: Model folder; default ``$BRATS_SEG_MODEL``, else the bundled ``model/``.
        example_dir: Local example study folder; default ``$BRATS_SEG_EXAMPLE_DIR``.
        example_url: Base address of the example files; default ``$BRATS_SEG_EXAMPLE_URL``, else
            :data:`~brats_seg.ui.example.EXAMPLE_URL`. Used when there is no ``example_dir``.
        cache_dir: Cache of downloaded examples (default :func:`~brats_seg.ui.example.default_cache_dir`).
        synchronous: Run predictions and example loading in the caller's thread (tests). Otherwise
            they run in a background thread so the page stays responsive and the progress bar moves.
        preload_model: Load the model in a background thread as soon as the app is built (in a
            Voilà pre-heated kernel: as soon as a visitor opens the page). Default: when not
            ``synchronous``; otherwise the model loads at the first prediction.
        own_temp_dir: Keep this kernel's temporary files in a folder of its own, removed with the
            kernel (:func:`brats_seg.server.session_temp_dir`). Default: when not ``synchronous``.

    Attributes:
        widget: The root widget to display.
        state: The session's :class:`~brats_seg.ui.state.Session` (study, result, message, ...).
        page: The page's widgets (:class:`~brats_seg.ui.layout.Page`).
        views: The review section (:class:`~brats_seg.ui.views.Views`).
        harmonise_panel: The raw-study section (:class:`~brats_seg.ui.harmonise.HarmonisePanel`).
        modality_dropdowns: File name -> its sequence dropdown in the file list.
        turns: The server's queue of heavy jobs (one at a time across kernels).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        example_dir: str | Path | None = None,
        example_url: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        synchronous: bool = False,
        preload_model: bool | None = None,
        own_temp_dir: bool | None = None,
    ) -> None:
        _setup_logging()
        self.model_dir = Path(model_dir) if model_dir is not None else None
        env_dir = os.environ.get(EXAMPLE_DIR_ENV)
        self.example_dir = (
            Path(example_dir) if example_dir is not None else (Path(env_dir) if env_dir else None)
        )
        self.example_url = example_url or os.environ.get(EXAMPLE_URL_ENV) or EXAMPLE_URL
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.synchronous = synchronous
        self.state = Session()
        self.turns = Turns()  # one heavy job at a time across the server's kernels
        # a kernel's temporary files in a folder of its own, gone with the kernel (tests keep the system's)
        own_temp_dir = not synchronous if own_temp_dir is None else own_temp_dir
        self.temp_dir = session_temp_dir() if own_temp_dir else None
        self._model: Any = None
        self._corrections = 0  # corrections made; a background update applies only to the newest
        self._correction_timer: threading.Timer | None = None
        self._state_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._model_thread: threading.Thread | None = None
        self.modality_dropdowns: dict[str, Any] = {}
        self.views = Views(self._guard, self._on_redraw)
        self.edit_panel = EditPanel(
            self.views, self._guard, on_change=self._on_correction, on_save=self._on_save_for_training
        )
        self.views.box.children = (*self.views.box.children, self.edit_panel.box)
        self.harmonise_panel = HarmonisePanel()
        self.page = build_page(self.views.box, self.harmonise_panel.mode, self.harmonise_panel.box)
        self.widget = self.page.widget
        self.messages = Messages(self.state, self.page.message, self.page.warnings_html)
        self._wire()
        self._offer_options(read_card(self.model_dir))
        if not synchronous if preload_model is None else preload_model:
            self._model_thread = threading.Thread(target=self._preload_model, name="brats-model", daemon=True)
            self._model_thread.start()

    def _wire(self) -> None:
        p = self.page
        p.upload.observe(self._guard(self._on_upload), "value")
        p.example_button.on_click(self._guard(self._on_example_click))
        self.harmonise_panel.mode.observe(self._guard(self._on_modality_change), "value")
        p.predict_button.on_click(self._guard(self._on_predict_click))
        p.refresh_png_button.on_click(self._guard(self._on_refresh_png))
        for control in (p.keep_parts, p.quick):
            control.observe(self._guard(self._on_predict_setting), "value")

    # --- Messages and errors ---

    def _guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a widget callback so no exception escapes to the page as a traceback."""

        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:  # shown as a message, details logged
                self.messages.exception(exc)
                return None

        return wrapped

    # --- Busy state and background work ---

    @property
    def busy(self) -> bool:
        """Whether a prediction or an example download is running."""
        return self.state.busy

    def _claim(self) -> bool:
        with self._state_lock:
            if self.state.busy:
                return False
            self.state.busy = True
        self._update_controls()
        return True

    def _release(self) -> None:
        with self._state_lock:
            self.state.busy = False
        self._update_controls()

    def _update_controls(self) -> None:
        busy, p = self.state.busy, self.page
        p.predict_button.disabled = busy or self.state.study is None
        p.example_button.disabled = p.upload.disabled = busy
        for dropdown in self.modality_dropdowns.values():
            dropdown.disabled = busy
        p.refresh_png_button.disabled = busy or self.state.result is None

    def _run_claimed(self, job: Callable[[], Any]) -> Any:
        """Run a claimed job here, report its error (returning None), and release the claim."""
        try:
            return job()
        except Exception as exc:
            self.messages.exception(exc)
            return None
        finally:
            self._release()

    def _start(self, job: Callable[[], Any]) -> None:
        """Run a job, if none runs, here (synchronous) or in a background thread."""
        if not self._claim():
            return
        if self.synchronous:
            self._run_claimed(job)
        else:
            self._thread = threading.Thread(
                target=self._run_claimed, args=(job,), name="brats-job", daemon=True
            )
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background job (prediction or example download) to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    # --- Model ---

    def _offer_options(self, card: Any) -> None:
        """Show "Quick prediction" for a card that turns test-time flips on, and "Keep every tumour part"
        for one whose post-processing changes the labels (before the first Predict)."""
        self.page.quick.layout.display = "" if card is not None and card.tta_flips else "none"
        self.page.keep_parts.layout.display = "" if card is not None and postprocess_line(card) else "none"

    def _preload_model(self) -> None:
        self.page.model_status.value = "Model: loading in the background..."
        try:
            wait_for_page_request()
            self.model()
        except Exception as exc:  # shown in the status line
            if not isinstance(exc, ModelError):
                log.exception("the model could not be loaded")

    def model(self) -> Any:
        """The model, loaded once per kernel (:func:`brats_seg.model.load_model` caches it).

        Raises:
            ModelError: When the model folder or card cannot be used (also shown in the status line).
        """
        if self._model is not None:
            return self._model
        self.page.model_status.value = "Model: loading..."
        try:
            model, line = load_model(self.model_dir)
        except Exception as exc:
            self.page.model_status.value = failed_html(exc)
            error = model_error(exc, self.model_dir)
            if error is exc:
                raise
            raise error from exc
        self._offer_options(model.card)
        self.page.model_status.value = (
            line  # one assignment: the preloading thread and Predict may both get here
        )
        self._model = model
        return model

    # --- Files ---

    def _on_upload(self, change: Mapping[str, Any]) -> None:
        files = upload_files(change["new"])
        if not files:
            return
        if self.state.busy:
            self.messages.error("Busy: wait for the current run to finish, then upload again.")
            return
        self.set_files(files)

    def set_files(self, files: Mapping[str, bytes | memoryview], *, origin: str = "upload") -> Study | None:
        """Show the given files with their detected sequences and load the study if it is complete.

        Args:
            files: File name -> content (four or five NIfTI files, or one .zip of NIfTI files or DICOM
                series).
            origin: Where they come from, for the information line.

        Returns:
            The loaded study, or None (the reason is shown in the message area).
        """
        self._reset_results()
        self.state.files = dict(files)
        self.state.entries = list_entries(self.state.files)
        rows, self.modality_dropdowns = file_rows(self.state.entries, self._guard(self._on_modality_change))
        self.page.files_box.children = rows
        return self._load_study(origin=origin)

    def mapping(self) -> dict[str, str]:
        """File name -> sequence as chosen in the dropdowns (the explicit mapping given to io)."""
        return {name: dropdown.value for name, dropdown in self.modality_dropdowns.items() if dropdown.value}

    def _on_modality_change(self, _change: Mapping[str, Any]) -> None:
        if self.views.syncing or self.state.busy:
            return
        self._reset_results()
        self._load_study(origin="upload")

    def _load_study(self, *, origin: str) -> Study | None:
        state = self.state
        state.study = None
        self.messages.warnings([])
        self.views.hide()
        self._update_controls()
        unchosen = [name for name, dropdown in self.modality_dropdowns.items() if not dropdown.value]
        if unchosen:
            self.messages.error(
                f"{', '.join(unchosen)}: cannot tell which sequence the file holds from its name; choose it "
                "in the list next to the file (T1, T1CE, T2, FLAIR, ground truth or ignore)."
            )
            return None
        state.harmonised = None
        self.harmonise_panel.show(None)
        if not state.files:
            return None
        try:
            study, state.harmonised = jobs.load_upload(
                state.files,
                self.mapping() or None,
                mode=self.harmonise_panel.mode.value,
                turns=self.turns,
                say=self._say,
                wait=self._show_wait,
            )
        except StudyError as e:
            raise jobs.explain_load_error(e, state.files) from e
        if state.harmonised is not None:
            from ..harmonise_outputs import registration_png

            self.harmonise_panel.show(state.harmonised, registration_png(state.harmonised))
        state.study = study
        if study.truth is not None:  # its scores need MONAI's metrics: imported while the visitor looks
            metrics.import_in_background()
        self.views.show_study(study)
        self.messages.info(jobs.loaded_message(study, state.harmonised, origin))
        self.messages.warnings(quality.check_study(study))  # before Predict; Predict shows segment's own
        self._update_controls()
        return study

    def _say(self, text: str) -> None:
        self.page.progress_label.value = text

    # --- Example ---

    def _on_example_click(self, _button: Any) -> None:
        self._start(self._example_job)

    def load_example(self) -> Study | None:
        """Load the example study now (in this thread); returns it, or None after showing why not."""
        return self._run_claimed(self._example_job) if self._claim() else None

    def _example_job(self) -> Study | None:
        if self.example_dir is not None:
            self.messages.info(f"Loading the example study from {self.example_dir} ...")
            return self.set_files(
                read_study_folder(self.example_dir), origin=f"example from {self.example_dir}"
            )
        self.messages.info(f"Downloading the example study {EXAMPLE_CASE} from {self.example_url} ...")
        try:
            paths = fetch_example(self.example_url, cache_dir=self.cache_dir)
        except ExampleUnreachable as exc:
            self._example_unreachable(exc)
            return None
        return self.set_files(
            {name: path.read_bytes() for name, path in paths.items()}, origin=f"example {EXAMPLE_CASE}"
        )

    def _example_unreachable(self, exc: ExampleUnreachable) -> None:
        """Hide "Load example" (another click would fail the same way) and say what to do instead.

        Only for a server that cannot be reached; a file that arrives damaged (sha256 mismatch)
        leaves the button, since the next try may succeed.
        """
        log.warning("example download failed: %s", exc)
        self.page.example_button.layout.display = "none"
        self.page.example_note.value = (
            f"<small>Example not available from this server: upload the files, or set "
            f"<code>{EXAMPLE_DIR_ENV}</code>.</small>"
        )
        self.page.example_note.layout.display = ""
        self.messages.error(
            f"The example study cannot be downloaded from this server ({exc.url}: {exc.reason}). "
            f'Upload the four sequences of a study with "Upload files" instead, or set {EXAMPLE_DIR_ENV} '
            "to a folder holding a local copy of the example study and restart the dashboard."
        )

    # --- Prediction ---

    def _on_predict_click(self, _button: Any) -> None:
        if self.state.study is not None:
            self._start(self._predict_job)

    def _on_predict_setting(self, _change: Mapping[str, Any]) -> None:
        """A prediction setting changed: the shown result was made without it until Predict runs again."""
        if self.state.result is not None and not self.state.busy:
            self._say("Settings changed: press Predict to apply them to the labels shown.")

    def predict(self) -> Result | None:
        """Run the prediction now, in this thread; returns the result, or None (reason shown)."""
        if self.state.study is None or not self._claim():
            return None
        return self._run_claimed(self._predict_job)

    def _predict_job(self) -> Result | None:
        study, p = self.state.study, self.page
        if study is None:
            return None
        self.state.run_count += 1
        start = time.perf_counter()
        p.progress.value, p.progress.bar_style = 0, ""
        self._say("Loading the model..." if self._model is None else "Preparing...")
        try:
            model = self.model()
            self._say("Preparing...")
            with self.turns.turn(self._show_wait) as waited:
                seg = jobs.segment(
                    study,
                    model,
                    keep_parts=p.keep_parts.value,
                    quick=p.quick.value,
                    progress=self._progress_callback(time.perf_counter()),
                    harmonised=self.state.harmonised,
                )
            self._say(f"Computing volumes and scores... {time.perf_counter() - start:.1f} s")
            result = jobs.measure(study, seg, model)
            self._show_result(result, model)
        except BaseException:
            p.progress.bar_style = "danger"
            self._say(f"Failed after {time.perf_counter() - start:.1f} s")
            raise
        self.messages.warnings(seg.warnings)
        p.progress.value, p.progress.bar_style = 100, "success"
        self._say(self._done_text(seg.timings, time.perf_counter() - start, waited, model))
        wt = result.volumes["regions"]["WT"]["mL"]
        self.messages.info(
            f"{study.name}: whole tumour {wt:.1f} mL. Review the labels below; downloads at the bottom."
            + "".join(f" {note}" for note in result.notes)
        )
        self._scroll_to_review(study)
        return result

    def _done_text(self, t: Mapping[str, float], seconds: float, waited: float, model: Any) -> str:
        quick = (
            " Quick prediction: no test-time flips." if self.page.quick.value and model.card.tta_flips else ""
        )
        queued = f"waited {waited:.1f} s for other sessions, " if waited >= 0.5 else ""
        return (
            f"Done in {seconds:.1f} s ({queued}prepare {t.get('prepare', 0):.1f} s, "
            f"network {t.get('predict', 0):.1f} s, labels {t.get('postprocess', 0):.1f} s).{quick}"
        )

    def _show_wait(self, place: int, waited: float) -> None:
        """Say that this session waits for others' jobs on a shared server (see :mod:`brats_seg.turns`)."""
        jobs_word = "job" if place == 1 else "jobs"
        self._say(
            f"Waiting for {place} other {jobs_word} on this server to finish (place {place} in the "
            f"queue, {waited:.0f} s so far)..."
        )

    def _scroll_to_review(self, study: Study) -> None:
        """Bring the review section into view after the first successful prediction of ``study``.

        Later predictions of the same study, and slider moves, leave the page where the user put it.
        Without a browser this only sets the Output widget's ``outputs``: nothing runs, nothing raises.
        """
        if self.state.scrolled_study is study:
            return
        self.state.scrolled_study = study
        self.state.scroll_count += 1
        tag = f"brats-seg scroll {self.state.scroll_count}"
        self.page.scroller.outputs = (render.javascript_output(render.SCROLL_TO_REVIEW_JS, tag),)

    def _progress_callback(self, start: float) -> Callable[[float], None]:
        last = {"pct": -1, "t": 0.0}

        def update(fraction: float) -> None:
            pct = int(max(0.0, min(1.0, float(fraction))) * 100)
            now = time.perf_counter()
            if pct != last["pct"] and (now - last["t"] >= 0.1 or pct >= 100):
                last["pct"], last["t"] = pct, now
                self.page.progress.value = pct
                self._say(f"Predicting: {pct}% - {now - start:.1f} s")

        return update

    def _show_result(self, result: Result, model: Any) -> None:
        """Show a prediction: over the scan, in the tables, and as downloads (made here, once)."""
        seg, study, harmonised = result.segmentation, result.study, self.state.harmonised
        self.views.set_labels(seg.labels.array, seg.uncertain, truth=study.truth is not None)
        self.edit_panel.start(seg.labels.array, study.affine)
        results.add_files(result, model, self.views.viewer)
        if harmonised is not None and seg.native is not None:
            native = result.downloads[f"{study.name}_native.png"][1]
            self.harmonise_panel.show_native(native, reference=harmonised.reference)
        self.state.result = result
        results.show(self.page, result)
        self._update_controls()

    def _on_refresh_png(self, _button: Any) -> None:
        if self.state.result is not None and not self.state.busy:
            results.refresh_figure(self.page, self.state.result, self.views.viewer)
            self._update_controls()

    def _on_redraw(self) -> None:
        if self.state.result is not None:
            results.mark_figure(self.page, current=False)

    def downloads(self) -> dict[str, bytes]:
        """File name -> bytes of the download links shown in the page."""
        result = self.state.result
        return {name: data for name, (_, data) in result.downloads.items()} if result is not None else {}

    def volumes_shown(self) -> dict[str, dict[str, float]]:
        """The volumes table as displayed: name (NCR, ED, ET, TC, WT) -> column -> mL."""
        return self.state.result.volumes_shown if self.state.result is not None else {}

    def scores_shown(self) -> dict[str, dict[str, float]]:
        """The Dice / HD95 table as displayed: region -> ``{"dice", "hd95"}`` (empty without truth)."""
        return results.shown_scores(self.state.result)

    def _on_correction(self) -> None:
        """The labels were corrected (a stroke, undo, redo or reset): the volumes table follows at once;
        scores, report and downloads follow a moment later in the background (here, when synchronous),
        so that the next stroke does not wait for them."""
        result, editor, labels = self.state.result, self.edit_panel.editor, self.edit_panel.labels()
        if result is None or editor is None or labels is None or self._model is None:
            return
        changed = editor.changed_voxels()
        shown = LabelMap(labels, result.segmentation.labels.affine, result.segmentation.labels.header)
        results.show_volumes(self.page, result, report.volumes(shown), corrected=changed or None)
        self._corrections += 1
        job = partial(self._update_corrected, self._corrections, labels, changed)
        if self.synchronous:
            job()
            return
        if self._correction_timer is not None:
            self._correction_timer.cancel()
        self._correction_timer = threading.Timer(CORRECTION_DELAY_S, self._guard(job))
        self._correction_timer.daemon = True
        self._correction_timer.start()

    def _update_corrected(self, generation: int, labels: np.ndarray, changed: int) -> None:
        """Scores, report and downloads of corrected labels (skipped when a newer correction came)."""
        result, editor, model = self.state.result, self.edit_panel.editor, self._model
        if result is None or editor is None or generation != self._corrections:
            return
        original = result.model_segmentation or result.segmentation
        seg = original
        if changed:
            record = correction_record(editor, model_name=model.card.name)
            seg = corrected_segmentation(original, labels, record=record)
        corrected = jobs.measure(result.study, seg, model)
        corrected.model_segmentation = original
        results.add_files(corrected, model, self.views.viewer)
        if generation == self._corrections and self.state.result is result:
            self.state.result = corrected
            results.show(self.page, corrected)

    def _on_save_for_training(self) -> None:
        """Write the study and its corrected labels as a BraTS case into the corrections folder."""
        study, labels = self.state.study, self.edit_panel.labels()
        if study is None or labels is None:
            return
        folder = corrections_dir()
        case = save_for_training(study, labels, folder)
        self.messages.info(
            f"Saved {study.name} with its corrected labels for training as {folder.name}/{case.name} "
            f"(fine-tune with: brats-seg train {folder.name} --init-from model ...)."
        )

    def _reset_results(self) -> None:
        self.state.result = None
        self.edit_panel.stop()
        results.reset(self.page)
        self.views.set_labels(None, None, truth=False)
        self._update_controls()
