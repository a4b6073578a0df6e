"""The message line and the input warnings under it, kept in the session's state and shown from it."""

from __future__ import annotations

from ipywidgets import HTML

from ..errors import ModelError, StudyError
from .example import ExampleError
from .model_line import log
from .render import message_html, without_paths
from .state import Session

__all__ = ["Messages"]


class Messages:
    """Shows messages and warnings (``brats-message``, ``brats-warnings``) and records them in ``state``.

    Args:
        state: The session; its ``message_text``, ``message_kind`` and ``warnings`` follow the page.
        message: The message's widget.
        warnings: The warnings' widget.
    """

    def __init__(self, state: Session, message: HTML, warnings: HTML) -> None:
        self.state, self.message, self.warnings_widget = state, message, warnings

    def _show(self, text: str, kind: str) -> None:
        self.state.message_text, self.state.message_kind = text, kind
        self.message.value = message_html(text, kind)

    def error(self, text: str) -> None:
        """Show a readable error in the page."""
        self._show(text, "error")

    def info(self, text: str) -> None:
        """Show an information line in the page."""
        self._show(text, "info")

    def clear(self) -> None:
        """Remove the message."""
        self._show("", "")

    def warnings(self, warnings: list[str]) -> None:
        """Show the study's input warnings (:func:`brats_seg.quality.check_study`) under the message."""
        self.state.warnings = list(warnings)
        self.warnings_widget.value = "".join(message_html(f"Warning: {t}", "warning") for t in warnings)

    def exception(self, exc: BaseException) -> None:
        """Say what went wrong: the user's files, the model or the example in their own words; anything
        else as a short internal error (first line, no server paths), its details in the server log."""
        if isinstance(exc, StudyError | ModelError | ExampleError):
            self.error(str(exc))
            return
        log.exception("unexpected error in the dashboard")
        text = without_paths(str(exc).splitlines()[0][:300]) if str(exc) else ""
        self.error(
            f"Internal error of brats-seg, not a problem found in your files ({type(exc).__name__}"
            f"{': ' + text if text else ''}). The details are in the server log; the app is still usable: "
            "try again, or load another study."
        )
