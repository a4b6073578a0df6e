"""The dashboard's model: its card read early (no torch), its loading, and the model line's HTML.

The model loads once per kernel (:func:`brats_seg.model.load_model` caches it); in a Voilà
pre-heated kernel only once a visitor opens the page (:func:`wait_for_page_request`).
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .render import model_status_html

__all__ = ["failed_html", "load_model", "log", "model_error", "read_card", "wait_for_page_request"]

log = logging.getLogger("brats_seg.ui")


def read_card(model_dir: Path | None) -> Any:
    """The model card alone (JSON, no unpickling, no torch), or None when it cannot be read yet."""
    from ..card import ModelCard, default_model_dir

    try:
        return ModelCard.load((model_dir or default_model_dir()) / "model.json")
    except Exception:  # noqa: BLE001 - loading the model reports the problem in the status line
        return None


def failed_html(exc: BaseException) -> str:
    """The model line when the model could not be loaded."""
    if isinstance(exc, ModelError):
        return f'<span style="color:#a00">Model not available: {html.escape(str(exc))}</span>'
    return (
        f'<span style="color:#a00">Model not available ({html.escape(type(exc).__name__)}: '
        f"{html.escape(str(exc)[:200])})</span>"
    )


def model_error(exc: BaseException, model_dir: Path | None) -> ModelError:
    """``exc`` (from :func:`load_model`) as the ModelError the page shows."""
    if isinstance(exc, ModelError):
        return exc
    from ..card import default_model_dir

    directory = model_dir or default_model_dir()
    return ModelError(f"the model in {directory} could not be loaded ({type(exc).__name__}: {exc})")


def load_model(model_dir: Path | None) -> tuple[Any, str]:
    """Load the model and set torch's CPU threads; returns it with the model line's HTML.

    Raises:
        ModelError: When the model folder or card cannot be used; other errors of unpickling pass
            through (:func:`model_error` words them, :func:`failed_html` shows them).
    """
    from ..card import default_model_dir
    from ..inference import configure_threads
    from ..model import load_model as load

    try:  # before loading: OpenVINO networks are compiled for the threads in force
        threads = f"{configure_threads()} CPU thread(s)"
    except ValueError as exc:  # a server setting, not the user's fault: say so and go on
        log.warning("%s", exc)
        threads = f'<span style="color:#a00">{html.escape(str(exc))}; using the default threads</span>'
    model = load(model_dir or default_model_dir(), backend=None)  # $BRATS_SEG_BACKEND, default auto
    return model, model_status_html(model, threads)


def wait_for_page_request() -> None:
    """In a Voilà pre-heated kernel, wait until a visitor's page request takes the kernel.

    Voilà (``preheat_kernel``) runs the notebook in spare kernels before anyone asks for the page.
    Loading the model there would keep about 1 GB per spare kernel; instead the model starts
    loading when the page is opened, while the visitor picks files. Elsewhere this returns at once.
    """
    if os.environ.get("VOILA_PREHEAT") != "True":
        return
    try:
        from voila.utils import wait_for_request

        wait_for_request()
    except Exception:  # then the model simply loads now
        log.warning("could not wait for the Voila page request; loading the model now", exc_info=True)
